"""Helpers shared by every repository: time, argument checks, JSON values,
dialect-aware ``INSERT … ON CONFLICT`` and keyset pagination.

Repositories speak SQLAlchemy Core against the mapped tables and never keep
ORM instances, so a unit of work holding several repositories can never read a
stale identity-map object after another repository's UPDATE.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence, TypeVar

from sqlalchemy import JSON, ColumnElement, Select, Table, and_, false, func, literal_column, or_, select, true, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.cursor import decode_cursor, encode_cursor
from protocol.errors import invalid_argument, payload_too_large, unauthorized
from protocol.read_scope import ReadScope
from protocol.text import unstorable

#: Largest page any pager returns (SPEC §6: ``limit ≤ 100``).
MAX_PAGE = 100
#: Largest JSON value accepted for state / kv (SPEC §7: ``≤ 256 KiB``).
MAX_JSON_BYTES = 256 * 1024
#: Text-search configuration of every Postgres full-text expression (language neutral).
TS_CONFIG = "simple"

_I = TypeVar("_I")
_TS_CONFIG_SQL = literal_column(f"'{TS_CONFIG}'::regconfig")
_TERM = re.compile(r"\w+", re.UNICODE)
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an unescaped \u0000 in JSON text
_MARKER_RESERVE = 32  # len("…[truncated N chars]") for N < 10**13


# -- time ---------------------------------------------------------------------
def now() -> float:
    """Timestamps are stored as float epoch seconds (UTC) everywhere."""
    return time.time()


def epoch(value: float | None) -> int | None:
    """API models carry int epoch seconds."""
    return None if value is None else int(value)


# -- argument checks ------------------------------------------------------------
def check_limit(limit: int, maximum: int = MAX_PAGE, *, field: str = "limit") -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= maximum:
        raise invalid_argument(f"{field} must be an integer in 1..{maximum}", **{field: repr(limit)[:32]})
    return limit


def check_text(value: Any, field: str, *, max_len: int = 256) -> str:
    """A required, non-empty, storable string of at most ``max_len`` characters."""
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise invalid_argument(f"{field} must be a non-empty string of at most {max_len} characters",
                               field=field)
    return check_storable(value, field)


def check_storable(value: str, field: str, max_len: int | None = None) -> str:
    """Reject what Postgres would refuse in a text column (:mod:`protocol.text`: NUL
    characters, lone surrogates) and strings over ``max_len``."""
    if max_len is not None and len(value) > max_len:
        raise invalid_argument(f"{field} is longer than {max_len} characters", field=field)
    if (reason := unstorable(value)) is not None:
        raise invalid_argument(f"{field} {reason}", field=field)
    return value


def check_row(table: Table, row: Mapping[str, Any]) -> None:
    """Validate a row against the table's column types before any SQL runs, so
    bad input is ``invalid_argument`` (never a database error that would abort a
    shared group-commit transaction): string lengths, NUL characters, JSON."""
    rules = _column_rules(table)
    for name, value in row.items():
        if value is None:
            continue
        max_len, is_json = rules[name]
        if is_json:
            encode_json(value, field=name, max_bytes=None)
        elif isinstance(value, str):
            check_storable(value, name, max_len)


@functools.cache
def _column_rules(table: Table) -> dict[str, tuple[int | None, bool]]:
    return {c.name: (getattr(c.type, "length", None), isinstance(c.type, JSON)) for c in table.c}


def check_optional_text(value: Any, field: str, *, max_len: int = 256) -> str | None:
    return None if value is None else check_text(value, field, max_len=max_len)


def check_non_negative(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise invalid_argument(f"{field} must be a non-negative number", field=field)
    return float(value)


# One encoder for every call: json.dumps with non-default options builds a new encoder each time.
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def encode_json(value: Any, *, field: str = "value", max_bytes: int | None = MAX_JSON_BYTES) -> str:
    """Encode ``value`` as compact JSON or raise.

    Non-JSON values (sets, objects, NaN, circular data) and strings Postgres
    cannot store (NUL, lone surrogates) → ``invalid_argument``;
    an encoding over ``max_bytes`` UTF-8 bytes → ``payload_too_large``.
    """
    try:
        encoded = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise invalid_argument(f"{field} is not JSON-serialisable: {exc}"[:200], field=field) from None
    if "\\u0000" in encoded and _JSON_NUL.search(encoded):
        raise invalid_argument(f"{field} contains a NUL character", field=field)
    if encoded.isascii():  # the common case: no surrogates possible, one byte per character
        size = len(encoded)
    else:
        try:
            size = len(encoded.encode("utf-8"))
        except UnicodeEncodeError:
            raise invalid_argument(f"{field} is not valid Unicode text", field=field) from None
    if max_bytes is not None:
        if size > max_bytes:
            raise payload_too_large(f"{field} is {size} bytes encoded; the limit is {max_bytes}",
                                    field=field, size=size, limit=max_bytes)
    return encoded


def json_value(value: Any, *, field: str = "value", max_bytes: int | None = MAX_JSON_BYTES) -> Any:
    """Validate like :func:`encode_json` and return the value as it will read back
    (tuples become lists, non-string keys become strings)."""
    return json.loads(encode_json(value, field=field, max_bytes=max_bytes))


def cap_text(text: str | None, cap: int) -> tuple[str | None, int | None]:
    """Cap ``text`` to at most ``cap`` characters including the truncation marker.

    Returns ``(stored_text, original_length)``; ``original_length`` is ``None``
    when nothing was cut. A cut text ends with ``…[truncated N chars]``.
    """
    if text is None or len(text) <= cap:
        return text, None
    keep = max(cap - _MARKER_RESERVE, 0)
    return f"{text[:keep]}…[truncated {len(text) - keep} chars]", len(text)


def search_terms(query: Any, *, max_terms: int = 32) -> list[str]:
    """Lower-cased word terms of a free-text query; none → ``invalid_argument``."""
    if not isinstance(query, str) or len(query) > 2000:
        raise invalid_argument("query must be a string of at most 2000 characters")
    terms = list(dict.fromkeys(t.lower() for t in _TERM.findall(query)))[:max_terms]
    if not terms:
        raise invalid_argument("query has no searchable terms")
    return terms


def like_contains(term: str) -> str:
    """A ``LIKE`` pattern (escape char ``\\``) matching ``term`` anywhere."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def unique_by(items: Iterable[_I], key: Callable[[_I], Hashable]) -> list[_I]:
    """``items`` without repeated keys, first occurrence wins, order kept."""
    seen: set[Hashable] = set()
    kept = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            kept.append(item)
    return kept


