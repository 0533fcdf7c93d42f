"""SchedulerActor: the named (``runnerhost-scheduler``), detached, self-restarting loop over
:class:`actors.core.scheduler.Scheduler`. Every replica asks for it by name, so there is one;
and were there two (a split brain, a restart overlapping its predecessor), the per-tick claim
in the database still fires each tick once."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import ray

from protocol.logs import get_logger

from .core.scheduler import Scheduler
from .core.storage_port import ActorStorage
from .retry import reply, unwrap

log = get_logger(__name__)

SCHEDULER_NAME = "runnerhost-scheduler"


@ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=100, num_cpus=0, enable_task_events=False)
class SchedulerActor:
    def __init__(self, storage: Any, intake: Any, interval_s: float, enabled: bool = True) -> None:
        self._intake = intake
        self._scheduler = Scheduler(ActorStorage(storage), self._submit, owner=f"scheduler-{uuid.uuid4().hex[:10]}")
        self._interval = interval_s
        self._loop = asyncio.ensure_future(self._every()) if enabled else None

    async def _submit(self, event: Any, agent_id: str) -> dict[str, Any]:
        return unwrap(await self._intake.submit_event.remote(event, agent_id))

    async def _every(self) -> None:
        while True:
            try:
                await self._scheduler.run_once()
            except Exception:  # survive a failed round (database restarting, ingress redeploying)
                log.exception("scheduler round failed")
            await asyncio.sleep(self._interval)

    async def run_once(self) -> dict[str, Any]:
        """One round now (operators and tests); what it fired."""
        return await reply(self._scheduler.run_once())

    async def owner(self) -> str:
        return self._scheduler.owner


def get_or_create_scheduler(storage: Any, intake: Any, interval_s: float, namespace: str | None,
                            enabled: bool = True) -> Any:
    from .placement import control_plane_options
    return SchedulerActor.options(name=SCHEDULER_NAME, namespace=namespace, lifetime="detached", get_if_exists=True,
                                  **control_plane_options()).remote(storage, intake, interval_s, enabled)
