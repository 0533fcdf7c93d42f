"""The built-in echo runner driven directly (no Ray) against an in-test RunnerAPI."""
from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

import pytest

from protocol.context import (
    ActorContext,
    ConversationContext,
    EventContext,
    InputContext,
    RunContext,
    StateSnapshot,
    Trigger,
)
from protocol.pages import SteeringItem, SteeringPullResult
from protocol.results import ResultValidator, RunResult, Verdict
from protocol.runner import Runner, RunnerAPI
from runners.echo import EchoRunner
from runners.echo.runner import split_chunks

RUN_ID = "run_echo_1"


class FakeAPI(RunnerAPI):
    """Only steering is real; everything else is out of bounds for the echo runner."""

    def __init__(self, steering: list[list[str]] | None = None) -> None:
        self.run_id = RUN_ID
        # one entry per steering_pull call: the texts that pull returns
        self._steering = deque(steering or [])
        self.pulls: list[tuple[str, int | None]] = []

    async def steering_pull(self, mode="all", limit=None):
        self.pulls.append((mode, limit))
        texts = self._steering.popleft() if self._steering else []
        return SteeringPullResult(items=[
            SteeringItem(
                claimed_run_id=RUN_ID, runner_id="plugin:builtin/echo/default",
                event=EventContext(event_id=f"evt_s{i}", event_type="message.received", source="api"),
                input=InputContext(text=text),
            ) for i, text in enumerate(texts)
        ])

    def _unexpected(self, *args, **kwargs):
        raise AssertionError("echo runner must not call this API")

    invoke_llm = invoke_llm_stream = invoke_rerank = _unexpected
    get_tool_detail = call_tool = retrieve_knowledge = _unexpected
    history_page = history_search = event_get = event_page = _unexpected
    artifact_metadata = artifact_read = artifact_read_range = _unexpected
    state_get = state_set = state_delete = state_list = _unexpected
    storage_get = storage_set = storage_delete = storage_keys = _unexpected
    run_get = run_list = run_events_page = run_cancel = _unexpected


def make_ctx(text: str | None = "hello big world", config: dict[str, Any] | None = None,
             conversation_state: dict[str, Any] | None = None) -> RunContext:
    return RunContext(
        run_id=RUN_ID,
        trigger=Trigger(type="message.received", source="webui", timestamp=1_700_000_000),
        event=EventContext(event_id="evt_1", event_type="message.received", event_time=1_700_000_000,
                           source="webui", data={"k": "v"}),
        conversation=ConversationContext(conversation_id="conv_1", bot_id="bot_1"),
        actor=ActorContext(actor_type="user", actor_id="u1", actor_name="Ann"),
        input=InputContext(text=text),
        state=StateSnapshot(conversation=conversation_state or {}, actor={"x": 1}),
        config=config or {},
        metadata={"binding_id": "a@1"},
    )


def run_echo(ctx: RunContext, api: FakeAPI | None = None) -> list[RunResult]:
    async def collect():
        return [r async for r in EchoRunner().run(ctx, api or FakeAPI())]

    results = asyncio.run(collect())
    # every yielded result must be accepted by the host's validator, in order
    validator = ResultValidator(ctx.run_id)
    for result in results:
        verdict = validator.check(result)
        assert verdict.verdict is Verdict.ACCEPTED, (result, verdict.reason)
        assert verdict.payload is not None  # strict payloads, not lenient telemetry
    final = validator.finish()
    assert final.type == "run.completed", final.data
    return results


def types(results):
    return [r.type for r in results]


def delta_texts(results):
    return [r.data["chunk"]["content"] for r in results if r.type == "message.delta"]


def completed_text(results):
    (msg,) = [r for r in results if r.type == "message.completed"]
    return msg.data["message"]["content"]


# --------------------------------------------------------------------------


def test_echo_is_a_runner_with_a_valid_manifest():
    assert issubclass(EchoRunner, Runner)
    assert str(EchoRunner.manifest.id) == "plugin:builtin/echo/default"
    assert EchoRunner.manifest.capabilities.streaming and EchoRunner.manifest.capabilities.steering
    assert "pull" in EchoRunner.manifest.permissions.steering


def test_echo_mode_streams_word_deltas():
    results = run_echo(make_ctx("hello big world"))
    deltas = delta_texts(results)
    assert deltas == ["echo: ", "hello ", "big ", "world"]
    assert "".join(deltas) == "echo: hello big world"
    assert types(results) == ["message.delta"] * 4 + ["message.completed", "run.completed"]
    assert completed_text(results) == "echo: hello big world"
    assert results[-1].data["finish_reason"] == "stop"
    assert all(r.run_id == RUN_ID for r in results)
    assert all(r.data["chunk"]["role"] == "assistant" for r in results if r.type == "message.delta")


