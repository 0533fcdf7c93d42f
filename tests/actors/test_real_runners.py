"""The openai-agent and LangBot-SDK runners through the real host: Ray actors, Postgres, HTTP model."""
from __future__ import annotations

import json

import pytest

from protocol.agents import AgentConfig, MultitaskStrategy, ResourcePolicy
from tests.actors.helpers import collect, message, run_to_end, text_of, until_delta
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.ray

AGENT = "plugin:builtin/openai-agent/default"


def contents(request: dict) -> list[tuple[str, str]]:
    return [(m["role"], m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content")))
            for m in request["messages"]]


@pytest.fixture(scope="module")
async def assistant(host):
    await host.ingest_knowledge("handbook", "vacation", "Employees receive thirty days of paid vacation per year.",
                                title="Vacation policy")
    await host.ingest_knowledge("handbook", "parking", "Parking is free in the north garage.", title="Parking")
    await host.put_agent("assistant", AgentConfig(
        runner_id=AGENT, runner_config={"system_prompt": "Be terse.", "model_id": "gpt-main"},
        resource_policy=ResourcePolicy(models=["gpt-main"], tools=["calculator"], knowledge_bases=["handbook"])))
    return "assistant"


async def test_two_turns_with_history_pulled_through_the_api(host, assistant, fake_openai, conv):
    fake_openai.reset()
    fake_openai.script("Hello Alice.", "You are Alice.")
    first = await run_to_end(host, message(conv, "I am Alice."), assistant)
    assert first[-1]["type"] == "run.completed", first[-1]
    assert text_of(first) == "Hello Alice."
    second = await run_to_end(host, message(conv, "Who am I?"), assistant)
    assert second[-1]["type"] == "run.completed"
    assert contents(fake_openai.requests[1])[1:] == [
        ("user", "I am Alice."), ("assistant", "Hello Alice."), ("user", "Who am I?")]


async def test_tool_call_round_trip_through_the_host(host, assistant, fake_openai, conv):
    fake_openai.reset()
    fake_openai.script(FakeOpenAI.tool_call("calculator", {"expression": "6*7"}, id="call_1"),
                       FakeOpenAI.text("It is 42."))
    frames = await run_to_end(host, message(conv, "6*7?"), assistant)
    types = [f["type"] for f in frames]
    assert "tool.call.started" in types and "tool.call.completed" in types
    done = [f for f in frames if f["type"] == "tool.call.completed"][0]
    assert done["data"]["result"]["result"] == 42
    tool_msg = fake_openai.requests[1]["messages"][-1]
    assert tool_msg["role"] == "tool" and json.loads(tool_msg["content"])["result"] == 42
    # tool schemas came from ctx.resources: the model saw the calculator's JSON schema
    assert fake_openai.requests[0]["tools"][0]["function"]["name"] == "calculator"
    # and the ledger recorded the telemetry
    ledger = await host.read("run_events_page", run_id=frames[0]["run_id"], limit=100)
    assert [e["type"] for e in ledger["items"]] == types


async def test_rag_passage_reaches_the_model(host, fake_openai, conv):
    await host.put_agent("rag", AgentConfig(
        runner_id=AGENT, runner_config={"model_id": "gpt-main", "rag": True},
        resource_policy=ResourcePolicy(models=["gpt-main"], knowledge_bases=["handbook"])))
    fake_openai.reset()
    fake_openai.script("Thirty days.")
    frames = await run_to_end(host, message(conv, "How many vacation days do I get?"), "rag")
    assert frames[-1]["type"] == "run.completed"
    system = fake_openai.requests[0]["messages"][0]
    assert system["role"] == "system" and "thirty days of paid vacation" in system["content"]


async def test_model_failure_ends_in_a_controlled_failure(host, conv):
    await host.put_agent("broken-model", AgentConfig(
        runner_id=AGENT, runner_config={"model_id": "gpt"},  # points at a closed port
        resource_policy=ResourcePolicy(models=["gpt"])))
    frames = await run_to_end(host, message(conv, "hello?"), "broken-model")
    assert frames[-1]["type"] == "run.failed"
    assert frames[-1]["data"]["code"] == "model.unavailable" and frames[-1]["data"]["retryable"] is True


async def test_langbot_sdk_runner_reads_history_sets_state_and_pulls_steering(host, conv):
    await host.put_agent("sdk", AgentConfig(runner_id="plugin:sdk/probe/history", runner_config={"steer_polls": 8},
                                            multitask_strategy=MultitaskStrategy.STEER))
    await run_to_end(host, message(conv, "earlier message"), "echo")
    stream = await host.submit(message(conv, "now"), "sdk")
    live = await until_delta(stream)  # the runner read history and streams: next it polls steering
    steered = await collect(await host.submit(message(conv, "steer me"), "sdk"))
    assert steered[0]["type"] == "event.steered"
    frames = live + await collect(stream)
    assert frames[-1]["type"] == "run.completed", frames[-1]
    assert [f["type"] for f in frames].count("message.delta") == 2
    final = [f for f in frames if f["type"] == "message.completed"][0]["data"]["message"]["content"]
    assert final.startswith("history=") and "steer me" in final
    from protocol.scopes import scope_key
    key = scope_key("conversation", "plugin:sdk/probe/history", "sdk", None, None, conversation_id=conv)
    entry = await host.read("state_get", scope_key=key, key="sdk.seen")
    assert isinstance(entry["value"], int) and entry["value"] >= 2


async def test_langbot_sdk_runner_unauthorized_model_call_is_refused(host, conv):
    await host.put_agent("sdk-model", AgentConfig(runner_id="plugin:sdk/probe/model",
                                                  runner_config={"model": "gpt-main"},
                                                  resource_policy=ResourcePolicy(models=[])))
    frames = await run_to_end(host, message(conv, "call a model"), "sdk-model")
    # The model is not in ctx.resources, so the SDK's own proxy refuses before the host is asked;
    # the refusal ends the run as a recorded, non-retryable failure naming the model.
    assert frames[-1]["type"] == "run.failed"
    assert frames[-1]["data"]["code"] == "runner.api.unauthorized"
    assert "gpt-main" in frames[-1]["data"]["error"]
    run = await host.read("run_get", run_id=frames[0]["run_id"])
    assert run["status"] == "failed"
