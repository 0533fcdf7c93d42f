"""Shared database fixtures: throwaway Postgres and SQLite databases.

* ``pg_url`` / ``sqlite_url`` (session): a fresh database migrated to head,
  dropped / deleted at the end of the session.
* ``db`` (session, parametrized ``postgres`` | ``sqlite``): a :class:`store.Database`
  on those URLs. Tests share it, so they isolate themselves with unique ids.
* ``empty_db_url`` (function, parametrized like ``db``): a fresh, *unmigrated* database.
* ``ray_session`` (session): the one local Ray instance every Ray test shares. Before
  Ray starts it exports :data:`SERVE_DB_ENV`: the Serve app's database URL, with a
  password (trust auth ignores it), which Ray workers read from the environment they
  inherit — the way a password must travel (never in actor or deployment arguments).

Postgres is reached as user ``postgres`` at 127.0.0.1:5432 (trust auth);
override the admin DSN with ``RUNNERHOST_TEST_PG_DSN``.
"""
from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import pytest

from store.engine import Database
from store.migrate import upgrade_async
from store.scratch import create_database, database_url, drop_database

#: A starting host serves once its pools hold their minimum (actors.constants.READY_WARM_TIMEOUT_S);
#: the suite's fixtures cap that wait so pool warm-up overlaps the tests as it did before — the few
#: tests that need a warm pool wait for it themselves. Exported before any Ray process starts.
os.environ.setdefault("RUNNERHOST_READY_WARM_TIMEOUT_S", "10")

PG_ADMIN_DSN = os.environ.get("RUNNERHOST_TEST_PG_DSN",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
#: A password the test server (trust auth) ignores; tests look for it where it must never be.
TEST_DB_PASSWORD = f"rh-test-password-{uuid.uuid4().hex[:12]}"
#: The Serve app's database, reached by Ray workers through this environment variable.
SERVE_DB_NAME = f"rh_test_serve_{uuid.uuid4().hex[:12]}"
SERVE_DB_ENV = "RUNNERHOST_TEST_SERVE_DATABASE_URL"


def with_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).set(password=TEST_DB_PASSWORD).render_as_string(hide_password=False)


@asynccontextmanager
async def pg_database(*, migrate: bool = True, name: str | None = None) -> AsyncIterator[str]:
    """A new Postgres database (``rh_test_<random>`` unless named); yields its asyncpg URL, then drops it."""
    name = name or f"rh_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(PG_ADMIN_DSN, name)
    try:
        if migrate:
            await upgrade_async(url)
        yield url
    finally:
        await drop_database(PG_ADMIN_DSN, name)


@asynccontextmanager
async def sqlite_database(directory: Path, *, migrate: bool = True) -> AsyncIterator[str]:
    """A new SQLite file in ``directory``; yields its aiosqlite URL, then deletes it."""
    path = directory / f"rh_test_{uuid.uuid4().hex[:12]}.db"
    url = f"sqlite+aiosqlite:///{path}"
    try:
        if migrate:
            await upgrade_async(url)
        yield url
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@pytest.fixture(scope="session")
async def pg_url() -> AsyncIterator[str]:
    async with pg_database() as url:
        yield url


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with sqlite_database(tmp_path_factory.mktemp("sqlite")) as url:
        yield url


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    """URL of the migrated database of the requested backend (resolved lazily, so a
    ``-k sqlite`` run never touches Postgres)."""
    return request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")


@pytest.fixture(scope="session")
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.dispose()


@pytest.fixture(params=["postgres", "sqlite"])
async def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, *unmigrated* database of each backend."""
    if request.param == "postgres":
        database = pg_database(migrate=False)
    else:
        database = sqlite_database(tmp_path, migrate=False)
    async with database as url:
        yield url


# -- Ray ------------------------------------------------------------------------------
REPO_ROOT = str(Path(__file__).resolve().parents[1])


#: Run slots of the test session's Ray node: every host of the session (actor tests, the Serve app,
#: the load app) shares them, as the hosts of one cluster do.
RUN_SLOTS = 160


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (2-core machine: keep it small).

    Workers get the repo root on PYTHONPATH so test-only runners under ``tests/``
    are importable inside runner workers.
    """
    import ray

    from actors.placement import RUN_SLOT_RESOURCE
    os.environ[SERVE_DB_ENV] = with_password(database_url(PG_ADMIN_DSN, SERVE_DB_NAME))
    if not ray.is_initialized():
        from protocol.logs import SETUP_HOOK
        ray.init(num_cpus=4, include_dashboard=False, namespace="rh-tests", log_to_driver=False,
                 resources={RUN_SLOT_RESOURCE: RUN_SLOTS},
                 runtime_env={"env_vars": {"PYTHONPATH": REPO_ROOT}, "worker_process_setup_hook": SETUP_HOOK})
    yield
    ray.shutdown()
