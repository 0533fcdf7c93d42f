"""RegistryActor: named, detached discovery and coordination point.

Thin shell over :class:`actors.core.registry.Registry`. On (re)start it
reloads agents from storage, so a restart loses only the in-memory index of
active runs — whose RunActors are then finalized by their callers.
"""
from __future__ import annotations

import logging
from typing import Any

import ray

from protocol.errors import RunnerHostError

from .addresses import ActorAddress
from .core.registry import Registry
from .retry import reply, unwrap

log = logging.getLogger(__name__)

REGISTRY_NAME = "runnerhost-registry"


@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=10000, num_cpus=0,
            enable_task_events=False)
class RegistryActor:
    def __init__(self, storage: Any, extra_runners: dict[str, str] | None = None) -> None:
        self._storage = storage
        self._registry = Registry(extra_runners)
        self._loaded = False
        self._sessions: dict[str, Any] = {}

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

    # -- runners ---------------------------------------------------------------------
    async def runners(self) -> list[dict[str, Any]]:
        return [s.descriptor.model_dump(mode="json") for s in self._registry.specs.values()]

    async def refresh(self) -> list[str]:
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

    async def remove_agent(self, agent_id: str) -> None:
        self._registry.resolver.remove(agent_id)

    async def agents(self) -> list[dict[str, Any]]:
        await self._ensure_loaded()
        return [{"agent_id": e.agent_id, "version": e.version, "config": e.config.model_dump(mode="json")}
                for e in self._registry.resolver.agents.values()]

    # -- runs ----------------------------------------------------------------------
    async def admit(self, run_id: str, agent_id: str | None, event: dict[str, Any], actor: Any) -> dict[str, Any]:
        async def go():
            await self._ensure_loaded()
            return self._registry.admit(run_id=run_id, agent_id=agent_id, event=event, actor=actor)
        return await reply(go())

    async def admit_fallback(self, run_id: str, binding: dict[str, Any], conv_key: str | None,
                             steerable: bool, actor: Any) -> dict[str, Any]:
        return self._registry.admit_fallback(run_id=run_id, binding=binding, conv_key=conv_key,
                                             steerable=steerable, actor=actor)

    async def mark_started(self, run_id: str, actor: Any) -> None:
        self._registry.index.mark_started(run_id, actor)

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

    async def wait_released(self, run_ids: list[str], timeout: float | None = None) -> bool:
        return await self._registry.index.wait_released(run_ids, timeout)

    async def run_actors(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """``{"run_id", "actor"}`` of each admitted run; ``actor`` is None until it starts."""
        return self._registry.run_actors_of(run_ids)

    # -- directory of session actors -------------------------------------------------------
    async def session_actor(self, key: dict[str, Any], target: str, storage: Any, namespace: str,
                            idle_s: float) -> ActorAddress:
        """Get or create the ConversationSessionActor of ``key`` (rebuilt if it died or was reaped);
        returns its address (executors travel by address, see ``actors.addresses``)."""
        from protocol.sessions import SessionKey
        from .placement import session_options
        from .session_actor import ConversationSessionActor, session_actor_name
        name = session_actor_name(SessionKey(**key))
        handle = self._sessions.get(name)
        if handle is not None:
            try:
                info = await handle.ping.remote()
                return ActorAddress(name, namespace, info["actor_id"])
            except Exception:
                self._sessions.pop(name, None)
        handle = ConversationSessionActor.options(
            name=name, namespace=namespace, lifetime="detached", get_if_exists=True,
            **session_options()).remote(key, target, storage, idle_s)
        info = await handle.ping.remote()
        self._sessions[name] = handle
        return ActorAddress(name, namespace, info["actor_id"])

    async def sessions(self) -> list[str]:
        return sorted(self._sessions)

    async def active_count(self) -> int:
        return self._registry.index.active_count()


def get_or_create_registry(storage: Any, namespace: str | None = None, **options: Any) -> Any:
    return RegistryActor.options(name=REGISTRY_NAME, namespace=namespace, lifetime="detached",
                                 get_if_exists=True, **options).remote(storage)
