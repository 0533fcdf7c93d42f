"""Interactions over ``interaction``: a runner's question and the one answer it accepts.

``answer`` is a compare-and-set (status ``pending`` and not past ``expires_at``), so two
answers racing for one interaction give one run, and a late or repeated answer is refused.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.errors import ErrorCode, RunnerHostError, invalid_argument, not_found
from protocol.interactions import INTERACTION_STATUSES, InteractionRecord

from ._common import check_limit, check_text, epoch, insert_rows, json_value, now
from .models import Interaction

_T = Interaction.__table__


class InteractionStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(self, *, id: str, interaction_id: str, run_id: str, agent_id: str | None,
                     conversation_id: str | None, thread_id: str | None, actor_id: str | None,
                     request: dict[str, Any], origin: dict[str, Any], expires_at: float) -> InteractionRecord:
        """Store a request (idempotent per (run_id, interaction_id): a repeat returns the first)."""
        check_text(id, "id", max_len=64)
        await insert_rows(self._session, _T, [{
            "id": id, "interaction_id": interaction_id, "run_id": run_id, "agent_id": agent_id,
            "conversation_id": conversation_id, "thread_id": thread_id, "actor_id": actor_id,
            "status": "pending", "request_json": json_value(request, field="request"),
            "origin_json": json_value(origin, field="origin"), "created_at": now(),
            "expires_at": float(expires_at)}], conflict=("run_id", "interaction_id"))
        row = (await self._session.execute(select(_T).where(
            _T.c.run_id == run_id, _T.c.interaction_id == interaction_id))).one()
        return _record(row)

    async def get(self, id: str) -> InteractionRecord:
        check_text(id, "interaction id", max_len=64)
        row = (await self._session.execute(select(_T).where(_T.c.id == id))).one_or_none()
        if row is None:
            raise not_found("interaction not found", interaction_id=id)
        return _record(row)

    async def origin(self, id: str) -> dict[str, Any]:
        return (await self._session.execute(select(_T.c.origin_json).where(_T.c.id == id))).scalar_one()

    async def list(self, *, status: str | None = None, conversation_id: str | None = None,
                   run_id: str | None = None, limit: int = 50) -> list[InteractionRecord]:
        """Newest first. A pending row past its expiry lists as ``expired``."""
        check_limit(limit)
        if status is not None and status not in INTERACTION_STATUSES:
            raise invalid_argument(f"unknown interaction status {status!r}", allowed=list(INTERACTION_STATUSES))
        await self.expire_due()
        query = select(_T).order_by(_T.c.created_at.desc(), _T.c.id).limit(limit)
        if status is not None:
            query = query.where(_T.c.status == status)
        if conversation_id is not None:
            query = query.where(_T.c.conversation_id == conversation_id)
        if run_id is not None:
            query = query.where(_T.c.run_id == run_id)
        return [_record(r) for r in await self._session.execute(query)]

    async def expire_due(self) -> int:
        result = await self._session.execute(update(_T).where(
            _T.c.status == "pending", _T.c.expires_at < now()).values(status="expired"))
        return int(result.rowcount or 0)

    async def answer(self, id: str, *, answer: dict[str, Any], event_id: str) -> InteractionRecord:
        """Accept the one answer: ``conflict`` when already answered, ``expired`` when late."""
        stamp = now()
        result = await self._session.execute(update(_T).where(
            _T.c.id == id, _T.c.status == "pending", _T.c.expires_at >= stamp).values(
            status="answered", answer_json=json_value(answer, field="answer"), answer_event_id=event_id,
            answered_at=stamp))
        if not result.rowcount:
            current = await self.get(id)
            if current.status == "answered":
                raise RunnerHostError(ErrorCode.CONFLICT, "interaction already answered",
                                      details={"interaction_id": id, "status": "answered"})
            await self.expire_due()
            raise RunnerHostError(ErrorCode.CONFLICT, "interaction expired",
                                  details={"interaction_id": id, "status": "expired"})
        return await self.get(id)


def _record(row: Row[Any]) -> InteractionRecord:
    status = row.status
    if status == "pending" and row.expires_at < now():
        status = "expired"
    origin = row.origin_json or {}
    return InteractionRecord(
        interaction_id=row.id, run_id=row.run_id, agent_id=row.agent_id,
        conversation_id=row.conversation_id, thread_id=row.thread_id, actor_id=row.actor_id,
        status=status, request=row.request_json, reply_target=(origin.get("delivery") or {}).get("reply_target"),
        answer=row.answer_json, answer_event_id=row.answer_event_id, created_at=epoch(row.created_at),
        expires_at=epoch(row.expires_at), answered_at=epoch(row.answered_at))
