"""State: host-owned small JSON values per scope (SPEC §7).

Rows are keyed by ``(scope_key, state_key)``; scope keys are derived by
:func:`protocol.scopes.scope_key` (shared with the host, which computes them per
run). Values are JSON only and at most 256 KiB encoded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.agents import STATE_SCOPES
from protocol.errors import invalid_argument
from protocol.pages import StateEntry, StateList


from ._common import (
    MAX_JSON_BYTES,
    check_limit,
    check_storable,
    check_text,
    epoch,
    insert_rows,
    json_value,
    now,
)
from .models import AgentRunnerState

_T = AgentRunnerState.__table__
_SCOPE_KEY = re.compile(r"^[0-9a-f]{64}$")
@dataclass(frozen=True, slots=True)
class StateWrite:
    """Result of :meth:`StateStore.set`: the new entry and the one it replaced
    (``None`` when the key was absent) — what an undo log needs."""

    entry: StateEntry
    previous: StateEntry | None


class StateStore:
    """Repository over ``agent_runner_state``; upserts are atomic per (scope_key, key)."""

    MAX_KEY_LEN = 256
    #: Bounded retries of the lock-or-insert loop in :meth:`set` (each retry means a
    #: concurrent insert or delete of the same key committed in between).
    _SET_ATTEMPTS = 8

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, scope_key: str, key: str) -> StateEntry | None:
        row = (await self._session.execute(
            select(_T).where(*self._where(scope_key, key)))).one_or_none()
        return None if row is None else _entry(row)

    async def set(self, scope_key: str, key: str, value: Any, *, scope: str,
                  runner_id: str) -> StateWrite:
        """Upsert ``value`` and return it with the previous entry.

        Atomic: an existing row is locked (``FOR UPDATE``; SQLite transactions
        are ``BEGIN IMMEDIATE``) before it is read and replaced; an absent row
        is inserted with ``ON CONFLICT DO NOTHING`` and, if a concurrent writer
        won that race, the loop locks the winner's row instead.
        Non-JSON → ``invalid_argument``; over 256 KiB → ``payload_too_large``.
        """
        where = self._where(scope_key, key)
        if scope not in STATE_SCOPES:
            raise invalid_argument(f"unknown state scope {scope!r}", allowed=list(STATE_SCOPES))
        check_text(runner_id, "runner_id")
        value = json_value(value, field="state value", max_bytes=MAX_JSON_BYTES)
        stamp = now()
        for _ in range(self._SET_ATTEMPTS):
            current = (await self._session.execute(
                select(_T).where(*where).with_for_update())).one_or_none()
            if current is not None:
                await self._session.execute(
                    update(_T).where(_T.c.id == current.id)
                    .values(value_json=value, scope=scope, runner_id=runner_id, updated_at=stamp))
                return StateWrite(StateEntry(key=key, value=value, updated_at=epoch(stamp)),
                                  _entry(current))
            inserted, _ = await insert_rows(self._session, _T, [{
                "scope_key": scope_key, "state_key": key, "scope": scope, "runner_id": runner_id,
                "value_json": value, "created_at": stamp, "updated_at": stamp,
            }], conflict=("scope_key", "state_key"))
            if inserted:
                return StateWrite(StateEntry(key=key, value=value, updated_at=epoch(stamp)), None)
        raise RuntimeError("state key kept changing concurrently; giving up")  # pragma: no cover

    async def delete(self, scope_key: str, key: str) -> StateEntry | None:
        """Delete the key; returns the deleted entry (``None`` when absent)."""
        row = (await self._session.execute(
            delete(_T).where(*self._where(scope_key, key))
            .returning(_T.c.state_key, _T.c.value_json, _T.c.updated_at))).one_or_none()
        return None if row is None else _entry(row)

    async def list(self, scope_key: str, prefix: str = "", limit: int = 100) -> StateList:
        """Entries whose key starts with ``prefix`` (case-sensitive), ordered by key."""
        _check_scope_key(scope_key)
        check_limit(limit)
        if not isinstance(prefix, str):
            raise invalid_argument("prefix must be a string")
        check_storable(prefix, "prefix", self.MAX_KEY_LEN)
        query = (select(_T).where(_T.c.scope_key == scope_key)
                 .order_by(_T.c.state_key).limit(limit + 1))
        if prefix:
            query = query.where(_T.c.state_key.startswith(prefix, autoescape=True))
        rows = (await self._session.execute(query)).all()
        return StateList(items=[_entry(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def snapshot(self, scope_keys: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """``{scope_name: {key: value}}`` for every given scope, in one query."""
        return (await self.snapshots([scope_keys]))[0]

    async def snapshots(self, runs: Sequence[Mapping[str, str]]) -> list[dict[str, dict[str, Any]]]:
        """:meth:`snapshot` of several runs' scopes (``{scope_name: scope_key}`` each) in one query."""
        for scope_keys in runs:
            for key in scope_keys.values():
                _check_scope_key(key)
        wanted = sorted({key for scope_keys in runs for key in scope_keys.values()})
        values: dict[str, dict[str, Any]] = {key: {} for key in wanted}
        if wanted:
            rows = await self._session.execute(
                select(_T.c.scope_key, _T.c.state_key, _T.c.value_json)
                .where(_T.c.scope_key.in_(wanted)).order_by(_T.c.state_key))
            for row in rows:
                values[row.scope_key][row.state_key] = row.value_json
        return [{name: dict(values[key]) for name, key in scope_keys.items()} for scope_keys in runs]

    def _where(self, scope_key: str, key: str) -> tuple[Any, ...]:
        _check_scope_key(scope_key)
        check_text(key, "state key", max_len=self.MAX_KEY_LEN)
        return _T.c.scope_key == scope_key, _T.c.state_key == key


def _check_scope_key(value: Any) -> str:
    if not isinstance(value, str) or not _SCOPE_KEY.match(value):
        raise invalid_argument("scope_key must be 64 lower-case hex characters")
    return value


def _entry(row: Row[Any]) -> StateEntry:
    return StateEntry(key=row.state_key, value=row.value_json, updated_at=epoch(row.updated_at))
