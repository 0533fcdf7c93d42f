"""The openai-agent runner end to end: in-memory host + real ModelRegistry over HTTP + real ToolRegistry.

No Ray, no database: ``tests.fakes.memory_api.MemoryHost`` plays the host
(transcript, state, steering, grants) and every result must be accepted by
``protocol.results.ResultValidator``; ``tests.fakes.openai_server.FakeOpenAI``
is a real HTTP server whose recorded request bodies show what the model saw.
"""
from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path

import pytest
from langbot_plugin.api.entities.builtin.runner import result as lb  # the dev extra: missing fails, never skips

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # make ``tests.fakes`` importable under plain ``pytest``
    sys.path.insert(0, ROOT)

from actors.providers import BuiltinTools, ModelProviderConfig, ModelRegistry, ToolRegistry  # noqa: E402
from protocol.manifest import RunnerDescriptor  # noqa: E402
from runners import BUILTIN_RUNNERS  # noqa: E402
from runners.openai_agent import CHECKPOINT_KEY, OpenAIAgentRunner  # noqa: E402
from tests.fakes.memory_api import MemoryHost, MemoryRunnerAPI  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402

KEY_ENV = "RUNNERHOST_TEST_AGENT_KEY"
SECRET = "sk-agent-TOPSECRET-9f8e7d6c5b4a"
RUNNER = OpenAIAgentRunner()


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def host(fake, monkeypatch):
    fake.reset()
    monkeypatch.setenv(KEY_ENV, SECRET)
    models = ModelRegistry([
        ModelProviderConfig(model_id="main", base_url=fake.base_url, model="gpt-main", api_key_env=KEY_ENV,
                            timeout_s=10),
        ModelProviderConfig(model_id="backup", base_url=fake.base_url, model="gpt-backup", api_key_env=KEY_ENV,
                            timeout_s=10),
    ])
    return MemoryHost(models=models, tools=ToolRegistry([BuiltinTools()]), knowledge={
        "handbook": ["The office door code is 4711.", "Lunch is served at noon in the atrium."],
        "trivia": ["Octopuses have three hearts."],
    })


def usage(outcome):
    return outcome.terminal.model_dump(mode="json")["usage"]


def roles_and_text(messages):
    return [(m["role"], m.get("content")) for m in messages]


def assert_langbot_compatible(outcome):
    for result in outcome.results:
        lb.RunnerResult.model_validate_json(json.dumps(result.model_dump(mode="json")))
    lb.RunnerResult.model_validate(outcome.terminal.model_dump(mode="json"))


# -- manifest ----------------------------------------------------------------------

def test_manifest_and_builtin_registration():
    module, _, cls = BUILTIN_RUNNERS["plugin:builtin/openai-agent/default"].partition(":")
    assert getattr(importlib.import_module(module), cls) is OpenAIAgentRunner
    d = RunnerDescriptor.from_manifest(OpenAIAgentRunner.manifest)
    caps = d.capabilities
    assert caps.streaming and caps.tool_calling and caps.knowledge_retrieval and caps.steering
    p = d.permissions
    assert (p.models, p.tools, p.knowledge_bases) == (["invoke", "stream"], ["detail", "call"], ["list", "retrieve"])
    assert (p.history, p.state, p.steering) == (["page", "search"], ["read", "write"], ["pull"])
    assert {f.name for f in d.config_schema} >= {"system_prompt", "model_id", "fallback_model_id", "max_turns",
                                                 "history_limit", "context_budget_tokens", "knowledge_base_ids",
                                                 "rag", "temperature"}


# -- conversation & history ------------------------------------------------------------

