"""ModelRegistry against a real HTTP fake of an OpenAI-compatible endpoint."""
from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # make ``tests.fakes`` importable under plain ``pytest``
    sys.path.insert(0, ROOT)

from actors.providers.models import ModelProviderConfig, ModelRegistry  # noqa: E402
from protocol.errors import ErrorCode, RunnerHostError  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402

KEY_ENV = "RUNNERHOST_TEST_MODELS_KEY"
SECRET = "sk-test-SUPERSECRET-0123456789"


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake, monkeypatch):
    fake.reset()
    monkeypatch.setenv(KEY_ENV, SECRET)
    yield


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


def registry(fake, **overrides) -> ModelRegistry:
    primary = dict(model_id="main", base_url=fake.base_url, model="gpt-main", api_key_env=KEY_ENV,
                   timeout_s=5, fallback_model_id="backup")
    primary.update(overrides)
    return ModelRegistry([
        ModelProviderConfig(**primary),
        ModelProviderConfig(model_id="backup", base_url=fake.base_url, model="gpt-backup", timeout_s=5),
    ])


async def test_invoke_text_usage_and_auth_header(fake):
    reg = registry(fake)
    fake.script(FakeOpenAI.text("Hello there", usage=(12, 3)))
    out = await reg.invoke("main", [{"role": "user", "content": "hi"}], params={"temperature": 0.2, "model": "x"})
    assert out["message"] == {"role": "assistant", "content": "Hello there"}
    assert out["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert out["model_id"] == "main" and out["finish_reason"] == "stop"
    body = fake.requests[0]
    assert body["model"] == "gpt-main" and body["stream"] is False and body["temperature"] == 0.2
    assert fake.request_headers[0]["authorization"] == f"Bearer {SECRET}"
    await reg.aclose()


async def test_invoke_tool_calls_and_bare_tool_specs(fake):
    reg = registry(fake)
    fake.script(FakeOpenAI.tool_call("calculator", {"expression": "2+2"}, id="call_a"))
    out = await reg.invoke("main", [{"role": "user", "content": "2+2?"}],
                           tools=[{"name": "calculator", "description": "math",
                                   "parameters": {"type": "object", "properties": {}}}])
    assert out["message"]["tool_calls"] == [{"id": "call_a", "type": "function", "function": {
        "name": "calculator", "arguments": '{"expression": "2+2"}'}}]
    assert out["finish_reason"] == "tool_calls"
    assert fake.requests[0]["tools"][0]["type"] == "function"
    assert fake.requests[0]["tools"][0]["function"]["name"] == "calculator"


async def test_stream_text_deltas_then_final_with_usage(fake):
    reg = registry(fake)
    fake.script(FakeOpenAI.text("one two three", usage=(9, 4)))
    chunks = [c async for c in reg.stream("main", [{"role": "user", "content": "count"}])]
    deltas = [c["delta"]["content"] for c in chunks if "delta" in c]
    assert "".join(deltas) == "one two three" and len(deltas) == 3
    final = chunks[-1]
    assert final["message"] == {"role": "assistant", "content": "one two three"}
    assert final["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    assert fake.requests[0]["stream"] is True
    assert fake.requests[0]["stream_options"] == {"include_usage": True}


async def test_stream_accumulates_tool_call_deltas(fake):
    reg = registry(fake)
    fake.script(FakeOpenAI.tool_calls([{"id": "c1", "name": "calculator", "arguments": {"expression": "6*7"}},
                                       {"id": "c2", "name": "echo_json", "arguments": {"a": [1, 2]}}],
                                      content="Let me check."))
    chunks = [c async for c in reg.stream("main", [{"role": "user", "content": "x"}])]
    assert any("tool_calls" in c.get("delta", {}) for c in chunks)
    msg = chunks[-1]["message"]
    assert msg["content"] == "Let me check."
    assert [(tc["id"], tc["function"]["name"], tc["function"]["arguments"]) for tc in msg["tool_calls"]] == [
        ("c1", "calculator", '{"expression": "6*7"}'), ("c2", "echo_json", '{"a": [1, 2]}')]
    assert chunks[-1]["finish_reason"] == "tool_calls"


async def test_primary_500_falls_back(fake):
    reg = registry(fake)
    fake.script(FakeOpenAI.error(500, "primary down"), model="gpt-main")
    fake.script(FakeOpenAI.text("from backup"), model="gpt-backup")
    out = await reg.invoke("main", [{"role": "user", "content": "hi"}])
    assert out["message"]["content"] == "from backup"
    assert out["model_id"] == "backup" and out["fallback_from"] == "main"
    assert [r["model"] for r in fake.requests] == ["gpt-main", "gpt-backup"]


async def test_stream_fallback_before_any_output(fake):
    reg = registry(fake)
    fake.script(FakeOpenAI.error(503), model="gpt-main")
    fake.script(FakeOpenAI.text("backup streaming"), model="gpt-backup")
    chunks = [c async for c in reg.stream("main", [{"role": "user", "content": "hi"}])]
    assert chunks[-1]["model_id"] == "backup"
    assert "".join(c["delta"]["content"] for c in chunks if "delta" in c) == "backup streaming"


async def test_stream_failure_after_output_does_not_fall_back(fake):
    reg = registry(fake)
    fake.script(FakeOpenAI.text("partial answer that breaks", stream_error_after=2), model="gpt-main")
    fake.script(FakeOpenAI.text("should not be used"), model="gpt-backup")
    got = []
    with pytest.raises(RunnerHostError) as info:
        async for c in reg.stream("main", [{"role": "user", "content": "hi"}]):
            got.append(c)
    assert info.value.code is ErrorCode.RUNTIME_ERROR and info.value.retryable
    assert "".join(c["delta"]["content"] for c in got) == "partial answer "
    assert fake.pending("gpt-backup") == 1


async def test_timeout_falls_back(fake):
    reg = registry(fake, timeout_s=0.3)
    fake.script(FakeOpenAI.text("too slow", delay_s=1.5), model="gpt-main")
    fake.script(FakeOpenAI.text("fast backup"), model="gpt-backup")
    out = await reg.invoke("main", [{"role": "user", "content": "hi"}])
    assert out["message"]["content"] == "fast backup"


async def test_connection_error_falls_back(fake):
    reg = registry(fake, base_url=_closed_port_url())
    fake.script(FakeOpenAI.text("backup alive"), model="gpt-backup")
    out = await reg.invoke("main", [{"role": "user", "content": "hi"}])
    assert out["model_id"] == "backup"


async def test_both_fail_runtime_error_retryable(fake):
    reg = registry(fake)
    fake.script(FakeOpenAI.error(500), model="gpt-main")
    fake.script(FakeOpenAI.error(502), model="gpt-backup")
    with pytest.raises(RunnerHostError) as info:
        await reg.invoke("main", [{"role": "user", "content": "hi"}])
    err = info.value
    assert err.code is ErrorCode.RUNTIME_ERROR and err.retryable
    assert [a["status"] for a in err.details["attempts"]] == [500, 502]


async def test_429_maps_to_rate_limited(fake):
    reg = ModelRegistry([ModelProviderConfig(model_id="solo", base_url=fake.base_url, model="m", timeout_s=5)])
    fake.script(FakeOpenAI.error(429, "slow down"))
    with pytest.raises(RunnerHostError) as info:
        await reg.invoke("solo", [{"role": "user", "content": "hi"}])
    assert info.value.code is ErrorCode.RATE_LIMITED and info.value.retryable
    with pytest.raises(RunnerHostError) as info:
        [c async for c in reg.stream("solo", [{"role": "user", "content": "hi"}])]  # queue empty → 500
    assert info.value.code is ErrorCode.RUNTIME_ERROR


async def test_unknown_model_and_missing_key(fake, monkeypatch):
    reg = registry(fake)
    with pytest.raises(RunnerHostError) as info:
        await reg.invoke("nope", [{"role": "user", "content": "hi"}])
    assert info.value.code is ErrorCode.NOT_FOUND
    monkeypatch.delenv(KEY_ENV)
    fake.script(FakeOpenAI.text("backup ok"), model="gpt-backup")
    out = await reg.invoke("main", [{"role": "user", "content": "hi"}])  # primary unusable → fallback
    assert out["model_id"] == "backup"
    assert fake.requests_for("gpt-main") == []


async def test_fallback_chain_is_cycle_safe(fake):
    reg = ModelRegistry([
        ModelProviderConfig(model_id="a", base_url=fake.base_url, model="ma", fallback_model_id="b", timeout_s=5),
        ModelProviderConfig(model_id="b", base_url=fake.base_url, model="mb", fallback_model_id="a", timeout_s=5),
    ])
    fake.script(FakeOpenAI.error(500), FakeOpenAI.error(500), FakeOpenAI.error(500))
    with pytest.raises(RunnerHostError):
        await reg.invoke("a", [{"role": "user", "content": "hi"}])
    assert [r["model"] for r in fake.requests] == ["ma", "mb"]


async def test_secret_never_in_errors_reprs_or_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)
    cfg = ModelProviderConfig(model_id="main", base_url=fake.base_url, model="gpt-main", api_key_env=KEY_ENV,
                              timeout_s=5, extra_headers={"X-Org-Token": "org-token-abcdef"})
    reg = ModelRegistry([cfg])
    # The provider echoes the key back, as real providers do on auth errors.
    fake.script(FakeOpenAI.error(401, f"Incorrect API key provided: {SECRET} (org org-token-abcdef)"))
    with pytest.raises(RunnerHostError) as info:
        await reg.invoke("main", [{"role": "user", "content": "hi"}])
    fake.script(FakeOpenAI.error(401, f"bad key {SECRET}"))
    with pytest.raises(RunnerHostError) as info2:
        [c async for c in reg.stream("main", [{"role": "user", "content": "hi"}])]
    texts = [str(info.value), repr(info.value), str(info.value.to_dict()), str(info2.value),
             str(info2.value.to_dict()), repr(cfg), str(cfg), repr(reg), caplog.text]
    for text in texts:
        assert SECRET not in text
        assert "org-token-abcdef" not in text
    assert "HTTP 401" in info.value.message
    assert fake.request_headers[0]["x-org-token"] == "org-token-abcdef"
