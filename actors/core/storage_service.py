"""The storage actor's logic: named write ops (group-committable) and reads over ``store``.

Every write op is idempotent on natural keys (event_id, transcript_id,
(run_id, sequence), (scope_key, state_key), run_id), so a batch retried after
an actor restart or a lost connection duplicates nothing.
"""
from __future__ import annotations

import base64
import time
from typing import Any, Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from protocol.agents import STATE_SCOPES
from protocol.errors import ErrorCode, RunnerHostError, invalid_argument
from protocol.events import EventEnvelope
from protocol.lifecycle import TERMINAL_STATUSES, RunStatus
from protocol.read_scope import ReadScope
from protocol.scopes import scope_key as derive_scope_key
from store.agents import AgentStore
from store.event_log import EventLogEntry, EventLogStore
from store.hosts import HostStore
from store.knowledge import KnowledgeStore
from store.kv import KvStore
from store.ledger import EventRow, RunLedgerStore
from store.runtime_sessions import RuntimeSessionStore, owner_from_dict
from store.state import StateStore
from store.transcript import TranscriptEntry, TranscriptStore

from .frames import is_terminal
from .lifecycle import Cause, reason_of_frame, status_of_frame
from .platform_ops import PlatformStorageOps
from .retention import Retention, RetentionPolicy

TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
_HOST = ReadScope.host()


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


def user_transcript_entry(event: EventEnvelope, run_id: str | None) -> TranscriptEntry | None:
    """The user item of an inbound message; non-message events never become user messages."""
    if not event.is_message or not event.conversation_id:
        return None
    return TranscriptEntry(
        transcript_id=f"tr_{event.event_id}_user", event_id=event.event_id,
        conversation_id=event.conversation_id, thread_id=event.thread_id, bot_id=event.bot_id,
        workspace_id=event.workspace_id, run_id=run_id, role="user", item_type="message",
        content=event.input.to_text(),
        attachment_refs=[a.model_dump(mode="json", exclude_none=True) for a in event.input.attachments],
        metadata={"actor_id": event.actor.actor_id, "actor_name": event.actor.actor_name} if event.actor.actor_id else {},
    )


def _accept_args(*, run_id, event, agent_id, binding_id, runner_id, deadline_at, scope_keys, status="created",
                 owner_host=None, body_sha256=None, frames=()) -> None:
    """The arguments ``run_accept`` takes (a misspelled one fails loudly, as a call would)."""


def _finish_args(*, run_id, status, reason, frames, assistant, dropped, rollback=None, rollback_requested=False,
                 metadata=None) -> None:
    """The arguments ``finish_run`` takes."""


def _envelope(event: EventEnvelope | dict[str, Any]) -> EventEnvelope:
    """The host sends the validated envelope itself (no second validation); JSON is validated."""
    return event if isinstance(event, EventEnvelope) else EventEnvelope.model_validate(event)


def _frame_rows(run_id: str, frames: list[dict[str, Any]]) -> list[EventRow]:
    """Ledger rows of relayed frames (frames without a sequence are not part of the run's stream)."""
    return [(run_id, f["sequence"], f["type"], f.get("data") or {})
            for f in frames if f.get("sequence") is not None]


