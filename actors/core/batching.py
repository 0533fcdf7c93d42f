"""Group commit: many callers' writes share one transaction.

``submit`` returns after the batch holding the op has committed (acknowledge
only after commit). A batch is flushed when it reaches ``max_batch`` ops or
``max_delay`` seconds after its first op. If the batch fails because of one of
its ops (``isolate(error)`` says so), each op is retried alone so one bad write
fails only its own caller; a failure of the database itself (after the caller's
own retries) fails the whole batch at once instead of replaying it op by op.
At most ``max_backlog`` ops wait: beyond that ``submit`` refuses at once
(``rate_limited``, retryable) rather than queueing without bound.

``drain()`` is how an owner hands over (a storage actor replaced by one with another
configuration): from then on ``submit`` refuses (retryable: nothing of the refused op was
accepted), and ``drain`` returns once every op accepted before it — waiting or in the batch being
committed — has been committed (or failed to its own caller). Nothing acknowledged is left behind.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

from protocol.errors import ErrorCode, RunnerHostError
from protocol.logs import get_logger

log = get_logger(__name__)

Op = TypeVar("Op")

ApplyBatch = Callable[[Sequence[Any]], Awaitable[Sequence[Any]]]


class GroupCommitter(Generic[Op]):
    def __init__(self, apply_batch: ApplyBatch, *, max_batch: int = 256, max_delay: float = 0.003,
                 max_backlog: int = 20_000, isolate: Callable[[BaseException], bool] = lambda exc: True) -> None:
        self._apply = apply_batch
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_backlog = max_backlog
        self._isolate = isolate
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._committing: list[Any] = []  # the ops of the batch being committed now
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._flushing = False  # the flush loop is between wake-up and an empty queue
        self._draining = False
        self._drained: list[asyncio.Future] = []  # drain() callers waiting for the queue to empty
        self.batches = 0
        self.ops = 0

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def uncommitted(self) -> list[Any]:
        """Ops accepted but not committed yet: the batch in flight, then those waiting."""
        return [*self._committing, *(op for op, _ in self._pending)]

    @property
    def draining(self) -> bool:
        return self._draining

    async def submit(self, op: Any) -> Any:
        if self._draining:
            raise RunnerHostError(ErrorCode.RUNTIME_ERROR, "storage is being replaced; try again",
                                  retryable=True)
        if len(self._pending) >= self.max_backlog:
            raise RunnerHostError(ErrorCode.RATE_LIMITED, "the storage backlog is full; try again",
                                  retryable=True, details={"backlog": len(self._pending)})
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        self._ensure_task()
        if len(self._pending) >= self.max_batch:
            self._wakeup.set()
        elif len(self._pending) == 1:
            asyncio.get_running_loop().call_later(self.max_delay, self._wakeup.set)
        return await fut

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def drain(self) -> None:
        """Refuse new ops; return once every op accepted so far is committed (or has failed)."""
        self._draining = True
        if not self._pending and not self._flushing:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drained.append(waiter)
        self._ensure_task()
        self._wakeup.set()  # what waits for its max_delay is flushed now
        await asyncio.shield(waiter)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._flushing = True
            try:
                while self._pending:
                    batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
                    await self._flush(batch)
            finally:
                self._flushing = False
            self._wake_drained()

    def _wake_drained(self) -> None:
        waiters, self._drained = self._drained, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _flush(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        ops = [op for op, _ in batch]
        try:
            results = await self._commit(ops)
            self.batches += 1
            self.ops += len(ops)
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
            return
        except Exception as exc:  # isolate the failing op(s) — unless the database itself failed
            if len(batch) == 1 or not self._isolate(exc):
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            log.info("group commit of %d ops failed (%s); retrying one by one", len(batch), type(exc).__name__)
        for item in batch:
            await self._flush([item])

    async def _commit(self, ops: list[Any]) -> Sequence[Any]:
        self._committing = ops
        try:
            return await self._apply(ops)
        finally:
            self._committing = []

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._wake_drained()
