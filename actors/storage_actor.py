"""StorageActor: owns the database engine; group-commits writes; serves reads.

Writes are acknowledged only after their batch commits. A transient database
failure (connection lost, Postgres restarting) is retried with backoff inside
the actor — ops are idempotent, so a retried batch duplicates nothing. The
actor itself restarts on death (``max_restarts``) and callers retry.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

import ray

from protocol.logs import get_logger

from . import constants, metrics
from .core.batching import GroupCommitter
from .core.db_retry import DatabaseUnavailable, with_db_retry
from .core.storage_service import StorageService
from .host_config import StorageConfig
from .process import freeze_startup_objects
from .retry import reply

log = get_logger(__name__)

STORAGE_NAME = "runnerhost-storage"


@ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=10000, num_cpus=0,
            enable_task_events=False)
class StorageActor:
    def __init__(self, config: dict[str, Any], config_version: str = "") -> None:
        from store.engine import Database
        self.config = StorageConfig.model_validate(config)
        self._version = config_version
        self._db = Database(self.config.resolve_database_url(), **self.config.engine_options())
        self._service = StorageService(self._artifact_factory())
        self._committer = GroupCommitter(self._apply_batch, max_batch=self.config.max_batch,
                                         max_delay=self.config.max_delay_ms / 1000.0,
                                         max_backlog=constants.COMMIT_BACKLOG_MAX, isolate=_not_unavailable)
        freeze_startup_objects(collect=True)

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

    async def config_version(self) -> str:
        return self._version

    async def drain(self) -> dict[str, Any]:
        """Before this actor is replaced: refuse new writes (retryable) and return once every write
        accepted so far is committed. Reads go on being served."""
        await self._committer.drain()
        return {"batches": self._committer.batches, "ops": self._committer.ops}

    async def write(self, kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        return await reply(self._committer.submit((kind, kwargs)))

    async def write_many(self, ops: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Many callers' writes in one message (a host's coalesced calls); each answered on its own,
        all acknowledged after their group commit."""
        return list(await asyncio.gather(*(self.write(k, a) for k, a in ops)))

    async def read(self, kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        async def go():
            return await self._with_db_retry(lambda: self._read(kind, kwargs), op="read")
        return await reply(go())

    async def stats(self) -> dict[str, Any]:
        """Group-commit counters; ``uncommitted_runs``: the runs with a write in flight right now
        (what a crash at this instant interrupts); ``restarted``: this is a restarted incarnation."""
        runs = {kwargs.get("run_id") for _, kwargs in self._committer.uncommitted()}
        runs.discard(None)
        return {"batches": self._committer.batches, "ops": self._committer.ops,
                "pending": self._committer.backlog, "uncommitted_runs": sorted(runs)[:100],
                "restarted": ray.get_runtime_context().was_current_actor_reconstructed}

    async def _read(self, kind: str, kwargs: dict[str, Any]) -> Any:
        async with self._db.transaction() as session:
            return await self._service.read(session, kind, kwargs)

    async def _apply_batch(self, ops: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        async def once() -> list[Any]:
            async with self._db.transaction() as session:
                return await self._service.write_batch(session, list(ops))
        began = time.monotonic()
        results = await self._with_db_retry(once, op="write")
        metrics.storage_batch(len(ops), time.monotonic() - began)
        metrics.storage_pending(self._committer.backlog)
        return results

    async def _with_db_retry(self, fn, *, op: str):
        return await with_db_retry(fn, deadline=constants.DB_RETRY_DEADLINE_S, op=op)


def _not_unavailable(exc: BaseException) -> bool:
    """A failed batch is worth retrying op by op unless the database itself was unavailable."""
    return not isinstance(exc, DatabaseUnavailable)


def storage_version(config: StorageConfig) -> str:
    """The storage actor's configuration version (retention is the hosts' business, not the actor's)."""
    from .control_plane import config_version
    return config_version(config.model_dump(mode="json", exclude={"retention"}))


async def ensure_storage(config: StorageConfig, namespace: str | None = None) -> Any:
    """The cluster's storage actor built from ``config``: an existing one with another configuration
    is drained (everything it accepted committed) and replaced."""
    from .control_plane import ensure_actor
    from .delivery_actor import DELIVERY_NAME
    from .placement import control_plane_options
    from .scheduler_actor import SCHEDULER_NAME
    return await ensure_actor(StorageActor, name=STORAGE_NAME, namespace=namespace,
                              version=storage_version(config), args=(config.model_dump(mode="json"),),
                              options=control_plane_options(), what="the storage actor", drain=True,
                              dependents=(DELIVERY_NAME, SCHEDULER_NAME))
