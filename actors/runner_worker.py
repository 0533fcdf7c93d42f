"""RunnerWorker: one actor of a runner's pool; executes ``run(ctx, api)`` as a streaming generator
of result batches.

A worker serves many runs concurrently (async actor); the execution logic
lives in :class:`actors.core.runner_exec.RunnerExecutor`. The run's RunActor
is passed by address and resolved only if the runner calls the runner API.
"""
from __future__ import annotations

from typing import Any

import ray

from protocol.context import RunContext

from .addresses import ActorAddress
from .core.discovery import load_target
from .core.runner_exec import RunnerExecutor
from .process import freeze_startup_objects
from .runner_client import ActorRunnerAPI


@ray.remote(max_restarts=0, max_concurrency=1000, enable_task_events=False)
class RunnerWorker:
    def __init__(self, runner_id: str, target: str) -> None:
        self._executor = RunnerExecutor(load_target(target)(), runner_id)
        freeze_startup_objects()

    async def ping(self) -> dict[str, Any]:
        return {"runner_id": self._executor.runner_id, "active": self._executor.active,
                "node_id": ray.get_runtime_context().get_node_id()}

    async def run(self, ctx: RunContext, run_actor: ActorAddress, token: str):
        async for batch in self._executor.execute(ctx, ActorRunnerAPI(run_actor, ctx.run_id, token)):
            yield batch

    async def cancel_run(self, run_id: str) -> bool:
        return self._executor.cancel(run_id)
