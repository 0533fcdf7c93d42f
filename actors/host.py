"""Host: the actor layer as an ingress process sees it. One per ingress replica.

A thin Ray shell around :class:`actors.core.driver.RunDriver` (the run flow) and
:class:`actors.core.slots.SlotPool` (capacity): it creates and finds the control-plane actors
(storage, registry, providers), owns this host's pools of RunActors and runner workers,
implements the driver's ports with Ray calls — coalesced, so the calls of concurrent runs share
messages — and runs the host's background loops:

* heartbeat — this host is alive (``runnerhost_host``); a host silent for
  ``RUNNERHOST_HOST_DEAD_AFTER_S`` is gone;
* sweep — finalize the runs of hosts that are gone (queued ones included) and runs left past their
  deadline, release their conversation lanes; honour cancellations of this host's queued runs
  requested through another host;
* upkeep — drop dead idle pool members, retire idle ones, top pools up, follow the cluster's free
  ``runnerhost_run_slot`` capacity.

Every RunActor claims one ``runnerhost_run_slot`` unit, always: node types declare how many they
offer (``actors.placement.node_run_slots``). When runs wait and no node has a free slot, the pool
still starts (at most ``max_creating``) RunActor creations: Ray keeps them PENDING_CREATION, which
is the resource demand the autoscaler adds a node for; they stay pending while runs wait for them
and are cancelled once nobody does (``SlotPool``'s ``blocked`` rule).
"""
from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import ray
from ray.exceptions import RayActorError

from platforms.config import PlatformsSettings
from protocol.agents import AgentConfig
from protocol.errors import ErrorCode, RunnerHostError
from protocol.events import EventEnvelope
from protocol.logs import get_logger

from . import constants, metrics, tracing
from .addresses import ActorAddress, PooledActor
from .core.authz import ResourceCatalog
from .core.coalesce import Coalescer
from .core.driver import AcceptedRun, DriverSettings, RunActorGone, RunDriver
from .core.health import RegistryWatch
from .core.lifecycle import Cause
from .core.retention import run_retention
from .core.run_slot import RunOutput, RunPlan, token_digest
from .core.slots import Reservation, SlotPool
from .host_config import HostConfig
from .placement import RUN_SLOT_RESOURCE, pool_options, run_slot_claim
from .provider_actor import ensure_providers
from .registry_actor import ensure_registry
from .retry import call_with_retry, unwrap
from .run_actor import RunActor
from .runner_worker import RunnerWorker
from .storage_actor import ensure_storage, storage_version
from .tasks import spawn_detached

log = get_logger(__name__)



class _NoExecutor:
    """in_actor runs: the runner executes in the RunActor itself."""

    address = None

    async def release(self, *, dead: bool = False) -> None:
        return None

    async def stop(self, run_id: str) -> None:
        return None  # the runner died with its RunActor


class _LeasedWorker:
    def __init__(self, pool: SlotPool[PooledActor], reservation: Reservation[PooledActor],
                 on_dead: Callable[[SlotPool[PooledActor], PooledActor], Awaitable[None]]) -> None:
        self._pool, self._reservation, self._on_dead = pool, reservation, on_dead
        self.member = reservation.member
        self.address = self.member.address

    async def release(self, *, dead: bool = False) -> None:
        if dead:
            await self._on_dead(self._pool, self.member)
        self._reservation.cancel()

    async def stop(self, run_id: str) -> None:
        await _stop_on(self.address, run_id)


class _SessionExecutor:
    def __init__(self, address: ActorAddress) -> None:
        self.address = address

    async def release(self, *, dead: bool = False) -> None:
        if dead:
            self.address.forget()

    async def stop(self, run_id: str) -> None:
        await _stop_on(self.address, run_id)


