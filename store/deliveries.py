"""Delivery facts over ``delivery``: one row per (run, target, part), the platform message.

The row is created (``pending``) before the first platform call for that part, so a
delivery retried after a crash sees what was posted: a ``platform_message_id`` means "edit
it, never post again"; a row left ``sending`` without one means the outcome is unknown
(the call may have reached the platform) and is never re-posted either.
"""
from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.delivery import DELIVERY_STATUSES, DeliveryRecord
from protocol.errors import invalid_argument

from ._common import cap_text, check_text, epoch, insert_rows, now
from .models import Delivery

_T = Delivery.__table__
MAX_ERROR_CHARS = 2000


def content_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class DeliveryStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def open_part(self, run_id: str, target_key: str, part: int, *, platform: str,
                        connection: str, target: dict[str, Any]) -> dict[str, Any]:
        """The part's row, created ``pending`` when absent (idempotent)."""
        check_text(run_id, "run_id", max_len=128)
        check_text(target_key, "target_key", max_len=160)
        if not isinstance(part, int) or part < 0:
            raise invalid_argument("part must be a non-negative integer")
        stamp = now()
        await insert_rows(self._session, _T, [{
            "run_id": run_id, "target_key": target_key, "part": part, "platform": platform,
            "connection": connection, "target_json": target, "status": "pending", "attempts": 0,
            "content_length": 0, "created_at": stamp, "updated_at": stamp}],
            conflict=("run_id", "target_key", "part"))
        return await self.get(run_id, target_key, part)

    async def get(self, run_id: str, target_key: str, part: int) -> dict[str, Any]:
        row = (await self._session.execute(select(_T).where(
            _T.c.run_id == run_id, _T.c.target_key == target_key, _T.c.part == part))).one()
        return _as_dict(row)

    async def record(self, run_id: str, target_key: str, part: int, *, status: str,
                     platform_message_id: str | None = None, content: str | None = None,
                     attempt: bool = False, error: str | None = None) -> None:
        """Record an attempt's outcome. ``content`` is what the platform now shows; the message id,
        once set, is never cleared."""
        if status not in DELIVERY_STATUSES:
            raise invalid_argument(f"unknown delivery status {status!r}")
        values: dict[str, Any] = {"status": status, "updated_at": now(),
                                  "last_error": cap_text(error, MAX_ERROR_CHARS)[0] if error else None}
        if platform_message_id is not None:
            values["platform_message_id"] = str(platform_message_id)
        if content is not None:
            values["content_sha256"] = content_digest(content)
            values["content_length"] = len(content)
        if attempt:
            values["attempts"] = _T.c.attempts + 1
        await self._session.execute(update(_T).where(
            _T.c.run_id == run_id, _T.c.target_key == target_key, _T.c.part == part).values(**values))

    async def parts(self, run_id: str, target_key: str) -> list[dict[str, Any]]:
        """Every row of one target, by part (what a restarted delivery resumes from)."""
        rows = await self._session.execute(select(_T).where(
            _T.c.run_id == run_id, _T.c.target_key == target_key).order_by(_T.c.part))
        return [_as_dict(r) for r in rows]

    async def list(self, run_id: str) -> list[DeliveryRecord]:
        rows = await self._session.execute(
            select(_T).where(_T.c.run_id == run_id).order_by(_T.c.target_key, _T.c.part))
        return [DeliveryRecord(**{k: v for k, v in _as_dict(r).items()
                                  if k in DeliveryRecord.model_fields}) for r in rows]


def _as_dict(row: Row[Any]) -> dict[str, Any]:
    return {"run_id": row.run_id, "target_key": row.target_key, "part": row.part,
            "platform": row.platform, "connection": row.connection, "target": row.target_json,
            "platform_message_id": row.platform_message_id, "status": row.status,
            "attempts": row.attempts, "last_error": row.last_error,
            "content_sha256": row.content_sha256, "content_length": row.content_length,
            "created_at": epoch(row.created_at), "updated_at": epoch(row.updated_at)}
