"""The runner-side RunnerAPI over any transport to a :class:`~actors.core.runner_api.RunnerApiService`.

:class:`RunnerApiClient` turns each typed call into ``(method, kwargs)`` for the
service and the plain-JSON reply back into the protocol's page models. A
subclass supplies the transport: the RunActor over Ray
(:class:`actors.runner_client.ActorRunnerAPI`), or a service in the same
process (tests), so every grant check is the service's own.
"""
from __future__ import annotations

import abc
from typing import Any, AsyncIterator

from protocol.pages import (
    ArtifactMetadata,
    ArtifactReadResult,
    EventPage,
    EventRecord,
    HistoryPage,
    HistorySearchResult,
    RunEventPage,
    RunPage,
    RunRecord,
    StateEntry,
    StateList,
    SteeringPullResult,
)
from protocol.runner import RunnerAPI


class RunnerApiClient(RunnerAPI):
    """Typed runner API over ``_call`` (one reply) and ``_stream`` (a stream of chunks)."""

    @abc.abstractmethod
    async def _call(self, method: str, **kwargs: Any) -> Any:
        """The service's reply to ``method(**kwargs)``; its errors raise :class:`RunnerHostError`."""

    @abc.abstractmethod
    def _stream(self, method: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """The chunks of a streaming ``method``."""

    async def invoke_llm(self, model_id, messages, *, tools=None, params=None):
        return await self._call("invoke_llm", model_id=model_id, messages=messages, tools=tools, params=params)

    async def invoke_llm_stream(self, model_id, messages, *, tools=None, params=None) -> AsyncIterator[dict]:
        async for chunk in self._stream("invoke_llm_stream", {"model_id": model_id, "messages": messages,
                                                              "tools": tools, "params": params}):
            yield chunk

    async def invoke_rerank(self, model_id, query, documents, top_n=None):
        return await self._call("invoke_rerank", model_id=model_id, query=query, documents=documents, top_n=top_n)

    async def get_tool_detail(self, tool_name):
        return await self._call("get_tool_detail", tool_name=tool_name)

    async def call_tool(self, tool_name, parameters):
        return await self._call("call_tool", tool_name=tool_name, parameters=parameters)

    async def retrieve_knowledge(self, kb_id, query, top_k=5):
        return await self._call("retrieve_knowledge", kb_id=kb_id, query=query, top_k=top_k)

    async def history_page(self, conversation_id=None, *, before_cursor=None, after_cursor=None,
                           limit=50, direction="backward"):
        return HistoryPage.model_validate(await self._call(
            "history_page", conversation_id=conversation_id, before_cursor=before_cursor,
            after_cursor=after_cursor, limit=limit, direction=direction))

    async def history_search(self, query, filters=None, top_k=10):
        return HistorySearchResult.model_validate(
            await self._call("history_search", query=query, filters=filters, top_k=top_k))

    async def event_get(self, event_id):
        return EventRecord.model_validate(await self._call("event_get", event_id=event_id))

    async def event_page(self, conversation_id=None, *, event_types=None, before_cursor=None, limit=50):
        return EventPage.model_validate(await self._call(
            "event_page", conversation_id=conversation_id, event_types=event_types,
            before_cursor=before_cursor, limit=limit))

    async def steering_pull(self, mode="all", limit=None):
        return SteeringPullResult.model_validate(await self._call("steering_pull", mode=mode, limit=limit))

    async def artifact_metadata(self, artifact_id):
        return ArtifactMetadata.model_validate(await self._call("artifact_metadata", artifact_id=artifact_id))

    async def artifact_read(self, artifact_id):
        return ArtifactReadResult.model_validate(await self._call("artifact_read", artifact_id=artifact_id))

    async def artifact_read_range(self, artifact_id, offset, length):
        return ArtifactReadResult.model_validate(await self._call(
            "artifact_read_range", artifact_id=artifact_id, offset=offset, length=length))

    async def state_get(self, scope, key):
        return StateEntry.model_validate(await self._call("state_get", scope=scope, key=key))

    async def state_set(self, scope, key, value):
        return StateEntry.model_validate(await self._call("state_set", scope=scope, key=key, value=value))

    async def state_delete(self, scope, key):
        return await self._call("state_delete", scope=scope, key=key)

    async def state_list(self, scope, prefix="", limit=100):
        return StateList.model_validate(await self._call("state_list", scope=scope, prefix=prefix, limit=limit))

    async def storage_get(self, area, key):
        return await self._call("storage_get", area=area, key=key)

    async def storage_set(self, area, key, value):
        await self._call("storage_set", area=area, key=key, value=value)

    async def storage_delete(self, area, key):
        return await self._call("storage_delete", area=area, key=key)

    async def storage_keys(self, area, prefix=""):
        return await self._call("storage_keys", area=area, prefix=prefix)

    async def run_get(self, run_id=None):
        return RunRecord.model_validate(await self._call("run_get", run_id=run_id))

    async def run_list(self, conversation_id=None, *, statuses=None, before_cursor=None, limit=50):
        return RunPage.model_validate(await self._call(
            "run_list", conversation_id=conversation_id, statuses=statuses,
            before_cursor=before_cursor, limit=limit))

    async def run_events_page(self, run_id=None, *, after_cursor=None, limit=50):
        return RunEventPage.model_validate(await self._call(
            "run_events_page", run_id=run_id, after_cursor=after_cursor, limit=limit))

    async def run_cancel(self, run_id, reason=None):
        return RunRecord.model_validate(await self._call("run_cancel", run_id=run_id, reason=reason))
