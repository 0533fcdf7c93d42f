"""The storage seam of the platform services: ``await read(kind, **kw)`` / ``await write(kind, **kw)``.

In the cluster it is the storage actor (:class:`ActorStorage`); in unit tests and single-process
tools it is :class:`DirectStorage`, the same :class:`StorageService` ops on a local
:class:`store.engine.Database`, one transaction per call.
"""
from __future__ import annotations

from typing import Any, Protocol

from .storage_service import StorageService


class StoragePort(Protocol):
    async def read(self, kind: str, **kwargs: Any) -> Any: ...

    async def write(self, kind: str, **kwargs: Any) -> Any: ...


class DirectStorage:
    def __init__(self, db: Any, service: StorageService | None = None) -> None:
        self._db = db
        self._service = service or StorageService()

    async def read(self, kind: str, **kwargs: Any) -> Any:
        async with self._db.transaction() as session:
            return await self._service.read(session, kind, kwargs)

    async def write(self, kind: str, **kwargs: Any) -> Any:
        async with self._db.transaction() as session:
            return await self._service.write(session, kind, kwargs)


class ActorStorage:
    """Over the storage actor handle (retried on actor restarts; errors as RunnerHostError)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def read(self, kind: str, **kwargs: Any) -> Any:
        from actors.retry import call_with_retry, unwrap
        return unwrap(await call_with_retry(lambda: self._handle.read.remote(kind, kwargs), what=f"storage {kind}"))

    async def write(self, kind: str, **kwargs: Any) -> Any:
        from actors.retry import call_with_retry, unwrap
        return unwrap(await call_with_retry(lambda: self._handle.write.remote(kind, kwargs), what=f"storage {kind}"))