async def test_two_turn_conversation_uses_history_page(host, fake):
    fake.script("Nice to meet you, Alice.", "Your name is Alice.")
    cfg = {"system_prompt": "You are terse.", "temperature": 0.3}
    ctx1 = await host.make_context("My name is Alice.", config=cfg)
    assert "messages" not in ctx1.to_wire() and "bootstrap" not in ctx1.to_wire()
    out1 = await host.run(RUNNER, ctx1)
    assert out1.terminal.type == "run.completed"
    assert out1.text == "Nice to meet you, Alice." == out1.streamed_text
    assert out1.types[-2:] == ["message.completed", "run.completed"]
    assert usage(out1)["total_tokens"] == 18 and usage(out1)["model_calls"] == 1
    first = fake.requests[0]
    assert first["stream"] is True and first["temperature"] == 0.3 and first["model"] == "gpt-main"
    # The current event's own transcript item is not duplicated from history.
    assert roles_and_text(first["messages"]) == [("system", "You are terse."), ("user", "My name is Alice.")]

    ctx2 = await host.make_context("What is my name?", config=cfg)
    out2 = await host.run(RUNNER, ctx2)
    assert out2.text == "Your name is Alice."
    assert out2.api.calls_of("history_page"), "history must be pulled through the API"
    assert roles_and_text(fake.requests[1]["messages"]) == [
        ("system", "You are terse."),
        ("user", "My name is Alice."),
        ("assistant", "Nice to meet you, Alice."),
        ("user", "What is my name?"),
    ]
    assert_langbot_compatible(out2)


async def test_history_limit_and_no_history_grant(host, fake):
    for i in range(30):
        host.add_item("conv_1", "user" if i % 2 == 0 else "assistant", f"old message {i}")
    fake.script("ok", "ok")
    out = await host.run(RUNNER, await host.make_context("latest", config={"history_limit": 5}))
    sent = [m["content"] for m in fake.requests[0]["messages"]]
    assert sent == [f"old message {i}" for i in range(25, 30)] + ["latest"]
    assert all(call["limit"] <= 100 for call in out.api.calls_of("history_page"))

    from protocol.context import AvailableApis
    ctx = await host.make_context("no history please", apis=AvailableApis(state=True, steering_pull=True))
    out = await host.run(RUNNER, ctx)
    assert out.api.calls_of("history_page") == []
    assert roles_and_text(fake.requests[1]["messages"]) == [("user", "no history please")]


async def test_non_message_event_is_not_a_user_turn(host, fake):
    fake.script("Welcome, Carol!")
    ctx = await host.make_context(None, event_type="group.member_joined", event_data={"member": "carol"})
    out = await host.run(RUNNER, ctx)
    assert out.text == "Welcome, Carol!"
    msgs = fake.requests[0]["messages"]
    assert [m["role"] for m in msgs] == ["system"]
    assert "group.member_joined" in msgs[0]["content"] and "carol" in msgs[0]["content"]


# -- tools ----------------------------------------------------------------------------------

async def test_tool_call_round_trip(host, fake):
    fake.script(FakeOpenAI.tool_call("calculator", {"expression": "6*7"}, id="call_calc"),
                FakeOpenAI.text("6 times 7 is 42."))
    ctx = await host.make_context("What is 6*7?")
    out = await host.run(RUNNER, ctx)
    assert out.types == ["tool.call.started", "tool.call.completed"] + ["message.delta"] * 5 + [
        "message.completed", "run.completed"]
    started, completed = out.of_type("tool.call.started")[0], out.of_type("tool.call.completed")[0]
    assert started.data == {"tool_call_id": "call_calc", "tool_name": "calculator",
                            "parameters": {"expression": "6*7"}}
    assert completed.data["result"] == {"expression": "6*7", "result": 42} and completed.data["error"] is None
    # Tool definitions come from ctx.resources (no get_tool_detail round trip).
    tools = {t["function"]["name"]: t["function"] for t in fake.requests[0]["tools"]}
    assert tools["calculator"]["parameters"]["required"] == ["expression"]
    assert out.api.calls_of("get_tool_detail") == []
    assert out.api.calls_of("call_tool") == [{"tool_name": "calculator", "parameters": {"expression": "6*7"}}]
    second = fake.requests[1]["messages"]
    assert second[-2]["role"] == "assistant" and second[-2]["tool_calls"][0]["id"] == "call_calc"
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_calc"
    assert json.loads(second[-1]["content"])["result"] == 42
    assert out.text == "6 times 7 is 42."
    assert usage(out)["model_calls"] == 2 and usage(out)["prompt_tokens"] == 22
    assert_langbot_compatible(out)


