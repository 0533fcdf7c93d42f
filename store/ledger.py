"""Run ledger: ``agent_run`` (one row per run) and ``agent_run_event`` (every
result of a run, replayable) — SPEC §7, §9.

Invariants:

* ``create`` is idempotent on ``run_id``; ``append_event(s)`` on
  ``(run_id, sequence)`` — a used sequence adds no row.
* status moves only along :data:`TRANSITIONS` (created → running | cancelled |
  failed; running → completed | failed | cancelled | timeout; terminal states
  are final). Each transition is one conditional ``UPDATE``, so concurrent
  transitions cannot both win. Re-applying the current status is an
  idempotent no-op (retries are safe); anything else illegal →
  ``invalid_argument`` with ``details={"from", "to"}``.
* reads take a required :class:`~protocol.read_scope.ReadScope`: ``list`` is
  filtered by it, ``get`` of a run outside it is ``unauthorized``.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.errors import invalid_argument, not_found
from protocol.lifecycle import TERMINAL_STATUSES as _TERMINAL
from protocol.pages import RunEventPage, RunEventRecord, RunPage, RunRecord
from protocol.read_scope import ReadScope

from ._common import (
    Keyset,
    check_limit,
    check_non_negative,
    check_optional_text,
    check_storable,
    check_row,
    check_text,
    dialect_name,
    encode_json,
    epoch,
    fetch_keyset,
    in_scope,
    insert_for,
    insert_rows,
    merge_json,
    now,
    require_in_scope,
)
from .models import RUN_STATUSES, AgentRun, AgentRunEvent

TERMINAL_STATUSES = frozenset(s.value for s in _TERMINAL)
NON_TERMINAL_STATUSES = ("created", "running")
TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"completed", "failed", "cancelled", "timeout"}),
}
#: Columns :meth:`RunLedgerStore.counts` may group by.
COUNT_GROUPS = ("status", "agent_id", "runner_id", "status_reason", "conversation_id")
#: Largest encoded ``data`` of one run event.
MAX_EVENT_DATA_BYTES = 1 << 20

_R = AgentRun.__table__
_E = AgentRunEvent.__table__
_RUNS = Keyset("run_list", ("t", "r"), (float, str))
_EVENTS = Keyset("run_event", ("n",), (int,))
_HOST = ReadScope.host()  # the ledger's own bookkeeping reads

#: One result of a run as the hot path hands it over: (run_id, sequence, type, data).
EventRow = tuple[str, int, str, dict[str, Any]]

# Postgres: every row of a batch in one statement — five arrays, one round trip, one plan —
# instead of a multi-row VALUES list rebuilt per batch. Rows of unknown runs are skipped by
# the EXISTS (the caller is told via not_found); used (run_id, sequence) pairs by ON CONFLICT.
_PG_BULK_EVENTS = text(
    "INSERT INTO agent_run_event (run_id, sequence, type, data_json, created_at) "
    "SELECT u.run_id, u.sequence, u.type, CAST(u.data AS jsonb), u.created_at "
    "FROM unnest(CAST(:run_ids AS text[]), CAST(:sequences AS bigint[]), CAST(:types AS text[]), "
    "CAST(:datas AS text[]), CAST(:stamps AS float8[])) AS u(run_id, sequence, type, data, created_at) "
    "WHERE EXISTS (SELECT 1 FROM agent_run r WHERE r.run_id = u.run_id) "
    "ON CONFLICT (run_id, sequence) DO NOTHING")


def _pg_finish() -> Any:
    """Many runs to their terminal statuses in one statement, each only from a status it may leave
    (the sources of :data:`TRANSITIONS`, spelled out once here from the table itself)."""
    allowed = " OR ".join(
        f"(u.status = '{target}' AND r.status IN ({', '.join(repr(s) for s in sorted(sources))}))"
        for target, sources in sorted(_sources_by_target().items()))
    return text(
        "UPDATE agent_run AS r SET status = u.status, status_reason = COALESCE(u.reason, r.status_reason), "
        "finished_at = :stamp, updated_at = :stamp "
        "FROM unnest(CAST(:run_ids AS text[]), CAST(:statuses AS text[]), CAST(:reasons AS text[])) "
        "AS u(run_id, status, reason) "
        f"WHERE r.run_id = u.run_id AND ({allowed}) RETURNING r.run_id")


def _sources_by_target() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for source, targets in TRANSITIONS.items():
        for target in targets & TERMINAL_STATUSES:
            out.setdefault(target, set()).add(source)
    return out


_PG_FINISH = _pg_finish()

# Postgres: queued runs of a batch move on to running in one statement, each with its own deadline.
_PG_START_QUEUED = text(
    "UPDATE agent_run AS r SET status = 'running', started_at = :stamp, updated_at = :stamp, "
    "deadline_at = COALESCE(u.deadline_at, r.deadline_at) "
    "FROM unnest(CAST(:run_ids AS text[]), CAST(:deadlines AS float8[])) AS u(run_id, deadline_at) "
    "WHERE r.run_id = u.run_id AND r.status = 'created' AND r.cancel_requested_at IS NULL "
    "RETURNING r.run_id, r.conversation_id")


class RunLedgerStore:
    """Repository over ``agent_run`` and ``agent_run_event``."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # -- runs -----------------------------------------------------------------
    async def record(self, runs: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Record new runs ``(run_id, status, fields)`` — ``created`` or ``running``, ``fields`` as
        in :meth:`create` — in one statement; a retry changes nothing. The hot path's lean form of
        :meth:`create` / :meth:`start` for runs whose rows cannot exist yet or are this very write's."""
        stamp = now()
        rows = []
        for run_id, status, fields in runs:
            check_text(run_id, "run_id", max_len=128)
            if status not in NON_TERMINAL_STATUSES:
                raise invalid_argument(f"a new run is created or running, not {status!r}")
            rows.append(_new_run_row(run_id, status, stamp, **fields))
        await insert_rows(self._session, _R, rows, conflict=("run_id",), returning=(_R.c.run_id,))

    async def create(self, run_id: str, *, event_id: str | None = None,
                     agent_id: str | None = None, binding_id: str | None = None,
                     runner_id: str | None = None, conversation_id: str | None = None,
                     thread_id: str | None = None, bot_id: str | None = None,
                     workspace_id: str | None = None, deadline_at: float | None = None,
                     metadata: dict[str, Any] | None = None, owner_host: str | None = None) -> RunRecord:
        """Record a new run in status ``created``; a retry returns the stored run."""
        check_text(run_id, "run_id", max_len=128)
        _, rows = await insert_rows(self._session, _R, [_new_run_row(
            run_id, "created", now(), event_id=event_id, agent_id=agent_id, binding_id=binding_id,
            runner_id=runner_id, conversation_id=conversation_id, thread_id=thread_id, bot_id=bot_id,
            workspace_id=workspace_id, deadline_at=deadline_at, metadata=metadata,
            owner_host=owner_host)],
            conflict=("run_id",), returning=list(_R.c))
        return _run(rows[0]) if rows else await self.get(run_id, scope=_HOST)

    async def start(self, run_id: str, **fields: Any) -> RunRecord:
        """Record the run as ``running`` in one statement: a new row (with ``fields`` as in
        :meth:`create`) or the ``created`` row of a queued run moved on (its ``deadline_at``
        replaced when given: the clock starts when the run does). A retry returns the running
        run; a run already past ``running`` → ``invalid_argument`` as in :meth:`transition`."""
        check_text(run_id, "run_id", max_len=128)
        stamp = now()
        row = _new_run_row(run_id, "running", stamp, **fields)
        check_row(_R, row)
        moved_on: dict[str, Any] = {"status": "running", "started_at": stamp, "updated_at": stamp}
        if fields.get("deadline_at") is not None:
            moved_on["deadline_at"] = fields["deadline_at"]
        stmt = insert_for(self._session, _R).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id"], where=_R.c.status == "created", set_=moved_on)
        found = (await self._session.execute(stmt.returning(*_R.c))).one_or_none()
        return _run(found) if found is not None else await self._already(run_id, "running")

    async def start_queued(self, runs: Sequence[tuple[str, float | None]]) -> dict[str, str | None]:
        """Move queued runs ``(run_id, deadline_at)`` from ``created`` to ``running`` (the deadline
        replaced when given: the clock starts when the run does) — unless a cancellation was
        requested while they waited. ``{run_id: conversation_id}`` of the runs this call moved; the
        others (cancel requested, already moved by an earlier try, unknown) are the caller's to
        look at one by one. One statement on Postgres. The hot path's lean form of :meth:`start`."""
        for run_id, _ in runs:
            check_text(run_id, "run_id", max_len=128)
        stamp = now()
        if dialect_name(self._session) == "postgresql" and len(runs) > 1:
            rows = await self._session.execute(_PG_START_QUEUED, {
                "run_ids": [r[0] for r in runs], "deadlines": [r[1] for r in runs], "stamp": stamp})
            return {row.run_id: row.conversation_id for row in rows}
        moved: dict[str, str | None] = {}
        for run_id, deadline_at in runs:
            values: dict[str, Any] = {"status": "running", "started_at": stamp, "updated_at": stamp}
            if deadline_at is not None:
                values["deadline_at"] = deadline_at
            row = (await self._session.execute(
                update(_R).where(_R.c.run_id == run_id, _R.c.status == "created", _R.c.cancel_requested_at.is_(None))
                .values(**values).returning(_R.c.run_id, _R.c.conversation_id))).one_or_none()
            if row is not None:
                moved[row.run_id] = row.conversation_id
        return moved

    async def finish(self, runs: Sequence[tuple[str, str, str | None]]) -> set[str]:
        """Move runs ``(run_id, terminal status, reason)`` to their status (see :meth:`transition`):
        the ids this call moved. A run already in its status (a retry) is left alone; any other
        illegal move → ``invalid_argument``. One statement on Postgres. The hot path's lean form."""
        for run_id, status, reason in runs:
            check_text(run_id, "run_id", max_len=128)
            if status not in TERMINAL_STATUSES:
                raise invalid_argument(f"{status!r} is not a terminal run status", allowed=sorted(TERMINAL_STATUSES))
            if reason is not None:
                check_storable(reason, "reason")
        stamp = now()
        if dialect_name(self._session) == "postgresql" and len(runs) > 1:
            rows = await self._session.execute(_PG_FINISH, {
                "run_ids": [r[0] for r in runs], "statuses": [r[1] for r in runs],
                "reasons": [r[2] for r in runs], "stamp": stamp})
            moved = {row.run_id for row in rows}
        else:
            moved = set()
            for run_id, status, reason in runs:
                values: dict[str, Any] = {"status": status, "updated_at": stamp, "finished_at": stamp}
                if reason is not None:
                    values["status_reason"] = reason
                sources = [s for s, targets in TRANSITIONS.items() if status in targets]
                row = (await self._session.execute(
                    update(_R).where(_R.c.run_id == run_id, _R.c.status.in_(sources))
                    .values(**values).returning(_R.c.run_id))).one_or_none()
                if row is not None:
                    moved.add(run_id)
        for run_id, status, _ in runs:
            if run_id not in moved:
                await self._already(run_id, status)  # same status: a retry; anything else: invalid_argument
        return moved

    async def transition(self, run_id: str, status: str, reason: str | None = None) -> RunRecord:
        """Move the run to ``status`` (see the module invariants); returns the run.
        ``started_at`` is stamped on ``running``, ``finished_at`` on a terminal status;
        ``reason`` (when given) replaces ``status_reason``."""
        check_text(run_id, "run_id", max_len=128)
        if status not in RUN_STATUSES:
            raise invalid_argument(f"unknown run status {status!r}", allowed=list(RUN_STATUSES))
        stamp = now()
        values: dict[str, Any] = {"status": status, "updated_at": stamp}
        if reason is not None:
            values["status_reason"] = check_storable(reason, "reason")
        if status == "running":
            values["started_at"] = stamp
        if status in TERMINAL_STATUSES:
            values["finished_at"] = stamp
        sources = [s for s, targets in TRANSITIONS.items() if status in targets]
        row = (await self._session.execute(
            update(_R).where(_R.c.run_id == run_id, _R.c.status.in_(sources))
            .values(**values).returning(*_R.c))).one_or_none()
        return _run(row) if row is not None else await self._already(run_id, status)

    async def _already(self, run_id: str, status: str) -> RunRecord:
        """After a status change matched no row: the run when it already is in ``status`` (a retry),
        else the change was illegal → ``invalid_argument`` with ``details={"from", "to"}``."""
        current = await self.get(run_id, scope=_HOST)
        if current.status == status:
            return current
        raise invalid_argument(f"illegal run status transition {current.status} → {status}",
                               **{"from": current.status, "to": status, "run_id": run_id})

    async def request_cancel(self, run_id: str, reason: str | None = None) -> RunRecord:
        """Stamp ``cancel_requested_at`` once (first request wins); a finished run
        is returned unchanged. The run's actor performs the actual cancellation."""
        check_text(run_id, "run_id", max_len=128)
        stamp = now()
        values: dict[str, Any] = {"cancel_requested_at": stamp, "updated_at": stamp}
        if reason is not None:
            values["status_reason"] = check_storable(reason, "reason")
        row = (await self._session.execute(
            update(_R).where(_R.c.run_id == run_id, _R.c.cancel_requested_at.is_(None),
                             _R.c.status.in_(NON_TERMINAL_STATUSES))
            .values(**values).returning(*_R.c))).one_or_none()
        return _run(row) if row is not None else await self.get(run_id, scope=_HOST)

    async def merge_metadata(self, run_id: str, patch: dict[str, Any]) -> None:
        """Deep-merge ``patch`` into the run's ``metadata`` (row-locked read-modify-write)."""
        check_text(run_id, "run_id", max_len=128)
        encode_json(patch, field="run metadata", max_bytes=None)
        current = (await self._session.execute(
            select(_R.c.metadata_json).where(_R.c.run_id == run_id).with_for_update())).scalar_one_or_none()
        if current is None:
            raise not_found("run not found", run_id=run_id)
        await self._session.execute(update(_R).where(_R.c.run_id == run_id)
                                    .values(metadata_json=merge_json(current, patch)))

    async def get(self, run_id: str, *, scope: ReadScope) -> RunRecord:
        """The run; one outside ``scope`` → ``unauthorized``."""
        check_text(run_id, "run_id", max_len=128)
        row = (await self._session.execute(select(_R).where(_R.c.run_id == run_id))).one_or_none()
        if row is None:
            raise not_found("run not found", run_id=run_id)
        return _run(require_in_scope(row, scope, "run", run_id=run_id))

    async def list(self, scope: ReadScope, *,
                   statuses: Sequence[str] | None = None, before_cursor: str | None = None,
                   after_cursor: str | None = None, limit: int = 50, agent_id: str | None = None,
                   created_after: float | None = None, created_before: float | None = None) -> RunPage:
        """The runs inside ``scope`` (e.g. one conversation's) ordered by ``(created_at, run_id)``:
        newest first (backward, the default) or oldest first when only ``after_cursor`` is given.
        ``total_count`` counts every run matching the filters; ``created_after`` /
        ``created_before`` bound ``created_at`` (epoch seconds, inclusive / exclusive)."""
        check_limit(limit)
        query = select(_R).where(in_scope(_R, scope))
        if statuses is not None:
            if isinstance(statuses, str) or not set(statuses) <= set(RUN_STATUSES):
                raise invalid_argument("statuses must be a list of run statuses",
                                       allowed=list(RUN_STATUSES))
            query = query.where(_R.c.status.in_(list(statuses)))
        query = _filter_runs(query, agent_id=agent_id, created_after=created_after,
                             created_before=created_before)
        before, after = _RUNS.decode(before_cursor), _RUNS.decode(after_cursor)
        backward = before is not None or after is None
        total = (await self._session.execute(
            select(func.count()).select_from(query.subquery()))).scalar_one()
        rows, has_more = await fetch_keyset(self._session, query, [_R.c.created_at, _R.c.run_id],
                                            before=before, after=after, limit=limit,
                                            backward=backward)
        cursors = [_RUNS.encode((r.created_at, r.run_id)) for r in rows]
        return RunPage(items=[_run(r) for r in rows], has_more=has_more, total_count=total,
                       next_cursor=cursors[-1] if has_more else None,
                       prev_cursor=cursors[0] if cursors else None)

    async def counts(self, *, by: Sequence[str] = ("status",), conversation_id: str | None = None,
                     agent_id: str | None = None, created_after: float | None = None,
                     created_before: float | None = None) -> list[dict[str, Any]]:
        """How many runs match the filters, grouped by the columns ``by`` (a subset of
        :data:`COUNT_GROUPS`): one ``{column: value, …, "count": n}`` per group, sorted by
        the group values. What the console's status counts and the metrics check read."""
        if isinstance(by, str) or not by or not set(by) <= set(COUNT_GROUPS):
            raise invalid_argument("by must be a non-empty list of run columns", allowed=list(COUNT_GROUPS))
        columns = [_R.c[name] for name in dict.fromkeys(by)]
        query = select(*columns, func.count().label("count"))
        if check_optional_text(conversation_id, "conversation_id") is not None:
            query = query.where(_R.c.conversation_id == conversation_id)
        query = _filter_runs(query, agent_id=agent_id, created_after=created_after,
                             created_before=created_before)
        rows = (await self._session.execute(query.group_by(*columns))).all()
        out = [{**{c.name: getattr(r, c.name) for c in columns}, "count": int(r.count)} for r in rows]
        return sorted(out, key=lambda g: tuple("" if g[c.name] is None else str(g[c.name]) for c in columns))

    async def list_non_terminal(self) -> list[RunRecord]:
        """Runs still ``created`` or ``running`` (crash recovery), oldest first."""
        rows = await self._session.execute(
            select(_R).where(_R.c.status.in_(NON_TERMINAL_STATUSES))
            .order_by(_R.c.created_at, _R.c.run_id))
        return [_run(r) for r in rows]

    async def list_orphaned(self, *, gone_hosts: Sequence[str], overdue_before: float,
                            limit: int = 1000) -> list[RunRecord]:
        """Non-terminal runs nobody will finish, oldest first: those owned by a host that is gone,
        and those ``running`` (or, with no recorded owner, ``created``) past ``overdue_before`` —
        a live host ends each of its runs at its deadline."""
        overdue = and_(_R.c.deadline_at.is_not(None), _R.c.deadline_at < overdue_before,
                       or_(_R.c.status == "running", _R.c.owner_host.is_(None)))
        orphaned = or_(_R.c.owner_host.in_(list(gone_hosts)), overdue) if gone_hosts else overdue
        rows = await self._session.execute(
            select(_R).where(_R.c.status.in_(NON_TERMINAL_STATUSES), orphaned)
            .order_by(_R.c.created_at, _R.c.run_id).limit(limit))
        return [_run(r) for r in rows]

    async def list_cancel_requested(self, owner_host: str, *, limit: int = 1000) -> list[str]:
        """Queued (``created``) runs of ``owner_host`` whose cancellation was requested."""
        rows = await self._session.execute(
            select(_R.c.run_id).where(_R.c.owner_host == owner_host, _R.c.status == "created",
                                      _R.c.cancel_requested_at.is_not(None)).limit(limit))
        return [r.run_id for r in rows]

    async def last_sequence(self, run_id: str) -> int | None:
        """The highest recorded ``sequence`` of the run, ``None`` when it has no event."""
        return (await self._session.execute(
            select(func.max(_E.c.sequence)).where(_E.c.run_id == run_id))).scalar_one_or_none()

    # -- run events -------------------------------------------------------------
    async def append_event(self, run_id: str, sequence: int, type: str,
                           data: dict[str, Any] | None = None) -> bool:
        """Record one result; ``False`` when ``(run_id, sequence)`` was already used."""
        event = RunEventRecord(run_id=run_id, sequence=sequence, type=type, data=data or {})
        return await self.append_events([event]) == 1

    async def append_events(self, events: Sequence[RunEventRecord]) -> int:
        """Record results of any runs in one batched INSERT; returns how many were
        new. Only run_id, sequence, type, data and created_at are persisted.
        Unknown run → ``not_found`` (the caller's transaction must not commit)."""
        return await self.append_rows([(e.run_id, e.sequence, e.type, e.data) for e in events],
                                      created_at={(e.run_id, e.sequence): float(e.created_at)
                                                  for e in events if e.created_at is not None})

    async def append_rows(self, rows: Iterable[EventRow], *,
                          created_at: dict[tuple[str, int], float] | None = None) -> int:
        """:meth:`append_events` for plain ``(run_id, sequence, type, data)`` tuples — the
        storage actor's hot path, with no model per row. Each ``data`` is encoded once."""
        stamp = now()
        checked: dict[tuple[str, int], tuple[str, int, str, str, float, Any]] = {}
        names: set[tuple[str, str]] = set()  # (run_id, type) pairs already validated
        for run_id, sequence, type_, data in rows:
            if (run_id, sequence) in checked:
                continue
            encoded = _check_event(run_id, sequence, type_, data, names)
            at = created_at.get((run_id, sequence), stamp) if created_at else stamp
            checked[(run_id, sequence)] = (run_id, sequence, type_, encoded, at, data)
        if not checked:
            return 0
        values = list(checked.values())
        if dialect_name(self._session) == "postgresql":
            result = await self._session.execute(_PG_BULK_EVENTS, {
                "run_ids": [v[0] for v in values], "sequences": [v[1] for v in values],
                "types": [v[2] for v in values], "datas": [v[3] for v in values],
                "stamps": [v[4] for v in values]})
            count = result.rowcount
            if count < len(values):  # used sequences (a retry) or unknown runs: which?
                await self._require_runs({v[0] for v in values})
            return count
        await self._require_runs({v[0] for v in values})
        count, _ = await insert_rows(self._session, _E, [
            {"run_id": r, "sequence": n, "type": t, "data_json": data if data is not None else {},
             "created_at": at} for r, n, t, _, at, data in values],
            conflict=("run_id", "sequence"), checked=True)
        return count

    async def _require_runs(self, run_ids: set[str]) -> None:
        known = set((await self._session.execute(
            select(_R.c.run_id).where(_R.c.run_id.in_(run_ids)))).scalars())
        if missing := sorted(run_ids - known):
            raise not_found("run not found", run_ids=missing[:10])

    async def events_page(self, run_id: str, *, after_cursor: str | None = None,
                          before_cursor: str | None = None, direction: str = "forward",
                          limit: int = 50, from_sequence: int | None = None) -> RunEventPage:
        """A page of the run's events, ascending by ``sequence`` either way.

        Forward (default): the events after ``after_cursor`` (or, host-internal, from
        ``from_sequence`` on); ``next_cursor`` continues forward. Backward: the ``limit``
        events just before ``before_cursor`` (the newest ones without it); ``next_cursor``
        continues further back, ``prev_cursor`` pages forward again from the page's newest
        event. Cursors of either direction work in both (one keyset over ``sequence``)."""
        check_text(run_id, "run_id", max_len=128)
        check_limit(limit)
        if direction not in ("forward", "backward"):
            raise invalid_argument("direction must be 'forward' or 'backward'")
        query = select(_E).where(_E.c.run_id == run_id)
        if direction == "backward":
            before = _EVENTS.decode(before_cursor, run_id)
            rows, has_more = await fetch_keyset(self._session, query, [_E.c.sequence], before=before, after=None,
                                                limit=limit, backward=True)
            rows = list(reversed(rows))
            cursors = [_EVENTS.encode((r.sequence,), run_id) for r in rows]
            return RunEventPage(items=[_event(r) for r in rows], has_more=has_more,
                                next_cursor=cursors[0] if has_more else None,
                                prev_cursor=cursors[-1] if cursors else None)
        after = _EVENTS.decode(after_cursor, run_id)
        if from_sequence is not None and after is None and from_sequence > 0:
            after = (from_sequence - 1,)
        rows, has_more = await fetch_keyset(self._session, query, [_E.c.sequence], before=None, after=after,
                                            limit=limit, backward=False)
        items = [_event(r) for r in rows]
        cursors = [_EVENTS.encode((r.sequence,), run_id) for r in rows]
        return RunEventPage(items=items, has_more=has_more,
                            next_cursor=cursors[-1] if has_more else None,
                            prev_cursor=cursors[0] if cursors else None)


def _filter_runs(query: Any, *, agent_id: str | None, created_after: float | None,
                 created_before: float | None) -> Any:
    """The optional agent and creation-time filters shared by :meth:`RunLedgerStore.list` / ``counts``."""
    if check_optional_text(agent_id, "agent_id", max_len=128) is not None:
        query = query.where(_R.c.agent_id == agent_id)
    if created_after is not None:
        query = query.where(_R.c.created_at >= check_non_negative(created_after, "created_after"))
    if created_before is not None:
        query = query.where(_R.c.created_at < check_non_negative(created_before, "created_before"))
    return query


def _new_run_row(run_id: str, status: str, stamp: float, *, event_id: str | None = None,
                 agent_id: str | None = None, binding_id: str | None = None, runner_id: str | None = None,
                 conversation_id: str | None = None, thread_id: str | None = None, bot_id: str | None = None,
                 workspace_id: str | None = None, deadline_at: float | None = None,
                 metadata: dict[str, Any] | None = None, owner_host: str | None = None) -> dict[str, Any]:
    """The ``agent_run`` row of a run recorded now in ``status`` (``created`` or ``running``)."""
    return {"run_id": run_id, "event_id": event_id, "agent_id": agent_id, "binding_id": binding_id,
            "runner_id": runner_id, "conversation_id": conversation_id, "thread_id": thread_id,
            "bot_id": bot_id, "workspace_id": workspace_id, "status": status, "status_reason": None,
            "created_at": stamp, "started_at": stamp if status == "running" else None, "finished_at": None,
            "updated_at": stamp, "deadline_at": deadline_at, "cancel_requested_at": None,
            "metadata_json": dict(metadata or {}), "owner_host": owner_host}


def _check_event(run_id: Any, sequence: Any, type_: Any, data: Any, seen: set[tuple[str, str]]) -> str:
    """Validate one run event; its ``data`` encoded as JSON. ``seen`` skips re-checking names."""
    if (run_id, type_) not in seen:
        check_text(run_id, "run_id", max_len=128)
        check_text(type_, "type", max_len=64)
        seen.add((run_id, type_))
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
        raise invalid_argument("sequence must be an integer ≥ 0", run_id=run_id)
    return encode_json(data if data is not None else {}, field="run event data",
                       max_bytes=MAX_EVENT_DATA_BYTES)


def _run(row: Row[Any]) -> RunRecord:
    return RunRecord(
        run_id=row.run_id, event_id=row.event_id, agent_id=row.agent_id,
        binding_id=row.binding_id, runner_id=row.runner_id, conversation_id=row.conversation_id,
        thread_id=row.thread_id, workspace_id=row.workspace_id, bot_id=row.bot_id,
        status=row.status, status_reason=row.status_reason, created_at=epoch(row.created_at),
        started_at=epoch(row.started_at), finished_at=epoch(row.finished_at),
        updated_at=epoch(row.updated_at), deadline_at=epoch(row.deadline_at),
        cancel_requested_at=epoch(row.cancel_requested_at), metadata=row.metadata_json or {},
    )


def _event(row: Row[Any]) -> RunEventRecord:
    return RunEventRecord(run_id=row.run_id, sequence=row.sequence, type=row.type,
                          data=row.data_json or {}, created_at=epoch(row.created_at))
