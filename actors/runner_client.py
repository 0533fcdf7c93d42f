"""The runner-side RunnerAPI of a runner in a worker or session actor: every call goes to
the run's RunActor over Ray (the RunActor's handle is looked up on the first call, so a runner
that never calls costs nothing)."""
from __future__ import annotations

from typing import Any, AsyncIterator

from .addresses import ActorAddress
from .core.api_client import RunnerApiClient
from .retry import unwrap


class ActorRunnerAPI(RunnerApiClient):
    def __init__(self, run_actor: ActorAddress, run_id: str, token: str) -> None:
        super().__init__(run_id, token)
        self._address = run_actor

    async def _call(self, method: str, **kwargs: Any) -> Any:
        actor = await self._address.resolve()
        return unwrap(await actor.api.remote(self.run_id, self._token, method, kwargs))

    async def _stream(self, method: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        actor = await self._address.resolve()
        gen = actor.api_stream.options(num_returns="streaming").remote(self.run_id, self._token,
                                                                              method, kwargs)
        async for ref in gen:
            yield unwrap(await ref)