def short_hash(*parts: str | None) -> str:
    """Short, separator-safe fingerprint used to bind cursors to their scope."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def merge_json(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge: nested dicts merge, any other patch value replaces."""
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_json(merged[key], value)
        else:
            merged[key] = value
    return merged


# -- bounded deletes (retention) ---------------------------------------------------
def oldest_first(table: Table, condition: ColumnElement[bool], limit: int | None) -> ColumnElement[bool]:
    """``condition`` limited to the ``limit`` rows of lowest primary key (all when ``None``): a
    retention delete or update stays bounded per round, on both backends (no ``DELETE … LIMIT``)."""
    if limit is None:
        return condition
    check_limit(limit, 100_000)
    key = list(table.primary_key.columns)[0]
    return key.in_(select(key).where(condition).order_by(key).limit(limit).scalar_subquery())


# -- read scopes -----------------------------------------------------------------
def in_scope(table: Table, scope: ReadScope) -> ColumnElement[bool]:
    """The SQL form of :meth:`ReadScope.admits` over ``table``'s owner columns
    (``conversation_id``, ``run_id``, and ``bot_id``/``workspace_id`` where the table has them)."""
    if scope.unrestricted:
        return true()
    columns = table.c
    clauses = []
    for name in ("bot_id", "workspace_id"):
        wanted = getattr(scope, name)
        if wanted is not None and name in columns:
            clauses.append(or_(columns[name].is_(None), columns[name] == wanted))
    owners = []
    if scope.conversation_id is not None:
        owners.append(columns.conversation_id == scope.conversation_id)
    if scope.any_conversation:
        owners.append(columns.conversation_id.is_not(None))
    if scope.run_id is not None:
        owners.append(columns.run_id == scope.run_id)
    clauses.append(or_(*owners) if owners else false())
    return and_(*clauses)