async def test_tool_error_goes_back_to_the_model(host, fake):
    fake.script(FakeOpenAI.tool_call("calculator", {"expression": "1/0"}, id="c0"),
                FakeOpenAI.tool_call("not_a_tool", {}, id="c1"),
                FakeOpenAI.text("Cannot divide by zero."))
    out = await host.run(RUNNER, await host.make_context("1/0?", streaming=False))
    errors = [r.data["error"] for r in out.of_type("tool.call.completed")]
    assert errors[0].startswith("invalid_argument") and "division by zero" in errors[0]
    assert errors[1].startswith("not_found")
    assert "division by zero" in fake.requests[1]["messages"][-1]["content"]
    assert out.text == "Cannot divide by zero." and out.of_type("message.delta") == []


async def test_max_turns_forces_an_answer(host, fake):
    fake.script(FakeOpenAI.tool_call("current_time", {}), FakeOpenAI.tool_call("current_time", {}))
    out = await host.run(RUNNER, await host.make_context("loop forever", config={"max_turns": 2}))
    assert fake.requests[1]["tool_choice"] == "none"
    assert out.terminal.data["finish_reason"] == "max_turns"
    assert "maximum number of tool steps" in out.text and out.text == out.streamed_text
    assert len(out.of_type("tool.call.completed")) == 1


# -- RAG ----------------------------------------------------------------------------------------

async def test_rag_passages_reach_the_model(host, fake):
    fake.script("The code is 4711.", "Three.")
    out = await host.run(RUNNER, await host.make_context("What is the door code?",
                                                         config={"rag": True, "system_prompt": "Be helpful."}))
    system = fake.requests[0]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be helpful.")
    assert "The office door code is 4711." in system["content"]
    assert {c["kb_id"] for c in out.api.calls_of("retrieve_knowledge")} == {"handbook", "trivia"}

    out = await host.run(RUNNER, await host.make_context("How many hearts does an octopus have?",
                                                         config={"knowledge_base_ids": ["trivia", "secret-kb"]}))
    assert [c["kb_id"] for c in out.api.calls_of("retrieve_knowledge")] == ["trivia"]  # ungranted kb skipped
    assert "three hearts" in fake.requests[1]["messages"][0]["content"]


# -- steering ----------------------------------------------------------------------------------

async def test_steering_during_tool_call_reaches_next_model_call(host, fake):
    fake.script(FakeOpenAI.tool_call("echo_json", {"ping": 1}, id="c_echo"), FakeOpenAI.text("Done, and hi Bob!"))
    ctx = await host.make_context("Echo something.")

    async def steer(api, tool_name, params):
        api.queue_steering("Also greet Bob.")

    out = await host.run(RUNNER, ctx, api=MemoryRunnerAPI(host, ctx, on_tool_call=steer))
    second = roles_and_text(fake.requests[1]["messages"])
    assert second[-2][0] == "tool" and second[-1] == ("user", "Also greet Bob.")
    assert "Also greet Bob." not in json.dumps(fake.requests[0]["messages"])
    assert out.text == "Done, and hi Bob!"
    # The steered message was written to the transcript by the host; next turn sees it exactly once.
    fake.script("sure")
    await host.run(RUNNER, await host.make_context("next"))
    assert [m["content"] for m in fake.requests[2]["messages"]].count("Also greet Bob.") == 1


