"""Transcript: the conversation view projected from events (SPEC §7).

Invariants:

* ``seq`` is per conversation, gap-free and monotonic even under concurrent
  appends from separate transactions: each append bumps
  ``transcript_counter`` with ``INSERT … ON CONFLICT DO UPDATE … RETURNING``,
  whose row lock serialises appenders of one conversation until commit (a
  rollback releases the numbers). Batches lock counters in sorted conversation
  order, so two group commits cannot deadlock.
* ``transcript_id`` is the natural key: re-appending a known id returns the
  stored item and consumes no ``seq``. Pass a deterministic id when a write
  may be retried (never reuse one across conversations); the default is a
  fresh uuid.
* ``content`` never exceeds the store's cap; a cut text ends with
  ``…[truncated N chars]`` and ``metadata["truncated"]`` keeps the original length.
* ``reverted`` items (rollback strategy) are invisible to page, search and latest.
"""
from __future__ import annotations

import operator
import uuid
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Iterable, Literal, Mapping, Sequence

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.errors import invalid_argument
from protocol.pages import HistoryPage, HistorySearchResult, TranscriptItem

from ._common import (
    Keyset,
    cap_text,
    check_limit,
    check_non_negative,
    check_optional_text,
    check_row,
    check_storable,
    check_text,
    dialect_name,
    epoch,
    fetch_keyset,
    insert_rows,
    like_contains,
    now,
    oldest_first,
    search_terms,
    ts_query,
    ts_vector,
    unique_by,
)
from .models import Transcript, TranscriptCounter

DEFAULT_CAP = 32 * 1024
MIN_CAP = 64
SEARCH_FILTERS = ("role", "item_type", "run_id", "thread_id")

_T = Transcript.__table__
_C = TranscriptCounter.__table__
_KEYSET = Keyset("transcript", ("seq",), (int,))


def _added_to_counter(excluded: Any) -> dict[str, Any]:
    """``ON CONFLICT`` update of a conversation counter: add the inserted count (a plain function,
    so the statement is built once and reused)."""
    return {"last_seq": _C.c.last_seq + excluded.last_seq}


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptEntry:
    """One transcript item to append; ``seq`` is assigned by the store."""

    event_id: str
    conversation_id: str
    role: str
    item_type: str = "message"
    content: str | None = None
    content_json: dict[str, Any] | None = None
    attachment_refs: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None
    thread_id: str | None = None
    bot_id: str | None = None
    workspace_id: str | None = None
    transcript_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float | None = None


