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

from protocol.errors import ErrorCode, RunnerHostError, invalid_argument
from protocol.events import EventEnvelope
from protocol.read_scope import ReadScope
from store.agents import AgentStore
from store.event_log import EventLogEntry, EventLogStore
from store.knowledge import KnowledgeStore
from store.kv import KvStore
from store.ledger import EventRow, RunLedgerStore
from store.runtime_sessions import RuntimeSessionStore, owner_from_dict
from store.state import StateStore
from store.transcript import TranscriptEntry, TranscriptStore

from .frames import failed_frame
from .retention import Retention, RetentionPolicy

TERMINAL = {"completed", "failed", "cancelled", "timeout"}
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


def _frame_rows(run_id: str, frames: list[dict[str, Any]]) -> list[EventRow]:
    """Ledger rows of relayed frames (frames without a sequence are not part of the run's stream)."""
    return [(run_id, f["sequence"], f["type"], f.get("data") or {})
            for f in frames if f.get("sequence") is not None]


class StorageService:
    def __init__(self, artifact_store_factory: Callable[[AsyncSession], Any] | None = None,
                 transcript_cap: int | None = None) -> None:
        self._artifacts = artifact_store_factory
        self._cap = transcript_cap

    def _transcript(self, session: AsyncSession) -> TranscriptStore:
        return TranscriptStore(session, cap=self._cap) if self._cap else TranscriptStore(session)

    # -- writes (one op inside a shared transaction) --------------------------------------
    async def write_batch(self, session: AsyncSession, ops: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Apply a group-commit batch in order; consecutive ``run_events`` ops of many runs
        become one bulk insert (the hot path of every streaming run)."""
        results: list[Any] = []
        i = 0
        while i < len(ops):
            kind, kwargs = ops[i]
            if kind != "run_events":
                results.append(await self.write(session, kind, kwargs))
                i += 1
                continue
            j = i
            while j < len(ops) and ops[j][0] == "run_events":
                j += 1
            group = [op_kwargs for _, op_kwargs in ops[i:j]]
            await RunLedgerStore(session).append_rows(
                [r for op_kwargs in group for r in _frame_rows(op_kwargs["run_id"], op_kwargs["frames"])])
            results.extend(len(op_kwargs["frames"]) for op_kwargs in group)
            i = j
        return results

    async def write(self, session: AsyncSession, kind: str, kwargs: dict[str, Any]) -> Any:
        handler: Callable[..., Awaitable[Any]] | None = getattr(self, f"w_{kind}", None)
        if handler is None:
            raise invalid_argument(f"unknown storage write {kind!r}")
        return await handler(session, **kwargs)

    async def _accept(self, session: AsyncSession, *, run_id: str | None, event: dict[str, Any],
                      agent_id: str | None, binding_id: str | None, runner_id: str | None,
                      metadata: dict[str, Any] | None = None) -> tuple[EventEnvelope, int | None]:
        """Log the event (and its user transcript item); return it with its event-log sequence."""
        envelope = EventEnvelope.model_validate(event)
        record = await EventLogStore(session).append(EventLogEntry.from_envelope(
            envelope, binding_id=binding_id, agent_id=agent_id, run_id=run_id, runner_id=runner_id,
            metadata=metadata))
        entry = user_transcript_entry(envelope, run_id)
        if entry is not None:
            await self._transcript(session).append_many([entry])
        return envelope, record.seq

    async def _create_run(self, session: AsyncSession, envelope: EventEnvelope, *, run_id: str,
                          agent_id: str, binding_id: str, runner_id: str, deadline_at: float,
                          running: bool = False) -> None:
        ledger = RunLedgerStore(session)
        await (ledger.start if running else ledger.create)(
            run_id, event_id=envelope.event_id, agent_id=agent_id, binding_id=binding_id, runner_id=runner_id,
            conversation_id=envelope.conversation_id, thread_id=envelope.thread_id, bot_id=envelope.bot_id,
            workspace_id=envelope.workspace_id, deadline_at=deadline_at)

    async def w_event_accept(self, session, *, event, binding_id, agent_id, runner_id, run_id=None,
                             metadata=None, ledger=None) -> dict[str, Any]:
        await self._accept(session, run_id=run_id, event=event, agent_id=agent_id, binding_id=binding_id,
                           runner_id=runner_id, metadata=metadata)
        return {"event_id": event["event_id"]}

    async def w_run_accept(self, session, *, run_id, event, agent_id, binding_id, runner_id, conversation_id,
                           deadline_at, scope_keys, frames=()) -> dict[str, Any]:
        envelope, _ = await self._accept(session, run_id=run_id, event=event, agent_id=agent_id,
                                         binding_id=binding_id, runner_id=runner_id)
        await self._create_run(session, envelope, run_id=run_id, agent_id=agent_id, binding_id=binding_id,
                               runner_id=runner_id, deadline_at=deadline_at)
        if frames:
            await RunLedgerStore(session).append_rows(_frame_rows(run_id, list(frames)))
        return {"run_id": run_id}

    async def w_start_run(self, session, *, run_id, event, agent_id, binding_id, runner_id, conversation_id,
                          deadline_at, scope_keys) -> dict[str, Any]:
        """Accept (idempotently) and mark running; return the context handles and state snapshot."""
        envelope, event_seq = await self._accept(session, run_id=run_id, event=event, agent_id=agent_id,
                                                 binding_id=binding_id, runner_id=runner_id)
        await self._create_run(session, envelope, run_id=run_id, agent_id=agent_id, binding_id=binding_id,
                               runner_id=runner_id, deadline_at=deadline_at, running=True)
        handles: dict[str, Any] = {"state": await StateStore(session).snapshot(scope_keys) if scope_keys else {}}
        if conversation_id:
            seq, cursor = await self._transcript(session).latest(conversation_id)
            handles.update(transcript_seq=seq, latest_cursor=cursor,
                           has_history_before=seq > (1 if envelope.is_message else 0),
                           event_seq=event_seq)
        return handles

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

    async def w_finish_run(self, session, *, run_id, status, reason, frames, assistant, dropped,
                           rollback=None, rollback_requested=False) -> dict[str, Any]:
        ledger = RunLedgerStore(session)
        await ledger.append_rows(_frame_rows(run_id, frames))
        if dropped:
            await self.w_steering_audit(session, records=dropped)
        if rollback_requested:
            await self._rollback(session, run_id, rollback or [])
        elif assistant is not None:
            await self._transcript(session).append_many([TranscriptEntry(
                transcript_id=assistant["transcript_id"], event_id=assistant["event_id"],
                conversation_id=assistant["conversation_id"], thread_id=assistant.get("thread_id"),
                bot_id=assistant.get("bot_id"), workspace_id=assistant.get("workspace_id"), run_id=run_id,
                role="assistant", item_type="message", content=assistant["text"],
                metadata={"partial": True} if assistant.get("partial") else {})])
        run = await ledger.transition(run_id, status, reason)
        return {"status": run.status}

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

    async def w_run_abort(self, session, *, run_id, code, message, frame, start=None) -> dict[str, Any]:
        """Finalize a run whose RunActor died: failed (retryable) unless already terminal.

        A run that died before its facts were written is accepted now (``start``), so the
        event and the failure are on record either way.
        """
        ledger = RunLedgerStore(session)
        try:
            run = await ledger.get(run_id, scope=_HOST)
        except RunnerHostError as exc:
            if exc.code is not ErrorCode.NOT_FOUND or start is None:
                return {"status": None}
            await self.w_run_accept(session, **start)
            run = await ledger.get(run_id, scope=_HOST)
        if run.status in TERMINAL:
            return {"status": run.status}
        page = await ledger.events_page(run_id, limit=100)
        last = page
        while last.has_more:
            last = await ledger.events_page(run_id, after_cursor=last.next_cursor, limit=100)
        seqs = [e.sequence for e in page.items] + [e.sequence for e in last.items]
        frame = {**frame, "sequence": (max(seqs) + 1) if seqs else 0}
        await ledger.append_rows(_frame_rows(run_id, [frame]))
        run = await ledger.transition(run_id, "failed", code)
        return {"status": run.status, "sequence": frame["sequence"]}

    async def w_recover_stale_runs(self, session, *, grace_s: float, include_queued: bool = True) -> int:
        """Fail runs left non-terminal past their deadline (their host died with them).

        A ``running`` run past its deadline has lost its driver: the RunActor ends every run at its
        deadline. A queued (``created``) run's deadline only starts when it does, so it is stale only
        when no host can still be holding it — at host start (``include_queued``), not in the sweep."""
        ledger = RunLedgerStore(session)
        cutoff = time.time() - grace_s
        stale = [r for r in await ledger.list_non_terminal()
                 if r.deadline_at is not None and r.deadline_at < cutoff
                 and (include_queued or r.status == "running")]
        for run in stale:
            await self.w_run_abort(session, run_id=run.run_id, code="host.lost",
                                   message="the host driving this run was lost", frame=failed_frame(
                                       run.run_id, "host.lost", "the host driving this run was lost", True, None))
        return len(stale)

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
    # actors/host.py reads runs that way (join, cancel).
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

    async def r_run_events_page(self, session, *, run_id, scope=_HOST, after_cursor=None, limit=50):
        ledger = RunLedgerStore(session)
        await ledger.get(run_id, scope=ReadScope.parse(scope))
        return await ledger.events_page(run_id, after_cursor=after_cursor, limit=limit)

    async def r_artifact_metadata(self, session, *, artifact_id, scope):
        return await self._artifact_store(session).metadata(artifact_id, scope=ReadScope.parse(scope))

    async def r_artifact_read(self, session, *, artifact_id, scope):
        return await self._artifact_store(session).read(artifact_id, scope=ReadScope.parse(scope))

    async def r_artifact_read_range(self, session, *, artifact_id, offset, length, scope):
        return await self._artifact_store(session).read_range(artifact_id, offset, length,
                                                              scope=ReadScope.parse(scope))

    async def r_knowledge_retrieve(self, session, *, kb_id, query, top_k=5):
        return await KnowledgeStore(session).retrieve(kb_id, query, top_k)

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

    async def r_transcript_count(self, session, *, conversation_id):
        seq, _ = await self._transcript(session).latest(conversation_id)
        return seq
