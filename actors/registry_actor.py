"""RegistryActor: named, detached discovery and coordination point.

Thin shell over :class:`actors.core.registry.Registry`. On (re)start it
reloads agents from storage, so a restart loses only the in-memory index of
active runs — whose RunActors are then finalized by their callers.
"""
from __future__ import annotations

import asyncio
from typing import Any

import ray

from protocol.errors import ErrorCode, RunnerHostError
from protocol.logs import get_logger

from . import constants
from .addresses import ActorAddress
from .core.registry import Registry
from .process import freeze_startup_objects
from .retry import reply, unwrap

log = get_logger(__name__)

REGISTRY_NAME = "runnerhost-registry"


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=10000, num_cpus=0,
            enable_task_events=False)
class RegistryActor:
    def __init__(self, storage: Any, extra_runners: dict[str, str] | None = None, config_version: str = "") -> None:
        self._storage = storage
        self._version = config_version
        self._registry = Registry(extra_runners)
        self._loaded = False
        self._sessions: dict[str, Any] = {}
        freeze_startup_objects(collect=True)

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        rows = unwrap(await self._storage.read.remote("agents_list", {}))
        try:
            self._registry.load_agents([(r["agent_id"], r["config"], r["version"]) for r in rows])
        except RunnerHostError as exc:
            log.error("stored agents are inconsistent: %s", exc.message)
        self._loaded = True

    async def ready(self) -> bool:
        await self._ensure_loaded()
        return True

    async def config_version(self) -> str:
        return self._version

    # -- runners ---------------------------------------------------------------------
    async def runners(self) -> list[dict[str, Any]]:
        return [s.descriptor.model_dump(mode="json") for s in self._registry.specs.values()]

    async def refresh(self) -> list[str]:
        """Re-discover runners (new entry points); returns the discovery warnings."""
        return self._registry.refresh()

    async def runner_target(self, runner_id: str) -> dict[str, Any]:
        return await reply(self._target(runner_id))

    async def _target(self, runner_id: str) -> str:
        return self._registry.spec(runner_id).target

    # -- agents ---------------------------------------------------------------------
    async def put_agent(self, agent_id: str, config: dict[str, Any], version: int) -> dict[str, Any]:
        async def go():
            await self._ensure_loaded()
            self._registry.put_agent(agent_id, config, version)
            return True
        return await reply(go())

    async def check_agent(self, agent_id: str, config: dict[str, Any]) -> dict[str, Any]:
        async def go():
            await self._ensure_loaded()
            self._registry.check_agent(agent_id, config)
            return True
        return await reply(go())

    async def agents(self) -> list[dict[str, Any]]:
        await self._ensure_loaded()
        return [{"agent_id": e.agent_id, "version": e.version, "config": e.config.model_dump(mode="json")}
                for e in self._registry.resolver.agents.values()]

    # -- runs ----------------------------------------------------------------------
    #: What a host may send in one ``batch`` call (each op answered on its own).
    BATCH_OPS = frozenset({"admit", "admit_fallback", "mark_started", "release", "release_host",
                           "request_cancel", "binding", "run_actors"})

    async def batch(self, ops: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Several hosts' calls in one message (see ``actors.core.coalesce``), in order."""
        await self._ensure_loaded()
        return [await reply(self._op(name, kwargs)) for name, kwargs in ops]

    async def _op(self, name: str, kwargs: dict[str, Any]) -> Any:
        if name not in self.BATCH_OPS:
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, f"unknown registry op {name!r}")
        if name == "mark_started":
            return self._registry.index.mark_started(kwargs["run_id"], kwargs["actor"])
        if name == "request_cancel":
            return self._registry.index.request_cancel(kwargs["run_id"])
        if name == "run_actors":
            return self._registry.run_actors_of(kwargs["run_ids"])
        return getattr(self._registry, name)(**kwargs)

    async def admit(self, run_id: str, agent_id: str | None, event: dict[str, Any], actor: Any = None,
                    host_id: str | None = None, digest: str | None = None) -> dict[str, Any]:
        async def go():
            await self._ensure_loaded()
            return self._registry.admit(run_id=run_id, agent_id=agent_id, event=event, actor=actor,
                                        host_id=host_id, digest=digest)
        return await reply(go())

    async def release(self, run_id: str) -> bool:
        return self._registry.release(run_id)

    async def register_token(self, token_hash: str, run_id: str, actor: Any) -> None:
        self._registry.register_token(token_hash, run_id, actor)

    async def revoke_run_tokens(self, run_id: str) -> int:
        return self._registry.revoke_run_tokens(run_id)

    async def resolve_token(self, token_hash: str) -> dict[str, Any]:
        async def go():
            run_id, actor = self._registry.resolve_token(token_hash)
            return {"run_id": run_id, "actor": actor}
        return await reply(go())

    async def wait_released(self, run_ids: list[str], timeout: float | None = None,
                            waiter: str | None = None) -> str:
        """"released", "timeout", or "cancelled" (the waiting run itself was cancelled)."""
        return await self._registry.index.wait_released(run_ids, timeout, waiter)

    async def run_actors(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """``{"run_id", "actor", "host_id"}`` of each admitted run; ``actor`` is None until it starts."""
        return self._registry.run_actors_of(run_ids)

    async def lanes(self) -> list[dict[str, Any]]:
        """Every admitted run (for health and reconciliation)."""
        return [{"run_id": e.run_id, "host_id": e.host_id, "started": e.started}
                for e in self._registry.index.entries()]

    # -- directory of session actors -------------------------------------------------------
    async def session_actor(self, key: dict[str, Any], target: str, storage: Any, namespace: str,
                            idle_s: float) -> ActorAddress:
        """Get or create the ConversationSessionActor of ``key`` (rebuilt if it died or was reaped);
        returns its address (executors travel by address, see ``actors.addresses``)."""
        from protocol.sessions import SessionKey

        from .placement import session_options
        from .session_actor import ConversationSessionActor, session_actor_name
        name = session_actor_name(SessionKey(**key), self._version)
        handle = self._sessions.get(name)
        if handle is not None:
            try:
                info = await asyncio.wait_for(handle.ping.remote(), constants.PING_TIMEOUT_S)
                return ActorAddress(name, namespace, info["actor_id"])
            except Exception:  # dead, reaped or hung: rebuild it from Postgres
                self._sessions.pop(name, None)
        handle = ConversationSessionActor.options(
            name=name, namespace=namespace, lifetime="detached", get_if_exists=True,
            **session_options()).remote(key, target, storage, idle_s)
        info = await asyncio.wait_for(handle.ping.remote(), constants.SESSION_CREATE_TIMEOUT_S)
        self._sessions[name] = handle
        return ActorAddress(name, namespace, info["actor_id"])

    async def active_count(self) -> int:
        return self._registry.index.active_count()


async def ensure_registry(storage: Any, storage_version: str, namespace: str | None,
                          extra_runners: dict[str, str] | None) -> Any:
    """The cluster's one registry (named, detached); created by the first host that needs it and
    replaced when its configuration — the extra runners, or the storage actor it holds — changed."""
    from .control_plane import config_version, ensure_actor
    from .placement import control_plane_options
    version = config_version({"extra_runners": extra_runners or {}, "storage": storage_version})
    return await ensure_actor(RegistryActor, name=REGISTRY_NAME, namespace=namespace, version=version,
                              args=(storage, extra_runners), options={"num_cpus": 0, **control_plane_options()},
                              what="the registry")
