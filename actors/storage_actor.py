"""StorageActor: owns the database engine; group-commits writes; serves reads.

Writes are acknowledged only after their batch commits. A transient database
failure (connection lost, Postgres restarting) is retried with backoff inside
the actor — ops are idempotent, so a retried batch duplicates nothing. The
actor itself restarts on death (``max_restarts``) and callers retry.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

import ray
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from protocol.errors import ErrorCode, RunnerHostError

from .core.batching import GroupCommitter
from .core.storage_service import StorageService
from .host_config import StorageConfig
from .retry import reply

log = logging.getLogger(__name__)

STORAGE_NAME = "runnerhost-storage"
TRANSIENT = (OperationalError, InterfaceError, ConnectionError, OSError)
DB_RETRY_DEADLINE_S = 30.0


# SQLSTATE classes of a server that went away or does not accept connections yet:
# 08 connection exception; 57P01-57P03 admin/crash shutdown, "cannot connect now"
# (Postgres restarting). asyncpg's errors of these classes reach us as plain DBAPIError.
TRANSIENT_SQLSTATES = ("08", "57P")


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    return bool(exc.connection_invalidated) or sqlstate.startswith(TRANSIENT_SQLSTATES)


@ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=10000, num_cpus=0,
            enable_task_events=False)
class StorageActor:
    def __init__(self, config: dict[str, Any]) -> None:
        from store.engine import Database
        self.config = StorageConfig.model_validate(config)
        self._db = Database(self.config.resolve_database_url(), **self.config.engine_options())
        self._service = StorageService(self._artifact_factory())
        self._committer = GroupCommitter(self._apply_batch, max_batch=self.config.max_batch,
                                         max_delay=self.config.max_delay_ms / 1000.0)

    def _artifact_factory(self):
        try:
            from store.artifacts import ArtifactStore
        except ImportError:  # pragma: no cover - artifacts ship with store
            return None
        root = self.config.artifact_root

        def make(session):
            return ArtifactStore(session, root)
        return make

    async def ready(self) -> bool:
        return True

    async def write(self, kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        return await reply(self._committer.submit((kind, kwargs)))

    async def write_many(self, ops: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.write(k, a) for k, a in ops)))

    async def read(self, kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        async def go():
            return await self._with_db_retry(lambda: self._read(kind, kwargs))
        return await reply(go())

    async def stats(self) -> dict[str, Any]:
        return {"batches": self._committer.batches, "ops": self._committer.ops}

    async def _read(self, kind: str, kwargs: dict[str, Any]) -> Any:
        async with self._db.transaction() as session:
            return await self._service.read(session, kind, kwargs)

    async def _apply_batch(self, ops: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        async def once() -> list[Any]:
            async with self._db.transaction() as session:
                return await self._service.write_batch(session, list(ops))
        return await self._with_db_retry(once)

    async def _with_db_retry(self, fn):
        delay, waited = 0.05, 0.0
        while True:
            try:
                return await fn()
            except RunnerHostError:
                raise
            except Exception as exc:
                if not _transient(exc) or waited >= DB_RETRY_DEADLINE_S:
                    if _transient(exc):
                        raise RunnerHostError(ErrorCode.RUNTIME_ERROR, "database unavailable",
                                              retryable=True) from None
                    raise
                log.warning("database error (%s); retrying in %.2fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)


def get_or_create_storage(config: StorageConfig, namespace: str | None = None) -> Any:
    from .placement import control_plane_options
    return StorageActor.options(name=STORAGE_NAME, namespace=namespace, lifetime="detached",
                                get_if_exists=True, **control_plane_options()).remote(config.model_dump())
