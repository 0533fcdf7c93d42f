"""runners.langbot_sdk: unmodified LangBot SDK runners against a fake RunnerAPI.

No Ray, no database. The SDK runners below use only the SDK's public API
(``ctx.history_page``, ``ctx.state_set``, ``ctx.steering_pull``, ``ctx.api.*``,
``RunnerResult.*``); the fake host enforces a tiny grant set the way the
RunActor does (``RunnerHostError(unauthorized)``). Every converted result is
checked by ``protocol.results.ResultValidator`` and by the SDK's
``RunnerResult`` (the external judge of the wire format).
"""
from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from langbot_plugin.api.definition.components.runner.runner import Runner as SDKRunner
from langbot_plugin.api.entities.builtin.provider.message import Message, MessageChunk
from langbot_plugin.api.entities.builtin.resource.tool import LLMTool
from langbot_plugin.api.entities.builtin.runner.context import RunnerContext
from langbot_plugin.api.entities.builtin.runner.errors import AgentAPIException
from langbot_plugin.api.entities.builtin.runner.manifest import RunnerManifest as SDKRunnerManifest
from langbot_plugin.api.entities.builtin.runner.result import RunnerResult
from langbot_plugin.entities.io.actions.enums import PluginToRuntimeAction
from langbot_plugin.entities.io.errors import ActionCallError, ActionCallTimeoutError

from protocol.context import (
    AvailableApis,
    ContextAccess,
    ConversationContext,
    EventContext,
    InputContext,
    KnowledgeBaseResource,
    ModelResource,
    Resources,
    RunContext,
    RuntimeContext,
    StorageResource,
    ToolResource,
    Trigger,
)
from protocol.errors import RunnerHostError, not_found, unauthorized
from protocol.manifest import RunnerManifest
from protocol.pages import (
    ArtifactMetadata,
    ArtifactReadResult,
    EventPage,
    EventRecord,
    HistoryPage,
    HistorySearchResult,
    RunEventPage,
    RunEventRecord,
    RunPage,
    RunRecord,
    StateEntry,
    StateList,
    SteeringItem,
    SteeringPullResult,
    TranscriptItem,
)
from protocol.results import ResultValidator, Verdict
from protocol.runner import Runner, RunnerAPI
from runners.langbot_sdk import (
    ACTION_TABLE,
    SUPPORTED_ACTIONS,
    HostActionHandler,
    LangBotRunnerAdapter,
    langbot_runner,
    load_plugin_runner,
    manifest_from_sdk,
)

RUN_ID = "run-sdk-1"
CONV = "conv-1"
GRANTED = "m-granted"
REVOKED = "m-revoked"  # listed in ctx.resources, refused by the host snapshot
UNLISTED = "m-unlisted"  # not in ctx.resources at all
FAST = 2.0  # asyncio.wait_for bound on "answers at once"


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    content = next(m for m in reversed(messages) if m["role"] == "user")["content"]
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if p.get("type") == "text")
    return content


