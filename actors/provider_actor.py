"""ProviderActor: the host's models and tools, shared by every RunActor of a host.

One long-lived owner per host means one HTTP connection pool per model
endpoint and one process per MCP stdio server — not one per pooled RunActor.
Authorization happened before a call gets here (in the RunActor).
"""
from __future__ import annotations

from typing import Any

import ray

from .providers.models import ModelProviderConfig, ModelRegistry
from .providers.tools import build_tool_registry
from .retry import reply

PROVIDER_NAME = "runnerhost-providers"


@ray.remote(max_restarts=-1, max_concurrency=1000, num_cpus=0, enable_task_events=False)
class ProviderActor:
    def __init__(self, providers: dict[str, Any], config_version: str = "") -> None:
        self._version = config_version
        self._models = ModelRegistry([ModelProviderConfig.model_validate(c) for c in providers.get("models", [])])
        self._tools = build_tool_registry(providers.get("tools", {}))
        #: kb_id → {"embedding_model_id", "name", "description"} ([providers.knowledge.<kb>])
        self._knowledge: dict[str, dict[str, Any]] = dict(providers.get("knowledge") or {})
        self._skills: dict[str, dict[str, Any]] = dict(providers.get("skills") or {})

    async def config_version(self) -> str:
        return self._version

    async def catalog(self) -> dict[str, Any]:
        """Models (with type, context window), tools (with type) and skills ([providers.skills]):
        ``skills`` is what ``build_context(skill_catalog=…)`` grants from."""
        return {"models": self._models.catalog(), "tools": await self._tools.catalog(),
                "skills": dict(self._skills)}

    async def invoke_llm(self, model_id: str, messages: list, tools: list | None, params: dict) -> dict:
        return await reply(self._models.invoke(model_id, messages, tools, params))

    async def stream_llm(self, model_id: str, messages: list, tools: list | None, params: dict):
        from protocol.errors import RunnerHostError
        try:
            async for chunk in self._models.stream(model_id, messages, tools, params):
                yield {"ok": chunk}
        except RunnerHostError as exc:
            yield {"error": exc.to_dict()}

    async def rerank(self, model_id: str, query: str, documents: list[str], top_n: int | None,
                     params: dict | None = None) -> dict:
        return await reply(self._models.rerank(model_id, query, documents, top_n, params))

    async def count_tokens(self, model_id: str, messages: list, tools: list | None) -> dict:
        return await reply(self._models.count_tokens(model_id, messages, tools))

    async def embed(self, model_id: str, texts: list[str]) -> dict:
        return await reply(self._models.embed(model_id, texts))

    async def knowledge_config(self, kb_id: str) -> dict[str, Any]:
        return dict(self._knowledge.get(kb_id) or {})

    async def tool_detail(self, name: str) -> dict:
        return await reply(self._tools.detail(name))

    async def call_tool(self, name: str, parameters: dict) -> dict:
        return await reply(self._tools.call(name, parameters))


async def ensure_providers(providers: dict[str, Any], namespace: str | None) -> Any:
    """The cluster's provider actor, replaced when the providers configuration changed (API keys
    travel by environment-variable name, so the version never digests a secret)."""
    from .control_plane import config_version, ensure_actor
    from .placement import control_plane_options
    return await ensure_actor(ProviderActor, name=PROVIDER_NAME, namespace=namespace,
                              version=config_version(providers), args=(providers,),
                              options=control_plane_options(), what="the provider actor")
