"""Knowledge bases: documents chunked for retrieval (``retrieve_knowledge``).

Invariants:

* a document longer than :data:`CHUNK_CHARS` is stored as rows
  ``<doc_id>#1 … #n`` (cut at whitespace where possible); shorter ones as one
  row ``<doc_id>``. Re-ingesting a doc id replaces all of its rows.
* Postgres ranks with ``ts_rank`` over a GIN-indexed ``simple`` tsvector of
  title + content; SQLite with FTS5 ``bm25`` over ``knowledge_fts`` (title
  weighted double), whose rowids are ``knowledge_document.id`` and which this
  store keeps in sync. A document matches when it contains any query term.
* an embedding-backed base keeps one ``knowledge_vector`` per (chunk, embedding
  model); :meth:`KnowledgeStore.retrieve` with ``query_vector`` ranks the base's
  chunks by brute-force cosine similarity (in Python, identical on both backends).
* every hit carries ``score`` (higher is better) and ``distance`` (lower is better):
  for vectors ``score`` = cosine and ``distance`` = 1 − cosine; for full text
  ``score`` = the rank and ``distance`` = 1 / (1 + rank).
* ``filters`` are metadata filters in the Chroma / MongoDB style LangBot's vector
  stores take: ``{"field": value}`` (equality), ``{"field": {"$eq" | "$ne" | "$gt" |
  "$gte" | "$lt" | "$lte" | "$in" | "$nin": …}}``, ``{"$and": […]}``, ``{"$or": […]}``;
  a field is looked up in the chunk's metadata, then ``doc_id`` / ``title``. They are
  applied to up to :data:`MAX_FILTER_CANDIDATES` ranked candidates.
"""
from __future__ import annotations

import math
from typing import Any, Callable

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
from .models import KnowledgeDocument, KnowledgeVector

CHUNK_CHARS = 1500
MAX_TOP_K = 50
MAX_FILTER_CANDIDATES = 1000
MAX_FILTER_BYTES = 16 * 1024

_T = KnowledgeDocument.__table__
_V = KnowledgeVector.__table__
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda a, b: a == b, "$ne": lambda a, b: a != b,
    "$gt": lambda a, b: a is not None and a > b, "$gte": lambda a, b: a is not None and a >= b,
    "$lt": lambda a, b: a is not None and a < b, "$lte": lambda a, b: a is not None and a <= b,
    "$in": lambda a, b: a in b, "$nin": lambda a, b: a not in b,
}


def compile_filter(filters: dict[str, Any] | None) -> Callable[[dict[str, Any]], bool] | None:
    """A predicate over a hit (``metadata`` / ``doc_id`` / ``title``), or None for no filter.
    Raises ``invalid_argument`` on anything outside the grammar in the module doc."""
    if not filters:
        return None
    if not isinstance(filters, dict) or len(repr(filters)) > MAX_FILTER_BYTES:
        raise invalid_argument("filters must be an object of at most 16 KiB")

    def field(hit: dict[str, Any], name: str) -> Any:
        meta = hit.get("metadata") or {}
        return meta[name] if name in meta else hit.get(name)

    def build(spec: Any) -> Callable[[dict[str, Any]], bool]:
        if not isinstance(spec, dict) or not spec:
            raise invalid_argument("a filter must be a non-empty object")
        parts: list[Callable[[dict[str, Any]], bool]] = []
        for key, value in spec.items():
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise invalid_argument(f"{key} takes a non-empty list of filters")
                subs = [build(v) for v in value]
                parts.append((lambda h, subs=subs: all(f(h) for f in subs)) if key == "$and"
                             else (lambda h, subs=subs: any(f(h) for f in subs)))
            elif key.startswith("$"):
                raise invalid_argument(f"unknown filter operator {key!r}")
            elif isinstance(value, dict):
                if not value:
                    raise invalid_argument(f"filter on {key!r} names no operator")
                for op, operand in value.items():
                    compare = _COMPARE.get(op)
                    if compare is None:
                        raise invalid_argument(f"unknown filter operator {op!r}",
                                               allowed=sorted(_COMPARE))
                    if op in ("$in", "$nin") and not isinstance(operand, list):
                        raise invalid_argument(f"{op} takes a list")
                    parts.append(lambda h, key=key, compare=compare, operand=operand: _safe(compare, field(h, key),
                                                                                            operand))
            else:
                parts.append(lambda h, key=key, value=value: field(h, key) == value)
        return lambda h: all(p(h) for p in parts)

    return build(filters)


