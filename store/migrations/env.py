"""Alembic environment: async engines for both dialects, batch mode on SQLite.

The URL comes from ``config.attributes["url"]`` (see :mod:`store.migrate`).
"""
from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection

from store.engine import create_engine
from store.migrate import include_object_for
from store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(dialect: str, **kwargs: Any) -> None:
    context.configure(target_metadata=target_metadata, include_object=include_object_for(dialect),
                      compare_type=True, **kwargs)


def _run(connection: Connection) -> None:
    dialect = connection.dialect.name
    _configure(dialect, connection=connection, render_as_batch=dialect == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(config.attributes["url"], poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    url = config.attributes["url"]
    _configure(url.get_backend_name(), url=url, literal_binds=True,
               dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)  # a caller-provided sync connection (e.g. autogenerate comparisons)
else:
    asyncio.run(_run_online())
