"""Backward paging of a run's result events (``run_events_page`` with ``direction="backward"``).

:meth:`store.ledger.RunLedgerStore.events_page` pages forward only; this is the
other direction over the same keyset (``agent_run_event.sequence``) with the same
cursors, so a cursor from either direction works in both. A backward page holds
the ``limit`` events just before ``before_cursor`` (the newest ones without it),
in ascending order; ``next_cursor`` continues further back, ``prev_cursor``
pages forward again from the page's newest event. Mirrors the transcript's paging.

(Kept out of ``store/ledger.py`` while that module is being reworked; it belongs in
``RunLedgerStore.events_page(direction=…)``.)
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.pages import RunEventPage

from ._common import check_limit, check_text, fetch_keyset
from .ledger import _E, _EVENTS, _event


async def events_page_backward(session: AsyncSession, run_id: str, *, before_cursor: str | None = None,
                               limit: int = 50) -> RunEventPage:
    check_text(run_id, "run_id", max_len=128)
    check_limit(limit)
    before = _EVENTS.decode(before_cursor, run_id)
    rows, has_more = await fetch_keyset(session, select(_E).where(_E.c.run_id == run_id), [_E.c.sequence],
                                        before=before, after=None, limit=limit, backward=True)
    rows = list(reversed(rows))
    cursors = [_EVENTS.encode((r.sequence,), run_id) for r in rows]
    return RunEventPage(items=[_event(r) for r in rows], has_more=has_more,
                        next_cursor=cursors[0] if has_more else None,
                        prev_cursor=cursors[-1] if cursors else None)
