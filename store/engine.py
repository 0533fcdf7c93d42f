"""Async engine and unit of work for Postgres (asyncpg) and embedded SQLite (aiosqlite).

``async with db.transaction() as session:`` is the only way repositories get a
session: everything inside commits together or not at all, which is what lets
a storage actor group-commit many writes from many runs.

SQLite is configured for a single-node embedded store: WAL journal, a busy
timeout, foreign keys on, case-sensitive ``LIKE`` (so key prefixes behave as on
Postgres) and ``BEGIN IMMEDIATE`` transactions, which take the write lock up
front so read-then-write units of work serialise instead of failing with
``SQLITE_BUSY`` on lock upgrade.

Postgres never hangs a caller: every statement has a server-side
``statement_timeout`` (a statement over it fails as a retryable
``runtime_error`` that says so), connecting has a timeout, and a pooled
connection is pinged on checkout, so one the server dropped (a restart, an
idle kill) is replaced instead of failing the next unit of work.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from protocol.errors import ErrorCode, RunnerHostError

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Defaults of the Postgres timeouts (``[storage] statement_timeout_s`` / ``connect_timeout_s``).
STATEMENT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
_QUERY_CANCELED = "57014"  # SQLSTATE of a statement cancelled by statement_timeout
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def normalize_url(url: str | URL) -> URL:
    """Map any SQLite/Postgres URL onto its async driver; other backends → ``ValueError``."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}; "
                         "use sqlite+aiosqlite:// or postgresql+asyncpg://")
    return parsed.set(drivername=driver)


def default_sqlite_url(data_dir: str | Path) -> str:
    """URL of the embedded store ``<data_dir>/runnerhost.db`` (the directory is created)."""
    path = Path(data_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{path / 'runnerhost.db'}"


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url``, with the SQLite connection setup installed."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.pop("pool_size", None)
        kwargs.pop("max_overflow", None)
        engine = create_async_engine(parsed, **kwargs)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(parsed, **kwargs)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                       "foreign_keys=ON", "synchronous=NORMAL", "case_sensitive_like=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def postgres_options(*, statement_timeout_s: float, connect_timeout_s: float,
                     pool_pre_ping: bool) -> dict[str, Any]:
    """``create_engine`` keyword arguments for asyncpg: server-side statement timeout, a connect
    timeout, a client-side command timeout a little above the statement timeout (a server that
    stops answering altogether), and pre-ping on checkout."""
    return {
        "pool_pre_ping": pool_pre_ping,
        "connect_args": {
            "timeout": connect_timeout_s,
            "command_timeout": statement_timeout_s + connect_timeout_s,
            "server_settings": {"statement_timeout": str(max(1, int(statement_timeout_s * 1000)))},
        },
    }


class Database:
    """One engine plus a session factory; ``transaction()`` is the unit of work."""

    def __init__(self, url: str | URL, *, echo: bool = False, pool_size: int = 10,
                 max_overflow: int = 20, statement_timeout_s: float = STATEMENT_TIMEOUT_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, pool_pre_ping: bool = True) -> None:
        self.url = normalize_url(url)
        self.statement_timeout_s = statement_timeout_s
        options: dict[str, Any] = {}
        if self.url.get_backend_name() == "postgresql":
            options = postgres_options(statement_timeout_s=statement_timeout_s,
                                       connect_timeout_s=connect_timeout_s, pool_pre_ping=pool_pre_ping)
        self.engine = create_engine(self.url, echo=echo, pool_size=pool_size,
                                    max_overflow=max_overflow, **options)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @property
    def dialect(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Yield a session inside one transaction: commit on exit, rollback on error.
        A statement over the statement timeout → retryable ``runtime_error``."""
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except DBAPIError as exc:
            if _sqlstate(exc) == _QUERY_CANCELED:
                raise RunnerHostError(
                    ErrorCode.RUNTIME_ERROR,
                    f"a database statement timed out after {self.statement_timeout_s:g} s",
                    retryable=True, details={"timeout_s": self.statement_timeout_s}) from None
            raise

    async def dispose(self) -> None:
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"


def _sqlstate(exc: DBAPIError) -> str:
    orig = exc.orig
    return str(getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None) or "")
