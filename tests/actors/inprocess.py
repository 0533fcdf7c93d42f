"""The host's run flow without Ray: the real driver, registry, storage service and RunSlots,
wired in one process so every lifecycle edge can be driven and faulted deterministically.

* :class:`InProcessPorts` implements ``actors.core.driver.HostPorts`` over a real
  :class:`~actors.core.registry.Registry` and a real :class:`~actors.core.storage_service.StorageService`
  on a real database (each write op in its own transaction, as the storage actor's group commit
  would apply it), with RunActors replaced by :class:`Member` objects that host real
  :class:`~actors.core.run_slot.RunSlot` s executing runners in process.
* Faults are explicit switches: a member dies before or after publishing, an executor is gone,
  a write kind fails. Each switch records that it fired, so a test can prove its fault hit.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from actors.core.api_client import LocalRunnerAPI
from actors.core.authz import ResourceCatalog
from actors.core.discovery import load_target
from actors.core.driver import DriverSettings, RunActorGone, RunDriver
from actors.core.registry import Registry
from actors.core.run_slot import ExecutorUnavailable, RunPlan, RunSlot, RunSlots
from actors.core.runner_exec import RunnerExecutor
from actors.core.slots import SlotPool
from actors.core.storage_service import StorageService
from protocol.agents import AgentConfig
from protocol.errors import ErrorCode, RunnerHostError


@dataclass(eq=False)
class Member:
    """Stands in for a RunActor: its slots, its address, whether it is alive."""

    name: str
    slots: RunSlots
    alive: bool = True
    runs: list[str] = field(default_factory=list)


@dataclass
class Faults:
    die_before_start: int = 0          # members found dead by the check before the next hand-over
    die_on_hand_over: int = 0          # members that die as the next run's plan arrives
    die_after_first_batch: int = 0     # members that die after relaying their first batch
    executor_gone: int = 0             # executors that are found gone at run start
    failing_writes: dict[str, int] = field(default_factory=dict)  # kind → failures left
    fired: list[str] = field(default_factory=list)


class _Backend:
    """The runner API's backend: storage through the same service; no models or tools here."""

    def __init__(self, ports: "InProcessPorts") -> None:
        self._ports = ports

    async def read(self, kind: str, **kwargs: Any) -> Any:
        return await self._ports.read(kind, **kwargs)

    async def write(self, kind: str, **kwargs: Any) -> Any:
        return await self._ports.write(kind, **kwargs)


class _SlotPorts:
    def __init__(self, ports: "InProcessPorts") -> None:
        self._ports = ports

    async def write(self, kind: str, **kwargs: Any) -> Any:
        return await self._ports.write(kind, **kwargs)

    async def register_token(self, digest: str, run_id: str) -> None:
        return None

    async def revoke_tokens(self, run_id: str) -> None:
        return None

    async def send_message(self, plan: Any, text: str, *, key: str, address: Any, ordinal: int) -> Any:
        return await self._ports.send_message(plan, text, key=key, address=address, ordinal=ordinal)


class _InProcessStream:
    def __init__(self, executor: RunnerExecutor, slots: RunSlots, faults: Faults) -> None:
        self._executor, self._slots, self._faults = executor, slots, faults

    async def check(self) -> None:
        if self._faults.executor_gone:
            self._faults.executor_gone -= 1
            self._faults.fired.append("executor_gone")
            raise ExecutorUnavailable("worker-x")

    def batches(self, ctx, token) -> AsyncIterator[list[Any]]:
        return self._executor.execute(ctx, LocalRunnerAPI(ctx.run_id, token, self._slots.call, self._slots.stream))

    async def stop(self, run_id: str) -> None:
        self._executor.cancel(run_id)


class _NoExecutor:
    address = None

    async def release(self, *, dead: bool = False) -> None:
        return None

    async def stop(self, run_id: str) -> None:
        return None