# -- the fake host ----------------------------------------------------------------
class FakeHostAPI(RunnerAPI):
    """In-memory RunnerAPI that authorizes like a RunActor's frozen snapshot."""

    def __init__(self, run_id: str = RUN_ID, *, models: dict[str, set[str]] | None = None,
                 steering: list[str] | None = None, storage_areas: tuple[str, ...] = ("plugin",)):
        self.run_id = run_id
        self.models = models if models is not None else {GRANTED: {"invoke", "stream", "rerank"}}
        self.tools = {"echo_tool": {"detail", "call"}}
        self.kbs = {"kb-1": {"retrieve"}}
        self.state_scopes = {"conversation", "actor"}
        self.storage_areas = set(storage_areas)
        self.active = True
        self.calls: list[str] = []
        self.transcript = [
            TranscriptItem(transcript_id=f"t{i}", event_id=f"ev{i}", conversation_id=CONV, role=role,
                           content=text, seq=i, cursor=f"c{i}",
                           attachment_refs=[{"ref": "artifact:a1"}] if i == 1 else [])
            for i, (role, text) in enumerate([("user", "hi"), ("assistant", "hello!"), ("user", "hello there")], 1)
        ]
        self.state: dict[tuple[str, str], Any] = {}
        self.storage: dict[tuple[str, str], Any] = {}
        self.steering = [
            SteeringItem(claimed_run_id=run_id, runner_id="plugin:acme/demo/default",
                         event=EventContext(event_id=f"steer-{i}", event_type="message.received", source="api"),
                         input=InputContext(text=text),
                         conversation=ConversationContext(conversation_id=CONV))
            for i, text in enumerate(steering or [])
        ]

    def _check(self, what: str, allowed: bool = True) -> None:
        self.calls.append(what)
        if not self.active:
            raise unauthorized("the run is finished", run_id=self.run_id)
        if not allowed:
            raise unauthorized(f"{what} is not granted to this run", run_id=self.run_id)

    # models
    async def invoke_llm(self, model_id, messages, *, tools=None, params=None):
        self._check(f"invoke_llm:{model_id}", "invoke" in self.models.get(model_id, ()))
        assert all(isinstance(m, dict) and m.get("role") for m in messages)
        last = _last_user_text(messages)
        message: dict[str, Any] = {"role": "assistant", "content": f"llm says: {last}"}
        if tools:
            name = tools[0]["function"]["name"]
            message["tool_calls"] = [{"id": "call-1", "type": "function",
                                      "function": {"name": name, "arguments": {"text": "x"}}}]
        return {"message": message, "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                "model_id": model_id}

    async def invoke_llm_stream(self, model_id, messages, *, tools=None, params=None) -> AsyncIterator[dict]:
        self._check(f"invoke_llm_stream:{model_id}", "stream" in self.models.get(model_id, ()))
        words = ["streamed", " reply", f" to {_last_user_text(messages)}"]
        for word in words:
            yield {"delta": {"content": word}}
        yield {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}  # a fragment
        yield {"message": {"role": "assistant", "content": "".join(words)},
               "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
               "model_id": model_id}

    async def invoke_rerank(self, model_id, query, documents, top_n=None, *, params=None):
        self._check(f"invoke_rerank:{model_id}", "rerank" in self.models.get(model_id, ()))
        scored = [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(len(documents))]
        return scored[: top_n or len(scored)]

    async def invoke_embedding(self, model_id, texts):
        self._check(f"invoke_embedding:{model_id}", "invoke" in self.models.get(model_id, ()))
        return {"vectors": [[float(len(t)), 1.0] for t in texts], "usage": {}}

    # tools & knowledge
    async def get_tool_detail(self, tool_name):
        self._check(f"get_tool_detail:{tool_name}", "detail" in self.tools.get(tool_name, ()))
        return {"name": tool_name, "description": "echoes", "parameters": {"type": "object"}}

    async def call_tool(self, tool_name, parameters):
        self._check(f"call_tool:{tool_name}", "call" in self.tools.get(tool_name, ()))
        return {"echo": parameters}

    async def retrieve_knowledge(self, kb_id, query, top_k=5):
        self._check(f"retrieve_knowledge:{kb_id}", "retrieve" in self.kbs.get(kb_id, ()))
        return [{"id": "doc-1", "content": f"about {query}", "score": 0.9}][:top_k]

    # history & events
    async def history_page(self, conversation_id=None, *, before_cursor=None, after_cursor=None,
                           limit=50, direction="backward"):
        self._check("history_page", conversation_id in (None, CONV))
        items = self.transcript[-limit:]
        return HistoryPage(items=items, has_more=False, total_count=len(self.transcript))

    async def history_search(self, query, filters=None, top_k=10):
        self._check("history_search")
        return HistorySearchResult(items=[i for i in self.transcript if query in (i.content or "")][:top_k],
                                   query=query)

    async def event_get(self, event_id):
        self._check("event_get")
        if event_id != "ev1":
            raise not_found(f"event {event_id} not found")
        return EventRecord(event_id="ev1", event_type="message.received", source="api", conversation_id=CONV)

    async def event_page(self, conversation_id=None, *, event_types=None, before_cursor=None, limit=50):
        self._check("event_page")
        return EventPage(items=[EventRecord(event_id="ev1", event_type="message.received", source="api")])

    async def steering_pull(self, mode="all", limit=None):
        self._check(f"steering_pull:{mode}")
        take = 1 if mode == "one-at-a-time" else len(self.steering)
        if limit is not None:
            take = min(take, limit)
        items, self.steering = self.steering[:take], self.steering[take:]
        return SteeringPullResult(items=items)

    # artifacts
    async def artifact_metadata(self, artifact_id):
        self._check("artifact_metadata")
        return ArtifactMetadata(artifact_id=artifact_id, artifact_type="file", size_bytes=3,
                                sha256="0" * 64, storage="db")

    async def artifact_read(self, artifact_id):
        self._check("artifact_read")
        return ArtifactReadResult(artifact_id=artifact_id, offset=0, length=3, total_size=3, eof=True,
                                  content_base64=base64.b64encode(b"abc").decode())

    async def artifact_read_range(self, artifact_id, offset, length):
        self._check("artifact_read_range")
        data = b"abc"[offset:offset + length]
        return ArtifactReadResult(artifact_id=artifact_id, offset=offset, length=len(data), total_size=3,
                                  eof=offset + len(data) >= 3, content_base64=base64.b64encode(data).decode())

    # state
    async def state_get(self, scope, key):
        self._check(f"state_get:{scope}", scope in self.state_scopes)
        if (scope, key) not in self.state:
            raise not_found(f"state {key} not found")
        return StateEntry(key=key, value=self.state[(scope, key)], updated_at=1)

    async def state_set(self, scope, key, value):
        self._check(f"state_set:{scope}", scope in self.state_scopes)
        self.state[(scope, key)] = value
        return StateEntry(key=key, value=value, updated_at=2)

    async def state_delete(self, scope, key):
        self._check(f"state_delete:{scope}", scope in self.state_scopes)
        return self.state.pop((scope, key), None) is not None

    async def state_list(self, scope, prefix="", limit=100):
        self._check(f"state_list:{scope}", scope in self.state_scopes)
        keys = sorted(k for s, k in self.state if s == scope and k.startswith(prefix))
        return StateList(items=[StateEntry(key=k, value=self.state[(scope, k)]) for k in keys[:limit]],
                         has_more=len(keys) > limit)

    # storage
    async def storage_get(self, area, key):
        self._check(f"storage_get:{area}", area in self.storage_areas)
        if (area, key) not in self.storage:
            raise not_found(f"{area} storage key {key} not found")
        return self.storage[(area, key)]

    async def storage_set(self, area, key, value):
        self._check(f"storage_set:{area}", area in self.storage_areas)
        self.storage[(area, key)] = value

    async def storage_delete(self, area, key):
        self._check(f"storage_delete:{area}", area in self.storage_areas)
        return self.storage.pop((area, key), None) is not None

    async def storage_keys(self, area, prefix=""):
        self._check(f"storage_keys:{area}", area in self.storage_areas)
        return sorted(k for a, k in self.storage if a == area and k.startswith(prefix))

    # run ledger
    async def run_get(self, run_id=None):
        self._check("run_get")
        return RunRecord(run_id=run_id or self.run_id, status="running", conversation_id=CONV)

    async def run_list(self, conversation_id=None, *, statuses=None, before_cursor=None, limit=50):
        self._check("run_list")
        return RunPage(items=[RunRecord(run_id=self.run_id, status="running")], total_count=1)

    async def run_events_page(self, run_id=None, *, after_cursor=None, limit=50):
        self._check("run_events_page")
        return RunEventPage(items=[RunEventRecord(run_id=run_id or self.run_id, sequence=1, type="message.delta")])

    async def run_cancel(self, run_id, reason=None):
        self._check("run_cancel", False)  # not granted in this fake


def make_ctx(run_id: str = RUN_ID, *, config: dict[str, Any] | None = None, text: str = "hello there",
             deadline_at: float | None = None) -> RunContext:
    return RunContext(
        run_id=run_id,
        trigger=Trigger(type="event", source="api"),
        event=EventContext(event_id="ev3", event_type="message.received", source="api"),
        conversation=ConversationContext(conversation_id=CONV),
        input=InputContext(text=text),
        resources=Resources(
            models=[ModelResource(model_id=GRANTED, operations=["invoke", "stream", "rerank"]),
                    ModelResource(model_id=REVOKED, operations=["invoke", "stream"])],
            tools=[ToolResource(tool_name="echo_tool", operations=["detail", "call"])],
            knowledge_bases=[KnowledgeBaseResource(kb_id="kb-1", operations=["retrieve"])],
            storage=StorageResource(plugin_storage=True, workspace_storage=True),
        ),
        context=ContextAccess(conversation_id=CONV, available_apis=AvailableApis(
            history_page=True, history_search=True, event_get=True, event_page=True, state=True,
            storage=True, steering_pull=True, run_get=True, run_list=True, run_events_page=True,
            run_cancel=True)),
        runtime=RuntimeContext(deadline_at=deadline_at),
        config=config or {},
    )


MANIFEST = manifest_from_sdk(author="acme", plugin="demo", runner="default",
                             capabilities={"streaming": True, "steering": True, "tool_calling": True},
                             permissions={"models": ["invoke", "stream"], "history": ["page"],
                                          "tools": ["detail", "call"]})


# -- SDK runners, written against the SDK's public API only ------------------------------
class DemoSDKRunner(SDKRunner):
    """Reads history, sets state, pulls steering, streams an LLM reply."""

    async def run(self, ctx: RunnerContext):
        page = await ctx.history_page(limit=10)
        await ctx.state_set("conversation", "demo.turns", len(page.items))
        turns = await ctx.state_get("conversation", "demo.turns")
        await ctx.log(f"history has {len(page.items)} items", level="debug")
        steering = await ctx.steering_pull()
        model = ctx.config.get("model", GRANTED)
        messages = [Message(role=item.role, content=item.content) for item in page.items]
        messages += [Message(role="user", content=item.input.text) for item in steering.items]
        text = ""
        async for chunk in ctx.api.invoke_llm_stream(model, messages):
            if chunk.content:
                text += chunk.content
                yield RunnerResult.message_delta(ctx.run_id, MessageChunk(role="assistant", content=chunk.content))
        steered = ", ".join(i.input.text or "" for i in steering.items)
        final = f"{text} | turns={turns['value']} | steered=[{steered}]"
        yield RunnerResult.message_completed(ctx.run_id, Message(role="assistant", content=final))
        yield RunnerResult.state_updated(ctx.run_id, "demo.last_model", model, scope="conversation")
        yield RunnerResult.run_completed(ctx.run_id)


class UnaryCallRunner(SDKRunner):
    """One non-streamed LLM call; with config.catch it handles host refusals itself."""

    async def run(self, ctx: RunnerContext):
        model = ctx.config.get("model", GRANTED)
        try:
            reply = await ctx.api.invoke_llm(model, [Message(role="user", content=ctx.input.text)])
        except AgentAPIException as exc:
            if not ctx.config.get("catch"):
                raise
            yield RunnerResult.message_completed(
                ctx.run_id, Message(role="assistant", content=f"refused: {exc.error.code}"))
            yield RunnerResult.run_completed(ctx.run_id, finish_reason="refused")
            return
        yield RunnerResult.run_completed(ctx.run_id, message=reply)


class KitchenSinkRunner(SDKRunner):
    """Touches every supported action family once and reports what it saw."""

    async def run(self, ctx: RunnerContext):
        api = ctx.api
        seen: dict[str, Any] = {}
        seen["tool"] = (await api.get_tool_detail("echo_tool"))["name"]
        seen["call"] = await ctx.call_tool("echo_tool", {"text": "ping"})
        seen["kb"] = (await api.retrieve_knowledge("kb-1", "rust"))[0]["id"]
        seen["rerank"] = [r["index"] for r in await api.invoke_rerank(GRANTED, "q", ["a", "b", "c"], top_k=2)]
        usage = await api.invoke_llm_with_usage(
            GRANTED, [Message(role="user", content="use a tool")],
            funcs=[LLMTool(name="echo_tool", human_desc="echo", description="echoes",
                           parameters={"type": "object"}, func=lambda **kw: None)])
        seen["tool_calls"] = [(tc.function.name, tc.function.arguments) for tc in usage.message.tool_calls]
        seen["usage"] = usage.usage.total_tokens
        seen["search"] = len((await ctx.history_search("hello")).items)
        seen["event"] = (await ctx.event_get("ev1")).event_type
        try:
            await ctx.event_get("nope")
        except AgentAPIException as exc:
            seen["event_missing"] = exc.error.code
        seen["events"] = len((await ctx.event_page()).items)
        await ctx.state_set("actor", "pref.lang", "en")
        await ctx.state_set("actor", "pref.tz", "UTC")
        seen["missing_state"] = await ctx.state_get("actor", "nope")
        seen["state_list"] = await ctx.state_list("actor", prefix="pref.")
        seen["state_delete"] = (await ctx.state_delete("actor", "pref.tz"))["success"]
        try:
            await ctx.state_set("runner", "x", 1)
        except AgentAPIException as exc:
            seen["runner_scope"] = exc.error.code
        await api.set_plugin_storage("blob", b"\x00\x01binary")
        seen["storage"] = await api.get_plugin_storage("blob")
        seen["storage_keys"] = await api.get_plugin_storage_keys()
        await api.delete_plugin_storage("blob")
        try:
            await api.set_workspace_storage("k", b"v")
        except AgentAPIException as exc:
            seen["workspace_storage"] = exc.error.code
        seen["run_status"] = (await ctx.run_get()).status
        seen["runs"] = (await ctx.run_list()).total_count
        seen["run_events"] = [e.type for e in (await ctx.run_events_page()).items]
        try:
            await ctx.run_cancel(reason="test")
        except AgentAPIException as exc:
            seen["run_cancel"] = exc.error.code
        seen["embedding"] = await api.invoke_embedding(GRANTED, ["x", "yy"])
        seen["version"] = await api.get_langbot_version()
        await ctx.log("kitchen sink done")
        yield RunnerResult.message_completed(ctx.run_id, Message(role="assistant", content=repr(sorted(seen))))
        yield RunnerResult.action_requested(ctx.run_id, "report", payload={"seen": seen})
        yield RunnerResult.run_completed(ctx.run_id)


# -- helpers --------------------------------------------------------------------------
async def collect(runner: Runner, ctx: RunContext, api: RunnerAPI) -> list[dict[str, Any]]:
    return [r async for r in runner.run(ctx, api)]


def assert_all_accepted(results: list[dict[str, Any]], run_id: str = RUN_ID) -> ResultValidator:
    validator = ResultValidator(run_id)
    for raw in results:
        verdict = validator.check(raw)
        assert verdict.verdict is Verdict.ACCEPTED, (raw, verdict.reason)
        RunnerResult.model_validate(raw)  # the external judge parses it too
    assert [r["sequence"] for r in results] == list(range(1, len(results) + 1))
    return validator


def adapter(cls: type[SDKRunner] = DemoSDKRunner) -> LangBotRunnerAdapter:
    return LangBotRunnerAdapter(cls, MANIFEST)


# -- the run ----------------------------------------------------------------------------
async def test_demo_runner_streams_reads_history_sets_state_pulls_steering(caplog):
    api = FakeHostAPI(steering=["also this", "and that"])
    caplog.set_level(logging.DEBUG, logger="runnerhost.runners.langbot_sdk.runner")
    results = await asyncio.wait_for(collect(adapter(), make_ctx(), api), FAST)

    validator = assert_all_accepted(results)
    types = [r["type"] for r in results]
    assert types == ["message.delta"] * 3 + ["message.completed", "state.updated", "run.completed"]
    assert "".join(r["data"]["chunk"]["content"] for r in results[:3]) == "streamed reply to and that"
    final = results[3]["data"]["message"]["content"]
    assert final == "streamed reply to and that | turns=3 | steered=[also this, and that]"
    assert results[4]["data"] == {"scope": "conversation", "key": "demo.last_model", "value": GRANTED}
    assert validator.finish().type == "run.completed"

    assert api.state[("conversation", "demo.turns")] == 3
    assert api.steering == []  # pulled
    assert api.calls[:5] == ["history_page", "state_set:conversation", "state_get:conversation",
                             "steering_pull:all", f"invoke_llm_stream:{GRANTED}"]
    # processor.log is not a result of ours: logged with the run id, never forwarded.
    assert "processor.log" not in types
    assert any("history has 3 items" in rec.getMessage() and RUN_ID in rec.getMessage() for rec in caplog.records)


async def test_context_json_validates_as_the_sdk_runner_context():
    wire = make_ctx(config={"model": GRANTED}).to_wire()
    sdk_ctx = RunnerContext.model_validate(wire)
    assert sdk_ctx.run_id == RUN_ID and sdk_ctx.config == {"model": GRANTED}
    assert [m.model_id for m in sdk_ctx.resources.models] == [GRANTED, REVOKED]


async def test_unary_llm_call_result_message():
    results = await collect(adapter(UnaryCallRunner), make_ctx(), FakeHostAPI())
    assert_all_accepted(results)
    assert results == [{"run_id": RUN_ID, "type": "run.completed", "sequence": 1, "data": {
        "finish_reason": "stop",
        "message": results[0]["data"]["message"]}}]
    assert results[0]["data"]["message"]["content"] == "llm says: hello there"


# -- authorization --------------------------------------------------------------------------
async def test_host_refusal_reaches_sdk_runner_as_unauthorized_and_fails_the_run():
    api = FakeHostAPI()
    results = await asyncio.wait_for(collect(adapter(UnaryCallRunner), make_ctx(config={"model": REVOKED}), api),
                                     FAST)
    assert api.calls == [f"invoke_llm:{REVOKED}"]  # the host was asked, and said no
    assert_all_accepted(results)
    assert len(results) == 1 and results[0]["type"] == "run.failed"
    assert results[0]["data"]["code"] == "runner.api.unauthorized"
    assert results[0]["data"]["error"] == "unauthorized: invoke_llm:m-revoked is not granted to this run"
    assert results[0]["data"]["retryable"] is False


async def test_sdk_runner_can_handle_the_refusal_itself():
    results = await collect(adapter(UnaryCallRunner), make_ctx(config={"model": REVOKED, "catch": True}),
                            FakeHostAPI())
    validator = assert_all_accepted(results)
    assert results[0]["data"]["message"]["content"] == "refused: unauthorized"
    assert results[1]["data"]["finish_reason"] == "refused"
    assert validator.finish().type == "run.completed"


async def test_streaming_refusal_and_sdk_local_refusal():
    api = FakeHostAPI()
    # Host-side refusal of a stream (model listed in ctx but not granted by the host).
    results = await collect(adapter(), make_ctx(config={"model": REVOKED}), api)
    assert results[-1]["type"] == "run.failed" and results[-1]["data"]["code"] == "runner.api.unauthorized"
    assert f"invoke_llm_stream:{REVOKED}" in api.calls
    assert_all_accepted(results)
    # A model absent from ctx.resources is refused by the SDK proxy before any host call.
    api2 = FakeHostAPI()
    results = await collect(adapter(UnaryCallRunner), make_ctx(config={"model": UNLISTED}), api2)
    assert api2.calls == []
    assert results[-1]["data"]["code"] == "runner.api.unauthorized"
    assert "m-unlisted" in results[-1]["data"]["error"]


async def test_handler_error_shape_is_the_sdk_agent_api_error():
    handler = HostActionHandler(FakeHostAPI())
    payload = {"run_id": RUN_ID, "llm_model_uuid": REVOKED, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(ActionCallError) as info:
        await handler.call_action(PluginToRuntimeAction.INVOKE_LLM, payload, 5.0)
    err = info.value.data["error"]
    assert err["code"] == "unauthorized" and err["retryable"] is False
    assert err["details"]["action"] == "invoke_llm" and err["details"]["run_id"] == RUN_ID
    # Another run's id is refused before the host is asked.
    with pytest.raises(ActionCallError) as info:
        await handler.call_action("history_page", {"run_id": "someone-else"}, 5.0)
    assert info.value.data["error"]["code"] == "unauthorized"


async def test_finished_run_is_unauthorized():
    runner = adapter()
    api = FakeHostAPI()
    await collect(runner, make_ctx(), api)
    assert runner.router.active_runs == []
    with pytest.raises(ActionCallError) as info:
        await runner.router.call_action(PluginToRuntimeAction.HISTORY_PAGE, {"run_id": RUN_ID}, 5.0)
    assert info.value.data["error"]["code"] == "unauthorized"
    with pytest.raises(ActionCallError) as info:  # no run at all
        await runner.router.call_action(PluginToRuntimeAction.STATE_GET, {"scope": "actor", "key": "k"}, 5.0)
    assert info.value.data["error"]["code"] == "unauthorized"


# -- unsupported actions: structured, immediate ----------------------------------------------------
@pytest.mark.parametrize("action", ["get_prompt", "get_box_status", "run_finalize",
                                    "acquire_box", "some_future_action"])
async def test_unsupported_action_answers_a_structured_error_at_once(action):
    handler = HostActionHandler(FakeHostAPI())
    with pytest.raises(ActionCallError) as info:
        await asyncio.wait_for(handler.call_action(action, {"run_id": RUN_ID}, None), FAST)
    err = info.value.data["error"]
    assert err["code"] == "invalid_argument"
    assert err["details"] == {"action": action, "reason": "unsupported_action"}
    assert action in err["message"]


async def test_unsupported_action_through_the_sdk_proxy():
    class PlatformRunner(SDKRunner):
        async def run(self, ctx: RunnerContext):
            try:
                await ctx.api.call_platform_api("bot-1", "get_group_info", {"group_id": "x"})
            except AgentAPIException as exc:
                yield RunnerResult.message_completed(
                    ctx.run_id, Message(role="assistant", content=f"{exc.error.code}/{exc.error.details['reason']}"))
            yield RunnerResult.run_completed(ctx.run_id)

    started = time.monotonic()
    results = await asyncio.wait_for(collect(adapter(PlatformRunner), make_ctx(), FakeHostAPI()), FAST)
    assert time.monotonic() - started < FAST
    assert_all_accepted(results)
    # The SDK traces platform calls as tool.call.* telemetry; those are forwarded too.
    assert [r["type"] for r in results] == ["tool.call.started", "tool.call.completed",
                                            "message.completed", "run.completed"]
    assert results[1]["data"]["error"].startswith("platform action 'get_group_info' is not supported")
    assert results[2]["data"]["message"]["content"] == "invalid_argument/unsupported_action"


async def test_streaming_form_of_a_unary_action_and_vice_versa():
    handler = HostActionHandler(FakeHostAPI())
    with pytest.raises(ActionCallError) as info:
        await asyncio.wait_for(handler.call_action_generator("history_page", {}).__anext__(), FAST)
    assert info.value.data["error"]["details"]["reason"] == "unsupported_action"
    with pytest.raises(ActionCallError) as info:
        await asyncio.wait_for(handler.call_action("invoke_llm_stream", {}), FAST)
    assert "call_action_generator" in info.value.data["error"]["message"]


async def test_slow_host_call_times_out_as_deadline_exceeded():
    class SlowAPI(FakeHostAPI):
        async def history_page(self, *a, **kw):
            await asyncio.sleep(10)

    handler = HostActionHandler(SlowAPI())
    with pytest.raises(ActionCallTimeoutError):
        await asyncio.wait_for(handler.call_action("history_page", {"run_id": RUN_ID}, 0.05), FAST)

    class WaitsForHistory(SDKRunner):
        async def run(self, ctx: RunnerContext):
            await ctx.history_page()
            yield RunnerResult.run_completed(ctx.run_id)

    results = await asyncio.wait_for(
        collect(adapter(WaitsForHistory), make_ctx(deadline_at=time.time() + 0.2), SlowAPI()), FAST)
    assert results[-1]["type"] == "run.failed"
    assert results[-1]["data"]["code"] == "runner.api.deadline_exceeded"
    assert results[-1]["data"]["retryable"] is True


# -- every action family ------------------------------------------------------------------------
async def test_kitchen_sink_every_action_family_in_the_shape_the_sdk_reads():
    api = FakeHostAPI()
    results = await asyncio.wait_for(collect(adapter(KitchenSinkRunner), make_ctx(), api), FAST)
    assert_all_accepted(results)
    seen = next(r for r in results if r["type"] == "action.requested")["data"]["payload"]["seen"]
    assert seen["tool"] == "echo_tool"
    assert seen["call"] == {"echo": {"text": "ping"}}
    assert seen["kb"] == "doc-1"
    assert seen["rerank"] == [0, 1]
    assert seen["tool_calls"] == [["echo_tool", '{"text": "x"}']]
    assert seen["usage"] == 7
    assert seen["search"] == 2
    assert seen["event"] == "message.received" and seen["event_missing"] == "not_found"
    assert seen["events"] == 1
    assert seen["missing_state"]["value"] is None
    assert seen["state_list"]["keys"] == ["pref.lang", "pref.tz"] and seen["state_list"]["has_more"] is False
    assert seen["state_delete"] is True
    assert seen["runner_scope"] == "unauthorized"
    assert seen["storage_keys"] == ["blob"]
    assert seen["workspace_storage"] == "unauthorized"
    assert seen["run_status"] == "running" and seen["runs"] == 1 and seen["run_events"] == ["message.delta"]
    assert seen["run_cancel"] == "unauthorized"
    assert seen["embedding"] == [[1.0, 1.0], [2.0, 1.0]]
    assert seen["version"].startswith("runnerhost/")
    assert api.storage == {}  # deleted again
    # SDK tool tracing around call_tool arrives as tool.call.* telemetry.
    started = [r for r in results if r["type"] == "tool.call.started"]
    completed = [r for r in results if r["type"] == "tool.call.completed"]
    assert started[0]["data"]["tool_name"] == "echo_tool"
    assert completed[0]["data"]["result"] == {"echo": {"text": "ping"}}


async def test_plugin_storage_bytes_round_trip_and_foreign_values():
    handler = HostActionHandler(FakeHostAPI())
    raw = b"\xff\x00bytes"
    await handler.call_action("set_plugin_storage", {"run_id": RUN_ID, "key": "k",
                                                     "value_base64": base64.b64encode(raw).decode()})
    assert handler.api.storage[("plugin", "k")] == {"encoding": "base64",
                                                    "data": base64.b64encode(raw).decode()}
    got = await handler.call_action("get_plugin_storage", {"run_id": RUN_ID, "key": "k"})
    assert base64.b64decode(got["value_base64"]) == raw
    handler.api.storage[("plugin", "text")] = "plain"  # written by a non-SDK runner
    handler.api.storage[("plugin", "json")] = {"a": 1}
    text = await handler.call_action("get_plugin_storage", {"run_id": RUN_ID, "key": "text"})
    assert base64.b64decode(text["value_base64"]) == b"plain"
    obj = await handler.call_action("get_plugin_storage", {"run_id": RUN_ID, "key": "json"})
    assert base64.b64decode(obj["value_base64"]) == b'{"a":1}'
    with pytest.raises(ActionCallError) as info:
        await handler.call_action("get_plugin_storage", {"run_id": RUN_ID, "key": "missing"})
    assert info.value.data["error"]["code"] == "not_found"
    with pytest.raises(ActionCallError) as info:
        await handler.call_action("set_plugin_storage", {"run_id": RUN_ID, "key": "k", "value_base64": "!!"})
    assert info.value.data["error"]["code"] == "invalid_argument"


async def test_stream_frames_match_the_sdk_stream_decoder():
    handler = HostActionHandler(FakeHostAPI())
    payload = {"run_id": RUN_ID, "llm_model_uuid": GRANTED, "messages": [
        Message(role="user", content=[{"type": "text", "text": "hello"},
                                      {"type": "image_base64", "image_base64": "iVBORw0KGgo="}]).model_dump()]}
    frames = [f async for f in handler.call_action_generator(PluginToRuntimeAction.INVOKE_LLM_STREAM, payload, 5)]
    from langbot_plugin.api.entities.builtin.provider.message import LLMStreamEvent
    events = [LLMStreamEvent.model_validate(f) for f in frames]
    assert [e.chunk.content for e in events[:3]] == ["streamed", " reply", " to hello"]
    final = events[-1]
    assert final.chunk.is_final and final.chunk.content is None
    assert final.chunk.all_content == "streamed reply to hello"
    assert final.usage.total_tokens == 8


def test_message_translation_both_ways():
    from runners.langbot_sdk.handler import chat_to_sdk_message, sdk_message_to_chat, sdk_tool_to_chat

    chat = sdk_message_to_chat(Message(role="user", content=[
        {"type": "text", "text": "look"}, {"type": "image_base64", "image_base64": "/9j/4AAQ"}]).model_dump())
    assert chat == {"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]}
    tool = sdk_tool_to_chat(LLMTool(name="t", human_desc="h", description="d", parameters={"type": "object"},
                                    func=lambda: None).model_dump())
    assert tool == {"type": "function", "function": {"name": "t", "description": "d",
                                                     "parameters": {"type": "object"}}}
    back = Message.model_validate(chat_to_sdk_message({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "function": {"name": "t", "arguments": {"a": 1}}}]}))
    assert back.tool_calls[0].function.arguments == '{"a": 1}' and back.tool_calls[0].type == "function"


# -- robustness -----------------------------------------------------------------------------------
async def test_runner_exception_and_bad_yield_become_run_failed():
    class Boom(SDKRunner):
        async def run(self, ctx: RunnerContext):
            yield RunnerResult.message_delta(ctx.run_id, MessageChunk(role="assistant", content="partial"))
            raise RuntimeError("kaput")

    class BadYield(SDKRunner):
        async def run(self, ctx: RunnerContext):
            yield {"type": "message.delta"}

    results = await collect(adapter(Boom), make_ctx(), FakeHostAPI())
    assert_all_accepted(results)
    assert results[-1]["data"] == {"code": "runner.exception", "error": "RuntimeError: kaput", "retryable": False}
    results = await collect(adapter(BadYield), make_ctx(), FakeHostAPI())
    assert_all_accepted(results)
    assert results[-1]["type"] == "run.failed" and "RunnerResult" in results[-1]["data"]["error"]


async def test_runner_without_terminal_gets_run_completed_and_empty_output_is_caught_by_validator():
    class Silent(SDKRunner):
        async def run(self, ctx: RunnerContext):
            await ctx.log("nothing to say")
            return
            yield  # pragma: no cover

    results = await collect(adapter(Silent), make_ctx(), FakeHostAPI())
    validator = assert_all_accepted(results)
    assert [r["type"] for r in results] == ["run.completed"]
    assert validator.finish().data["code"] == "runner.empty_output"


async def test_invalid_context_is_a_controlled_failure():
    results = await collect(adapter(), {"run_id": RUN_ID, "trigger": {"type": "event"}}, FakeHostAPI())
    assert results == [{"run_id": RUN_ID, "type": "run.failed", "sequence": 1, "data": {
        "code": "runner.context_invalid", "error": results[0]["data"]["error"], "retryable": False}}]


async def test_concurrent_runs_on_one_adapter_are_routed_to_their_own_api():
    runner = adapter()
    apis = [FakeHostAPI(f"run-{i}", steering=[f"s{i}"]) for i in range(3)]
    outs = await asyncio.wait_for(asyncio.gather(*[
        collect(runner, make_ctx(f"run-{i}", text=f"t{i}"), apis[i]) for i in range(3)]), FAST)
    for i, results in enumerate(outs):
        assert_all_accepted(results, f"run-{i}")
        assert f"steered=[s{i}]" in results[3]["data"]["message"]["content"]
        assert all(r["run_id"] == f"run-{i}" for r in results)
    assert runner.router.active_runs == []


async def test_closing_the_stream_early_releases_the_run():
    runner = adapter()
    gen = runner.run(make_ctx(), FakeHostAPI())
    first = await gen.__anext__()
    assert first["type"] == "message.delta" and runner.router.active_runs == [RUN_ID]
    duplicate = await collect(runner, make_ctx(), FakeHostAPI())  # same run id while active
    assert [r["data"]["code"] for r in duplicate] == ["runner.duplicate_run"]
    await gen.aclose()
    assert runner.router.active_runs == []


async def test_initialize_runs_once_and_plugin_helpers_are_run_scoped():
    class Counting(SDKRunner):
        inits = 0

        async def initialize(self):
            type(self).inits += 1

        async def run(self, ctx: RunnerContext):
            version = await self.plugin.get_langbot_version()
            cfg = self.get_plugin_config()
            # Legacy plugin-level helpers are run-scoped by the SDK: same grants, same host.
            reply = await self.plugin.invoke_llm(GRANTED, [Message(role="user", content="via plugin")])
            # A raw handler call without run_id resolves through the SDK's task-local invocation.
            raw = await self.plugin.plugin_runtime_handler.call_action(
                PluginToRuntimeAction.STATE_SET, {"scope": "conversation", "key": "raw", "value": 1})
            text = f"{reply.content} {raw['success']} {version} {cfg['greeting']}"
            yield RunnerResult.run_completed(ctx.run_id, message=Message(role="assistant", content=text))

    runner = LangBotRunnerAdapter(Counting, MANIFEST, plugin_config={"greeting": "hey"})
    for _ in range(2):
        api = FakeHostAPI()
        results = await collect(runner, make_ctx(), api)
        assert_all_accepted(results)
        content = results[0]["data"]["message"]["content"]
        assert content.startswith("llm says: via plugin True runnerhost/") and content.endswith(" hey")
        assert api.calls == [f"invoke_llm:{GRANTED}", "state_set:conversation"]
    assert Counting.inits == 1


async def test_cancelling_the_consumer_cancels_the_sdk_runner():
    entered, cancelled = asyncio.Event(), asyncio.Event()

    class Sleeper(SDKRunner):
        async def run(self, ctx: RunnerContext):
            yield RunnerResult.message_delta(ctx.run_id, MessageChunk(role="assistant", content="..."))
            entered.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            yield RunnerResult.run_completed(ctx.run_id)  # pragma: no cover

    runner = adapter(Sleeper)
    task = asyncio.create_task(collect(runner, make_ctx(), FakeHostAPI()))
    await asyncio.wait_for(entered.wait(), FAST)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), FAST)
    assert runner.router.active_runs == []