async def test_steering_before_finishing_continues_the_loop(host, fake):
    fake.script("First answer.", "Second answer, about cats.")

    class SteerDuringFirstAnswer(MemoryRunnerAPI):
        async def invoke_llm_stream(self, model_id, messages, **kw):
            async for chunk in super().invoke_llm_stream(model_id, messages, **kw):
                yield chunk
            if len(self.calls_of("invoke_llm_stream")) == 1:
                self.queue_steering("Actually, talk about cats.")

    ctx = await host.make_context("Talk about dogs.")
    out = await host.run(RUNNER, ctx, api=SteerDuringFirstAnswer(host, ctx))
    assert roles_and_text(fake.requests[1]["messages"])[-3:] == [
        ("user", "Talk about dogs."), ("assistant", "First answer."), ("user", "Actually, talk about cats.")]
    assert out.text == "First answer.\n\nSecond answer, about cats." == out.streamed_text
    assert len(out.of_type("message.completed")) == 1


# -- compaction --------------------------------------------------------------------------------

def _seed_long_history(host, conv, n=8):
    for i in range(1, n + 1):
        host.add_item(conv, "user" if i % 2 else "assistant", f"fact {i}: " + "lorem ipsum " * 33)


async def test_checkpoint_written_over_budget_and_reused(host, fake):
    conv = "conv_compact"
    _seed_long_history(host, conv)
    cfg = {"context_budget_tokens": 300, "compaction_keep_recent": 2, "history_limit": 50}
    fake.script(FakeOpenAI.text("SUMMARY-1: facts one to six."), FakeOpenAI.text("answer one"))
    out1 = await host.run(RUNNER, await host.make_context("question one", conversation_id=conv, config=cfg))

    states = out1.of_type("state.updated")
    assert len(states) == 1 and states[0].data["scope"] == "conversation" and states[0].data["key"] == CHECKPOINT_KEY
    cp = states[0].data["value"]
    assert set(cp) == {"schema_version", "summary", "covers_until", "tokens_before", "created_at", "conversation_id"}
    assert cp["schema_version"] == 1 and cp["conversation_id"] == conv
    assert cp["covers_until"] == 6 and cp["summary"] == "SUMMARY-1: facts one to six."
    assert cp["tokens_before"] > 300 and isinstance(cp["created_at"], int)
    summarize_req, answer_req = fake.requests
    assert summarize_req["stream"] is False and "fact 1:" in summarize_req["messages"][1]["content"]
    sent = json.dumps(answer_req["messages"])
    assert "SUMMARY-1" in sent and "fact 6:" not in sent and "fact 7:" in sent and "fact 8:" in sent
    assert usage(out1)["model_calls"] == 2

    # Next turn: the checkpoint comes back in ctx.state.conversation; only items after covers_until are used.
    fake.script(FakeOpenAI.text("answer two"))
    ctx2 = await host.make_context("question two", conversation_id=conv, config=cfg)
    assert ctx2.state.conversation[CHECKPOINT_KEY]["covers_until"] == 6
    out2 = await host.run(RUNNER, ctx2)
    assert out2.of_type("state.updated") == []  # under budget now: no new summary
    assert out2.api.history_returned and all(item.seq > 6 for item in out2.api.history_returned)
    sent = json.dumps(fake.requests[2]["messages"])
    assert "SUMMARY-1" in sent and "fact 1:" not in sent and "fact 6:" not in sent
    assert "fact 7:" in sent and "question one" in sent and "answer one" in sent
    assert len(fake.requests) == 3


@pytest.mark.parametrize("bad", [
    {"schema_version": 2, "summary": "STALE", "covers_until": 2, "tokens_before": 1, "created_at": 1,
     "conversation_id": "conv_bad"},
    {"schema_version": 1, "summary": "STALE", "covers_until": 2, "tokens_before": 1, "created_at": 1,
     "conversation_id": "some_other_conversation"},
    {"schema_version": 1, "summary": "STALE", "covers_until": "2", "conversation_id": "conv_bad"},
    "not even an object",
])
async def test_foreign_or_wrong_checkpoint_is_ignored(host, fake, bad):
    conv = "conv_bad"
    for i in range(1, 5):
        host.add_item(conv, "user" if i % 2 else "assistant", f"msg {i}")
    host.scope_state("conversation", conv)[CHECKPOINT_KEY] = bad
    fake.script("fine")
    await host.run(RUNNER, await host.make_context("now", conversation_id=conv))
    sent = [m["content"] for m in fake.requests[0]["messages"]]
    assert sent == ["msg 1", "msg 2", "msg 3", "msg 4", "now"]


