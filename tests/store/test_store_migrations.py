"""Migrations: upgrade head → downgrade base → upgrade head on fresh databases,
and the models agree with the migrated schema."""
from __future__ import annotations

from sqlalchemy import inspect

from store.engine import create_engine
from store.migrate import downgrade_async, schema_diff, upgrade_async
from store.models import Base

EXPECTED = set(Base.metadata.tables)


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    return names - {"alembic_version"}


async def test_upgrade_downgrade_upgrade(empty_db_url):
    url = empty_db_url
    await upgrade_async(url)
    first = await _tables(url)
    assert EXPECTED <= first
    assert ("knowledge_fts" in first) == url.startswith("sqlite")
    await downgrade_async(url)
    assert await _tables(url) == set()
    await upgrade_async(url)
    assert await _tables(url) == first
    assert await schema_diff(url) == []


async def test_models_match_migrated_schema(db_url):
    assert await schema_diff(db_url) == []
