"""RunActor: the actor of active runs — a pooled, reused process holding ``runs_per_actor`` slots.

A thin shell over :mod:`actors.core.run_slot`: each run it executes gets a
:class:`RunSlot` (frozen authorization snapshot, steering queue, result sequencing,
deadline/cancel, the runner API); the runner executes in this process (``in_actor``), in a
pooled runner worker (``pool``) or in the conversation's session actor (``session``).
With the default ``runs_per_actor = 1`` each active run is exactly one actor.

``execute`` streams ``(frames, final)`` items (see ``RunSlot.execute``); the host commits
``final`` before it shows anyone the terminal frame. API calls for a run id that has no open
slot here — including a finished one — are ``unauthorized``.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator

import ray
from ray.exceptions import RayActorError

from protocol.context import RunContext
from protocol.errors import ErrorCode, RunnerHostError
from protocol.logs import get_logger

from . import constants, tracing
from .addresses import ActorAddress
from .core.api_client import LocalRunnerAPI
from .core.discovery import load_target
from .core.run_slot import (
    ExecutorCrashed,
    ExecutorUnavailable,
    RunOutput,
    RunPlan,
    RunSlot,
    RunSlots,
    token_digest,
)
from .core.runner_exec import RunnerExecutor
from .process import freeze_startup_objects
from .providers_backend import ProviderBackend
from .retry import call_with_retry, reply, unwrap

log = get_logger(__name__)

__all__ = ["RunActor", "ExecutorUnavailable", "token_digest"]


class _InActor:
    """The runner runs in this RunActor (trusted in-process runners: one hop less)."""

    def __init__(self, executor: RunnerExecutor, slots: RunSlots) -> None:
        self._executor = executor
        self._slots = slots

    async def check(self) -> None:
        return None

    def batches(self, ctx: RunContext, token: str) -> AsyncIterator[list[Any]]:
        api = LocalRunnerAPI(ctx.run_id, token, self._slots.call, self._slots.stream)
        return self._executor.execute(ctx, api)

    async def stop(self, run_id: str) -> None:
        self._executor.cancel(run_id)


class _Remote:
    """The runner runs in a pooled worker or a session actor, streamed over Ray."""

    def __init__(self, executor: ActorAddress, me: ActorAddress) -> None:
        self._address = executor
        self._me = me
        self._handle: Any = None

    async def check(self) -> None:
        try:
            self._handle = await self._address.resolve()
        except ValueError:  # no actor of that name any more
            self._address.forget()
            raise ExecutorUnavailable(self._address.name) from None
        if self._address.silent_for() <= constants.EXECUTOR_RECHECK_S:
            return
        # Silent for a while: it may have died with its node while idle. A dead one means
        # "retry elsewhere" before anything ran; a live one answers in a millisecond.
        try:
            await asyncio.wait_for(self._handle.ping.remote(), constants.PING_TIMEOUT_S)
        except (RayActorError, asyncio.TimeoutError):
            self._address.forget()
            raise ExecutorUnavailable(self._address.name) from None
        self._address.heard_from()

    async def batches(self, ctx: RunContext, token: str) -> AsyncIterator[list[Any]]:
        gen = self._handle.run.options(num_returns="streaming").remote(ctx, self._me, token)
        try:
            async for ref in gen:
                batch = await ref
                self._address.heard_from()
                yield batch
        except RayActorError:
            raise ExecutorCrashed(self._address.name) from None

    async def stop(self, run_id: str) -> None:
        try:
            await asyncio.wait_for(self._handle.cancel_run.remote(run_id), constants.STOP_RUNNER_TIMEOUT_S)
        except Exception:  # a dead executor has nothing left to stop
            pass


class _Ports:
    def __init__(self, storage: Any, registry: Any, address: ActorAddress) -> None:
        self._storage = storage
        self._registry = registry
        self._address = address

    async def write(self, kind: str, **kwargs: Any) -> Any:
        return unwrap(await call_with_retry(lambda: self._storage.write.remote(kind, kwargs),
                                            what=f"storage {kind}"))

    async def register_token(self, digest: str, run_id: str) -> None:
        await self._registry.register_token.remote(digest, run_id, self._address)

    async def revoke_tokens(self, run_id: str) -> None:
        await self._registry.revoke_run_tokens.remote(run_id)

    async def send_message(self, plan: Any, text: str, *, key: str, address: dict[str, Any] | None,
                           ordinal: int) -> dict[str, Any]:
        """Through the cluster's delivery actor (found by name; the host made it before the run)."""
        from .delivery_actor import DELIVERY_NAME
        where = ActorAddress(DELIVERY_NAME, self._address.namespace)
        try:
            delivery = await where.resolve()
        except ValueError:
            raise RunnerHostError(ErrorCode.RUNTIME_ERROR, "the delivery actor is not running",
                                  retryable=True) from None
        wire = plan.model_dump(mode="json")
        return unwrap(await call_with_retry(lambda: delivery.send_message.remote(wire, text, key, address, ordinal),
                                            what="delivery send_message"))