# -- manifests and registration -------------------------------------------------------------------
def test_manifest_from_sdk_entity_drops_sdk_only_and_adds_host_defaults():
    sdk = SDKRunnerManifest(
        id="plugin:acme/demo/default", name="default", label={"en_US": "Demo", "zh_Hans": "演示"},
        usages=["agent"], description={"en_US": "A demo"},
        capabilities={"streaming": True, "steering": True, "interactions": True},
        permissions={"models": ["invoke", "count_tokens"], "history": ["page"], "interactions": ["request"]},
        config_schema=[{"name": "model", "type": "llm-model-selector", "allow_custom": True}],
        metadata={"plugin_author": "acme", "plugin_name": "demo", "runner_name": "default"})
    m = manifest_from_sdk(sdk, version="1.2.3")
    assert isinstance(m, RunnerManifest) and m.id == "plugin:acme/demo/default"
    assert (m.label, m.description, m.version) == ("Demo", "A demo", "1.2.3")
    assert m.capabilities.streaming and m.capabilities.steering
    assert m.permissions.models == ["invoke", "count_tokens"]  # kept: local-agent counts on every run
    assert m.permissions.history == ["page"]
    assert m.permissions.steering == ["pull"]
    assert m.permissions.state == ["read", "write"]
    assert m.permissions.run_ledger == ["get", "list", "events_page"]
    assert m.config_schema[0].name == "model"


