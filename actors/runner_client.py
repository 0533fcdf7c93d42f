"""The runner-side RunnerAPI of a run: every call goes to the run's RunActor."""
from __future__ import annotations

from typing import Any, AsyncIterator

from .addresses import ActorAddress
from .core.api_client import RunnerApiClient
from .retry import unwrap


class ActorRunnerAPI(RunnerApiClient):
    """Bound to one run: carries the run id and the lease token the RunActor checks.
    The RunActor's handle is looked up on the first call (runners that never call cost nothing)."""

    def __init__(self, run_actor: ActorAddress, run_id: str, token: str) -> None:
        self._address = run_actor
        self.run_id = run_id
        self._token = token

    @property
    def _actor(self) -> Any:
        return self._address.handle()

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return unwrap(await self._actor.api.remote(self.run_id, self._token, method, kwargs))

    async def _stream(self, method: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        gen = self._actor.api_stream.options(num_returns="streaming").remote(self.run_id, self._token,
                                                                             method, kwargs)
        async for ref in gen:
            yield unwrap(await ref)
