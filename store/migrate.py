"""Programmatic Alembic: no ``alembic.ini``; the Config is built in code.

``upgrade``/``downgrade`` are synchronous (CLI-friendly) and run the async
``env.py`` with ``asyncio.run``; from inside an event loop use the ``*_async``
variants, which run the same in a worker thread.
"""
from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any, Callable

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.engine import URL, Connection

from .engine import create_engine, normalize_url
from .models import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | URL) -> Config:
    """Alembic Config for ``url``; the URL travels in ``attributes`` (no ``%`` escaping issues)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = normalize_url(url)
    return config


def upgrade(url: str | URL, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | URL, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str | URL, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, url, revision)


async def downgrade_async(url: str | URL, revision: str = "base") -> None:
    await asyncio.to_thread(downgrade, url, revision)


def include_object_for(dialect: str) -> Callable[..., bool]:
    """Autogenerate filter: skip SQLite FTS5 tables and model indexes that exist
    only on another dialect (``Index.info["dialects"]``)."""

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and name is not None and name.startswith("knowledge_fts"):
            return False
        if type_ == "index" and not reflected:
            dialects = obj.info.get("dialects")
            if dialects and dialect not in dialects:
                return False
        return True

    return include_object


async def schema_diff(url: str | URL) -> list[Any]:
    """Differences between the models and the migrated database (empty = in sync)."""

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={
            "compare_type": True, "include_object": include_object_for(connection.dialect.name)})
        with warnings.catch_warnings():
            # SQLite cannot reflect expression indexes; ours are Postgres-only and filtered anyway.
            warnings.filterwarnings("ignore", message=".*expression-based index", category=UserWarning)
            return list(compare_metadata(context, Base.metadata))

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()