async def _stop_on(address: ActorAddress, run_id: str) -> None:
    """Cancel ``run_id``'s runner on a worker or session actor (nothing to stop if it is gone)."""
    try:
        handle = await address.resolve()
        await asyncio.wait_for(handle.cancel_run.remote(run_id), constants.STOP_RUNNER_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - a dead executor has nothing left to stop
        log.info("stopping run %s on %s: %s", run_id, address.name, type(exc).__name__)


class _RayPorts:
    """The driver's ports over Ray (see ``actors.core.driver.HostPorts``)."""

    def __init__(self, host: "Host") -> None:
        self._host = host
        self.host_id = host.host_id
        # Sends run detached from the calling request: a client hang-up (Serve cancels its request and
        # Ray its child calls) must not fail the other runs' ops riding in the same batch.
        self._registry = Coalescer(self._send_registry, name="registry calls", spawn=spawn_detached)
        self._storage = Coalescer(self._send_storage, name="storage writes", max_inflight=2, spawn=spawn_detached)

    async def _send_registry(self, ops: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        registry = self._host.registry
        return await call_with_retry(lambda: registry.batch.remote(ops), what="registry batch")

    async def _send_storage(self, ops: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        storage = self._host.storage
        return await call_with_retry(lambda: storage.write_many.remote(ops), what="storage writes")

    async def registry(self, op: str, **kwargs: Any) -> Any:
        return unwrap(await self._registry.call((op, kwargs)))

    def registry_post(self, op: str, **kwargs: Any) -> None:
        self._registry.post((op, kwargs))

    async def wait_released(self, run_ids: list[str], timeout: float | None, waiter: str) -> str:
        return await self._host.registry.wait_released.remote(run_ids, timeout, waiter)

    async def write(self, kind: str, **kwargs: Any) -> Any:
        return unwrap(await self._storage.call((kind, kwargs)))

    async def read(self, kind: str, **kwargs: Any) -> Any:
        storage = self._host.storage
        return unwrap(await call_with_retry(lambda: storage.read.remote(kind, kwargs), what=f"storage {kind}"))

    async def claim_steering(self, actor: ActorAddress, run_id: str, item: dict[str, Any]) -> str:
        handle = await actor.resolve()
        return await asyncio.wait_for(handle.claim_steering.remote(run_id, item),
                                      constants.STEER_CLAIM_WAIT_S + constants.PING_TIMEOUT_S)

    async def cancel_on(self, actor: ActorAddress, run_id: str, reason: str, rollback: bool,
                        early: bool = False) -> bool:
        try:
            handle = await actor.resolve()
            return await asyncio.wait_for(handle.cancel.remote(run_id, reason, rollback, early),
                                          constants.PING_TIMEOUT_S)
        except (RayActorError, ValueError, asyncio.TimeoutError):  # its actor is gone
            return False

    async def check_member(self, member: PooledActor) -> None:
        if member.address.silent_for() <= constants.EXECUTOR_RECHECK_S:
            return
        try:
            await asyncio.wait_for(member.handle.ping.remote(), constants.PING_TIMEOUT_S)
        except (RayActorError, asyncio.TimeoutError):
            raise RunActorGone(handed_over=False) from None
        member.address.heard_from()

    async def execute(self, member: PooledActor, plan: RunPlan) -> AsyncIterator[RunOutput]:
        if plan.delivery is not None:
            self._host.delivery()  # the run may post explicit messages through it: it must exist
        try:
            async for ref in member.handle.execute.options(num_returns="streaming").remote(plan):
                item = await ref
                member.address.heard_from()
                yield item
        except RayActorError:
            raise RunActorGone() from None

    async def executor(self, run: AcceptedRun) -> Any:
        return await self._host.executor_for(run)

    def address_of(self, member: PooledActor) -> ActorAddress:
        return member.address

    async def deliver_frames(self, plan: Any, frames: list[dict[str, Any]]) -> Any:
        delivery = self._host.delivery()
        return unwrap(await delivery.on_frames.remote(plan.model_dump(mode="json"), frames))

    async def deliver_terminal(self, plan: Any, frame: dict[str, Any]) -> Any:
        delivery = self._host.delivery()
        return unwrap(await delivery.on_terminal.remote(plan.model_dump(mode="json"), frame))

    async def member_died(self, member: PooledActor | None) -> None:
        if member is not None:
            self._host.run_actors.discard(member)
            member.address.forget()
        await self._host.prune_all()


class Host:
    def __init__(self, config: HostConfig, storage: Any, registry: Any, providers: Any,
                 catalog: dict[str, Any] | None = None) -> None:
        self.config = config
        self.storage = storage
        self.registry = registry
        self.providers = providers
        self.host_id = f"host_{uuid.uuid4().hex[:20]}"
        pools = config.pools
        self._actor_opts: dict[str, Any] = dict(num_cpus=0, **pool_options(config.spread))
        self._free_slots: float | None = None   # the cluster's free run slots at the last upkeep
        self.run_actors: SlotPool[PooledActor] = SlotPool(
            self._new_run_actor, name="run slots", slots_per_member=pools.runs_per_actor,
            min_size=pools.run_actors_min, max_size=pools.run_actors_max, blocked=self._no_free_slot,
            refresh_blocked=self._refresh_capacity, max_creating=pools.max_creating, create_timeout=pools.create_timeout_s,
            grow_after=pools.grow_after_s, max_waiting=pools.queue_max)
        self.worker_pools: dict[str, SlotPool[PooledActor]] = {}
        catalog = catalog or {}
        self.catalog = ResourceCatalog(
            models=dict(catalog.get("models", {})),
            tools=dict(catalog.get("tools", {})),
            knowledge_bases=sorted(set(config.providers.get("knowledge_bases", []))
                                   | set(catalog.get("knowledge_bases", []))),
        )
        self.ports = _RayPorts(self)
        self.platforms = PlatformsSettings.model_validate(config.platforms)
        self.driver = RunDriver(self.ports, self.run_actors, self.catalog, DriverSettings(
            steering_capacity=config.steering_capacity, gateway_url=config.gateway_url,
            queue_timeout_s=pools.queue_timeout_s, live_frames_kept=constants.LIVE_FRAMES_KEPT,
            connections=self.platforms.platforms()),
            skills=dict(catalog.get("skills") or {}))
        self._delivery: Any = None
        self._background: set[asyncio.Task] = set()
        self._heartbeat_loop: asyncio.Task | None = None
        self._closed = False
        self.registry_watch = RegistryWatch(constants.REGISTRY_UNREACHABLE_FAIL_S)
        self._ray_address, self._ray_session = _ray_identity()

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    async def start(cls, config: HostConfig) -> "Host":
        # Each is reused when it runs this configuration, else drained and replaced (control_plane).
        storage = await ensure_storage(config.storage, namespace=config.namespace)
        registry = await ensure_registry(storage, storage_version(config.storage), config.namespace,
                                         config.extra_runners)
        providers = await ensure_providers(config.providers, config.namespace)
        await registry.ready.remote()
        catalog = await providers.catalog.remote()
        catalog["knowledge_bases"] = unwrap(await storage.read.remote("knowledge_bases", {}))
        tracing.configure(config.otlp_endpoint)
        host = cls(config, storage, registry, providers, catalog)
        has_run_slots = await asyncio.to_thread(_cluster_has, RUN_SLOT_RESOURCE)
        if not has_run_slots:
            log.warning("no node of this Ray cluster declares %r resources: RunActors stay pending until "
                        "one does (declare them per node type, see cluster.yaml; the autoscaler adds such "
                        "nodes on demand)", RUN_SLOT_RESOURCE)
        await host._heartbeat()
        await host._sweep()  # runs of hosts that are gone end now, not a sweep period later
        for agent_id, agent in config.agents.items():
            await host.put_agent(agent_id, agent, only_if_absent=True)
        # Ready means warm: each pool member is a process (~0.4 s of CPU apiece, far more on a
        # loaded 2-core machine); created under traffic they stall intake while the first runs
        # wait for them. Bounded: a cluster with no run slot yet warms while it serves.
        warming = host._spawn(host._warm_pools())
        if has_run_slots:
            try:
                await asyncio.wait_for(asyncio.shield(warming), constants.READY_WARM_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("the pools are not at their minimum after %.0f s; serving while they warm",
                            constants.READY_WARM_TIMEOUT_S)
        host._heartbeat_loop = host._spawn(host._every(constants.HOST_HEARTBEAT_S, host._heartbeat, "heartbeat"))
        if config.pools.health_check_s > 0:
            host._spawn(host._every(config.pools.health_check_s, host._upkeep_pools, "pool upkeep"))
        if config.stale_run_check_s > 0:
            host._spawn(host._every(config.stale_run_check_s, host._sweep, "sweep"))
        host._spawn(host._every(config.storage.retention.interval_s, host._retention, "retention"))
        return host

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = spawn_detached(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def check_health(self) -> None:
        """The replica's health (Serve's ``check_health``): fails when this host itself is broken —
        closed, or its heartbeat loop gone — or when the registry has been unreachable from here for
        longer than ``REGISTRY_UNREACHABLE_FAIL_S``. One registry blip fails no replica (every
        replica pings the same registry: failing on a blip would restart them all at once)."""
        if self._closed:
            raise RuntimeError("this host is closed")
        if self._heartbeat_loop is not None and self._heartbeat_loop.done():
            raise RuntimeError("this host's heartbeat loop has stopped")
        registry = self.registry
        await self.registry_watch.check(
            lambda: asyncio.wait_for(registry.active_count.remote(), constants.HEALTH_REGISTRY_PING_S))

    @staticmethod
    async def _every(interval: float, step: Callable[[], Awaitable[None]], what: str) -> None:
        """``step`` every ``interval`` seconds, forever: a failed round is logged, the next one tries again."""
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except Exception:
                log.exception("%s failed; trying again in %.0f s", what, interval)

    async def _heartbeat(self) -> None:
        await self.ports.write("host_heartbeat", host_id=self.host_id, ray_address=self._ray_address,
                               ray_session=self._ray_session,
                               info={"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()})

    async def _sweep(self) -> None:
        """Finalize what nobody will finish; release its lanes; honour remote cancels of our queue."""
        out = await self.ports.write("reap_orphans", host_id=self.host_id, dead_after_s=constants.HOST_DEAD_AFTER_S,
                                     grace_s=self.config.stale_run_grace_s, ray_address=self._ray_address,
                                     ray_session=self._ray_session)
        if out["finalized"]:
            log.warning("finalized %d run(s) of hosts that are gone (or left past their deadline)",
                        len(out["finalized"]))
        for run_id, agent_id in out["finalized"]:
            self.ports.registry_post("release", run_id=run_id)
            metrics.run_finished(agent_id, "failed", Cause.HOST_LOST.code)
        for host_id in out["gone_hosts"]:
            self.ports.registry_post("release_host", host_id=host_id)
        cancelled = await self.ports.read("cancel_requested", owner_host=self.host_id)
        if cancelled:
            self.driver.cancel_queued(cancelled)

    async def _retention(self) -> None:
        """Remove what has outlived its retention (expired artifacts, idle harness sessions, …)."""
        report = await run_retention(self.ports.write, self.config.storage.retention)
        removed = {k: v for k, v in report.items() if isinstance(v, int) and v and k != "more"}
        if removed:
            log.info("retention removed %s", removed)

    async def close(self) -> None:
        self._closed = True
        await self.driver.close()
        for task in list(self._background):
            task.cancel()
        await self.run_actors.close()
        for pool in self.worker_pools.values():
            await pool.close()
        try:
            await asyncio.wait_for(self.ports.write("host_stop", host_id=self.host_id), 5)
        except Exception:  # the sweep of other hosts finds us by our silence instead
            log.warning("could not record this host's stop")

    def delivery(self) -> Any:
        """The cluster's delivery actor (created on first use)."""
        if self._delivery is None:
            from .delivery_actor import get_or_create_delivery
            self._delivery = get_or_create_delivery(self.platforms, self.storage, self.config.namespace,
                                                    self.config.otlp_endpoint)
        return self._delivery

    # -- pools ---------------------------------------------------------------------------------------
    def _no_free_slot(self) -> bool:
        """No node had a free run slot at the last look: a new RunActor would wait (PENDING_CREATION)
        for the autoscaler, or for another host's RunActor to retire."""
        return self._free_slots is not None and self._free_slots < 1

    async def _refresh_capacity(self) -> None:
        available = await asyncio.to_thread(ray.available_resources)
        before, self._free_slots = self._free_slots, available.get(RUN_SLOT_RESOURCE, 0.0)
        if before is not None and self._free_slots > before:
            self.run_actors.kick()  # a node joined (or others shrank): waiting runs may grow onto it

    def _address(self, kind: str) -> ActorAddress:
        return ActorAddress(f"rh-{kind}-{uuid.uuid4().hex[:20]}", self.config.namespace)

    async def _new_run_actor(self) -> PooledActor:
        address = self._address("run")
        # Always one run slot: with none free it stays PENDING_CREATION — the autoscaler's demand signal.
        # Submitted off the event loop: registering a named actor is a synchronous GCS round trip,
        # slow while the machine is busy starting processes, and the intake must not wait on it.
        actor = await asyncio.to_thread(lambda: RunActor.options(
            name=address.name, namespace=address.namespace, **self._actor_opts, **run_slot_claim()).remote(
            self.storage, self.providers, self.registry, address, self.config.pools.runs_per_actor,
            self.config.otlp_endpoint))
        return await _ready(actor, address)

    def _worker_pool(self, runner_id: str, target: str) -> SlotPool[PooledActor]:
        pool = self.worker_pools.get(runner_id)
        if pool is None:
            p = self.config.pools

            async def factory() -> PooledActor:
                address = self._address("worker")
                worker = RunnerWorker.options(name=address.name, namespace=address.namespace,
                                              **self._actor_opts).remote(runner_id, target)
                return await _ready(worker, address)
            pool = SlotPool(factory, name=f"workers of {runner_id}", slots_per_member=p.runs_per_worker,
                            min_size=p.workers_min, max_size=p.workers_max, max_creating=p.max_creating,
                            create_timeout=p.create_timeout_s, overcommit=True, max_waiting=p.queue_max)
            self.worker_pools[runner_id] = pool
        return pool

    async def warm_runner(self, runner_id: str) -> None:
        target = unwrap(await self.registry.runner_target.remote(runner_id))
        await self._worker_pool(runner_id, target).warm()

    async def executor_for(self, run: AcceptedRun) -> Any:
        """Lease where the run's runner executes (a pool worker, the session actor, or nothing)."""
        execution = run.info.execution
        if execution == "in_actor":
            return _NoExecutor()
        if execution == "session":
            binding, event = run.info.binding, run.event
            key = {"runner_id": binding.runner_id, "binding_id": binding.identity,
                   "conversation_id": event.conversation_id, "thread_id": event.thread_id}
            address = await self.registry.session_actor.remote(key, run.info.target, self.storage,
                                                              self.config.namespace, self.config.session_idle_s)
            return _SessionExecutor(address)
        pool = self._worker_pool(run.info.binding.runner_id, run.info.target)
        reservation = pool.reserve()
        await reservation.wait(self.config.pools.create_timeout_s)
        return _LeasedWorker(pool, reservation, self._worker_died)

    async def _worker_died(self, pool: SlotPool[PooledActor], member: PooledActor) -> None:
        pool.discard(member)
        member.address.forget()
        await self.prune_all()

    async def _upkeep_pools(self) -> None:
        """Drop idle members that died (their node was lost while nothing ran on them, so no run
        noticed), retire members idle past ``idle_shrink_s`` down to each pool's minimum, top the
        pools back up to it, and follow the cluster's free run slots. One pool's failure does not
        skip the others."""
        await self._refresh_capacity()
        metrics.observe_health({"pools": [p.stats() for p in [self.run_actors, *self.worker_pools.values()]]})
        for pool in [self.run_actors, *self.worker_pools.values()]:
            try:
                await self._prune_dead(pool, pool.idle())
                for member in pool.shrink_idle(self.config.pools.idle_shrink_s):
                    member.address.forget()
                    ray.kill(member.handle, no_restart=True)
                await pool.warm()
            except Exception:
                log.exception("upkeep of %s failed", pool.name)

    async def _warm_pools(self) -> None:
        """Bring the RunActor pool and the worker pools of every pooled runner an agent is bound to
        up to their minimum, so the first runs do not pay for actor creation (~0.4 s each)."""
        await self._refresh_capacity()
        await self.run_actors.warm()
        try:
            declared = {d["id"]: d.get("execution", "pool") for d in await self.registry.runners.remote()}
            pooled = set()
            for agent in await self.registry.agents.remote():
                runner_id, chosen = agent["config"]["runner_id"], agent["config"].get("execution", "default")
                execution = declared.get(runner_id)
                if execution != "session" and (chosen == "pool" or (chosen == "default" and execution == "pool")):
                    pooled.add(runner_id)
            for runner_id in sorted(pooled):
                await self.warm_runner(runner_id)
        except Exception:  # warming is an optimisation: runs still grow the pools on demand
            log.exception("could not warm the runner pools")

    @staticmethod
    async def _prune_dead(pool: SlotPool[PooledActor], members: list[PooledActor] | None = None) -> int:
        """Ping ``members`` (default: all of the pool's); discard and kill those that do not answer."""
        async def alive(member: PooledActor) -> bool:
            try:
                await asyncio.wait_for(member.handle.ping.remote(), constants.PING_TIMEOUT_S)
                return True
            except RayActorError:
                return False
            except asyncio.TimeoutError:
                return False
        members = pool.members() if members is None else members
        dead = [m for m, ok in zip(members, await asyncio.gather(*(alive(m) for m in members))) if not ok]
        for member in dead:
            pool.discard(member)
            member.address.forget()
            try:  # a hung one must not linger as an orphaned process
                ray.kill(member.handle, no_restart=True)
            except Exception:
                pass
        return len(dead)

    async def prune_all(self) -> None:
        """Drop dead members of every pool this host owns; one death is rarely alone (node loss)."""
        await asyncio.gather(*(self._prune_dead(p) for p in [self.run_actors, *self.worker_pools.values()]))

    # -- agents, runners, knowledge ---------------------------------------------------------------------
    async def put_agent(self, agent_id: str, agent: AgentConfig, *, only_if_absent: bool = False) -> int:
        """Validate against the registry, persist, then publish. Returns the new version."""
        unwrap(await self.registry.check_agent.remote(agent_id, agent.model_dump(mode="json")))
        stored = unwrap(await self.storage.write.remote("agent_put", {
            "agent_id": agent_id, "config": agent.model_dump(mode="json"), "only_if_absent": only_if_absent}))
        unwrap(await self.registry.put_agent.remote(agent_id, stored["config"], stored["version"]))
        return stored["version"]

    async def ingest_knowledge(self, kb_id: str, doc_id: str, content: str, title: str | None = None,
                               metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Add (or replace) one document of a knowledge base; new bases become grantable at once."""
        result = await self.ports.write("knowledge_ingest", kb_id=kb_id, doc_id=doc_id, title=title,
                                        content=content, metadata=metadata or {})
        if kb_id not in self.catalog.knowledge_bases:
            self.catalog.knowledge_bases = sorted({*self.catalog.knowledge_bases, kb_id})
        return result

    async def knowledge_bases(self) -> list[str]:
        return await self.read("knowledge_bases")

    async def agents(self) -> list[dict[str, Any]]:
        return await self.registry.agents.remote()

    async def runners(self) -> list[dict[str, Any]]:
        return await self.registry.runners.remote()

    async def read(self, kind: str, **kwargs: Any) -> Any:
        """A storage read (the HTTP layer's queries go through here)."""
        return await self.ports.read(kind, **kwargs)

    # -- runs ------------------------------------------------------------------------------------------
    @property
    def live(self) -> dict[str, AcceptedRun]:
        """Runs this host is driving, by id."""
        return self.driver.runs

    async def submit(self, event: EventEnvelope, agent_id: str | None = None, run_id: str | None = None,
                     trace: dict[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Admit and durably accept the event; stream its frames (see ``RunDriver.submit``). Runs in a
        task of its own: the run (and its accept) never depend on the caller's task. ``trace``: the
        inbound W3C trace context (``actors.tracing.from_headers``)."""
        return await asyncio.shield(spawn_detached(self.driver.submit(event, agent_id, run_id, trace)))

    async def submit_background(self, event: EventEnvelope, agent_id: str | None = None,
                                trace: dict[str, str] | None = None) -> dict[str, Any]:
        """Accept now (errors surface to the caller), run in the background; the first frame."""
        stream = await self.submit(event, agent_id, trace=trace)
        first = await stream.__anext__()
        await stream.aclose()  # the run is driven by its own task, not by this reader
        return first

    def join(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        return self.driver.join(run_id)

    async def cancel(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        return await self.driver.cancel(run_id, reason)

    async def gateway_call(self, token: str, method: str, kwargs: dict[str, Any]) -> Any:
        """A harness's runner-API call through the MCP gateway, authorized by its capability token."""
        if not isinstance(token, str) or not token:
            raise RunnerHostError(ErrorCode.UNAUTHORIZED, "missing capability token")
        found = unwrap(await self.registry.resolve_token.remote(token_digest(token)))
        try:
            handle = await found["actor"].resolve()
            return unwrap(await handle.gateway_call.remote(found["run_id"], method, kwargs))
        except (RayActorError, ValueError):
            raise RunnerHostError(ErrorCode.UNAUTHORIZED, "run is not active") from None

    async def health(self) -> dict[str, Any]:
        """Pools, queue, storage and nodes as this host sees them (the console's Health page)."""
        storage = await self.storage.stats.remote()
        nodes = await asyncio.to_thread(ray.nodes)
        return {
            "host_id": self.host_id,
            "registry": {"ping_failures": self.registry_watch.failures,
                         "silent_s": round(self.registry_watch.silent_for, 1)},
            "pools": [self.run_actors.stats(), *(p.stats() for p in self.worker_pools.values())],
            "runs": {"live": len(self.driver.runs), "queued": self.run_actors.waiting},
            "storage": storage,
            "coalescing": {"registry": {"batches": self.ports._registry.batches, "ops": self.ports._registry.ops},
                           "storage": {"batches": self.ports._storage.batches, "ops": self.ports._storage.ops}},
            "workers": [{"runner_id": r, **p.stats()} for r, p in self.worker_pools.items()],
            "nodes": [{"node_id": n["NodeID"], "alive": n["Alive"], "resources": n.get("Resources", {})}
                      for n in nodes],
        }


async def _ready(actor: Any, address: ActorAddress) -> PooledActor:
    """Wait until a new actor answers; kill it if that never happens (timeout, cancellation)."""
    try:
        await actor.ping.remote()
    except BaseException:
        ray.kill(actor, no_restart=True)
        raise
    address.bind(actor)
    address.heard_from()
    return PooledActor(actor, address)


def _cluster_has(resource: str) -> bool:
    try:
        return resource in ray.cluster_resources()
    except Exception:  # not connected / GCS hiccup: act as a cluster without slot declarations
        return False


def _ray_identity() -> tuple[str | None, str | None]:
    try:
        context = ray.get_runtime_context()
        return context.gcs_address, context.get_session_name()
    except Exception:
        return None, None

