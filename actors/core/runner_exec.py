"""Executing a runner's ``run(ctx, api)``: shared by runner workers and session actors.

Each run's generator is pumped by its own task so a cancel can interrupt the
runner even while it awaits; the generator is always closed (its ``finally``
blocks run). Runner exceptions become ``run.failed`` results, never silence.

Results leave in batches: everything the runner produced while the previous
batch was in flight goes out as one list, so a burst of results costs one
object on the Ray stream instead of one per result. The first result of a
burst is never held back waiting for company.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Any, AsyncIterator

from protocol.context import RunContext
from protocol.errors import RunnerHostError
from protocol.logs import get_logger
from protocol.redact import redact
from protocol.results import RunResult
from protocol.runner import Runner, RunnerAPI

from .. import constants
from .frames import take_ready

log = get_logger(__name__)
_END = object()


def _plain(raw: Any) -> Any:
    return raw.model_dump(mode="json") if hasattr(raw, "model_dump") else raw


class RunnerExecutor:
    """Runs many runs of one runner instance concurrently; cancellable per run id."""

    def __init__(self, runner: Runner, runner_id: str) -> None:
        self.runner = runner
        self.runner_id = runner_id
        self._tasks: dict[str, asyncio.Task] = {}
        # A cancel can overtake the run call it targets; remember it (bounded).
        self._cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()

    @property
    def active(self) -> int:
        return len(self._tasks)

    async def execute(self, ctx: RunContext, api: RunnerAPI) -> AsyncIterator[list[dict[str, Any]]]:
        """Batches (non-empty lists) of the run's raw results, in order."""
        if ctx.run_id in self._cancelled:
            return
        queue: asyncio.Queue = asyncio.Queue(maxsize=constants.EXECUTOR_MAX_BATCH)
        task = asyncio.create_task(self._pump(ctx, api, queue))
        self._tasks[ctx.run_id] = task
        try:
            while True:
                batch, ended = take_ready(await queue.get(), queue, _END)
                if batch:
                    yield batch
                if ended:
                    return
        finally:
            self._tasks.pop(ctx.run_id, None)
            if not task.done():
                task.cancel()

    def cancel(self, run_id: str) -> bool:
        task = self._tasks.get(run_id)
        if task is None or task.done():
            self._cancelled[run_id] = None
            while len(self._cancelled) > constants.CANCEL_MEMORY:
                self._cancelled.popitem(last=False)
            return False
        task.cancel()
        return True

    async def _pump(self, ctx: RunContext, api: RunnerAPI, queue: asyncio.Queue) -> None:
        """Feed the run's results to ``queue``, then the end marker. Cancelled (the run was
        cancelled or its reader left): close the runner, and end without waiting for room in a
        queue nobody may read any more."""
        gen = self.runner.run(ctx, api)
        cancelled = False
        try:
            async for raw in gen:
                await queue.put(_plain(raw))
        except asyncio.CancelledError:
            cancelled = True
        except RunnerHostError as exc:
            await queue.put(RunResult.failed(ctx.run_id, f"api.{exc.code.value}", redact(exc.message),
                                             exc.retryable).model_dump())
        except Exception as exc:
            log.exception("runner %s failed in run %s", self.runner_id, ctx.run_id)
            await queue.put(RunResult.failed(ctx.run_id, "runner.error",
                                             redact(f"{type(exc).__name__}: {exc}")[:500]).model_dump())
        finally:
            try:
                await gen.aclose()
            except Exception:
                pass
            if cancelled:
                try:
                    queue.put_nowait(_END)
                except asyncio.QueueFull:
                    pass
            else:
                await queue.put(_END)