class TranscriptStore:
    """Repository over ``transcript``; ``cap`` is the content cap in characters."""

    def __init__(self, session: AsyncSession, *, cap: int = DEFAULT_CAP) -> None:
        if not isinstance(cap, int) or cap < MIN_CAP:
            raise invalid_argument(f"cap must be an integer ≥ {MIN_CAP}")
        self._session = session
        self._cap = cap

    # -- writes ---------------------------------------------------------------
    async def append(self, **fields: Any) -> TranscriptItem:
        """Append one item; keyword arguments are the fields of :class:`TranscriptEntry`."""
        try:
            entry = TranscriptEntry(**fields)
        except TypeError as exc:
            raise invalid_argument(str(exc)) from None
        return (await self.append_many([entry]))[0]

    async def append_many(self, entries: Sequence[TranscriptEntry], *, fresh: bool = False
                          ) -> list[TranscriptItem]:
        """Append items of any conversations with one batched multi-row INSERT.

        Returns one item per distinct ``transcript_id``, in input order; items
        already stored (retries) are returned as stored. ``fresh``: the caller knows
        none of them can exist yet (they belong to a fact written new in this same
        transaction), so the check for stored ones is skipped.
        """
        stamp = now()
        rows = unique_by((self._row(e, stamp) for e in entries), lambda r: r["transcript_id"])
        if not rows:
            return []
        by_conversation: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_conversation.setdefault(row["conversation_id"], []).append(row)
        last_seq = await self._bump({conv: len(conv_rows) for conv, conv_rows in by_conversation.items()})
        # Counter locks are held now, so any concurrent writer of the same ids has committed.
        stored = {} if fresh else await self._existing([e.transcript_id for e in entries if e.transcript_id])
        fresh: list[dict[str, Any]] = []
        for conv, conv_rows in by_conversation.items():
            new = [r for r in conv_rows if r["transcript_id"] not in stored]
            if unused := len(conv_rows) - len(new):
                await self._bump({conv: -unused})
            base = last_seq[conv] - len(conv_rows)
            for offset, row in enumerate(new, start=1):
                row["seq"] = base + offset
            fresh.extend(new)
        await insert_rows(self._session, _T, fresh, conflict=("transcript_id",), checked=True)
        return [stored.get(r["transcript_id"]) or _item(r) for r in rows]

    async def revert_run(self, run_id: str) -> int:
        """Hide every item written by ``run_id``; returns how many were hidden."""
        result = await self._session.execute(
            update(_T).where(_T.c.run_id == check_text(run_id, "run_id"), _T.c.reverted.is_(False))
            .values(reverted=True))
        return result.rowcount or 0

    async def cleanup_older_than(self, seconds: float, *, limit: int | None = None) -> int:
        """Delete items created more than ``seconds`` ago (at most ``limit``, oldest first); the
        conversation's ``seq`` keeps rising. Returns the count."""
        cutoff = now() - check_non_negative(seconds, "seconds")
        condition = oldest_first(_T, _T.c.created_at < cutoff, limit)
        return (await self._session.execute(delete(_T).where(condition))).rowcount or 0

    # -- reads ----------------------------------------------------------------
    async def page(self, conversation_id: str, *, before_cursor: str | None = None,
                   after_cursor: str | None = None, limit: int = 50,
                   direction: Literal["backward", "forward"] = "backward") -> HistoryPage:
        """One page, items always in ascending ``seq``.

        A cursor decides the direction (``before_cursor`` → backward,
        ``after_cursor`` → forward, both → the window between, nearest to
        ``before``); without cursors ``direction`` picks the newest or the
        oldest ``limit`` items. ``next_cursor`` continues in that direction and
        is set iff ``has_more``; ``prev_cursor`` pages the other way.
        """
        check_text(conversation_id, "conversation_id")
        check_limit(limit)
        if direction not in ("backward", "forward"):
            raise invalid_argument("direction must be 'backward' or 'forward'")
        before = _KEYSET.decode(before_cursor, conversation_id)
        after = _KEYSET.decode(after_cursor, conversation_id)
        backward = before is not None or (after is None and direction == "backward")
        rows, has_more = await fetch_keyset(self._session, self._visible(conversation_id), [_T.c.seq],
                                            before=before, after=after, limit=limit,
                                            backward=backward)
        items = [_item(r) for r in (reversed(rows) if backward else rows)]
        head, tail = (items[0].cursor, items[-1].cursor) if items else (None, None)
        return HistoryPage(items=items, has_more=has_more,
                           next_cursor=(head if backward else tail) if has_more else None,
                           prev_cursor=tail if backward else head)

    async def search(self, conversation_id: str, query: str, *, top_k: int = 10,
                     filters: Mapping[str, Any] | None = None) -> HistorySearchResult:
        """Items matching any term of ``query``, best first.

        Postgres: full text (``simple`` config, GIN index) ranked by ``ts_rank``;
        SQLite: substring hits (case-insensitive for ASCII) ranked by the number
        of terms hit. Ties go to the newest. ``filters`` may restrict ``role``,
        ``item_type``, ``run_id``, ``thread_id`` (a string or a list).
        """
        check_text(conversation_id, "conversation_id")
        check_limit(top_k, field="top_k")
        terms = search_terms(query)
        base = self._visible(conversation_id)
        for name, value in (filters or {}).items():
            if name not in SEARCH_FILTERS:
                raise invalid_argument(f"unknown search filter {name!r}", allowed=list(SEARCH_FILTERS))
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
                raise invalid_argument(f"filter {name!r} must be a string or a list of strings")
            for v in values:
                check_storable(v, name)
            base = base.where(_T.c[name].in_(list(values)))
        if dialect_name(self._session) == "postgresql":
            document, tsquery = ts_vector(_T.c.content), ts_query(terms)
            score = func.ts_rank(document, tsquery)
            base = base.where(document.op("@@")(tsquery))
        else:
            lowered = func.lower(_T.c.content)
            hits = [case((lowered.like(like_contains(t), escape="\\"), 1), else_=0) for t in terms]
            score = reduce(operator.add, hits)
            base = base.where(score > 0)
        stmt = (base.add_columns(func.count().over().label("total"))
                .order_by(score.desc(), _T.c.seq.desc()).limit(top_k))
        rows = (await self._session.execute(stmt)).all()
        return HistorySearchResult(items=[_item(r) for r in rows], query=query,
                                   total_count=rows[0].total if rows else 0)

    async def latest(self, conversation_id: str) -> tuple[int, str | None]:
        """``(seq, cursor)`` of the newest visible item; ``(0, None)`` when empty."""
        check_text(conversation_id, "conversation_id")
        last = (await self._session.execute(
            select(func.max(_T.c.seq)).where(_T.c.conversation_id == conversation_id,
                                             _T.c.reverted.is_(False)))).scalar_one_or_none()
        return (0, None) if last is None else (last, _KEYSET.encode((last,), conversation_id))

    async def latest_many(self, conversation_ids: Iterable[str]) -> dict[str, tuple[int, str | None]]:
        """:meth:`latest` of several conversations in one query."""
        wanted = sorted({check_text(c, "conversation_id") for c in conversation_ids})
        found = {c: (0, None) for c in wanted}
        if wanted:
            rows = await self._session.execute(
                select(_T.c.conversation_id, func.max(_T.c.seq)).where(
                    _T.c.conversation_id.in_(wanted), _T.c.reverted.is_(False)).group_by(_T.c.conversation_id))
            for conversation_id, last in rows:
                if last is not None:
                    found[conversation_id] = (last, _KEYSET.encode((last,), conversation_id))
        return found

    async def has_before(self, conversation_id: str, cursor: str) -> bool:
        """Whether a visible item precedes ``cursor``."""
        check_text(conversation_id, "conversation_id")
        (seq,) = _KEYSET.decode(cursor, conversation_id)  # type: ignore[misc]
        query = self._visible(conversation_id).where(_T.c.seq < seq).limit(1)
        return (await self._session.execute(query)).first() is not None

    # -- internals ------------------------------------------------------------
    @staticmethod
    def _visible(conversation_id: str):
        return select(_T).where(_T.c.conversation_id == conversation_id, _T.c.reverted.is_(False))

    async def _bump(self, counts: Mapping[str, int]) -> dict[str, int]:
        """Add each count to its conversation's counter, row-locking them, in one statement whose
        rows go in conversation order (concurrent writers lock shared counters in the same order:
        no deadlock); the new values by conversation."""
        rows = [{"conversation_id": conv, "last_seq": counts[conv]} for conv in sorted(counts)]
        _, returned = await insert_rows(self._session, _C, rows, conflict=("conversation_id",),
                                        update=_added_to_counter, returning=(_C.c.conversation_id, _C.c.last_seq),
                                        checked=True)
        return {row.conversation_id: row.last_seq for row in returned}

    async def _existing(self, transcript_ids: list[str]) -> dict[str, TranscriptItem]:
        if not transcript_ids:
            return {}
        rows = await self._session.execute(select(_T).where(_T.c.transcript_id.in_(transcript_ids)))
        return {r.transcript_id: _item(r) for r in rows}

    def _row(self, entry: TranscriptEntry, stamp: float) -> dict[str, Any]:
        check_text(entry.event_id, "event_id", max_len=128)
        check_text(entry.conversation_id, "conversation_id")
        check_text(entry.role, "role", max_len=32)
        check_text(entry.item_type, "item_type", max_len=64)
        check_optional_text(entry.transcript_id, "transcript_id", max_len=128)
        if entry.content is not None and not isinstance(entry.content, str):
            raise invalid_argument("content must be a string")
        content, original = cap_text(entry.content, self._cap)
        metadata = dict(entry.metadata)
        if original is not None:
            metadata["truncated"] = {"original_length": original, "cap": self._cap}
        row = {
            "transcript_id": entry.transcript_id or f"tr_{uuid.uuid4().hex}",
            "event_id": entry.event_id, "run_id": entry.run_id,
            "conversation_id": entry.conversation_id, "thread_id": entry.thread_id,
            "bot_id": entry.bot_id, "workspace_id": entry.workspace_id, "role": entry.role,
            "item_type": entry.item_type, "content": content, "content_json": entry.content_json,
            "attachment_refs": list(entry.attachment_refs), "seq": 0, "reverted": False,
            "created_at": entry.created_at if entry.created_at is not None else stamp,
            "metadata_json": metadata,
        }
        check_row(_T, row)  # before any SQL: a bad item must not leave a bumped counter
        return row


def _item(row: Row[Any] | Mapping[str, Any]) -> TranscriptItem:
    get = row.__getitem__ if isinstance(row, Mapping) else row._mapping.__getitem__
    return TranscriptItem(
        transcript_id=get("transcript_id"), event_id=get("event_id"),
        conversation_id=get("conversation_id"), bot_id=get("bot_id"),
        workspace_id=get("workspace_id"), thread_id=get("thread_id"), run_id=get("run_id"),
        role=get("role"), item_type=get("item_type"), content=get("content"),
        content_json=get("content_json"), attachment_refs=get("attachment_refs") or [],
        seq=get("seq"), cursor=_KEYSET.encode((get("seq"),), get("conversation_id")),
        created_at=epoch(get("created_at")), metadata=get("metadata_json") or {},
    )