class InProcessPorts:
    def __init__(self, db: Any, agents: dict[str, AgentConfig], extra_runners: dict[str, str] | None = None,
                 host_id: str = "host_test", delivery: Any = None) -> None:
        self.db = db
        #: The delivery engine (``actors.core.delivery.DeliveryService``) platform runs go through.
        self.delivery = delivery
        self.host_id = host_id
        self.registry_logic = Registry(extra_runners)
        for version, (agent_id, config) in enumerate(agents.items(), start=1):
            self.registry_logic.put_agent(agent_id, config.model_dump(mode="json"), version)
        self.service = StorageService()
        self.faults = Faults()
        self.writes: list[str] = []
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self._executors: dict[str, RunnerExecutor] = {}
        self._names = itertools.count()
        self.dead: list[Member] = []
        self.pool: SlotPool[Member] | None = None

    # -- registry ---------------------------------------------------------------------------
    async def registry(self, op: str, **kwargs: Any) -> Any:
        if op == "run_actors":
            return self.registry_logic.run_actors_of(kwargs["run_ids"])
        if op == "mark_started":
            return self.registry_logic.index.mark_started(kwargs["run_id"], kwargs["actor"])
        if op == "request_cancel":
            return self.registry_logic.index.request_cancel(kwargs["run_id"])
        return getattr(self.registry_logic, op)(**kwargs)

    def registry_post(self, op: str, **kwargs: Any) -> None:
        self.posted.append((op, kwargs))
        asyncio.get_running_loop().create_task(self.registry(op, **kwargs))

    async def wait_released(self, run_ids: list[str], timeout: float | None, waiter: str) -> str:
        return await self.registry_logic.index.wait_released(run_ids, timeout, waiter)

    # -- storage -----------------------------------------------------------------------------
    async def write(self, kind: str, **kwargs: Any) -> Any:
        left = self.faults.failing_writes.get(kind, 0)
        if left:
            self.faults.failing_writes[kind] = left - 1
            self.faults.fired.append(f"write:{kind}")
            raise RunnerHostError(ErrorCode.RUNTIME_ERROR, "database unavailable", retryable=True)
        self.writes.append(kind)
        async with self.db.transaction() as session:
            return await self.service.write(session, kind, kwargs)

    async def read(self, kind: str, **kwargs: Any) -> Any:
        async with self.db.transaction() as session:
            return await self.service.read(session, kind, kwargs)

    # -- RunActors ----------------------------------------------------------------------------
    async def new_member(self, runs_per_actor: int = 1) -> Member:
        await asyncio.sleep(0)
        return Member(f"member-{next(self._names)}", RunSlots(runs_per_actor))

    def address_of(self, member: Member) -> str:
        return member.name

    async def claim_steering(self, actor: str, run_id: str, item: dict[str, Any]) -> str:
        member = self._member_by_name(actor)
        return "refused" if member is None else await member.slots.claim_steering(run_id, item, 1.0)

    async def cancel_on(self, actor: str, run_id: str, reason: str, rollback: bool, early: bool = False) -> bool:
        member = self._member_by_name(actor)
        if member is None or not member.alive:
            return False
        return member.slots.cancel(run_id, reason, rollback, early=early)

    def _member_by_name(self, name: str) -> Member | None:
        if self.pool is None:
            return None
        return next((m for m in self.pool.members() if m.name == name), None)

    async def check_member(self, member: Member) -> None:
        if self.faults.die_before_start:
            self.faults.die_before_start -= 1
            self.faults.fired.append("die_before_start")
            member.alive = False
        if not member.alive:
            raise RunActorGone(handed_over=False)

    async def execute(self, member: Member, plan: RunPlan) -> AsyncIterator[Any]:
        if not member.alive:
            raise RunActorGone()
        if self.faults.die_on_hand_over:
            self.faults.die_on_hand_over -= 1
            self.faults.fired.append("die_on_hand_over")
            member.alive = False
            raise RunActorGone()
        executor = self._executors.get(plan.runner_target)
        if executor is None:
            executor = self._executors[plan.runner_target] = RunnerExecutor(
                load_target(plan.runner_target)(), plan.identity.runner_id)
        slot = member.slots.open(RunSlot(plan, _SlotPorts(self), _Backend(self),
                                         _InProcessStream(executor, member.slots, self.faults)))
        member.runs.append(plan.run_id)
        relayed = 0
        try:
            async for item in slot.execute():
                if not member.alive:
                    raise RunActorGone()
                if item[1] is not None:
                    member.slots.close(plan.run_id)
                yield item
                relayed += 1
                if relayed == 1 and item[1] is None and self.faults.die_after_first_batch:
                    self.faults.die_after_first_batch -= 1
                    self.faults.fired.append("die_after_first_batch")
                    member.alive = False
                    executor.cancel(plan.run_id)
                    raise RunActorGone()
        finally:
            member.slots.close(plan.run_id)

    async def executor(self, run: Any) -> Any:
        return _NoExecutor()

    # -- delivery -----------------------------------------------------------------------------
    def _engine(self) -> Any:
        if self.delivery is None:
            raise RunnerHostError(ErrorCode.RUNTIME_ERROR, "this test host has no delivery engine")
        return self.delivery

    async def deliver_frames(self, plan: Any, frames: list[dict[str, Any]]) -> Any:
        return await self._engine().on_frames(plan, frames)

    async def deliver_terminal(self, plan: Any, frame: dict[str, Any]) -> Any:
        return await self._engine().on_terminal(plan, frame)

    async def send_message(self, plan: Any, text: str, *, key: str, address: Any, ordinal: int) -> Any:
        return await self._engine().send_message(plan, text, key=key, address=address, ordinal=ordinal)

    async def member_died(self, member: Member | None) -> None:
        if member is not None and self.pool is not None:
            self.dead.append(member)
            self.pool.discard(member)


def make_driver(ports: InProcessPorts, *, run_actors: int = 2, max_size: int = 4, runs_per_actor: int = 1,
                queue_timeout_s: float = 30.0, grow_after: float = 0.0,
                connections: dict[str, str] | None = None) -> RunDriver:
    pool: SlotPool[Member] = SlotPool(lambda: ports.new_member(runs_per_actor), name="run slots",
                                      slots_per_member=runs_per_actor, min_size=run_actors, max_size=max_size,
                                      grow_after=grow_after)
    ports.pool = pool
    return RunDriver(ports, pool, ResourceCatalog(), DriverSettings(queue_timeout_s=queue_timeout_s,
                                                                    connections=dict(connections or {})))


async def collect(stream: AsyncIterator[dict[str, Any]], timeout: float = 10.0) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        return [frame async for frame in stream]
    return await asyncio.wait_for(go(), timeout)
