"""Hosts and their heartbeats (``runnerhost_host``): who owns which runs, and who is gone.

Invariants: a host row is written by its host only (register, heartbeat, stop); a host is
*gone* when it recorded its stop, when its heartbeat is older than ``dead_after`` seconds,
or when a live host on the same Ray GCS address runs in another Ray session (only one
session can own an address at a time, so the old session — and every host in it — is
over). Gone hosts are never revived: a restarted host registers under a new id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ._common import check_text, insert_rows, now
from .models import RunnerHostInstance

_H = RunnerHostInstance.__table__


@dataclass(frozen=True, slots=True)
class HostRecord:
    host_id: str
    ray_address: str | None
    ray_session: str | None
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    info: dict[str, Any]


class HostStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def heartbeat(self, host_id: str, *, ray_address: str | None = None, ray_session: str | None = None,
                        info: dict[str, Any] | None = None) -> None:
        """Register the host on its first beat, refresh ``heartbeat_at`` on every later one."""
        check_text(host_id, "host_id", max_len=64)
        stamp = now()
        await insert_rows(self._session, _H, [{
            "host_id": host_id, "ray_address": ray_address, "ray_session": ray_session,
            "started_at": stamp, "heartbeat_at": stamp, "stopped_at": None, "info_json": dict(info or {})}],
            conflict=("host_id",),
            update=lambda excluded: {"heartbeat_at": excluded.heartbeat_at, "info_json": excluded.info_json})

    async def stop(self, host_id: str) -> None:
        check_text(host_id, "host_id", max_len=64)
        stamp = now()
        await self._session.execute(update(_H).where(_H.c.host_id == host_id)
                                    .values(stopped_at=stamp, heartbeat_at=stamp))

    async def gone(self, *, dead_after: float, live_address: str | None = None,
                   live_session: str | None = None) -> list[str]:
        """Ids of hosts that are gone (see the module invariants), oldest first."""
        cutoff = now() - dead_after
        gone = or_(_H.c.stopped_at.is_not(None), _H.c.heartbeat_at < cutoff)
        if live_address and live_session:
            gone = or_(gone, (_H.c.ray_address == live_address) & (_H.c.ray_session != live_session))
        rows = await self._session.execute(select(_H.c.host_id).where(gone).order_by(_H.c.started_at))
        return [r.host_id for r in rows]

    async def get(self, host_id: str) -> HostRecord | None:
        row = (await self._session.execute(select(_H).where(_H.c.host_id == host_id))).one_or_none()
        if row is None:
            return None
        return HostRecord(row.host_id, row.ray_address, row.ray_session, row.started_at, row.heartbeat_at,
                          row.stopped_at, row.info_json or {})
