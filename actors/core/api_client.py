"""The runner-side :class:`protocol.runner.RunnerAPI`, independent of how calls travel.

:class:`RunnerApiClient` turns each method into one ``_call(method, **kwargs)`` (and the one
streaming method into ``_stream``) and the replies into the protocol's page models.
:class:`LocalRunnerAPI` serves a runner executing inside its own RunActor (``execution =
"in_actor"``): calls go straight to the RunActor's slots, through exactly the same checks
(active run, lease token, frozen snapshot) as a call arriving over Ray.
"""
from __future__ import annotations

import abc
from typing import Any, AsyncIterator, Awaitable, Callable

from protocol.delivery import SentMessage
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
    """Bound to one run: carries the run id and the lease token the RunActor checks."""

    def __init__(self, run_id: str, token: str) -> None:
        self.run_id = run_id
        self._token = token

    @abc.abstractmethod
    async def _call(self, method: str, **kwargs: Any) -> Any:
        """Perform ``method``; return its value or raise its RunnerHostError."""

    @abc.abstractmethod
    def _stream(self, method: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Perform the streaming ``method``; yield its chunks or raise its RunnerHostError."""

    async def invoke_llm(self, model_id, messages, *, tools=None, params=None):
        return await self._call("invoke_llm", model_id=model_id, messages=messages, tools=tools, params=params)

    async def invoke_llm_stream(self, model_id, messages, *, tools=None, params=None) -> AsyncIterator[dict]:
        async for chunk in self._stream("invoke_llm_stream", {"model_id": model_id, "messages": messages,
                                                              "tools": tools, "params": params}):
            yield chunk

    async def invoke_rerank(self, model_id, query, documents, top_n=None, *, params=None):
        return await self._call("invoke_rerank", model_id=model_id, query=query, documents=documents, top_n=top_n,
                                params=params)

    async def count_tokens(self, model_id, messages, *, tools=None):
        return await self._call("count_tokens", model_id=model_id, messages=messages, tools=tools)

    async def invoke_embedding(self, model_id, texts):
        return await self._call("invoke_embedding", model_id=model_id, texts=texts)

    async def get_tool_detail(self, tool_name):
        return await self._call("get_tool_detail", tool_name=tool_name)

    async def call_tool(self, tool_name, parameters):
        return await self._call("call_tool", tool_name=tool_name, parameters=parameters)

    async def retrieve_knowledge(self, kb_id, query, top_k=5, *, filters=None):
        return await self._call("retrieve_knowledge", kb_id=kb_id, query=query, top_k=top_k, filters=filters)

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

    async def run_events_page(self, run_id=None, *, after_cursor=None, limit=50, before_cursor=None,
                              direction="forward"):
        return RunEventPage.model_validate(await self._call(
            "run_events_page", run_id=run_id, after_cursor=after_cursor, limit=limit,
            before_cursor=before_cursor, direction=direction))

    async def run_cancel(self, run_id, reason=None):
        return RunRecord.model_validate(await self._call("run_cancel", run_id=run_id, reason=reason))

    async def message_send(self, text, *, target=None, key=None):
        return SentMessage.model_validate(await self._call("message_send", text=text, target=target, key=key))


ApiCall = Callable[[str, str, str, dict[str, Any]], Awaitable[Any]]
ApiStream = Callable[[str, str, str, dict[str, Any]], AsyncIterator[Any]]


class LocalRunnerAPI(RunnerApiClient):
    """The API of a runner that executes inside its RunActor: plain calls, same checks."""

    def __init__(self, run_id: str, token: str, call: ApiCall, stream: ApiStream) -> None:
        super().__init__(run_id, token)
        self._do_call = call
        self._do_stream = stream

    async def _call(self, method: str, **kwargs: Any) -> Any:
        return await self._do_call(self.run_id, self._token, method, kwargs)

    async def _stream(self, method: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        async for chunk in self._do_stream(self.run_id, self._token, method, kwargs):
            yield chunk
