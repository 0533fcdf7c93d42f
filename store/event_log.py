"""EventLog: append-only record of every inbound event, system event and
steering audit record (SPEC §7, §8).

Invariants: ``event_id`` is the natural key (appends are idempotent); the
surrogate ``id`` is the global order and doubles as the event's ``seq``;
cursors are opaque ``event_log`` cursors over ``id``. Reads take a required
:class:`~protocol.read_scope.ReadScope`: pages are filtered by it, a read by id
outside it is ``unauthorized``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.errors import invalid_argument, not_found
from protocol.events import EventEnvelope, new_event_id
from protocol.pages import EventPage, EventRecord
from protocol.read_scope import ReadScope

from ._common import (
    Keyset,
    cap_text,
    check_limit,
    check_non_negative,
    check_optional_text,
    check_text,
    encode_json,
    epoch,
    fetch_keyset,
    in_scope,
    insert_rows,
    merge_json,
    now,
    oldest_first,
    require_in_scope,
    unique_by,
)
from .models import EventLog

INPUT_SUMMARY_CAP = 1000
#: Types the host itself writes (source ``"system"``).
SYSTEM_EVENT_TYPES = frozenset({"steering.injected", "steering.dropped", "run.rolled_back",
                                "session.resume_failed"})
#: Event columns that identify whose state a run could address (agent_id = the binding identity).
RUN_IDENTITY_COLUMNS = ("agent_id", "runner_id", "bot_id", "workspace_id", "conversation_id", "thread_id",
                        "actor_type", "actor_id", "subject_type", "subject_id")
#: The records that resolve a steered event: pulled by the run, or never pulled.
STEERING_AUDIT_TYPES = frozenset({"steering.injected", "steering.dropped"})

_T = EventLog.__table__
_KEYSET = Keyset("event_log", ("id",), (int,))


@dataclass(frozen=True, slots=True, kw_only=True)
class EventLogEntry:
    """One row to append. Build inbound rows with :meth:`from_envelope` and host
    records with :meth:`system`; ``metadata`` holds e.g. ``{"steering": {...}}``."""

    event_id: str
    event_type: str
    source: str
    event_time: float | None = None
    source_event_type: str | None = None
    bot_id: str | None = None
    workspace_id: str | None = None
    conversation_id: str | None = None
    thread_id: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    actor_name: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    input_summary: str | None = None
    input_json: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    raw_ref: str | None = None
    binding_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    runner_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float | None = None
    body_sha256: str | None = None

    @classmethod
    def from_envelope(cls, envelope: EventEnvelope, *, binding_id: str | None = None,
                      agent_id: str | None = None, run_id: str | None = None,
                      runner_id: str | None = None,
                      metadata: dict[str, Any] | None = None,
                      body_sha256: str | None = None) -> "EventLogEntry":
        """The log row of an inbound event (``raw_ref`` keeps ``ref_id`` or ``storage_key``)."""
        raw = envelope.raw_ref
        subject = envelope.subject
        return cls(
            event_id=envelope.event_id, event_type=envelope.event_type, source=envelope.source,
            event_time=float(envelope.event_time), source_event_type=envelope.source_event_type,
            bot_id=envelope.bot_id, workspace_id=envelope.workspace_id,
            conversation_id=envelope.conversation_id, thread_id=envelope.thread_id,
            actor_type=envelope.actor.actor_type, actor_id=envelope.actor.actor_id,
            actor_name=envelope.actor.actor_name,
            subject_type=subject.subject_type if subject else None,
            subject_id=subject.subject_id if subject else None,
            input_summary=envelope.input.to_text() or None,
            input_json=envelope.input.model_dump(mode="json"),
            data=envelope.data or None,
            raw_ref=(raw.ref_id or raw.storage_key) if raw else None,
            binding_id=binding_id, agent_id=agent_id, run_id=run_id, runner_id=runner_id,
            metadata=dict(metadata or {}), body_sha256=body_sha256,
        )

    @classmethod
    def system(cls, event_type: str, *, conversation_id: str | None = None,
               thread_id: str | None = None, bot_id: str | None = None,
               workspace_id: str | None = None, run_id: str | None = None,
               runner_id: str | None = None, data: dict[str, Any] | None = None,
               metadata: dict[str, Any] | None = None,
               event_id: str | None = None) -> "EventLogEntry":
        """A host-written record (``steering.injected``, ``run.rolled_back``, …).
        Pass a deterministic ``event_id`` when the write may be retried."""
        return cls(event_id=event_id or new_event_id(), event_type=event_type, source="system",
                   event_time=now(), conversation_id=conversation_id, thread_id=thread_id,
                   bot_id=bot_id, workspace_id=workspace_id, run_id=run_id, runner_id=runner_id,
                   data=data, metadata=dict(metadata or {}))


class EventLogStore:
    """Repository over ``event_log``; all methods act inside the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # -- writes ---------------------------------------------------------------
    async def append(self, entry: EventLogEntry) -> EventRecord:
        """Append one event; a retry with a known ``event_id`` returns the stored row."""
        return (await self.append_new(entry))[1]

    async def append_new(self, entry: EventLogEntry) -> tuple[bool, EventRecord]:
        """Append one event: ``(True, row)`` when it is new, ``(False, stored row)`` when its
        ``event_id`` was already logged (nothing is written then)."""
        _, rows = await insert_rows(self._session, _T, [_row(entry, now())],
                                    conflict=("event_id",), returning=list(_T.c))
        if rows:
            return True, _record(rows[0])
        return False, await self.get(entry.event_id, scope=ReadScope.host())

    async def insert(self, entries: Sequence[EventLogEntry]) -> dict[str, int]:
        """Append events in one statement: ``{event_id: seq}`` (the log's ``id``) of those that
        are new; an ``event_id`` already logged (or repeated) writes nothing. The hot path's lean
        form of :meth:`append_many`."""
        stamp = now()
        rows = [_row(e, stamp) for e in unique_by(entries, lambda e: e.event_id)]
        _, returned = await insert_rows(self._session, _T, rows, conflict=("event_id",),
                                        returning=(_T.c.event_id, _T.c.id))
        return {r.event_id: r.id for r in returned}

    async def submission(self, event_id: str) -> tuple[str | None, str | None] | None:
        """``(run_id, body_sha256)`` of a logged inbound event, ``None`` when unknown."""
        check_text(event_id, "event_id", max_len=128)
        row = (await self._session.execute(select(_T.c.run_id, _T.c.body_sha256)
                                           .where(_T.c.event_id == event_id))).one_or_none()
        return None if row is None else (row.run_id, row.body_sha256)

    async def append_many(self, entries: Sequence[EventLogEntry]) -> int:
        """Append with one batched multi-row INSERT; returns how many rows were new."""
        stamp = now()
        rows = [_row(e, stamp) for e in unique_by(entries, lambda e: e.event_id)]
        count, _ = await insert_rows(self._session, _T, rows, conflict=("event_id",))
        return count

    async def update_metadata(self, event_id: str, patch: Mapping[str, Any]) -> EventRecord:
        """Deep-merge ``patch`` into the event's metadata (row-locked read-modify-write)."""
        check_text(event_id, "event_id", max_len=128)
        if not isinstance(patch, Mapping):
            raise invalid_argument("metadata patch must be an object")
        encode_json(patch, field="metadata patch", max_bytes=None)
        current = (await self._session.execute(
            select(_T.c.metadata_json).where(_T.c.event_id == event_id).with_for_update()
        )).scalar_one_or_none()
        if current is None:
            raise not_found("event not found", event_id=event_id)
        row = (await self._session.execute(
            update(_T).where(_T.c.event_id == event_id)
            .values(metadata_json=merge_json(current, patch)).returning(*_T.c)
        )).one()
        return _record(row)

    async def cleanup_older_than(self, seconds: float, *, limit: int | None = None) -> int:
        """Delete events created more than ``seconds`` ago (at most ``limit``, oldest first);
        returns the count."""
        cutoff = now() - check_non_negative(seconds, "seconds")
        condition = oldest_first(_T, _T.c.created_at < cutoff, limit)
        return (await self._session.execute(delete(_T).where(condition))).rowcount or 0

    # -- reads ----------------------------------------------------------------
    async def get(self, event_id: str, *, scope: ReadScope) -> EventRecord:
        """The event; one outside ``scope`` → ``unauthorized``."""
        check_text(event_id, "event_id", max_len=128)
        row = (await self._session.execute(select(_T).where(_T.c.event_id == event_id))).one_or_none()
        if row is None:
            raise not_found("event not found", event_id=event_id)
        return _record(require_in_scope(row, scope, "event", event_id=event_id))

    async def page(self, scope: ReadScope, *,
                   event_types: Sequence[str] | None = None, before_cursor: str | None = None,
                   after_cursor: str | None = None, limit: int = 50) -> EventPage:
        """One page of the events inside ``scope`` (e.g. one conversation's). With
        ``after_cursor`` only, the page runs forward (oldest first); otherwise
        backward (newest first). ``next_cursor`` continues in the page's direction
        and is set iff ``has_more``; ``prev_cursor`` (first item) pages the other way."""
        check_limit(limit)
        before, after = _KEYSET.decode(before_cursor), _KEYSET.decode(after_cursor)
        backward = before is not None or after is None
        query = self._filtered(None, event_types).where(in_scope(_T, scope))
        rows, has_more = await fetch_keyset(self._session, query,
                                            [_T.c.id], before=before, after=after, limit=limit,
                                            backward=backward)
        items = [_record(r) for r in rows]
        return EventPage(items=items, has_more=has_more,
                         next_cursor=items[-1].cursor if has_more else None,
                         prev_cursor=items[0].cursor if items else None)

    async def latest_cursor(self, conversation_id: str | None = None) -> str | None:
        """Cursor of the newest event (of the conversation), ``None`` when empty."""
        query = select(func.max(_T.c.id))
        if check_optional_text(conversation_id, "conversation_id") is not None:
            query = query.where(_T.c.conversation_id == conversation_id)
        last = (await self._session.execute(query)).scalar_one_or_none()
        return None if last is None else _KEYSET.encode((last,))

    async def has_before(self, conversation_id: str | None, cursor: str) -> bool:
        """Whether any event (of the conversation) precedes ``cursor``."""
        (position,) = _KEYSET.decode(cursor)  # type: ignore[misc]
        query = self._filtered(conversation_id, None).where(_T.c.id < position).limit(1)
        return (await self._session.execute(query)).first() is not None

    async def count(self, conversation_id: str | None = None,
                    event_type: str | None = None) -> int:
        query = select(func.count()).select_from(_T)
        if check_optional_text(conversation_id, "conversation_id") is not None:
            query = query.where(_T.c.conversation_id == conversation_id)
        if check_optional_text(event_type, "event_type", max_len=128) is not None:
            query = query.where(_T.c.event_type == event_type)
        return (await self._session.execute(query)).scalar_one()

    async def run_identities(self, conversation_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The distinct (agent, runner, bot, workspace, thread, actor, subject) combinations of
        the conversation's events that started runs, newest first: the parts from which the
        state scope keys its runs used are derived (see :func:`store.state.scope_key`)."""
        check_text(conversation_id, "conversation_id")
        check_limit(limit)
        columns = [_T.c[name] for name in RUN_IDENTITY_COLUMNS]
        rows = (await self._session.execute(
            select(*columns, func.max(_T.c.id).label("last"))
            .where(_T.c.conversation_id == conversation_id, _T.c.run_id.is_not(None),
                   _T.c.agent_id.is_not(None), _T.c.runner_id.is_not(None))
            .group_by(*columns).order_by(func.max(_T.c.id).desc()).limit(limit))).all()
        return [{name: getattr(r, name) for name in RUN_IDENTITY_COLUMNS} for r in rows]

    async def steering_for_run(self, run_id: str, *, conversation_id: str | None,
                               since: float | None = None, limit: int = 500) -> list[EventRecord]:
        """The steering audit of one run, oldest first: inbound events claimed into it
        (``metadata.steering.claimed_by_run_id``) and its ``steering.injected`` /
        ``steering.dropped`` records. Claimed events carry no ``run_id``, so they are found
        among the conversation's events since ``since`` (the run's creation), at most ``limit``."""
        check_text(run_id, "run_id", max_len=128)
        check_limit(limit, 1000)
        records = (await self._session.execute(
            select(_T).where(_T.c.run_id == run_id, _T.c.event_type.in_(sorted(STEERING_AUDIT_TYPES)))
            .order_by(_T.c.id).limit(limit))).all()
        claimed: list[Row[Any]] = []
        if check_optional_text(conversation_id, "conversation_id") is not None:
            query = select(_T).where(_T.c.conversation_id == conversation_id, _T.c.run_id.is_(None))
            if since is not None:
                query = query.where(_T.c.created_at >= check_non_negative(since, "since"))
            candidates = (await self._session.execute(query.order_by(_T.c.id).limit(limit))).all()
            claimed = [r for r in candidates
                       if ((r.metadata_json or {}).get("steering") or {}).get("claimed_by_run_id") == run_id]
        return [_record(r) for r in sorted([*claimed, *records], key=lambda r: r.id)]

    @staticmethod
    def _filtered(conversation_id: str | None, event_types: Sequence[str] | None):
        query = select(_T)
        if check_optional_text(conversation_id, "conversation_id") is not None:
            query = query.where(_T.c.conversation_id == conversation_id)
        if event_types is not None:
            if isinstance(event_types, str) or not event_types:
                raise invalid_argument("event_types must be a non-empty list of strings")
            for event_type in event_types:
                check_text(event_type, "event_types", max_len=128)
            query = query.where(_T.c.event_type.in_(list(event_types)))
        return query


def _row(entry: EventLogEntry, stamp: float) -> dict[str, Any]:
    check_text(entry.event_id, "event_id", max_len=128)
    check_text(entry.event_type, "event_type", max_len=128)
    check_text(entry.source, "source", max_len=32)
    return {
        "event_id": entry.event_id, "event_type": entry.event_type, "source": entry.source,
        "source_event_type": entry.source_event_type, "bot_id": entry.bot_id,
        "workspace_id": entry.workspace_id, "conversation_id": entry.conversation_id,
        "thread_id": entry.thread_id, "actor_type": entry.actor_type, "actor_id": entry.actor_id,
        "actor_name": entry.actor_name, "subject_type": entry.subject_type,
        "subject_id": entry.subject_id,
        "input_summary": cap_text(entry.input_summary, INPUT_SUMMARY_CAP)[0],
        "input_json": entry.input_json, "data_json": entry.data, "raw_ref": entry.raw_ref,
        "binding_id": entry.binding_id, "agent_id": entry.agent_id, "run_id": entry.run_id,
        "runner_id": entry.runner_id, "metadata_json": dict(entry.metadata),
        "event_time": entry.event_time,
        "created_at": entry.created_at if entry.created_at is not None else stamp,
        "body_sha256": entry.body_sha256,
    }


def _record(row: Row[Any]) -> EventRecord:
    return EventRecord(
        event_id=row.event_id, event_type=row.event_type, event_time=epoch(row.event_time),
        source=row.source, bot_id=row.bot_id, workspace_id=row.workspace_id,
        conversation_id=row.conversation_id, thread_id=row.thread_id,
        actor_type=row.actor_type, actor_id=row.actor_id, actor_name=row.actor_name,
        subject_type=row.subject_type, subject_id=row.subject_id,
        input_summary=row.input_summary, raw_ref=row.raw_ref, seq=row.id,
        cursor=_KEYSET.encode((row.id,)), created_at=epoch(row.created_at),
        metadata=row.metadata_json or {},
    )