class StorageService(PlatformStorageOps):  # platform ops: actors/core/platform_ops.py
    def __init__(self, artifact_store_factory: Callable[[AsyncSession], Any] | None = None,
                 transcript_cap: int | None = None) -> None:
        self._artifacts = artifact_store_factory
        self._cap = transcript_cap

    def _transcript(self, session: AsyncSession) -> TranscriptStore:
        return TranscriptStore(session, cap=self._cap) if self._cap else TranscriptStore(session)

    # -- writes (one op inside a shared transaction) --------------------------------------
    #: Ops a batch applies together, kind by kind, in this order, before the rest (in arrival order).
    #: The ops of one batch are concurrent by construction — each caller awaits its write before it
    #: writes again — so applying them kind by kind reorders nothing any caller could observe.
    _BULK = ("run_accept", "run_events", "finish_run", "start_run")

    async def write_batch(self, session: AsyncSession, ops: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Apply a group-commit batch: the hot-path ops of all its runs as a few bulk statements
        (every run's accept, run events and final facts share their INSERTs / UPDATEs), the rest
        one by one in arrival order."""
        results: list[Any] = [None] * len(ops)
        for kind in self._BULK:
            picked = [i for i, (k, _) in enumerate(ops) if k == kind]
            if picked:
                for i, out in zip(picked, await self._bulk(session, kind, [ops[i][1] for i in picked])):
                    results[i] = out
        for i, (kind, kwargs) in enumerate(ops):
            if kind not in self._BULK:
                results[i] = await self.write(session, kind, kwargs)
        return results

    async def _bulk(self, session: AsyncSession, kind: str, many: list[dict[str, Any]]) -> list[Any]:
        if kind == "run_accept":
            return await self._accept_runs(session, many)
        if kind == "finish_run":
            return await self._finish_runs(session, many)
        if kind == "start_run":
            return await self._start_runs(session, many)
        await RunLedgerStore(session).append_rows(
            [r for kwargs in many for r in _frame_rows(kwargs["run_id"], kwargs["frames"])])
        return [len(kwargs["frames"]) for kwargs in many]

    async def write(self, session: AsyncSession, kind: str, kwargs: dict[str, Any]) -> Any:
        handler: Callable[..., Awaitable[Any]] | None = getattr(self, f"w_{kind}", None)
        if handler is None:
            raise invalid_argument(f"unknown storage write {kind!r}")
        return await handler(session, **kwargs)

    async def _submitted(self, session: AsyncSession, event_id: str, run_id: str | None,
                         body_sha256: str | None) -> dict[str, Any] | None:
        """``None`` when ``event_id`` was logged by this very run's submission (a retried write),
        else what a re-sent event joins: ``{"run_id" (None: it started no run), "same_body"}``."""
        found = await EventLogStore(session).submission(event_id)
        stored_run, stored_sha = found if found is not None else (None, None)
        if run_id is not None and stored_run == run_id:
            return None
        return {"run_id": stored_run, "same_body": stored_sha is not None and stored_sha == body_sha256}

    async def w_event_accept(self, session, *, event, binding_id, agent_id, runner_id, run_id=None,
                             metadata=None, body_sha256=None) -> dict[str, Any]:
        """Log an event that starts no run of its own (e.g. steered into an active run);
        ``{"duplicate": …}`` when its ``event_id`` was already logged by another submission."""
        envelope = _envelope(event)
        new = await EventLogStore(session).insert([EventLogEntry.from_envelope(
            envelope, binding_id=binding_id, agent_id=agent_id, run_id=run_id, runner_id=runner_id,
            metadata=metadata, body_sha256=body_sha256)])
        if new and (entry := user_transcript_entry(envelope, run_id)) is not None:
            await self._transcript(session).append_many([entry], fresh=True)
        if not new:
            return {"event_id": envelope.event_id,
                    "duplicate": await self._submitted(session, envelope.event_id, None, body_sha256)}
        return {"event_id": envelope.event_id}

    async def w_run_accept(self, session, **op: Any) -> dict[str, Any]:
        """Accept an event with its run in one transaction: EventLog row, user transcript item,
        ledger row (``created``, or ``running`` when its slot is already held) and first frames.

        Returns ``{"handles": …, "event_seq"}`` (handles for a ``running`` run) or ``{"duplicate":
        {"run_id", "same_body"}}`` when the ``event_id`` was already accepted by another submission —
        then nothing is written. A retry of this very write returns what the first one did."""
        return (await self._accept_runs(session, [op]))[0]

    async def _accept_runs(self, session: AsyncSession, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`w_run_accept` for many runs: one INSERT per table for all of them."""
        for op in ops:
            _accept_args(**op)
        envelopes = [_envelope(op["event"]) for op in ops]
        seqs = await EventLogStore(session).insert([EventLogEntry.from_envelope(
            env, binding_id=op["binding_id"], agent_id=op["agent_id"], run_id=op["run_id"],
            runner_id=op["runner_id"], body_sha256=op.get("body_sha256")) for op, env in zip(ops, envelopes)])
        results: list[dict[str, Any] | None] = [None] * len(ops)
        fresh: list[int] = []      # whose event (and so user item) this very call wrote
        accepted: list[int] = []   # every op that is (or was, by this write's earlier try) its run's accept
        for i, (op, env) in enumerate(zip(ops, envelopes)):
            if env.event_id in seqs and not any(envelopes[j].event_id == env.event_id for j in fresh):
                fresh.append(i)
                accepted.append(i)
                continue
            duplicate = await self._submitted(session, env.event_id, op["run_id"], op.get("body_sha256"))
            if duplicate is not None:
                results[i] = {"duplicate": duplicate}
            else:
                accepted.append(i)
        entries = {i: user_transcript_entry(envelopes[i], ops[i]["run_id"]) for i in fresh}
        items = await self._transcript(session).append_many([e for e in entries.values() if e], fresh=True)
        appended = {item.transcript_id: item for item in items}
        ledger = RunLedgerStore(session)
        await ledger.record([(ops[i]["run_id"], ops[i].get("status", "created"), dict(
            event_id=envelopes[i].event_id, agent_id=ops[i]["agent_id"], binding_id=ops[i]["binding_id"],
            runner_id=ops[i]["runner_id"], conversation_id=envelopes[i].conversation_id,
            thread_id=envelopes[i].thread_id, bot_id=envelopes[i].bot_id, workspace_id=envelopes[i].workspace_id,
            deadline_at=ops[i]["deadline_at"], owner_host=ops[i].get("owner_host"))) for i in accepted])
        await ledger.append_rows([r for i in accepted for r in _frame_rows(ops[i]["run_id"], list(ops[i].get("frames") or ()))])
        running = [i for i in accepted if ops[i].get("status") == RunStatus.RUNNING.value]
        states = await StateStore(session).snapshots([ops[i]["scope_keys"] or {} for i in running])
        for i in accepted:
            results[i] = {"handles": None, "event_seq": seqs.get(envelopes[i].event_id)}
        for i, state in zip(running, states):
            entry = entries.get(i)
            results[i]["handles"] = await self._handles(
                session, envelopes[i].conversation_id, envelopes[i].is_message, state, results[i]["event_seq"],
                appended.get(entry.transcript_id) if entry is not None else None)
        return results  # type: ignore[return-value]

    async def _handles(self, session: AsyncSession, conversation_id: str | None, is_message: bool,
                       state: dict[str, Any], event_seq: int | None, appended: Any = None) -> dict[str, Any]:
        """What a starting run's context carries: its state snapshot and the conversation handles
        (``appended``: the user item just written, which is the newest one — no need to look)."""
        head = None
        if conversation_id:
            head = ((appended.seq, appended.cursor) if appended is not None
                    else await self._transcript(session).latest(conversation_id))
        return _context_handles(conversation_id, is_message, state, event_seq, head)

    async def w_start_run(self, session, *, run_id, deadline_at, scope_keys, frames=(), event_seq=None,
                          is_message=None) -> dict[str, Any]:
        """Start a queued (``created``) run: ``running`` with its deadline, its first frames and
        the context handles. A run whose cancellation was requested while it waited is cancelled
        instead: ``{"cancelled": {"sequence": n}}``. A retry returns what the first write did."""
        ledger = RunLedgerStore(session)
        run = await ledger.get(run_id, scope=_HOST)
        if run.status == RunStatus.CREATED.value and run.cancel_requested_at is not None:
            sequence = await self._abort(session, run, Cause.CANCELLED.frame(
                run_id, run.status_reason or "cancelled while queued"))
            return {"cancelled": {"sequence": sequence}}
        if run.status == RunStatus.CANCELLED.value:
            return {"cancelled": {"sequence": await ledger.last_sequence(run_id)}}
        await ledger.start(run_id, deadline_at=deadline_at)
        if frames:
            await ledger.append_rows(_frame_rows(run_id, list(frames)))
        if is_message is None:  # not told by the caller: read it
            found = await EventLogStore(session).get(run.event_id, scope=_HOST) if run.event_id else None
            event_seq = found.seq if found else None
            is_message = found is not None and found.event_type == "message.received"
        state = await StateStore(session).snapshot(scope_keys) if scope_keys else {}
        return {"handles": await self._handles(session, run.conversation_id, is_message, state, event_seq)}

    async def _start_runs(self, session: AsyncSession, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`w_start_run` for many runs: the queued runs that simply start share one UPDATE, one
        INSERT of frames and one read each of state and transcript heads; the rest (a cancellation
        requested while queued, a retried write, a caller that did not say what the event was) take
        :meth:`w_start_run` one by one."""
        simple = [op for op in ops if op.get("is_message") is not None]
        moved = await RunLedgerStore(session).start_queued([(op["run_id"], op["deadline_at"]) for op in simple])
        started = [op for op in simple if op["run_id"] in moved]
        await RunLedgerStore(session).append_rows(
            [r for op in started for r in _frame_rows(op["run_id"], list(op.get("frames") or ()))])
        states = await StateStore(session).snapshots([op["scope_keys"] or {} for op in started])
        heads = await self._transcript(session).latest_many(c for c in moved.values() if c)
        results: dict[str, dict[str, Any]] = {}
        for op, state in zip(started, states):
            conversation_id = moved[op["run_id"]]
            results[op["run_id"]] = {"handles": _context_handles(
                conversation_id, op["is_message"], state, op.get("event_seq"),
                heads[conversation_id] if conversation_id else None)}
        return [results[op["run_id"]] if op["run_id"] in results else await self.w_start_run(session, **op)
                for op in ops]

    async def w_session_upsert(self, session, *, owner, external_session_id, backend_run_id=None) -> dict:
        row = await RuntimeSessionStore(session).upsert_active(
            owner_from_dict(owner), external_session_id=external_session_id, backend_run_id=backend_run_id)
        return _dump(row)

    async def w_session_clean(self, session, *, owner) -> dict | None:
        return _dump(await RuntimeSessionStore(session).mark_cleaned(owner_from_dict(owner)))

    async def w_knowledge_ingest(self, session, *, kb_id, doc_id, content, title=None, metadata=None) -> dict:
        chunks = await KnowledgeStore(session).ingest(kb_id, doc_id, title, content, metadata or {})
        return {"kb_id": kb_id, "doc_id": doc_id, "chunks": chunks}

    async def w_run_events(self, session, *, run_id, frames) -> int:
        """Record frames idempotently; returns how many frames the call put on record."""
        await RunLedgerStore(session).append_rows(_frame_rows(run_id, frames))
        return len(frames)

    async def w_state_set(self, session, *, scope_key, key, value, scope, runner_id) -> dict[str, Any]:
        written = await StateStore(session).set(scope_key, key, value, scope=scope, runner_id=runner_id)
        return {"entry": _dump(written.entry), "previous": _dump(written.previous)}

    async def w_state_delete(self, session, *, scope_key, key) -> dict[str, Any]:
        previous = await StateStore(session).delete(scope_key, key)
        return {"deleted": previous is not None, "previous": _dump(previous)}

    async def w_kv_set(self, session, *, area, namespace, key, value) -> None:
        await KvStore(session).set(area, namespace, key, value)

    async def w_kv_delete(self, session, *, area, namespace, key) -> bool:
        return await KvStore(session).delete(area, namespace, key)

    async def w_agent_put(self, session, *, agent_id, config, only_if_absent=False) -> dict[str, Any]:
        store = AgentStore(session)
        if only_if_absent:
            try:
                existing = await store.get(agent_id)
                return {"version": existing.version, "config": existing.config.model_dump(mode="json")}
            except Exception as exc:  # not_found → create it below
                if getattr(exc, "code", None) is None or exc.code.value != "not_found":
                    raise
        version = await store.put(agent_id, config)
        return {"version": version, "config": config}

    async def w_artifact_created(self, session, *, run_id, runner_id, conversation_id, data,
                                 fallback_id) -> dict[str, Any] | None:
        """Store an ``artifact.created`` with inline content; a reference-only result stays in the ledger."""
        if data.get("content_base64") is None:
            return None
        stored = await self._artifact_store(session).register_bytes(
            base64.b64decode(data["content_base64"]), artifact_type=data["artifact_type"],
            mime_type=data.get("mime_type"), name=data.get("name"), conversation_id=conversation_id,
            run_id=run_id, runner_id=runner_id, metadata=data.get("metadata") or {},
            artifact_id=data.get("artifact_id") or fallback_id)
        return _dump(stored)

    def _artifact_store(self, session: AsyncSession) -> Any:
        if self._artifacts is None:
            raise invalid_argument("artifact storage is not configured")
        return self._artifacts(session)

    async def w_steering_audit(self, session, *, records) -> int:
        log = EventLogStore(session)
        entries = []
        for r in records:
            status = r["status"]
            entries.append(EventLogEntry.system(
                f"steering.{status}", event_id=f"{r['source_event_id']}:steering.{status}",
                conversation_id=r.get("conversation_id"), thread_id=r.get("thread_id"),
                run_id=r.get("run_id"), runner_id=r.get("runner_id"),
                data={"source_event_id": r["source_event_id"]},
                metadata={"steering": {"status": status, "claimed_by_run_id": r.get("run_id"), "at": r.get("at")}}))
        count = await log.append_many(entries)
        for r in records:
            try:
                await log.update_metadata(r["source_event_id"], {"steering": {"status": r["status"]}})
            except Exception as exc:
                if getattr(exc, "code", None) is None or exc.code.value != "not_found":
                    raise
        return count

    async def w_finish_run(self, session, **op: Any) -> dict[str, Any]:
        """The run's closing facts in one transaction. The status moves first: a retry (the run is
        already final) changes nothing else, so the assistant item is new whenever it is written."""
        return (await self._finish_runs(session, [op]))[0]

    async def _finish_runs(self, session: AsyncSession, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`w_finish_run` for many runs: one UPDATE, one run-event INSERT, one transcript INSERT."""
        for op in ops:
            _finish_args(**op)
        ledger = RunLedgerStore(session)
        moved = await ledger.finish([(op["run_id"], op["status"], op["reason"]) for op in ops])
        done = [op for op in ops if op["run_id"] in moved]
        await ledger.append_rows([r for op in done for r in _frame_rows(op["run_id"], op["frames"])])
        assistant: list[TranscriptEntry] = []
        for op in done:
            if op.get("metadata"):
                await ledger.merge_metadata(op["run_id"], op["metadata"])
            if op.get("dropped"):
                await self.w_steering_audit(session, records=op["dropped"])
            if op.get("rollback_requested"):
                await self._rollback(session, op["run_id"], op.get("rollback") or [])
            elif (item := op.get("assistant")) is not None:
                assistant.append(TranscriptEntry(
                    transcript_id=item["transcript_id"], event_id=item["event_id"],
                    conversation_id=item["conversation_id"], thread_id=item.get("thread_id"),
                    bot_id=item.get("bot_id"), workspace_id=item.get("workspace_id"), run_id=op["run_id"],
                    role="assistant", item_type="message", content=item["text"],
                    metadata={"partial": True} if item.get("partial") else {}))
        await self._transcript(session).append_many(assistant, fresh=True)
        return [{"status": op["status"]} for op in ops]

    async def _rollback(self, session: AsyncSession, run_id: str, undo: list[dict[str, Any]]) -> None:
        """Revert the run's transcript items and state writes (newest write undone last-first)."""
        await self._transcript(session).revert_run(run_id)
        state = StateStore(session)
        for item in reversed(undo):
            previous = item.get("previous")
            if previous is None:
                await state.delete(item["scope_key"], item["key"])
            else:
                await state.set(item["scope_key"], item["key"], previous.get("value"),
                                scope=item["scope"], runner_id=item.get("runner_id") or "rollback")
        run = await RunLedgerStore(session).get(run_id, scope=_HOST)
        await EventLogStore(session).append(EventLogEntry.system(
            "run.rolled_back", event_id=f"{run_id}:rolled_back", conversation_id=run.conversation_id,
            thread_id=run.thread_id, run_id=run_id, runner_id=run.runner_id,
            data={"state_writes_reverted": len(undo)}))

    async def w_run_abort(self, session, *, run_id, frame, start=None, seen=()) -> dict[str, Any]:
        """Finalize a run its RunActor could not: the status ``frame`` (a terminal frame) implies,
        unless the run is already terminal. ``seen``: frames readers were shown that may not have
        been flushed yet — recorded first, so the ledger holds what the client saw and the terminal
        frame follows them. A run whose facts were never written is accepted now from ``start``
        (the kwargs of ``run_accept``), so the event and the failure are on record either way."""
        ledger = RunLedgerStore(session)
        try:
            run = await ledger.get(run_id, scope=_HOST)
        except RunnerHostError as exc:
            if exc.code is not ErrorCode.NOT_FOUND or start is None:
                return {"status": None}
            await self.w_run_accept(session, **{**start, "status": RunStatus.CREATED.value, "frames": ()})
            run = await ledger.get(run_id, scope=_HOST)
        if run.status in TERMINAL:
            return {"status": run.status}
        if seen:
            await ledger.append_rows(_frame_rows(run_id, [f for f in seen if not is_terminal(f)]))
        sequence = await self._abort(session, run, frame)
        return {"status": status_of_frame(frame).value, "sequence": sequence}

    async def _abort(self, session: AsyncSession, run: Any, frame: dict[str, Any]) -> int:
        """Append ``frame`` as the run's next event and move the run to its status; the sequence."""
        ledger = RunLedgerStore(session)
        last = await ledger.last_sequence(run.run_id)
        sequence = 0 if last is None else last + 1
        await ledger.append_rows(_frame_rows(run.run_id, [{**frame, "sequence": sequence}]))
        await ledger.transition(run.run_id, status_of_frame(frame).value, reason_of_frame(frame))
        return sequence

    async def w_system_event(self, session, *, event_type, event_id, run_id=None, runner_id=None,
                             conversation_id=None, thread_id=None, data=None) -> None:
        """A host-written EventLog record (idempotent on ``event_id``)."""
        await EventLogStore(session).append(EventLogEntry.system(
            event_type, event_id=event_id, conversation_id=conversation_id, thread_id=thread_id, run_id=run_id,
            runner_id=runner_id, data=data))

    async def w_request_cancel(self, session, *, run_id, reason=None) -> dict[str, Any]:
        """Ask a run that is not live here to stop: stamped in the ledger, honoured by its host
        (a queued run is cancelled before it starts)."""
        run = await RunLedgerStore(session).request_cancel(run_id, reason)
        return {"status": run.status, "cancel_requested": run.cancel_requested_at is not None}

    async def w_host_heartbeat(self, session, *, host_id, ray_address=None, ray_session=None,
                               info=None) -> None:
        await HostStore(session).heartbeat(host_id, ray_address=ray_address, ray_session=ray_session,
                                           info=info)

    async def w_host_stop(self, session, *, host_id) -> None:
        await HostStore(session).stop(host_id)

    async def w_reap_orphans(self, session, *, host_id, dead_after_s, grace_s, ray_address=None,
                             ray_session=None, limit=1000) -> dict[str, Any]:
        """Finalize (``host.lost``, retryable) the non-terminal runs nobody will finish: those of
        hosts that are gone (queued ones included) and those past deadline + ``grace_s``.
        Returns the finalized run ids and the gone hosts (their conversation lanes are released
        by the caller)."""
        gone = [h for h in await HostStore(session).gone(dead_after=dead_after_s, live_address=ray_address,
                                                         live_session=ray_session) if h != host_id]
        orphans = await RunLedgerStore(session).list_orphaned(gone_hosts=gone, overdue_before=time.time() - grace_s,
                                                              limit=limit)
        for run in orphans:
            await self._abort(session, run, Cause.HOST_LOST.frame(run.run_id))
        return {"finalized": [(r.run_id, r.agent_id) for r in orphans], "gone_hosts": gone}

    # -- retention (actors/core/retention.py) ------------------------------------------------
    async def w_retention(self, session, *, policy) -> dict[str, Any]:
        """One bounded round of the retention job (expired artifacts, stale harness sessions and
        their workspaces, old EventLog/Transcript rows where configured); returns its report."""
        report = await Retention(RetentionPolicy.model_validate(policy), self._artifacts).run(session)
        return report.as_dict()

    # -- reads ---------------------------------------------------------------------------
    async def read(self, session: AsyncSession, kind: str, kwargs: dict[str, Any]) -> Any:
        handler = getattr(self, f"r_{kind}", None)
        if handler is None:
            raise invalid_argument(f"unknown storage read {kind!r}")
        return _dump(await handler(session, **kwargs))

    async def r_history_page(self, session, *, conversation_id, before_cursor=None, after_cursor=None,
                             limit=50, direction="backward"):
        return await self._transcript(session).page(conversation_id, before_cursor=before_cursor,
                                                    after_cursor=after_cursor, limit=limit, direction=direction)

    async def r_history_search(self, session, *, conversation_id, query, top_k=10, filters=None):
        return await self._transcript(session).search(conversation_id, query, top_k=top_k, filters=filters or None)

    # Reads of events, runs and artifacts name a ReadScope (wire form); the runner API always
    # passes its run's own. Only the reads of one run by id default to the host's own scope:
    # the host (actors/core/driver.py) reads runs that way (join, cancel).
    async def r_event_get(self, session, *, event_id, scope):
        return await EventLogStore(session).get(event_id, scope=ReadScope.parse(scope))

    async def r_event_page(self, session, *, scope, event_types=None, before_cursor=None,
                           after_cursor=None, limit=50):
        return await EventLogStore(session).page(ReadScope.parse(scope), event_types=event_types,
                                                 before_cursor=before_cursor, after_cursor=after_cursor,
                                                 limit=limit)

    async def r_state_get(self, session, *, scope_key, key):
        entry = await StateStore(session).get(scope_key, key)
        return entry if entry is not None else {"key": key, "value": None, "updated_at": None}

    async def r_state_list(self, session, *, scope_key, prefix="", limit=100):
        return await StateStore(session).list(scope_key, prefix, limit)

    async def r_state_snapshot(self, session, *, scope_keys):
        return await StateStore(session).snapshot(scope_keys)

    async def r_run_get(self, session, *, run_id, scope=_HOST):
        return await RunLedgerStore(session).get(run_id, scope=ReadScope.parse(scope))

    async def r_run_list(self, session, *, scope, statuses=None, before_cursor=None, limit=50):
        return await RunLedgerStore(session).list(ReadScope.parse(scope), statuses=statuses,
                                                  before_cursor=before_cursor, limit=limit)

    async def r_run_events_page(self, session, *, run_id, scope=_HOST, after_cursor=None, before_cursor=None,
                                direction="forward", limit=50):
        ledger = RunLedgerStore(session)
        await ledger.get(run_id, scope=ReadScope.parse(scope))
        return await ledger.events_page(run_id, after_cursor=after_cursor, before_cursor=before_cursor,
                                        direction=direction, limit=limit)

    async def r_artifact_metadata(self, session, *, artifact_id, scope):
        return await self._artifact_store(session).metadata(artifact_id, scope=ReadScope.parse(scope))

    async def r_artifact_read(self, session, *, artifact_id, scope):
        return await self._artifact_store(session).read(artifact_id, scope=ReadScope.parse(scope))

    async def r_artifact_read_range(self, session, *, artifact_id, offset, length, scope):
        return await self._artifact_store(session).read_range(artifact_id, offset, length,
                                                              scope=ReadScope.parse(scope))

    async def r_knowledge_retrieve(self, session, *, kb_id, query, top_k=5, filters=None, query_vector=None,
                                   model_id=None):
        return await KnowledgeStore(session).retrieve(kb_id, query, top_k, filters=filters,
                                                      query_vector=query_vector, model_id=model_id)

    async def r_session_get(self, session, *, owner):
        return await RuntimeSessionStore(session).get_active(owner_from_dict(owner))

    async def r_knowledge_bases(self, session):
        return await KnowledgeStore(session).list_kbs()

    async def r_kv_get(self, session, *, area, namespace, key):
        return await KvStore(session).get(area, namespace, key)

    async def r_kv_keys(self, session, *, area, namespace, prefix=""):
        return await KvStore(session).keys(area, namespace, prefix)

    async def r_agents_list(self, session):
        return [{"agent_id": a.agent_id, "config": a.config.model_dump(mode="json"), "version": a.version}
                for a in await AgentStore(session).list()]

    async def r_event_submission(self, session, *, event_id):
        found = await EventLogStore(session).submission(event_id)
        return None if found is None else {"run_id": found[0], "body_sha256": found[1]}

    async def r_cancel_requested(self, session, *, owner_host):
        return await RunLedgerStore(session).list_cancel_requested(owner_host)

    async def r_run_events_from(self, session, *, run_id, sequence, limit=100):
        """The run's events with ``sequence`` ≥ ``sequence``, ascending (a joiner catching up)."""
        return await RunLedgerStore(session).events_page(run_id, from_sequence=sequence, limit=limit)

    async def r_transcript_count(self, session, *, conversation_id):
        seq, _ = await self._transcript(session).latest(conversation_id)
        return seq

    # -- embedding-backed knowledge bases (issue 11) ----------------------------------------------
    async def r_knowledge_missing_vectors(self, session, *, kb_id, model_id, limit=64):
        return await KnowledgeStore(session).missing_vectors(kb_id, model_id, limit)

    async def w_knowledge_vectors(self, session, *, kb_id, model_id, rows):
        return await KnowledgeStore(session).store_vectors(kb_id, model_id, rows)

    # -- console and observability reads (serve/console.py) ------------------------------
    # Read-only views for the operator console: filtered run lists and status counts, a
    # run's artifacts and steering audit, a conversation's state per scope.

    async def r_run_list_filtered(self, session, *, conversation_id=None, statuses=None, agent_id=None,
                                  created_after=None, created_before=None, before_cursor=None, limit=50):
        return await RunLedgerStore(session).list(
            ReadScope.admin(conversation_id), statuses=statuses, agent_id=agent_id, created_after=created_after,
            created_before=created_before, before_cursor=before_cursor, limit=limit)

    async def r_run_counts(self, session, *, by=("status",), conversation_id=None, agent_id=None,
                           created_after=None, created_before=None):
        return await RunLedgerStore(session).counts(
            by=list(by), conversation_id=conversation_id, agent_id=agent_id,
            created_after=created_after, created_before=created_before)

    async def r_run_artifacts(self, session, *, run_id, limit=100):
        await RunLedgerStore(session).get(run_id, scope=_HOST)
        return [_dump(a) for a in await self._artifact_store(session).list_for_run(run_id, limit=limit)]

    async def r_run_artifact_range(self, session, *, run_id, artifact_id, offset, length):
        """A range of a run's own artifact (another run's artifact is ``not_found`` here)."""
        store = self._artifact_store(session)
        meta = await store.metadata(artifact_id, scope=_HOST)
        if meta.run_id != run_id:
            raise RunnerHostError(ErrorCode.NOT_FOUND, "artifact not found for this run",
                                  details={"run_id": run_id, "artifact_id": artifact_id})
        if meta.size_bytes == 0:
            return {"artifact_id": artifact_id, "offset": 0, "length": 0, "total_size": 0, "eof": True,
                    "content_base64": "", "mime_type": meta.mime_type}
        return await store.read_range(artifact_id, offset, length, scope=_HOST)

    async def r_run_steering(self, session, *, run_id, limit=500):
        run = await RunLedgerStore(session).get(run_id, scope=_HOST)
        return [_dump(e) for e in await EventLogStore(session).steering_for_run(
            run_id, conversation_id=run.conversation_id,
            since=None if run.created_at is None else run.created_at - 1, limit=limit)]

    async def r_conversation_state(self, session, *, conversation_id, limit=100):
        """Current state of every scope the conversation's runs could address, grouped by scope.

        Scope keys are one-way hashes, so they are re-derived from the parts recorded with each
        run's inbound event (agent_id is the binding identity, see ``AgentBinding.identity``)."""
        groups: dict[str, dict[str, Any]] = {}
        state = StateStore(session)
        for ident in await EventLogStore(session).run_identities(conversation_id):
            for scope in STATE_SCOPES:
                try:
                    key = derive_scope_key(scope, ident["runner_id"], ident["agent_id"], ident["bot_id"],
                                    ident["workspace_id"], ident["conversation_id"], ident["thread_id"],
                                    ident["actor_type"], ident["actor_id"], ident["subject_type"],
                                    ident["subject_id"])
                except RunnerHostError:  # e.g. no subject on this event: no subject scope
                    continue
                if key in groups:
                    continue
                listed = await state.list(key, "", limit)
                if not listed.items:
                    continue
                who = {"actor": ident["actor_id"], "subject": ident["subject_id"],
                       "conversation": ident["thread_id"]}.get(scope)
                groups[key] = {"scope": scope, "scope_key": key, "agent_id": ident["agent_id"],
                               "runner_id": ident["runner_id"], "detail": who,
                               "items": [_dump(i) for i in listed.items], "has_more": listed.has_more}
        order = {name: i for i, name in enumerate(STATE_SCOPES)}
        return sorted(groups.values(), key=lambda g: (order[g["scope"]], g["agent_id"] or ""))


def _context_handles(conversation_id: str | None, is_message: bool, state: dict[str, Any], event_seq: int | None,
                     head: tuple[int, str | None] | None) -> dict[str, Any]:
    """What a starting run's context carries: its state snapshot and, in a conversation, where its
    transcript stands (``head``: the newest visible item's ``(seq, cursor)``)."""
    handles: dict[str, Any] = {"state": state}
    if conversation_id and head is not None:
        seq, cursor = head
        handles.update(transcript_seq=seq, latest_cursor=cursor,
                       has_history_before=seq > (1 if is_message else 0), event_seq=event_seq)
    return handles
