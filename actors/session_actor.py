"""ConversationSessionActor: serializes an external harness's turns for one session key.

It is the executor for runners whose manifest says ``execution = "session"``:
the RunActor streams a turn from it exactly as from a pooled RunnerWorker
(``run`` / ``cancel_run``). One turn at a time, so the harness subprocess of a
session has one writer and one exclusive reader. Idle actors exit on their
own; the next turn creates a fresh one that resumes from Postgres.
"""
from __future__ import annotations

import asyncio
from typing import Any

import ray

from protocol.context import RunContext
from protocol.logs import get_logger
from protocol.sessions import SessionKey

from .addresses import ActorAddress
from .core.discovery import load_target
from .core.runner_exec import RunnerExecutor
from .core.session import TurnGate, observe_session_id, with_resume_id
from .retry import call_with_retry, unwrap
from .runner_client import ActorRunnerAPI

log = get_logger(__name__)

SESSION_PREFIX = "rh-session"


@ray.remote(max_restarts=0, max_concurrency=1000, num_cpus=0, enable_task_events=False)
class ConversationSessionActor:
    def __init__(self, key: dict[str, Any], target: str, storage: Any, idle_s: float = 600.0) -> None:
        self.key = SessionKey(**key)
        self._owner = {"owner_type": "conversation", "runner_id": self.key.runner_id, "binding_id": self.key.binding_id,
                       "conversation_id": self.key.conversation_id, "thread_id": self.key.thread_id}
        self._executor = RunnerExecutor(load_target(target)(), self.key.runner_id)
        self._storage = storage
        self._gate = TurnGate()
        self._idle_s = idle_s
        self._external_id: str | None = None
        self._loaded = False
        self._reaper = asyncio.get_event_loop().create_task(self._reap_when_idle())

    async def ping(self) -> dict[str, Any]:
        return {"key": self.key.digest(), "status": self._gate.status.value, "turns": self._gate.turns,
                "external_session_id": self._external_id,
                "max_concurrent_turns": self._gate.max_concurrent_seen,
                "node_id": ray.get_runtime_context().get_node_id(),
                "actor_id": ray.get_runtime_context().get_actor_id()}

    async def run(self, ctx: RunContext, run_actor: ActorAddress, token: str):
        async with self._gate:
            await self._load()
            with_resume_id(ctx, self._external_id)
            batches = self._executor.execute(ctx, ActorRunnerAPI(run_actor, ctx.run_id, token))
            async for batch in observe_session_id(batches, lambda sid: self._remember(sid, ctx.run_id)):
                yield batch

    async def cancel_run(self, run_id: str) -> bool:
        return self._executor.cancel(run_id)

    async def _load(self) -> None:
        if self._loaded:
            return
        row = unwrap(await call_with_retry(lambda: self._storage.read.remote("session_get", {"owner": self._owner}),
                                           what="session load"))
        self._external_id = (row or {}).get("external_session_id")
        self._loaded = True

    async def _remember(self, session_id: str, run_id: str) -> None:
        self._external_id = session_id
        unwrap(await call_with_retry(lambda: self._storage.write.remote("session_upsert", {
            "owner": self._owner, "external_session_id": session_id, "backend_run_id": run_id}),
            what="session upsert"))

    async def _reap_when_idle(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self._idle_s / 2))
            if self._gate.reapable(self._idle_s):
                log.info("session %s idle for %.0fs: exiting", self.key.digest()[:12], self._idle_s)
                ray.actor.exit_actor()


def session_actor_name(key: SessionKey, generation: str = "") -> str:
    """The actor name of ``key``'s session. ``generation``: the registry's configuration version
    (its first 8 characters), so a registry replaced with the storage actor never adopts a session
    actor that still holds the replaced storage actor."""
    name = key.actor_name(SESSION_PREFIX)
    return f"{name}-{generation[:8]}" if generation else name