def test_manifest_from_component_yaml_and_explicit_args():
    component = {"apiVersion": "langbot/v1", "kind": "Runner",
                 "metadata": {"name": "coder", "label": {"en_US": "Coder"}},
                 "spec": {"usages": ["agent"], "capabilities": {"tool_calling": True},
                          "permissions": {"tools": ["detail", "call"], "storage": ["plugin"]},
                          "config": [{"name": "depth", "type": "integer", "default": 2}]}}
    m = manifest_from_sdk(component, author="acme", plugin="tools",
                          extra_permissions={"run_ledger": ["cancel"], "artifacts": ["read"]})
    assert m.id == "plugin:acme/tools/coder" and m.label == "Coder"
    assert m.permissions.tools == ["detail", "call"] and m.permissions.storage == ["plugin"]
    assert m.permissions.steering == []  # no steering capability
    assert m.permissions.run_ledger == ["cancel", "events_page", "get", "list"]
    assert m.permissions.artifacts == ["read"]
    with pytest.raises(ValueError):
        manifest_from_sdk(component)  # no author/plugin → no id
    with pytest.raises(Exception):
        manifest_from_sdk(author="a", plugin="b", runner="c", capabilities={"teleport": True})
    with pytest.raises(Exception):
        manifest_from_sdk(author="a b", plugin="b", runner="c")  # invalid runner id


