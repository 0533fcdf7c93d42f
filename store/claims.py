""""Done once" claims over ``intake_claim`` (a schedule tick, a platform's event id).

:meth:`ClaimStore.claim` is the one race-free gate: the caller whose INSERT creates the
``(scope, claim_key)`` row owns the work; a claim left unfinished (``done_at`` NULL) for longer
than ``lease_s`` belongs to a dead owner and is taken over by a conditional UPDATE, so exactly
one of any number of racing callers gets it, on Postgres and SQLite alike.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ._common import check_text, insert_rows, json_value, now
from .models import IntakeClaim

_T = IntakeClaim.__table__


class ClaimStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(self, scope: str, key: str, owner: str, *, lease_s: float = 60.0) -> bool:
        """``True`` when ``owner`` now holds the claim (new, or taken over from a dead owner)."""
        check_text(scope, "scope", max_len=192)
        check_text(key, "claim_key", max_len=192)
        check_text(owner, "owner", max_len=128)
        stamp = now()
        created, _ = await insert_rows(self._session, _T, [{
            "scope": scope, "claim_key": key, "owner": owner, "claimed_at": stamp}],
            conflict=("scope", "claim_key"))
        if created:
            return True
        result = await self._session.execute(
            update(_T).where(_T.c.scope == scope, _T.c.claim_key == key, _T.c.done_at.is_(None),
                             _T.c.claimed_at < stamp - lease_s)
            .values(owner=owner, claimed_at=stamp))
        return bool(result.rowcount)

    async def finish(self, scope: str, key: str, owner: str, result: dict[str, Any] | None = None) -> bool:
        """Mark the claim done (only by its current owner)."""
        done = await self._session.execute(
            update(_T).where(_T.c.scope == scope, _T.c.claim_key == key, _T.c.owner == owner)
            .values(done_at=now(), result_json=json_value(result) if result is not None else None))
        return bool(done.rowcount)

    async def release(self, scope: str, key: str, owner: str) -> bool:
        """Give an unfinished claim up at once (the work failed and may be retried by anyone)."""
        done = await self._session.execute(
            update(_T).where(_T.c.scope == scope, _T.c.claim_key == key, _T.c.owner == owner,
                             _T.c.done_at.is_(None)).values(claimed_at=0.0))
        return bool(done.rowcount)

    async def get(self, scope: str, key: str) -> dict[str, Any] | None:
        row = (await self._session.execute(
            select(_T).where(_T.c.scope == scope, _T.c.claim_key == key))).one_or_none()
        return None if row is None else {"owner": row.owner, "claimed_at": row.claimed_at,
                                         "done_at": row.done_at, "result": row.result_json}

    async def unfinished(self, prefix: str, older_than: float, limit: int = 100) -> list[dict[str, Any]]:
        """Claims under ``prefix`` not done and claimed before ``older_than`` (abandoned)."""
        rows = await self._session.execute(select(_T.c.scope, _T.c.claim_key).where(
            _T.c.scope.startswith(prefix, autoescape=True), _T.c.done_at.is_(None),
            _T.c.claimed_at < older_than).order_by(_T.c.id).limit(limit))
        return [{"scope": r.scope, "key": r.claim_key} for r in rows]

    async def count(self, scope: str) -> int:
        rows = await self._session.execute(select(_T.c.id).where(_T.c.scope == scope))
        return len(rows.all())
