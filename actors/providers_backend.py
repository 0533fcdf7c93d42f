"""The RunActor's backend: storage via the storage actor, models/tools via the provider actor."""
from __future__ import annotations

from typing import Any, AsyncIterator

from .retry import call_with_retry, unwrap


class ProviderBackend:
    def __init__(self, storage: Any, providers: Any) -> None:
        self._storage = storage
        self._providers = providers

    async def read(self, kind: str, **kwargs: Any) -> Any:
        return unwrap(await call_with_retry(lambda: self._storage.read.remote(kind, kwargs),
                                            what=f"storage {kind}"))

    async def write(self, kind: str, **kwargs: Any) -> Any:
        return unwrap(await call_with_retry(lambda: self._storage.write.remote(kind, kwargs),
                                            what=f"storage {kind}"))

    async def invoke_llm(self, model_id: str, messages: list, tools: list | None, params: dict) -> dict:
        return unwrap(await self._providers.invoke_llm.remote(model_id, messages, tools, params))

    async def stream_llm(self, model_id: str, messages: list, tools: list | None, params: dict) -> AsyncIterator[dict]:
        gen = self._providers.stream_llm.options(num_returns="streaming").remote(model_id, messages, tools, params)
        async for ref in gen:
            yield unwrap(await ref)

    async def rerank(self, model_id: str, query: str, documents: list[str], top_n: int | None,
                     params: dict | None = None) -> list:
        return unwrap(await self._providers.rerank.remote(model_id, query, documents, top_n, params))

    async def count_tokens(self, model_id: str, messages: list, tools: list | None) -> dict:
        return unwrap(await self._providers.count_tokens.remote(model_id, messages, tools))

    async def embed(self, model_id: str, texts: list[str]) -> dict:
        return unwrap(await self._providers.embed.remote(model_id, texts))

    async def knowledge_config(self, kb_id: str) -> dict:
        return await self._providers.knowledge_config.remote(kb_id)

    async def tool_detail(self, name: str) -> dict:
        return unwrap(await self._providers.tool_detail.remote(name))

    async def call_tool(self, name: str, parameters: dict) -> dict:
        return unwrap(await self._providers.call_tool.remote(name, parameters))
