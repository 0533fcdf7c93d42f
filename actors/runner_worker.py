"""RunnerWorker: one actor of a runner's pool; executes ``run(ctx, api)`` as a streaming generator.

A worker serves many runs concurrently (async actor). Each run's runner
generator is pumped by its own task so ``cancel_run`` can interrupt it even
while the runner awaits; the generator is always closed (its ``finally``
blocks run) on completion, cancel or deadline.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import ray

from protocol.context import RunContext
from protocol.errors import RunnerHostError
from protocol.redact import redact
from protocol.results import RunResult

from .core.discovery import load_target
from .runner_client import ActorRunnerAPI

log = logging.getLogger(__name__)
_END = object()


@ray.remote(max_restarts=0, max_concurrency=1000)
class RunnerWorker:
    def __init__(self, runner_id: str, target: str) -> None:
        self.runner_id = runner_id
        self.runner = load_target(target)()
        self._tasks: dict[str, asyncio.Task] = {}
        # A cancel can overtake the run call it targets; remember it (bounded).
        self._cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()

    async def ping(self) -> dict[str, Any]:
        return {"runner_id": self.runner_id, "active": len(self._tasks),
                "node_id": ray.get_runtime_context().get_node_id()}

    async def run(self, ctx_json: dict[str, Any], run_actor: Any, token: str):
        ctx = RunContext.model_validate(ctx_json)
        if ctx.run_id in self._cancelled:
            return
        api = ActorRunnerAPI(run_actor, ctx.run_id, token)
        queue: asyncio.Queue = asyncio.Queue(maxsize=256)
        task = asyncio.create_task(self._pump(ctx, api, queue))
        self._tasks[ctx.run_id] = task
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            self._tasks.pop(ctx.run_id, None)
            if not task.done():
                task.cancel()

    async def cancel_run(self, run_id: str) -> bool:
        task = self._tasks.get(run_id)
        if task is None or task.done():
            self._cancelled[run_id] = None
            while len(self._cancelled) > 4096:
                self._cancelled.popitem(last=False)
            return False
        task.cancel()
        return True

    async def _pump(self, ctx: RunContext, api: ActorRunnerAPI, queue: asyncio.Queue) -> None:
        gen = self.runner.run(ctx, api)
        try:
            async for raw in gen:
                if isinstance(raw, RunResult):
                    raw = raw.model_dump(mode="json")
                elif hasattr(raw, "model_dump"):
                    raw = raw.model_dump(mode="json")
                await queue.put(raw)
        except asyncio.CancelledError:
            pass
        except RunnerHostError as exc:
            await queue.put(RunResult.failed(ctx.run_id, f"api.{exc.code.value}", redact(exc.message),
                                             exc.retryable).model_dump())
        except Exception as exc:  # a runner bug must become a recorded failure, not silence
            log.exception("runner %s failed in run %s", self.runner_id, ctx.run_id)
            await queue.put(RunResult.failed(ctx.run_id, "runner.error",
                                             redact(f"{type(exc).__name__}: {exc}")[:500]).model_dump())
        finally:
            try:
                await gen.aclose()
            except Exception:
                pass
            await queue.put(_END)