# -- model failures --------------------------------------------------------------------------

@pytest.mark.parametrize("streaming", [True, False])
async def test_primary_500_uses_runner_fallback(host, fake, streaming):
    fake.script(FakeOpenAI.error(500, "primary exploded"), model="gpt-main")
    fake.script(FakeOpenAI.text("backup here"), model="gpt-backup")
    out = await host.run(RUNNER, await host.make_context("hi", streaming=streaming,
                                                         config={"model_id": "main", "fallback_model_id": "backup"}))
    assert out.terminal.type == "run.completed" and out.text == "backup here"
    assert [r["model"] for r in fake.requests] == ["gpt-main", "gpt-backup"]
    assert usage(out)["model_id"] == "backup"
    assert bool(out.of_type("message.delta")) is streaming


async def test_both_models_failing_is_a_controlled_failure(host, fake):
    fake.script(FakeOpenAI.error(500), model="gpt-main")
    fake.script(FakeOpenAI.error(503), model="gpt-backup")
    out = await host.run(RUNNER, await host.make_context("hi", config={"fallback_model_id": "backup"}))
    assert out.types == ["run.failed"]
    assert out.terminal.data["code"] == "model.unavailable" and out.terminal.data["retryable"] is True
    assert_langbot_compatible(out)


async def test_stream_grant_missing_uses_invoke(host, fake):
    fake.script("plain")
    out = await host.run(RUNNER, await host.make_context("hi", model_ops=["invoke"]))
    assert fake.requests[0]["stream"] is False and out.of_type("message.delta") == []
    assert out.api.calls_of("invoke_llm_stream") == [] and out.text == "plain"


async def test_api_key_never_leaks(host, fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.script(FakeOpenAI.error(401, f"Incorrect API key provided: {SECRET}"),
                FakeOpenAI.error(401, f"Incorrect API key provided: {SECRET}"))
    out = await host.run(RUNNER, await host.make_context("hi", config={"fallback_model_id": "backup"}))
    assert out.terminal.data["code"] == "model.unavailable"
    assert "HTTP 401" in out.terminal.data["error"]
    assert fake.request_headers[0]["authorization"] == f"Bearer {SECRET}"
    dumped = json.dumps([r.model_dump(mode="json") for r in out.results + [out.terminal]])
    assert SECRET not in dumped
    assert SECRET not in caplog.text
    assert SECRET not in repr(host.models) and SECRET not in repr(host.models.get("main"))


async def test_invalid_config_and_no_model(host, fake):
    out = await host.run(RUNNER, await host.make_context("hi", config={"max_turns": 0}))
    assert out.terminal.data["code"] == "runner.config_invalid" and fake.requests == []
    out = await host.run(RUNNER, await host.make_context("hi", model_ids=[]))
    assert out.terminal.data["code"] == "model.unavailable" and out.terminal.data["retryable"] is False


async def test_tool_without_schema_in_context_gets_one_detail_call(host, fake):
    fake.script("ok")
    ctx = await host.make_context("hi")
    for tool in ctx.resources.tools:
        if tool.tool_name == "calculator":
            tool.parameters = None
    out = await host.run(RUNNER, ctx)
    assert out.api.calls_of("get_tool_detail") == [{"tool_name": "calculator"}]
    tools = {t["function"]["name"]: t["function"] for t in fake.requests[0]["tools"]}
    assert tools["calculator"]["parameters"]["required"] == ["expression"]