async def test_langbot_runner_class_is_a_zero_arg_protocol_runner():
    DemoHost = langbot_runner(DemoSDKRunner, author="acme", plugin="demo", runner="default",
                              capabilities={"streaming": True, "steering": True},
                              permissions={"models": ["stream"], "history": ["page"]})
    assert issubclass(DemoHost, Runner) and DemoHost.manifest.id == "plugin:acme/demo/default"
    assert DemoHost.__module__ == __name__
    results = await collect(DemoHost(), make_ctx(), FakeHostAPI())
    assert_all_accepted(results)
    with pytest.raises(TypeError):
        LangBotRunnerAdapter(object, MANIFEST)  # type: ignore[arg-type]


PLUGIN_FILES = {
    "manifest.yaml": """
        apiVersion: v1
        kind: Plugin
        metadata:
          author: acme
          name: hello-plugin
          version: 0.3.0
          label: {en_US: Hello}
        spec:
          config:
            - {name: greeting, type: string, default: Hi}
          components:
            Runner:
              fromDirs:
                - path: components/runner/
        execution:
          python: {path: main.py, attr: HelloPlugin}
    """,
    "main.py": """
        from langbot_plugin.api.definition.plugin import BasePlugin

        class HelloPlugin(BasePlugin):
            pass
    """,
    "components/runner/default.yaml": """
        apiVersion: langbot/v1
        kind: Runner
        metadata:
          name: default
          label: {en_US: Hello runner}
        spec:
          usages: [agent]
          capabilities: {streaming: true}
          permissions: {history: [page]}
        execution:
          python: {path: default.py, attr: HelloRunner}
    """,
    "components/runner/default.py": """
        from langbot_plugin.api.definition.components.runner.runner import Runner
        from langbot_plugin.api.entities.builtin.provider.message import Message
        from langbot_plugin.api.entities.builtin.runner.result import RunnerResult
        from .helpers import shout

        class HelloRunner(Runner):
            async def run(self, ctx):
                greeting = self.get_plugin_config()["greeting"]
                text = shout(f"{greeting} {ctx.input.text}")
                yield RunnerResult.message_completed(ctx.run_id, Message(role="assistant", content=text))
                yield RunnerResult.run_completed(ctx.run_id)
    """,
    "components/runner/helpers.py": """
        def shout(text):
            return text.upper()
    """,
}


