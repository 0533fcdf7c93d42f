"""The Postgres engine never hangs and heals a dropped connection: a statement timeout, a connect
timeout and a pre-ping on checkout (store/engine.py), against the real server."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from sqlalchemy import text

from protocol.errors import ErrorCode, RunnerHostError
from store.engine import Database
from tests.conftest import PG_ADMIN_DSN


async def test_a_statement_over_the_timeout_fails_retryable_instead_of_hanging(pg_url):
    db = Database(pg_url, statement_timeout_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(RunnerHostError) as err:
            async with db.transaction() as session:
                await session.execute(text("SELECT pg_sleep(30)"))
        assert time.monotonic() - started < 5
        assert err.value.code is ErrorCode.RUNTIME_ERROR and err.value.retryable
        assert "timed out" in err.value.message and err.value.details["timeout_s"] == 0.5
        async with db.transaction() as session:  # the pool is still usable afterwards
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.dispose()


async def test_a_server_that_never_answers_the_connect_fails_fast():
    async def stall(reader, writer):  # accepts the TCP connection, never speaks Postgres
        await asyncio.sleep(60)
        writer.close()
    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/none", connect_timeout_s=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as err:
            async with db.transaction() as session:
                await session.execute(text("SELECT 1"))
        assert time.monotonic() - started < 5, err.value
        assert isinstance(err.value, (TimeoutError, OSError)) or "timeout" in repr(err.value).lower()
    finally:
        await db.dispose()
        server.close()


async def test_a_pooled_connection_killed_by_the_server_is_replaced_on_checkout(pg_url):
    db = Database(pg_url)
    try:
        async with db.transaction() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        async with db.transaction() as session:  # pre-ping notices the dead connection first
            assert (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
    finally:
        await db.dispose()


def test_sqlite_ignores_the_postgres_only_options(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", statement_timeout_s=1, connect_timeout_s=1)
    assert db.dialect == "sqlite"
