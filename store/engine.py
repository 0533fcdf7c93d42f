"""Async engine and unit of work for Postgres (asyncpg) and embedded SQLite (aiosqlite).

``async with db.transaction() as session:`` is the only way repositories get a
session: everything inside commits together or not at all, which is what lets
a storage actor group-commit many writes from many runs.

SQLite is configured for a single-node embedded store: WAL journal, a busy
timeout, foreign keys on, case-sensitive ``LIKE`` (so key prefixes behave as on
Postgres) and ``BEGIN IMMEDIATE`` transactions, which take the write lock up
front so read-then-write units of work serialise instead of failing with
``SQLITE_BUSY`` on lock upgrade.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
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


class Database:
    """One engine plus a session factory; ``transaction()`` is the unit of work."""

    def __init__(self, url: str | URL, *, echo: bool = False, pool_size: int = 10,
                 max_overflow: int = 20) -> None:
        self.url = normalize_url(url)
        self.engine = create_engine(self.url, echo=echo, pool_size=pool_size,
                                    max_overflow=max_overflow)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @property
    def dialect(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """Yield a session inside one transaction: commit on exit, rollback on error."""
        async with self._sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"