async def test_load_plugin_runner_from_a_plugin_directory(tmp_path: Path):
    for rel, text in PLUGIN_FILES.items():
        path = tmp_path / "hello" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    HelloHost = load_plugin_runner(tmp_path / "hello")
    m = HelloHost.manifest
    assert (m.id, m.version, m.label) == ("plugin:acme/hello-plugin/default", "0.3.0", "Hello runner")
    assert m.capabilities.streaming and m.permissions.history == ["page"]
    runner = HelloHost()
    assert type(runner.sdk_runner.plugin).__name__ == "HelloPlugin"
    results = await collect(runner, make_ctx(), FakeHostAPI())
    assert_all_accepted(results)
    assert results[0]["data"]["message"]["content"] == "HI HELLO THERE"
    with pytest.raises(ValueError):
        load_plugin_runner(tmp_path / "hello", "nope")
    with pytest.raises(ValueError):  # missing directory: a ValueError discovery can skip
        load_plugin_runner(tmp_path / "absent")
    shutil.copytree(tmp_path / "hello", tmp_path / "broken")
    (tmp_path / "broken" / "components/runner/default.py").write_text("raise RuntimeError('broken plugin')\n")
    with pytest.raises(ImportError, match="broken plugin"):  # also skipped by discovery
        load_plugin_runner(tmp_path / "broken")


