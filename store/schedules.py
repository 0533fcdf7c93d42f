"""Cron schedules over ``schedule`` (the firing gate is :class:`store.claims.ClaimStore`)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.schedules import ScheduleRecord, ScheduleSpec

from ._common import check_text, epoch, insert_rows, json_value, now
from .models import Schedule

_T = Schedule.__table__


class ScheduleStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def replace(self, agent_id: str, specs: Sequence[ScheduleSpec],
                      next_tick: Callable[[str, float], float]) -> list[ScheduleRecord]:
        """Make ``specs`` the agent's schedules. A schedule whose cron is unchanged keeps its
        ``next_fire_at``; a new or changed one starts at its next tick after now."""
        check_text(agent_id, "agent_id", max_len=128)
        existing = {r.schedule_id: r for r in await self._rows(agent_id)}
        keep = [s.schedule_id for s in specs]
        await self._session.execute(delete(_T).where(_T.c.agent_id == agent_id,
                                                     _T.c.schedule_id.not_in(keep) if keep else True))
        stamp = now()
        for spec in specs:
            old = existing.get(spec.schedule_id)
            next_fire = old.next_fire_at if old is not None and old.cron == spec.cron and old.next_fire_at \
                else next_tick(spec.cron, stamp)
            await insert_rows(self._session, _T, [{
                "agent_id": agent_id, "schedule_id": spec.schedule_id, "cron": spec.cron,
                "enabled": spec.enabled, "text": spec.text, "data_json": json_value(spec.data, field="data"),
                "next_fire_at": next_fire, "created_at": stamp, "updated_at": stamp}],
                conflict=("agent_id", "schedule_id"),
                update=lambda excluded: {"cron": excluded.cron, "enabled": excluded.enabled,
                                         "text": excluded.text, "data_json": excluded.data_json,
                                         "next_fire_at": excluded.next_fire_at,
                                         "updated_at": excluded.updated_at})
        return await self.list(agent_id)

    async def list(self, agent_id: str) -> list[ScheduleRecord]:
        return [_record(r) for r in await self._rows(agent_id)]

    async def due(self, at: float, limit: int = 100) -> list[ScheduleRecord]:
        rows = await self._session.execute(select(_T).where(
            _T.c.enabled.is_(True), _T.c.next_fire_at.is_not(None), _T.c.next_fire_at <= at)
            .order_by(_T.c.next_fire_at).limit(limit))
        return [_record(r) for r in rows]

    async def advance(self, agent_id: str, schedule_id: str, *, next_fire_at: float,
                      fired_at: float | None) -> None:
        """Move the schedule to its next tick (never backwards: a slower racer changes nothing)."""
        values: dict[str, Any] = {"next_fire_at": next_fire_at, "updated_at": now()}
        if fired_at is not None:
            values["last_fired_at"] = fired_at
        await self._session.execute(update(_T).where(
            _T.c.agent_id == agent_id, _T.c.schedule_id == schedule_id,
            _T.c.next_fire_at < next_fire_at).values(**values))

    async def _rows(self, agent_id: str) -> list[Row[Any]]:
        return list(await self._session.execute(
            select(_T).where(_T.c.agent_id == agent_id).order_by(_T.c.schedule_id)))


def _record(row: Row[Any]) -> ScheduleRecord:
    return ScheduleRecord(agent_id=row.agent_id, schedule_id=row.schedule_id, cron=row.cron,
                          enabled=row.enabled, text=row.text, data=row.data_json or {},
                          next_fire_at=epoch(row.next_fire_at), last_fired_at=epoch(row.last_fired_at),
                          created_at=epoch(row.created_at), updated_at=epoch(row.updated_at))
