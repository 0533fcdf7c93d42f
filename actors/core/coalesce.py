"""Natural batching of calls to one remote endpoint (the registry, the storage actor).

Every Ray call costs about a millisecond of CPU on each end whatever it carries, so a
host that makes one call per run per purpose spends most of a short run on call
overhead. A :class:`Coalescer` sends a call at once when nothing is in flight; calls made
while ``max_inflight`` batches are on their way wait and leave together as the next
batch. Nothing ever waits for company (no timer): at low load a call costs one round
trip as before, under load the calls of many runs share one.

Invariants: ops of one batch keep their order and each caller gets its own result (or
its own error); a failed send fails exactly the callers of that batch; ``post`` is a
call nobody awaits — its failure is logged, never lost silently.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Coroutine, Generic, Sequence, TypeVar

from protocol.logs import get_logger

Op = TypeVar("Op")
log = get_logger(__name__)

SendBatch = Callable[[list[Any]], Awaitable[Sequence[Any]]]


class Coalescer(Generic[Op]):
    def __init__(self, send: SendBatch, *, name: str, max_batch: int = 256, max_inflight: int = 1,
                 spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task] | None = None) -> None:
        """``spawn`` starts each send (default ``loop.create_task``); pass one that detaches the send
        from the calling request's context when a caller's cancellation must not reach the batch."""
        if max_batch < 1 or max_inflight < 1:
            raise ValueError("max_batch and max_inflight must be ≥ 1")
        self.name = name
        self._send = send
        self._spawn = spawn or (lambda coro: asyncio.get_running_loop().create_task(coro))
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: list[tuple[Any, asyncio.Future | None]] = []
        self._inflight = 0
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0
        self.ops = 0

    async def call(self, op: Op) -> Any:
        """Send ``op`` (in the next batch) and return its result."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        self._pump()
        return await future

    def post(self, op: Op) -> None:
        """Send ``op`` without waiting for it (it rides with the next batch)."""
        self._queue.append((op, None))
        self._pump()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def drain(self) -> None:
        """Wait until everything queued so far has been sent and answered."""
        while self._queue or self._inflight:
            await asyncio.sleep(0.001)

    def _pump(self) -> None:
        while self._queue and self._inflight < self.max_inflight:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            self._inflight += 1
            task = self._spawn(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[tuple[Any, asyncio.Future | None]]) -> None:
        try:
            results = await self._send([op for op, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} calls")
        except BaseException as exc:  # every caller of this batch gets the failure
            for op, future in batch:
                if future is None:
                    log.warning("%s: a posted call failed: %s", self.name, type(exc).__name__)
                elif not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            self.batches += 1
            self.ops += len(batch)
            for (op, future), result in zip(batch, results):
                if future is None:
                    if isinstance(result, dict) and "error" in result:
                        log.warning("%s: a posted call failed: %s", self.name, result["error"].get("message"))
                elif not future.done():
                    future.set_result(result)
        finally:
            self._inflight -= 1
            self._pump()