async def test_remove_think_and_reasoning_level_reach_the_host():
    api = FakeHostAPI()
    seen_params = []
    original = api.invoke_llm

    async def invoke_llm(model_id, messages, *, tools=None, params=None):
        seen_params.append(params)
        out = await original(model_id, messages, tools=tools, params=params)
        out["message"]["content"] = "<think>private musing</think>\nthe answer"
        return out
    api.invoke_llm = invoke_llm
    handler = HostActionHandler(api)
    message = {"role": "user", "content": "q"}
    kept = await handler.call_action("invoke_llm", {"run_id": RUN_ID, "llm_model_uuid": GRANTED,
                                                    "messages": [message]})
    assert kept["message"]["content"].startswith("<think>")
    stripped = await handler.call_action("invoke_llm", {"run_id": RUN_ID, "llm_model_uuid": GRANTED,
                                                        "messages": [message], "remove_think": True,
                                                        "reasoning_level": "high"})
    assert stripped["message"]["content"] == "the answer"
    assert seen_params == [None, {"reasoning_level": "high"}]
    info = await handler.call_action("get_langbot_version", {})
    assert info["api_features"] == ["llm.reasoning_level"]


def test_supported_action_table_is_complete():
    from langbot_plugin.entities.io.actions.enums import PluginToRuntimeAction as A

    required = {A.HISTORY_PAGE, A.HISTORY_SEARCH, A.EVENT_GET, A.EVENT_PAGE, A.STEERING_PULL, A.STATE_GET,
                A.STATE_SET, A.STATE_DELETE, A.STATE_LIST, A.INVOKE_LLM, A.INVOKE_LLM_STREAM, A.CALL_TOOL,
                A.GET_TOOL_DETAIL, A.RETRIEVE_KNOWLEDGE_BASE, A.INVOKE_RERANK, A.SET_PLUGIN_STORAGE,
                A.GET_PLUGIN_STORAGE, A.GET_PLUGIN_STORAGE_KEYS, A.DELETE_PLUGIN_STORAGE,
                A.SET_WORKSPACE_STORAGE, A.GET_WORKSPACE_STORAGE, A.GET_WORKSPACE_STORAGE_KEYS,
                A.DELETE_WORKSPACE_STORAGE, A.RUN_GET, A.RUN_LIST, A.RUN_EVENTS_PAGE, A.RUN_CANCEL,
                A.REPLY_STREAM, A.SEND_MESSAGE, A.REPLY_MESSAGE, A.CALL_PLATFORM_API}
    assert {a.value for a in required} <= SUPPORTED_ACTIONS
    assert set(ACTION_TABLE) == SUPPORTED_ACTIONS