def _safe(compare: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    try:
        return bool(compare(a, b))
    except TypeError:  # e.g. "$gt" between a string and a number: no match
        return False


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
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
            await self._session.execute(delete(_V).where(_V.c.document_id.in_(ids)))
            await self._session.execute(delete(_T).where(_T.c.id.in_(ids)))
            if self._sqlite:
                await self._session.execute(delete(_FTS).where(_FTS.c.rowid.in_(ids)))
        return len(ids)

    async def retrieve(self, kb_id: str, query: str, top_k: int = 5, *, filters: dict[str, Any] | None = None,
                       query_vector: list[float] | None = None, model_id: str | None = None) -> list[dict[str, Any]]:
        """Best chunks first: ``[{"doc_id", "title", "content", "score", "distance", "metadata"}]``.

        Full text by default; with ``query_vector`` (and the ``model_id`` that made it)
        by cosine over the base's vectors of that model. Scores are comparable within
        one call only. ``filters``: see the module doc.
        """
        check_text(kb_id, "kb_id", max_len=128)
        check_limit(top_k, MAX_TOP_K, field="top_k")
        keep = compile_filter(filters)
        if query_vector is not None:
            return await self._retrieve_vectors(kb_id, query_vector, check_text(model_id, "model_id"), top_k, keep)
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
        rows = await self._session.execute(stmt.limit(MAX_FILTER_CANDIDATES if keep else top_k))
        hits = [{"doc_id": r.doc_id, "title": r.title, "content": r.content, "score": float(r.score),
                 "distance": 1.0 / (1.0 + max(float(r.score), 0.0)), "metadata": r.metadata_json or {}}
                for r in rows]
        return [h for h in hits if keep is None or keep(h)][:top_k]

    async def _retrieve_vectors(self, kb_id: str, query_vector: list[float], model_id: str, top_k: int,
                                keep: Callable[[dict[str, Any]], bool] | None) -> list[dict[str, Any]]:
        if (not isinstance(query_vector, list) or not query_vector
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in query_vector)):
            raise invalid_argument("query_vector must be a non-empty list of numbers")
        rows = await self._session.execute(
            select(_T.c.doc_id, _T.c.title, _T.c.content, _T.c.metadata_json, _V.c.vector_json, _V.c.dim)
            .select_from(_V.join(_T, _T.c.id == _V.c.document_id))
            .where(_V.c.kb_id == kb_id, _V.c.model_id == model_id))
        hits = []
        for r in rows:
            if r.dim != len(query_vector):
                continue  # made by an earlier configuration of the model; re-embedded on the next ingest
            similarity = cosine(query_vector, r.vector_json)
            hit = {"doc_id": r.doc_id, "title": r.title, "content": r.content, "score": similarity,
                   "distance": 1.0 - similarity, "metadata": r.metadata_json or {}}
            if keep is None or keep(hit):
                hits.append(hit)
        hits.sort(key=lambda h: (-h["score"], h["doc_id"]))
        return hits[:top_k]

    async def missing_vectors(self, kb_id: str, model_id: str, limit: int = 64) -> list[dict[str, Any]]:
        """Chunks of ``kb_id`` that have no vector of ``model_id`` yet: ``[{"id", "title", "content"}]``."""
        check_text(kb_id, "kb_id", max_len=128)
        check_text(model_id, "model_id")
        have = select(_V.c.document_id).where(_V.c.model_id == model_id, _V.c.kb_id == kb_id)
        rows = await self._session.execute(
            select(_T.c.id, _T.c.title, _T.c.content).where(_T.c.kb_id == kb_id, _T.c.id.not_in(have))
            .order_by(_T.c.id).limit(limit))
        return [{"id": r.id, "title": r.title, "content": r.content} for r in rows]

    async def store_vectors(self, kb_id: str, model_id: str, rows: list[dict[str, Any]]) -> int:
        """Store ``[{"document_id", "vector"}]`` for ``model_id`` (existing ones are kept); returns how many."""
        check_text(kb_id, "kb_id", max_len=128)
        check_text(model_id, "model_id")
        values = []
        for row in rows:
            vector = row.get("vector")
            if (not isinstance(row.get("document_id"), int) or not isinstance(vector, list) or not vector
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector)):
                raise invalid_argument("each row needs an integer document_id and a non-empty vector")
            values.append({"document_id": row["document_id"], "kb_id": kb_id, "model_id": model_id,
                           "dim": len(vector), "vector_json": [float(x) for x in vector], "created_at": now()})
        if not values:
            return 0
        _, inserted = await insert_rows(self._session, _V, values, conflict=("document_id", "model_id"),
                                        returning=[_V.c.id])
        return len(inserted)

    async def list_kbs(self) -> list[str]:
        """Ids of the knowledge bases holding at least one document, sorted."""
        rows = await self._session.execute(select(_T.c.kb_id).distinct().order_by(_T.c.kb_id))
        return list(rows.scalars())
