"""Host: the client side of the actor layer. One per ingress process.

It turns one event into one run: admit through the registry (binding +
multitask decision), lease a warm RunActor and a runner worker, hand the
RunActor a complete plan, relay its frames, and — whatever happens to the
actors — end the stream with exactly one terminal frame and a finalized
ledger row. Pools of RunActors and runner workers live here, so the hot path
has no pool hop.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import ray
from ray.exceptions import RayActorError

from protocol.agents import AgentBinding, AgentConfig
from protocol.errors import ErrorCode, RunnerHostError, not_found
from protocol.events import EventEnvelope
from protocol.manifest import RunnerDescriptor, RunnerManifest

from .addresses import ActorAddress, PooledActor
from .core.authz import ResourceCatalog, compute_access
from .core.context_builder import build_context
from .core.conversations import Decision
from .core.frames import failed_frame, is_terminal
from .core.pool import LeasePool
from .core.runner_api import RunIdentity
from .host_config import HostConfig
from .placement import control_plane_options, pool_options
from .registry_actor import RegistryActor, REGISTRY_NAME
from .retry import call_with_retry, unwrap
from .run_actor import ExecutorUnavailable, RunActor, token_digest
from .runner_worker import RunnerWorker
from .provider_actor import get_or_create_providers
from .storage_actor import get_or_create_storage
from .tasks import spawn_detached
from store.state import scope_key as build_scope_key

log = logging.getLogger(__name__)

QUEUE_WAIT_S = 3600.0


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


@dataclass
class LiveRun:
    """Frames of a run in flight in this process, for joiners (``/runs/{id}/stream``)."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    done: bool = False

    async def publish(self, frames: list[dict[str, Any]]) -> None:
        async with self.changed:
            self.frames.extend(frames)
            if frames and is_terminal(frames[-1]):
                self.done = True
            self.changed.notify_all()


