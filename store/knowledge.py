"""Knowledge bases: documents chunked for retrieval (``retrieve_knowledge``).

Invariants:

* a document longer than :data:`CHUNK_CHARS` is stored as rows
  ``<doc_id>#1 … #n`` (cut at whitespace where possible); shorter ones as one
  row ``<doc_id>``. Re-ingesting a doc id replaces all of its rows.
* Postgres ranks with ``ts_rank`` over a GIN-indexed ``simple`` tsvector of
  title + content; SQLite with FTS5 ``bm25`` over ``knowledge_fts`` (title
  weighted double), whose rowids are ``knowledge_document.id`` and which this
  store keeps in sync. A document matches when it contains any query term.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, column, delete, func, literal_column, or_, select, table
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.errors import invalid_argument

from ._common import (
    check_limit,
    check_optional_text,
    check_row,
    check_text,
    dialect_name,
    insert_rows,
    now,
    search_terms,
    ts_query,
    ts_vector,
)
from .models import KnowledgeDocument

CHUNK_CHARS = 1500
MAX_TOP_K = 50

_T = KnowledgeDocument.__table__
_FTS = table("knowledge_fts", column("rowid", Integer), column("title"), column("content"),
             column("kb_id"))


def chunk_text(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Split ``text`` into chunks of at most ``size`` characters, preferring to cut
    at a paragraph break, else at whitespace, in the second half of a chunk."""
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            window = text[start + size // 2:end]
            cut = window.rfind("\n\n")
            if cut < 0:
                cut = max(window.rfind(ch) for ch in " \n\t")
            if cut >= 0:
                end = start + size // 2 + cut + 1
        if piece := text[start:end].strip():
            chunks.append(piece)
        start = end
    return chunks


class KnowledgeStore:
    """Repository over ``knowledge_document`` (and ``knowledge_fts`` on SQLite)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._sqlite = dialect_name(session) == "sqlite"

    async def ingest(self, kb_id: str, doc_id: str, title: str | None, content: str,
                     metadata: dict[str, Any] | None = None) -> int:
        """Store (or replace) a document; returns the number of chunks stored."""
        check_text(kb_id, "kb_id", max_len=128)
        if "#" in check_text(doc_id, "doc_id", max_len=256):
            raise invalid_argument("doc_id must not contain '#' (it separates chunk numbers)")
        check_optional_text(title, "title", max_len=512)
        if not isinstance(content, str) or not content.strip():
            raise invalid_argument("content must be a non-empty string")
        pieces = chunk_text(content)
        stamp = now()
        rows = []
        for index, piece in enumerate(pieces, start=1):
            meta = dict(metadata or {})
            if len(pieces) > 1:
                meta.update(source_doc_id=doc_id, chunk=index, chunks=len(pieces))
            rows.append({"kb_id": kb_id, "doc_id": f"{doc_id}#{index}" if len(pieces) > 1 else doc_id,
                         "title": title, "content": piece, "metadata_json": meta, "created_at": stamp})
        for row in rows:
            check_row(_T, row)  # before the old version is deleted
        await self.delete(kb_id, doc_id)
        _, inserted = await insert_rows(self._session, _T, rows, conflict=("kb_id", "doc_id"),
                                        returning=[_T.c.id, _T.c.title, _T.c.content], checked=True)
        if self._sqlite and inserted:
            await self._session.execute(_FTS.insert().values([
                {"rowid": r.id, "title": r.title or "", "content": r.content, "kb_id": kb_id}
                for r in inserted]))
        return len(rows)

    async def delete(self, kb_id: str, doc_id: str) -> int:
        """Delete a document (all its chunks); returns the number of rows removed."""
        check_text(kb_id, "kb_id", max_len=128)
        check_text(doc_id, "doc_id", max_len=256)
        ids = list((await self._session.execute(
            select(_T.c.id).where(_T.c.kb_id == kb_id,
                                  or_(_T.c.doc_id == doc_id,
                                      _T.c.doc_id.startswith(f"{doc_id}#", autoescape=True))))
        ).scalars())
        if ids:
            await self._session.execute(delete(_T).where(_T.c.id.in_(ids)))
            if self._sqlite:
                await self._session.execute(delete(_FTS).where(_FTS.c.rowid.in_(ids)))
        return len(ids)

    async def retrieve(self, kb_id: str, query: str, top_k: int = 5) -> list[dict[str, Any]]:
        """Best chunks first: ``[{"doc_id", "title", "content", "score", "metadata"}]``
        (higher score is better; scores are comparable within one call only)."""
        check_text(kb_id, "kb_id", max_len=128)
        check_limit(top_k, MAX_TOP_K, field="top_k")
        terms = search_terms(query)
        if self._sqlite:
            rank = func.bm25(literal_column("knowledge_fts"), literal_column("2.0"),
                             literal_column("1.0"), literal_column("0.0"))
            match = " OR ".join(f'"{term}"' for term in terms)
            stmt = (select(_T.c.doc_id, _T.c.title, _T.c.content, _T.c.metadata_json,
                           (-rank).label("score"))
                    .select_from(_FTS.join(_T, _T.c.id == _FTS.c.rowid))
                    .where(literal_column("knowledge_fts").op("MATCH")(match), _T.c.kb_id == kb_id)
                    .order_by(rank, _T.c.id))
        else:
            document, tsquery = ts_vector(_T.c.title, _T.c.content), ts_query(terms)
            score = func.ts_rank(document, tsquery)
            stmt = (select(_T.c.doc_id, _T.c.title, _T.c.content, _T.c.metadata_json,
                           score.label("score"))
                    .where(_T.c.kb_id == kb_id, document.op("@@")(tsquery))
                    .order_by(score.desc(), _T.c.id))
        rows = await self._session.execute(stmt.limit(top_k))
        return [{"doc_id": r.doc_id, "title": r.title, "content": r.content,
                 "score": float(r.score), "metadata": r.metadata_json or {}} for r in rows]

    async def list_kbs(self) -> list[str]:
        """Ids of the knowledge bases holding at least one document, sorted."""
        rows = await self._session.execute(select(_T.c.kb_id).distinct().order_by(_T.c.kb_id))
        return list(rows.scalars())