@ray.remote(max_restarts=0, max_concurrency=1000, enable_task_events=False)
class RunActor:
    def __init__(self, storage: Any, providers: Any, registry: Any, address: ActorAddress,
                 runs_per_actor: int = 1, otlp_endpoint: str | None = None) -> None:
        tracing.configure(otlp_endpoint)
        self.address = address
        self._ports = _Ports(storage, registry, address)
        self._backend = ProviderBackend(storage, providers)
        self._slots = RunSlots(runs_per_actor)
        self._executors: dict[str, RunnerExecutor] = {}
        freeze_startup_objects()

    async def ping(self) -> dict[str, Any]:
        return {"busy": len(self._slots), "node_id": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid()}

    # -- the run ------------------------------------------------------------------------------
    async def execute(self, plan: RunPlan) -> AsyncIterator[RunOutput]:
        slot = self._slots.open(RunSlot(plan, self._ports, self._backend, self._stream_of(plan)))
        try:
            async for item in slot.execute():
                if item[1] is not None:  # the closing item: the slot is free before the host hears of it
                    self._slots.close(plan.run_id)
                yield item
        finally:
            self._slots.close(plan.run_id)

    def _stream_of(self, plan: RunPlan) -> Any:
        if plan.execution != "in_actor":
            return _Remote(plan.executor, self.address)
        executor = self._executors.get(plan.runner_target)
        if executor is None:
            executor = self._executors[plan.runner_target] = RunnerExecutor(
                load_target(plan.runner_target)(), plan.identity.runner_id)
        return _InActor(executor, self._slots)

    # -- control ----------------------------------------------------------------------------------
    async def cancel(self, run_id: str, reason: str | None = None, rollback: bool = False,
                     early: bool = False) -> bool:
        """``early``: the run is leased here but its plan may not have arrived yet."""
        return self._slots.cancel(run_id, reason, rollback, early=early)

    async def claim_steering(self, run_id: str, item: dict[str, Any]) -> str:
        """"claimed", "duplicate" (claimed before) or "refused" (no such run, full, not steerable)."""
        return await self._slots.claim_steering(run_id, item, constants.STEER_CLAIM_WAIT_S)

    # -- the runner-facing API ----------------------------------------------------------------------
    async def api(self, run_id: str, token: str, method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        return await reply(self._slots.call(run_id, token, method, kwargs))

    async def api_stream(self, run_id: str, token: str, method: str, kwargs: dict[str, Any]):
        try:
            async for chunk in self._slots.stream(run_id, token, method, kwargs):
                yield {"ok": chunk}
        except RunnerHostError as exc:
            yield {"error": exc.to_dict()}

    async def gateway_call(self, run_id: str, method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Runner-API call from the harness gateway (already token-checked by the gateway)."""
        return await reply(self._slots.gateway_call(run_id, method, kwargs))