def require_in_scope(row: Row[Any], scope: ReadScope, what: str, **details: Any) -> Row[Any]:
    """``row`` when :meth:`ReadScope.admits` it, else ``unauthorized`` (a read by id of another's row)."""
    mapping = row._mapping
    if not scope.admits(conversation_id=mapping.get("conversation_id"), run_id=mapping.get("run_id"),
                        bot_id=mapping.get("bot_id"), workspace_id=mapping.get("workspace_id")):
        raise unauthorized(f"{what} is outside this reader's scope", **details)
    return row


# -- dialect-aware INSERT -----------------------------------------------------
def dialect_name(session: AsyncSession) -> str:
    bind = session.bind if session.bind is not None else session.get_bind()
    return bind.dialect.name


def insert_for(session: AsyncSession, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's ``INSERT`` construct, which supports ``on_conflict_do_*``."""
    name = dialect_name(session)
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {name!r}")


async def insert_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[str],
    conflict_where: ColumnElement[bool] | None = None,
    update: Callable[[Any], Mapping[str, Any]] | None = None,
    returning: Sequence[Any] = (),
    checked: bool = False,
) -> tuple[int, list[Row[Any]]]:
    """Insert ``rows`` idempotently: ``ON CONFLICT (conflict) DO NOTHING``, or
    ``DO UPDATE SET update(excluded)`` when given (``conflict_where`` names a
    partial unique index).

    The statement is compiled once and executed with all rows as parameters;
    SQLAlchemy's *insertmanyvalues* sends them as multi-row ``INSERT … VALUES
    (…), (…) RETURNING`` batches of up to 1000 rows. Returns
    ``(affected_rows, returned_rows)``; the primary key is returned when
    ``returning`` is empty, so the count is exact (skipped rows return nothing).
    Rows pass :func:`check_row` first unless the caller did that (``checked``).
    """
    if not rows:
        return 0, []
    if not checked:
        for row in rows:
            check_row(table, row)
    stmt = _insert_statement(dialect_name(session), table, tuple(conflict), conflict_where, update,
                             tuple(returning or table.primary_key.columns))
    result = await session.execute(stmt, [dict(row) for row in rows])
    returned = list(result.all())
    return len(returned), (returned if returning else [])


#: Built ``INSERT … ON CONFLICT … RETURNING`` statements, reused: a reused statement object keeps its
#: memoized cache key, so SQLAlchemy skips rebuilding and re-keying it on every hot-path write.
_INSERTS: dict[tuple[Any, ...], Any] = {}


def _insert_statement(dialect: str, table: Table, conflict: tuple[str, ...],
                      conflict_where: ColumnElement[bool] | None,
                      update: Callable[[Any], Mapping[str, Any]] | None, returning: tuple[Any, ...]) -> Any:
    # A closure may capture per-call values: only plain functions (and None) are cacheable.
    cacheable = update is None or getattr(update, "__closure__", None) is None
    key = (dialect, table.name, conflict, id(conflict_where) if conflict_where is not None else None,
           getattr(update, "__code__", None), returning)
    if cacheable and (found := _INSERTS.get(key)) is not None:
        return found
    stmt = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    if update is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict), index_where=conflict_where)
    else:
        stmt = stmt.on_conflict_do_update(index_elements=list(conflict), index_where=conflict_where,
                                          set_=dict(update(stmt.excluded)))
    stmt = stmt.returning(*returning)
    if cacheable and conflict_where is None:
        _INSERTS[key] = stmt
    return stmt


