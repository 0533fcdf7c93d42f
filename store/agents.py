"""Persisted agent configurations (the ``agent`` table, ``PUT /v1/agents/{id}``).

``version`` starts at 1 and rises by one on every ``put``; bindings derive
their id from it (``AgentBinding.from_agent(agent_id, config, version)``).
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.agents import AgentConfig
from protocol.errors import invalid_argument, not_found

from ._common import check_text, epoch, insert_rows, now
from .models import Agent

_T = Agent.__table__


class AgentRecord(BaseModel):
    """A stored agent: its validated config plus bookkeeping."""

    model_config = ConfigDict(frozen=True)

    agent_id: str
    config: AgentConfig
    version: int
    created_at: int
    updated_at: int


class AgentStore:
    """Repository over ``agent``."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def put(self, agent_id: str, config: AgentConfig | dict[str, Any]) -> int:
        """Create or replace the agent's config; returns the new version."""
        check_text(agent_id, "agent_id", max_len=128)
        try:
            config = AgentConfig.model_validate(config)
        except ValidationError as exc:
            raise invalid_argument("invalid agent config",
                                   errors=exc.errors(include_url=False, include_context=False)) from None
        stamp = now()
        _, rows = await insert_rows(self._session, _T, [{
            "agent_id": agent_id, "config_json": config.model_dump(mode="json"), "version": 1,
            "created_at": stamp, "updated_at": stamp}], conflict=("agent_id",),
            update=lambda excluded: {"config_json": excluded.config_json,
                                     "version": _T.c.version + 1,
                                     "updated_at": excluded.updated_at},
            returning=[_T.c.version])
        return rows[0].version

    async def get(self, agent_id: str) -> AgentRecord:
        check_text(agent_id, "agent_id", max_len=128)
        row = (await self._session.execute(select(_T).where(_T.c.agent_id == agent_id))).one_or_none()
        if row is None:
            raise not_found("agent not found", agent_id=agent_id)
        return _record(row)

    async def list(self) -> list[AgentRecord]:
        """Every agent, ordered by id."""
        return [_record(r) for r in await self._session.execute(select(_T).order_by(_T.c.agent_id))]

    async def delete(self, agent_id: str) -> bool:
        """``True`` when the agent existed."""
        check_text(agent_id, "agent_id", max_len=128)
        result = await self._session.execute(delete(_T).where(_T.c.agent_id == agent_id))
        return bool(result.rowcount)


def _record(row: Row[Any]) -> AgentRecord:
    return AgentRecord(agent_id=row.agent_id, config=AgentConfig.model_validate(row.config_json),
                       version=row.version, created_at=epoch(row.created_at),
                       updated_at=epoch(row.updated_at))