def test_package_imports_without_langbot_plugin_and_fails_clearly_on_use():
    code = textwrap.dedent("""
        import sys
        sys.modules["langbot_plugin"] = None  # simulate the extra not being installed
        import runners.langbot_sdk as pkg
        assert pkg.langbot_plugin_available() is False
        try:
            pkg.LangBotRunnerAdapter
        except ImportError as exc:
            assert isinstance(exc, pkg.LangBotSDKMissing)
            print(exc)
        else:
            raise SystemExit("expected ImportError")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert "pip install 'runnerhost[langbot]'" in out.stdout


# -- explicit messages: reply / reply_message / send_message / reply_stream → message_send ----------
class MessagingAPI(FakeHostAPI):
    """Records ``message_send`` calls; answers like the host's delivery (one delivered part)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent: list[tuple[str, Any, Any]] = []

    async def message_send(self, text, *, target=None, key=None):
        from protocol.delivery import SentMessage
        self.sent.append((text, target, key))
        return SentMessage(status="delivered", connection="tg", platform="telegram", target_key="tg:x", parts=[
            {"run_id": self.run_id, "target_key": "tg:x", "part": 3000 + len(self.sent), "platform": "telegram",
             "connection": "tg", "platform_message_id": str(100 + len(self.sent)), "status": "delivered",
             "attempts": 1, "created_at": 1, "updated_at": 1}])


OWN_CHAT = {"connection": "tg", "platform": "telegram", "chat_id": 77, "message_id": 5}


def test_chain_text_keeps_the_text_and_names_what_is_not_sent():
    from langbot_plugin.api.entities.builtin.platform.message import At, Image, MessageChain, Plain, Quote

    from runners.langbot_sdk.handler import chain_text
    chain = MessageChain([Quote(id=1, origin=MessageChain([Plain(text="old")])), At(target="u1", display="Ada"),
                          Plain(text=" look: "), Image(url="https://example.com/a.png")])
    assert chain_text(chain.model_dump(mode="json")) == ("@Ada look: [Image]", ["Image"])
    assert chain_text("plain") == ("plain", [])
    with pytest.raises(RunnerHostError):
        chain_text({"not": "a chain"})


async def test_replies_are_advertised_only_to_runs_with_a_chat_of_their_own():
    from runners.langbot_sdk.handler import advertise_replies
    http = advertise_replies(make_ctx().to_wire())
    assert "reply_stream" not in http["context"]["available_apis"]
    assert "event_reply" not in [t["tool_name"] for t in http["resources"]["tools"]]
    ctx = make_ctx()
    ctx.context.available_apis.message_send = True
    chat = advertise_replies(ctx.to_wire())
    assert chat["context"]["available_apis"]["reply_stream"] is True
    [reply] = [t for t in chat["resources"]["tools"] if t["tool_name"] == "event_reply"]
    assert reply["tool_type"] == "platform" and reply["operations"] == ["call"]

    class Replier(SDKRunner):
        async def run(self, ctx: RunnerContext):
            await ctx.reply("hi there")
            return

    api = MessagingAPI()
    results = await asyncio.wait_for(collect(adapter(Replier), ctx, api), FAST)
    assert api.sent == [("hi there", None, None)] and results[-1]["type"] == "run.completed"
    # without a chat the SDK itself refuses ctx.reply (event_reply is not granted), as LangBot's does
    api = MessagingAPI()
    results = await asyncio.wait_for(collect(adapter(Replier), make_ctx(), api), FAST)
    assert api.sent == [] and results[-1]["data"]["code"] == "runner.api.unauthorized"


async def test_reply_stream_buffers_updates_and_sends_the_final_text_once():
    api = MessagingAPI()
    handler = HostActionHandler(api, reply_target=OWN_CHAT)

    async def op(stream_id, operation, text=None):
        data = {"run_id": RUN_ID, "stream_id": stream_id, "operation": operation}
        if text is not None:
            data["text"] = text
        return (await handler.call_action("reply_stream", data, FAST))["result"]

    assert (await op("s1", "update", "Hel"))["status"] == "buffered"
    assert (await op("s1", "update", "Hello"))["status"] == "buffered"
    assert api.sent == []  # nothing leaves before finish
    done = await op("s1", "finish", "Hello")
    assert (done["status"], done["success"], done["message_id"]) == ("delivered", True, "101")
    assert api.sent == [("Hello", None, "reply_stream:s1")]  # keyed by the stream: a repeat posts nothing
    await op("s2", "update", "never mind")
    assert (await op("s2", "abort"))["status"] == "aborted"
    assert (await op("s3", "finish", ""))["status"] == "empty"
    assert len(api.sent) == 1
    with pytest.raises(ActionCallError) as info:
        await op("s4", "rewind")
    assert info.value.data["error"]["code"] == "invalid_argument"


async def test_send_message_reaches_the_own_chat_only():
    from langbot_plugin.api.entities.builtin.platform.message import MessageChain, Plain
    chain = MessageChain([Plain(text="hello")]).model_dump(mode="json")
    api = MessagingAPI()
    handler = HostActionHandler(api, reply_target=OWN_CHAT, bot_id="tgbot")

    async def send(bot, target_id):
        return await handler.call_action("call_platform_api", {
            "run_id": RUN_ID, "bot_uuid": bot, "action": "send_message",
            "params": {"target_type": "person", "target_id": target_id, "message": chain}}, FAST)

    assert (await send("tgbot", "77"))["result"]["success"] is True
    await send("tgbot", "78")  # passed on as given: the host refuses another chat
    assert api.sent == [("hello", {"chat_id": 77}, None),
                        ("hello", {"target_type": "person", "target_id": "78"}, None)]
    with pytest.raises(ActionCallError) as info:
        await send("another-bot", "77")
    assert info.value.data["error"]["code"] == "unauthorized" and len(api.sent) == 2
    # the plugin-level send_message and the query-based reply take the same path
    await handler.call_action("send_message", {"bot_uuid": "tgbot", "target_type": "person", "target_id": 77,
                                               "message_chain": chain}, FAST)
    await handler.call_action("reply_message", {"query_id": 1, "message_chain": chain}, FAST)
    assert api.sent[2:] == [("hello", {"chat_id": 77}, None), ("hello", None, None)]