def ts_vector(*columns: Any) -> ColumnElement[Any]:
    """``to_tsvector('simple', coalesce(a, '') || ' ' || coalesce(b, ''))`` built from
    literals only, so it matches the GIN expression indexes of the migration."""
    parts = [func.coalesce(column, literal_column("''")) for column in columns]
    doc = parts[0]
    for part in parts[1:]:
        doc = doc.op("||")(literal_column("' '")).op("||")(part)
    return func.to_tsvector(_TS_CONFIG_SQL, doc)


def ts_query(terms: Iterable[str]) -> ColumnElement[Any]:
    """OR query over ``terms`` (already ``\\w+`` words, so no tsquery operators leak in)."""
    return func.to_tsquery(_TS_CONFIG_SQL, " | ".join(terms))


# -- keyset pagination ----------------------------------------------------------
@dataclass(frozen=True)
class Keyset:
    """Opaque cursor codec and keyset query for one pager.

    ``kind`` tags the cursor (a cursor of another pager is ``invalid_argument``);
    ``fields`` name the cursor fields holding the ordering key, whose Python
    types are ``types``. ``scope`` values (e.g. the conversation) are bound into
    the cursor as a short hash and checked on decode.
    """

    kind: str
    fields: tuple[str, ...]
    types: tuple[type, ...]

    def encode(self, key: Sequence[Any], *scope: str | None) -> str:
        extra = {"s": short_hash(*scope)} if scope else {}
        return encode_cursor(self.kind, **dict(zip(self.fields, key)), **extra)

    def decode(self, cursor: str | None, *scope: str | None) -> tuple[Any, ...] | None:
        if cursor is None:
            return None
        data = decode_cursor(cursor, self.kind)
        if scope and data.get("s") != short_hash(*scope):
            raise invalid_argument(f"cursor was issued for another {self.kind} scope", kind=self.kind)
        key = []
        for name, typ in zip(self.fields, self.types):
            value = data.get(name)
            if typ is str:
                valid = isinstance(value, str)
            else:  # non-negative int (float fields also accept ints); bool is not a number here
                valid = type(value) in ((int,) if typ is int else (int, float)) and value >= 0
            if not valid:
                raise invalid_argument("malformed cursor", kind=self.kind)
            key.append(value)
        return tuple(key)


async def fetch_keyset(
    session: AsyncSession,
    query: Select[Any],
    order: Sequence[Any],
    *,
    before: tuple[Any, ...] | None,
    after: tuple[Any, ...] | None,
    limit: int,
    backward: bool,
) -> tuple[list[Row[Any]], bool]:
    """Run ``query`` as one keyset page over the ``order`` columns.

    Rows strictly between ``after`` and ``before`` (either may be ``None``),
    the ``limit`` nearest to ``before`` when ``backward`` (descending) else the
    ``limit`` nearest to ``after`` (ascending). Returns ``(rows, has_more)``.
    """
    key = tuple_(*order) if len(order) > 1 else order[0]

    def bound(values: tuple[Any, ...]) -> Any:
        return tuple_(*values) if len(values) > 1 else values[0]

    if before is not None:
        query = query.where(key < bound(before))
    if after is not None:
        query = query.where(key > bound(after))
    query = query.order_by(*[c.desc() if backward else c.asc() for c in order]).limit(limit + 1)
    rows = list((await session.execute(query)).all())
    return rows[:limit], len(rows) > limit


__all__ = [
    "MAX_JSON_BYTES", "MAX_PAGE", "TS_CONFIG", "Keyset", "cap_text", "check_limit",
    "check_non_negative", "check_optional_text", "check_row", "check_storable", "check_text", "dialect_name", "encode_json",
    "epoch", "fetch_keyset", "in_scope", "oldest_first", "insert_for", "insert_rows", "json_value", "like_contains",
    "merge_json", "now", "require_in_scope", "search_terms", "short_hash", "ts_query", "ts_vector", "unique_by",
]