@pytest.mark.parametrize("text", ["x", "", None, "  double  spaces ", "多字节 文本 ✓", "a\nb c"])
def test_echo_concatenation_is_exact(text):
    results = run_echo(make_ctx(text))
    expected = f"echo: {text or ''}"
    assert "".join(delta_texts(results)) == expected
    assert completed_text(results) == expected


@pytest.mark.parametrize("chunks, expected", [
    (1, ["echo: one two three four"]),
    (2, ["echo: ", "one two three four"]),
    (3, ["echo: ", "one ", "two three four"]),
    (5, ["echo: ", "one ", "two ", "three ", "four"]),
    (50, ["echo: ", "one ", "two ", "three ", "four"]),
    (0, ["echo: ", "one ", "two ", "three ", "four"]),  # 0 = one per word
])
def test_chunks_caps_deltas(chunks, expected):
    results = run_echo(make_ctx("one two three four", config={"chunks": chunks}))
    assert delta_texts(results) == expected
    assert completed_text(results) == "echo: one two three four"


@pytest.mark.parametrize("text, chunks", [("a b c d e f g", 3), ("single", 4), ("", 2), ("a  b", 2)])
def test_split_chunks_joins_back(text, chunks):
    pieces = split_chunks(text, chunks)
    assert "".join(pieces) == text
    assert 1 <= len(pieces) <= max(chunks, 1)


def test_context_mode_returns_the_exact_context():
    ctx = make_ctx("what do you see", config={"mode": "context"}, conversation_state={"count": 2})
    results = run_echo(ctx)
    assert types(results) == ["message.delta", "message.completed", "run.completed"]
    reply = completed_text(results)
    assert json.loads(reply) == ctx.to_wire()
    assert delta_texts(results) == [reply]
    # and it is the JSON a runner really receives: parseable back into a RunContext
    assert RunContext.model_validate_json(reply) == ctx


def test_steering_is_echoed():
    api = FakeAPI(steering=[["stop please"]])
    results = run_echo(make_ctx("hello", config={"steering": True, "chunks": 1}), api)
    assert delta_texts(results) == ["echo: hello", "\nsteered: stop please"]
    assert completed_text(results) == "echo: hello\nsteered: stop please"
    assert api.pulls == [("all", None)]


def test_steering_pulled_after_each_delta():
    api = FakeAPI(steering=[[], ["first", "second"], []])
    results = run_echo(make_ctx("a b", config={"steering": True}), api)
    deltas = delta_texts(results)
    assert deltas == ["echo: ", "a ", "\nsteered: first", "\nsteered: second", "b"]
    assert completed_text(results) == "".join(deltas)
    assert len(api.pulls) == 3


def test_no_steering_pull_unless_configured():
    api = FakeAPI(steering=[["ignored"]])
    results = run_echo(make_ctx("a b"), api)
    assert api.pulls == []
    assert "steered" not in completed_text(results)


@pytest.mark.parametrize("before, after", [(None, 1), (0, 1), (4, 5), ("not a number", 1)])
def test_state_key_increments_conversation_counter(before, after):
    state = {} if before is None else {"visits": before}
    results = run_echo(make_ctx("hi", config={"state_key": "visits"}, conversation_state=state))
    (update,) = [r for r in results if r.type == "state.updated"]
    assert update.data == {"scope": "conversation", "key": "visits", "value": after}
    # state is requested before the message and the terminal
    assert types(results)[-3:] == ["state.updated", "message.completed", "run.completed"]


def test_no_state_update_without_state_key():
    assert "state.updated" not in types(run_echo(make_ctx("hi", conversation_state={"visits": 1})))


def test_echo_results_carry_sequence_free_envelopes():
    # the host assigns sequences; the echo runner leaves them unset
    assert all(r.sequence is None for r in run_echo(make_ctx("a b c")))


def test_one_instance_serves_concurrent_runs():
    runner = EchoRunner()

    async def one(text, run_id):
        ctx = make_ctx(text).model_copy(update={"run_id": run_id})
        return [r async for r in runner.run(ctx, FakeAPI())]

    async def both():
        return await asyncio.gather(one("left side", "r_a"), one("right", "r_b"))

    left, right = asyncio.run(both())
    assert completed_text(left) == "echo: left side" and {r.run_id for r in left} == {"r_a"}
    assert completed_text(right) == "echo: right" and {r.run_id for r in right} == {"r_b"}
