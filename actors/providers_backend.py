"""The RunActor's backend: storage reads/writes via the storage actor, models/tools via providers.

Providers are built lazily from the host config the RunActor was created with,
so a RunActor without models configured still serves echo runs.
"""
from __future__ import annotations

from typing import Any, AsyncIterator

from protocol.errors import ErrorCode, RunnerHostError

from .retry import call_with_retry, unwrap


class ProviderBackend:
    def __init__(self, storage: Any, providers: dict[str, Any]) -> None:
        self._storage = storage
        self._config = providers
        self._models = None
        self._tools = None

    async def read(self, kind: str, **kwargs: Any) -> Any:
        return unwrap(await call_with_retry(lambda: self._storage.read.remote(kind, kwargs),
                                            what=f"storage {kind}"))

    async def write(self, kind: str, **kwargs: Any) -> Any:
        return unwrap(await call_with_retry(lambda: self._storage.write.remote(kind, kwargs),
                                            what=f"storage {kind}"))

    # -- models ----------------------------------------------------------------
    def _model_registry(self):
        if self._models is None:
            from .providers.models import ModelRegistry, ModelProviderConfig
            configs = [ModelProviderConfig.model_validate(c) for c in self._config.get("models", [])]
            self._models = ModelRegistry(configs)
        return self._models

    async def invoke_llm(self, model_id: str, messages: list, tools: list | None, params: dict) -> dict:
        return await self._model_registry().invoke(model_id, messages, tools, params)

    async def stream_llm(self, model_id: str, messages: list, tools: list | None, params: dict) -> AsyncIterator[dict]:
        async for chunk in self._model_registry().stream(model_id, messages, tools, params):
            yield chunk

    async def rerank(self, model_id: str, query: str, documents: list[str], top_n: int | None) -> list:
        return await self._model_registry().rerank(model_id, query, documents, top_n)

    # -- tools -------------------------------------------------------------------
    def _tool_registry(self):
        if self._tools is None:
            from .providers.tools import build_tool_registry
            self._tools = build_tool_registry(self._config.get("tools", {}))
        return self._tools

    async def tool_detail(self, name: str) -> dict:
        return await self._tool_registry().detail(name)

    async def call_tool(self, name: str, parameters: dict) -> dict:
        return await self._tool_registry().call(name, parameters)


def no_provider(kind: str) -> RunnerHostError:
    return RunnerHostError(ErrorCode.NOT_FOUND, f"no {kind} provider is configured")