class Host:
    def __init__(self, config: HostConfig, storage: Any, registry: Any, providers: Any,
                 catalog: dict[str, Any] | None = None) -> None:
        self.config = config
        self.storage = storage
        self.registry = registry
        self.providers = providers
        pools = config.pools
        spread = pool_options(config.spread)
        self._actor_opts = dict(num_cpus=0, **spread)
        self.run_actors: LeasePool[PooledActor] = LeasePool(
            self._new_run_actor, min_size=pools.run_actors_min, max_size=pools.run_actors_max,
            acquire_timeout=pools.acquire_timeout_s, name="run-actor pool")
        self.worker_pools: dict[str, LeasePool[PooledActor]] = {}
        self.live: dict[str, LiveRun] = {}
        catalog = catalog or {}
        self.catalog = ResourceCatalog(
            models=dict(catalog.get("models", {})),
            tools=dict(catalog.get("tools", {})),
            knowledge_bases=sorted(set(config.providers.get("knowledge_bases", []))
                                   | set(catalog.get("knowledge_bases", []))),
        )
        self._background: set[asyncio.Task] = set()

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    async def start(cls, config: HostConfig) -> "Host":
        storage = get_or_create_storage(config.storage, namespace=config.namespace)
        registry = RegistryActor.options(
            name=REGISTRY_NAME, namespace=config.namespace, lifetime="detached", get_if_exists=True,
            num_cpus=0, **control_plane_options()).remote(storage, config.extra_runners)
        providers = get_or_create_providers(config.providers, config.namespace)
        await registry.ready.remote()
        catalog = await providers.catalog.remote()
        catalog["knowledge_bases"] = unwrap(await storage.read.remote("knowledge_bases", {}))
        host = cls(config, storage, registry, providers, catalog)
        recovered = await host._storage_write("recover_stale_runs", grace_s=config.stale_run_grace_s)
        if recovered:
            log.warning("finalized %d run(s) left running past their deadline by a lost host", recovered)
        for agent_id, agent in config.agents.items():
            await host.put_agent(agent_id, agent, only_if_absent=True)
        # Serve at once with a couple of warm RunActors; the rest of the pool warms in the
        # background (each is a process: ~0.4 s apiece, far more on a loaded 2-core machine).
        await host.run_actors.warm(min(2, config.pools.run_actors_min))
        host._background.add(spawn_detached(host._warm_pools()))
        if config.pools.health_check_s > 0:
            host._background.add(spawn_detached(
                host._every(config.pools.health_check_s, host._upkeep_pools, "pool upkeep")))
        if config.stale_run_check_s > 0:
            host._background.add(spawn_detached(
                host._every(config.stale_run_check_s, host._sweep_stale_runs, "stale-run sweep")))
        return host

    @staticmethod
    async def _every(interval: float, step: Callable[[], Awaitable[None]], what: str) -> None:
        """``step`` every ``interval`` seconds, forever: a failed round is logged, the next one tries again."""
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except Exception as exc:
                log.warning("%s failed: %s", what, type(exc).__name__)

    async def _sweep_stale_runs(self) -> None:
        """Finalize runs some lost host left ``running`` past their deadline (any host may: a live one
        ends its runs at their deadline), so they do not wait for the next host start."""
        swept = await self._storage_write("recover_stale_runs", grace_s=self.config.stale_run_grace_s,
                                          include_queued=False)
        if swept:
            log.warning("finalized %d run(s) a lost host left running past their deadline", swept)

    async def _upkeep_pools(self) -> None:
        """Drop idle members that died (their node was lost while nothing ran on them, so no run
        noticed), retire members idle past ``idle_shrink_s`` down to each pool's minimum, and top the
        pools back up to it. One pool's failure does not skip the others."""
        for pool in [self.run_actors, *self.worker_pools.values()]:
            try:
                await self._prune_dead(pool, pool.idle())
                for member in await pool.shrink_idle(self.config.pools.idle_shrink_s):
                    member.address.forget()
                    ray.kill(member.handle, no_restart=True)
                await pool.warm()
            except Exception as exc:
                log.warning("upkeep of %s failed: %s", pool.name, type(exc).__name__)

    async def _warm_pools(self) -> None:
        """Bring the RunActor pool and the worker pools of every pooled runner an agent is bound to
        up to their minimum, so the first runs do not pay for actor creation (~0.4 s each)."""
        await self.run_actors.warm()
        try:
            pooled = {d["id"] for d in await self.registry.runners.remote() if d.get("execution") == "pool"}
            bound = {a["config"]["runner_id"] for a in await self.registry.agents.remote()}
            for runner_id in sorted(pooled & bound):
                await self.warm_runner(runner_id)
        except Exception as exc:  # warming is an optimisation: runs still grow the pools on demand
            log.warning("could not warm the runner pools: %s", type(exc).__name__)

    def _address(self, kind: str) -> ActorAddress:
        return ActorAddress(f"rh-{kind}-{uuid.uuid4().hex[:20]}", self.config.namespace)

    async def _new_run_actor(self) -> PooledActor:
        address = self._address("run")
        actor = RunActor.options(name=address.name, namespace=address.namespace, **self._actor_opts).remote(
            self.storage, self.providers, self.registry, address)
        address.bind(actor)
        await actor.ping.remote()
        return PooledActor(actor, address)

    def _worker_pool(self, runner_id: str, target: str) -> LeasePool[PooledActor]:
        pool = self.worker_pools.get(runner_id)
        if pool is None:
            p = self.config.pools

            async def factory() -> PooledActor:
                address = self._address("worker")
                worker = RunnerWorker.options(name=address.name, namespace=address.namespace,
                                              **self._actor_opts).remote(runner_id, target)
                address.bind(worker)
                await worker.ping.remote()
                return PooledActor(worker, address)
            pool = LeasePool(factory, min_size=p.workers_min, max_size=p.workers_max, shared=True,
                             grow_at=p.runs_per_worker, acquire_timeout=p.acquire_timeout_s,
                             name=f"workers of {runner_id}")
            self.worker_pools[runner_id] = pool
        return pool

    async def warm_runner(self, runner_id: str) -> None:
        target = unwrap(await self.registry.runner_target.remote(runner_id))
        await self._worker_pool(runner_id, target).warm()

    # -- agents ------------------------------------------------------------------------
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
        result = await self._storage_write("knowledge_ingest", kb_id=kb_id, doc_id=doc_id, title=title,
                                           content=content, metadata=metadata or {})
        if kb_id not in self.catalog.knowledge_bases:
            self.catalog.knowledge_bases = sorted({*self.catalog.knowledge_bases, kb_id})
        return result

    async def knowledge_bases(self) -> list[str]:
        return await self._storage_read("knowledge_bases")

    async def agents(self) -> list[dict[str, Any]]:
        return await self.registry.agents.remote()

    async def runners(self) -> list[dict[str, Any]]:
        return await self.registry.runners.remote()

    # -- the run flow --------------------------------------------------------------------
    async def submit(self, event: EventEnvelope, agent_id: str | None = None,
                     run_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Admit the event and stream its frames. Raises RunnerHostError before the first frame."""
        run_id = run_id or new_run_id()
        run_actor = await self.run_actors.acquire()
        try:
            admission = unwrap(await self.registry.admit.remote(
                run_id, agent_id, event.model_dump(include={"event_type", "bot_id", "workspace_id", "source",
                                                             "conversation_id", "thread_id"}),
                run_actor.address))
        except BaseException:
            await self.run_actors.release(run_actor)
            raise
        decision = Decision(admission["decision"])
        if decision is Decision.REJECT:
            await self.run_actors.release(run_actor)
            raise RunnerHostError(ErrorCode.CONFLICT, "the conversation already has an active run and the "
                                  "agent's multitask strategy is 'reject'",
                                  details={"active_run_ids": admission["wait_for"]})
        binding = AgentBinding.model_validate(admission["binding"])
        descriptor = RunnerDescriptor.model_validate(admission["descriptor"])
        if decision is Decision.STEER:
            steered = await self._try_steer(event, binding, admission)
            if steered is not None:
                await self.run_actors.release(run_actor)
                return self._single(steered)
            fallback = await self.registry.admit_fallback.remote(
                run_id, admission["binding"], admission["conv_key"], True, run_actor.address)
            decision, admission["wait_for"] = Decision(fallback["decision"]), fallback["wait_for"]
        return self._run(run_id, event, binding, descriptor, admission, decision, run_actor)

    async def _single(self, frame: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield frame

    async def _try_steer(self, event: EventEnvelope, binding: AgentBinding,
                         admission: dict[str, Any]) -> dict[str, Any] | None:
        """Claim the event into the active run's queue; None means "take the normal path"."""
        target = admission["targets"][0]
        item = {
            "claimed_run_id": target["run_id"], "runner_id": binding.runner_id, "claimed_at": int(time.time()),
            "event": {"event_id": event.event_id, "event_type": event.event_type, "event_time": event.event_time,
                      "source": event.source, "source_event_type": event.source_event_type, "data": event.data},
            "input": event.input.model_dump(mode="json"),
            "conversation": {"conversation_id": event.conversation_id, "thread_id": event.thread_id,
                             "bot_id": event.bot_id, "workspace_id": event.workspace_id,
                             "sender_id": event.actor.actor_id},
            "actor": event.actor.model_dump(mode="json"),
            "subject": event.subject.model_dump(mode="json") if event.subject else None,
        }
        try:
            claimed = await target["actor"].handle().claim_steering.remote(target["run_id"], item)
        except Exception as exc:  # a dying target must not break intake
            log.warning("steering claim into %s failed: %s", target["run_id"], type(exc).__name__)
            return None
        if not claimed:
            return None
        steering_meta = {"status": "queued", "trigger_behavior": "absorbed_into_active_run",
                         "claimed_by_run_id": target["run_id"], "claimed_runner_id": binding.runner_id,
                         "claimed_at": item["claimed_at"]}
        await self._storage_write("event_accept", event=event.model_dump(mode="json"),
                                  binding_id=binding.binding_id, agent_id=binding.agent_id,
                                  runner_id=binding.runner_id, run_id=None,
                                  metadata={"steering": steering_meta}, ledger=None)
        return {"run_id": target["run_id"], "type": "event.steered",
                "data": {"claimed_by_run_id": target["run_id"], "event_id": event.event_id}, "sequence": None}

    def _run(self, run_id: str, event: EventEnvelope, binding: AgentBinding, descriptor: RunnerDescriptor,
             admission: dict[str, Any], decision: Decision, run_actor: PooledActor
             ) -> AsyncIterator[dict[str, Any]]:
        """Start the run's driver task and follow it: the run never depends on its reader."""
        live = self.live[run_id] = LiveRun()
        task = spawn_detached(self._drive(run_id, event, binding, descriptor, admission, decision,
                                          run_actor, live))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return self._follow(live, 0)

    async def _follow(self, live: LiveRun, index: int) -> AsyncIterator[dict[str, Any]]:
        while True:
            async with live.changed:
                while index >= len(live.frames) and not live.done:
                    await live.changed.wait()
                frames, index = live.frames[index:], len(live.frames)
            if not frames:  # done, and nothing left to read
                return
            for frame in frames:
                yield frame
                if is_terminal(frame):
                    return

    async def _drive(self, run_id: str, event: EventEnvelope, binding: AgentBinding,
                     descriptor: RunnerDescriptor, admission: dict[str, Any], decision: Decision,
                     run_actor: PooledActor | None, live: LiveRun) -> None:
        worker_pool = None
        worker = None
        first_sequence = 0
        start: dict[str, Any] | None = None
        try:
            start = self._start_payload(run_id, event, binding)
            if decision in (Decision.QUEUE, Decision.INTERRUPT, Decision.ROLLBACK):
                queued = {"run_id": run_id, "type": "run.queued",
                          "data": {"behind": admission["wait_for"], "strategy": binding.multitask_strategy.value},
                          "sequence": 0}
                await self._storage_write("run_accept", **start, frames=[queued])
                first_sequence = 1
                await live.publish([queued])
                if decision is not Decision.QUEUE:
                    await self._cancel_runs(admission["wait_for"], f"{decision.value} by event {event.event_id}",
                                            rollback=decision is Decision.ROLLBACK)
                await self.registry.wait_released.remote(admission["wait_for"], QUEUE_WAIT_S)
                await self.registry.mark_started.remote(run_id, run_actor.address)
            if descriptor.execution != "session":
                worker_pool = self._worker_pool(binding.runner_id, admission["runner_target"])
            for attempt in (1, 2, 3):
                if descriptor.execution == "session":
                    executor = await self._session_actor(event, binding, admission["runner_target"])
                else:
                    worker = worker or await worker_pool.acquire()
                    executor = worker.address
                plan = self._plan(run_id, event, binding, descriptor, start, executor, first_sequence)
                published = len(live.frames)
                try:
                    async for ref in run_actor.handle.execute.options(num_returns="streaming").remote(plan):
                        frames = await ref
                        if is_terminal(frames[-1]) and frames[-1]["data"].get("code") == "runner.crashed":
                            await self._prune_all()  # before anyone can submit onto a corpse
                        await live.publish(frames)
                    break
                except ExecutorUnavailable:
                    # Its worker (or session actor) was gone before the run began, e.g. its node was
                    # lost while idle: nothing happened yet, so run on a live one.
                    if attempt == 3:
                        raise
                    if worker is not None:
                        await worker_pool.discard(worker)
                        worker.address.forget()
                        worker = None
                    await self._prune_all()
                except RayActorError:
                    if attempt == 3 or len(live.frames) > published:
                        raise
                    # The leased RunActor was dead before the run began: the same, for the RunActor.
                    await self.run_actors.discard(run_actor)
                    run_actor.address.forget()
                    run_actor = None
                    await self._prune_all()
                    run_actor = await self.run_actors.acquire()
                    await self.registry.mark_started.remote(run_id, run_actor.address)
        except ExecutorUnavailable:
            log.warning("no live executor for %s; recording a retryable failure", run_id)
            await self._fail(run_id, live, "runner.crashed", "no live runner worker", True, start)
        except RayActorError:
            log.warning("RunActor of %s died; recording a retryable failure", run_id)
            await self.run_actors.discard(run_actor)
            run_actor.address.forget()
            run_actor = None
            await self._prune_all()
            await self._fail(run_id, live, "host.run_actor_died", "the run's actor died", True, start)
        except RunnerHostError as exc:
            if not live.done:
                await self._fail(run_id, live, f"host.{exc.code.value}", exc.message, exc.retryable, start)
        except Exception as exc:  # never leave a reader hanging or a ledger row open
            log.exception("run %s failed in the host", run_id)
            if not live.done:
                await self._fail(run_id, live, "host.error", type(exc).__name__, True, start)
        finally:
            if not live.done:
                await self._fail(run_id, live, "host.run_actor_died", "the run ended without a terminal frame",
                                 True, start)
            if worker is not None:
                await worker_pool.release(worker)
            if run_actor is not None:
                await self.run_actors.release(run_actor)
            self.live.pop(run_id, None)

    @staticmethod
    async def _prune_dead(pool: LeasePool[PooledActor], members: list[PooledActor] | None = None) -> int:
        """Ping ``members`` (default: all of the pool's) and discard those that do not answer."""
        async def alive(member: PooledActor) -> bool:
            try:
                await asyncio.wait_for(member.handle.ping.remote(), 10)
                return True
            except Exception:
                return False
        members = pool.members() if members is None else members
        dead = [m for m, ok in zip(members, await asyncio.gather(*(alive(m) for m in members))) if not ok]
        for member in dead:
            await pool.discard(member)
            member.address.forget()
        return len(dead)

    async def _prune_all(self) -> None:
        """Drop dead members of every pool this host owns; one death is rarely alone (node loss)."""
        await asyncio.gather(*(self._prune_dead(p) for p in [self.run_actors, *self.worker_pools.values()]))

    async def _fail(self, run_id: str, live: LiveRun, code: str, message: str, retryable: bool,
                    start: dict[str, Any] | None = None) -> None:
        """Finalize a run whose RunActor could not: facts recorded (accepted if they were not yet),
        ledger failed, lane released, terminal frame."""
        frame = failed_frame(run_id, code, message, retryable, None)
        try:
            await self._storage_write("run_abort", run_id=run_id, code=code, message=message, frame=frame,
                                      start=start)
        finally:
            await self._release(run_id)
            await live.publish([frame])

    async def _release(self, run_id: str) -> None:
        try:
            await call_with_retry(lambda: self.registry.release.remote(run_id), what="registry release")
        except RunnerHostError:
            log.error("could not release %s from the registry", run_id)

    async def _cancel_runs(self, run_ids: list[str], reason: str, rollback: bool) -> None:
        for entry in await self.registry.run_actors.remote(run_ids):
            if entry["actor"] is not None:
                try:
                    await entry["actor"].handle().cancel.remote(entry["run_id"], reason, rollback)
                except (RayActorError, ValueError):  # ValueError: no actor of that name any more
                    pass

    async def _session_actor(self, event: EventEnvelope, binding: AgentBinding, target: str) -> ActorAddress:
        key = {"runner_id": binding.runner_id, "binding_id": binding.identity,
               "conversation_id": event.conversation_id, "thread_id": event.thread_id}
        return await self.registry.session_actor.remote(key, target, self.storage, self.config.namespace,
                                                        self.config.session_idle_s)

    def _start_payload(self, run_id: str, event: EventEnvelope, binding: AgentBinding) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "event": event.model_dump(mode="json"),
            "agent_id": binding.agent_id,
            "binding_id": binding.binding_id,
            "runner_id": binding.runner_id,
            "conversation_id": event.conversation_id,
            "deadline_at": time.time() + binding.timeout_s,
            "scope_keys": self._scope_keys(event, binding),
        }

    @staticmethod
    def _scope_keys(event: EventEnvelope, binding: AgentBinding) -> dict[str, str]:
        common = dict(runner_id=binding.runner_id, binding_identity=binding.identity,
                      bot_id=event.bot_id, workspace_id=event.workspace_id)
        keys = {"runner": build_scope_key("runner", **common)}
        if event.conversation_id:
            keys["conversation"] = build_scope_key("conversation", conversation_id=event.conversation_id,
                                                   thread_id=event.thread_id, **common)
        if event.actor.actor_id:
            keys["actor"] = build_scope_key("actor", actor_type=event.actor.actor_type,
                                            actor_id=event.actor.actor_id, **common)
        if event.subject and event.subject.subject_id:
            keys["subject"] = build_scope_key("subject", subject_type=event.subject.subject_type,
                                              subject_id=event.subject.subject_id, **common)
        enabled = set(binding.state_policy.state_scopes) if binding.state_policy.enable_state else set()
        return {scope: key for scope, key in keys.items() if scope in enabled}

    def _plan(self, run_id: str, event: EventEnvelope, binding: AgentBinding, descriptor: RunnerDescriptor,
              start: dict[str, Any], executor: ActorAddress, first_sequence: int) -> dict[str, Any]:
        start["deadline_at"] = time.time() + binding.timeout_s  # the clock starts when the run does
        manifest = RunnerManifest(id=descriptor.id, label=descriptor.label, capabilities=descriptor.capabilities,
                                  permissions=descriptor.permissions)
        snapshot = compute_access(run_id=run_id, manifest=manifest, binding=binding,
                                  conversation_id=event.conversation_id, thread_id=event.thread_id,
                                  catalog=self.catalog, deadline_at=start["deadline_at"])
        snapshot = _with_scopes(snapshot, start["scope_keys"])
        identity = RunIdentity(
            run_id=run_id, runner_id=binding.runner_id, binding_identity=binding.identity,
            bot_id=event.bot_id, workspace_id=event.workspace_id, conversation_id=event.conversation_id,
            thread_id=event.thread_id, actor_type=event.actor.actor_type, actor_id=event.actor.actor_id,
            subject_type=event.subject.subject_type if event.subject else None,
            subject_id=event.subject.subject_id if event.subject else None)
        ctx = build_context(run_id=run_id, event=event, binding=binding, snapshot=snapshot, catalog=self.catalog,
                            runtime_metadata={"binding_id": binding.identity, "agent_id": binding.agent_id})
        return {
            "run_id": run_id, "snapshot": snapshot, "identity": identity, "executor": executor,
            "ctx": ctx.model_dump(mode="json"), "start": start, "scope_keys": start["scope_keys"],
            "steering_capacity": self.config.steering_capacity, "first_sequence": first_sequence,
            "gateway_url": self.config.gateway_url,
            "started_data": {"runner_id": binding.runner_id, "binding_id": binding.binding_id,
                             "agent_id": binding.agent_id, "event_id": event.event_id},
        }

    async def _storage_write(self, kind: str, **kwargs: Any) -> Any:
        return unwrap(await call_with_retry(lambda: self.storage.write.remote(kind, kwargs),
                                            what=f"storage {kind}"))

    async def _storage_read(self, kind: str, **kwargs: Any) -> Any:
        return unwrap(await call_with_retry(lambda: self.storage.read.remote(kind, kwargs),
                                            what=f"storage {kind}"))

    # -- background runs, join, cancel ---------------------------------------------------
    async def submit_background(self, event: EventEnvelope, agent_id: str | None = None) -> dict[str, Any]:
        """Admit now (errors surface to the caller), run in the background."""
        stream = await self.submit(event, agent_id)
        first = await stream.__anext__()
        await stream.aclose()  # the run is driven by its own task, not by this reader
        return first

    async def join(self, run_id: str, poll_s: float = 0.2) -> AsyncIterator[dict[str, Any]]:
        """Frames of a run: live ones from here on, else replayed from the ledger until terminal."""
        live = self.live.get(run_id)
        if live is not None and not live.done:
            async for frame in self._follow(live, len(live.frames)):
                yield frame
            return
        await self._storage_read("run_get", run_id=run_id)  # not_found for an unknown run
        after: str | None = None
        seen = -1
        while True:
            page = await self._storage_read("run_events_page", run_id=run_id, after_cursor=after, limit=100)
            for item in page["items"]:
                if item["sequence"] <= seen:
                    continue
                seen = item["sequence"]
                frame = {"run_id": run_id, "type": item["type"], "data": item["data"], "sequence": item["sequence"]}
                yield frame
                if is_terminal(frame):
                    return
            after = page.get("next_cursor") or after
            if not page["items"]:
                run = await self._storage_read("run_get", run_id=run_id)
                if run["status"] in ("completed", "failed", "cancelled", "timeout"):
                    return
                await asyncio.sleep(poll_s)

    async def cancel(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        entries = await self.registry.run_actors.remote([run_id])
        if entries and entries[0]["actor"] is not None:
            try:
                if await entries[0]["actor"].handle().cancel.remote(run_id, reason or "cancelled by request",
                                                                     False):
                    return {"run_id": run_id, "cancel_requested": True}
            except (RayActorError, ValueError):  # its actor is gone; the ledger tells the rest
                pass
        run = await self._storage_read("run_get", run_id=run_id)
        if run["status"] in ("completed", "failed", "cancelled", "timeout"):
            raise RunnerHostError(ErrorCode.CONFLICT, f"run {run_id} already finished ({run['status']})",
                                  details={"status": run["status"]})
        if entries:  # admitted and waiting in a queue: it will start; cancel it as it starts
            raise RunnerHostError(ErrorCode.CONFLICT, f"run {run_id} is queued; cancel it once it starts")
        raise not_found(f"run {run_id} is not active on this host", run_id=run_id)

    async def gateway_call(self, token: str, method: str, kwargs: dict[str, Any]) -> Any:
        """A harness's runner-API call through the MCP gateway, authorized by its capability token."""
        if not isinstance(token, str) or not token:
            raise RunnerHostError(ErrorCode.UNAUTHORIZED, "missing capability token")
        found = unwrap(await self.registry.resolve_token.remote(token_digest(token)))
        try:
            return unwrap(await found["actor"].handle().gateway_call.remote(found["run_id"], method, kwargs))
        except (RayActorError, ValueError):
            raise RunnerHostError(ErrorCode.UNAUTHORIZED, "run is not active") from None

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()


def _with_scopes(snapshot, scope_keys: dict[str, str]):
    """Restrict state scopes to those this event can address (e.g. no actor id → no actor scope)."""
    from dataclasses import replace
    scopes = snapshot.state_scopes & frozenset(scope_keys)
    return replace(snapshot, state_scopes=scopes, state_ops=snapshot.state_ops if scopes else frozenset())
