"""Embeddings, rerank, token counting and LiteLLM-backed native providers, over real HTTP fakes.

``FakeOpenAI`` serves OpenAI-compatible ``/embeddings`` and Cohere/Jina-style ``/rerank``;
``FakeAnthropic`` serves the Anthropic Messages API, which ``kind = "litellm"`` models reach
through LiteLLM exactly as they would reach api.anthropic.com.
"""
from __future__ import annotations

import json
import logging
import math

import litellm  # noqa: F401  (optional at run time — the providers extra — but in the dev extra: a must here)
import pytest

from actors.providers.models import MAX_RERANK_DOCUMENTS, ModelProviderConfig, ModelRegistry
from actors.providers.tokens import estimate_tokens
from protocol.errors import ErrorCode, RunnerHostError
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI

KEY_ENV = "RUNNERHOST_TEST_KINDS_KEY"
SECRET = "sk-ant-kinds-SECRET-0123456789"


@pytest.fixture(scope="module")
def openai():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def anthropic():
    with FakeAnthropic(api_key=SECRET) as server:
        yield server


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def openai_registry(fake: FakeOpenAI) -> ModelRegistry:
    return ModelRegistry([
        {"model_id": "chat", "base_url": fake.base_url, "model": "gpt-main", "timeout_s": 5},
        {"model_id": "embed", "model_type": "embedding", "base_url": fake.base_url, "model": "text-embed-small",
         "timeout_s": 5},
        {"model_id": "rr", "model_type": "rerank", "base_url": fake.base_url, "model": "jina-reranker-v2",
         "timeout_s": 5},
        {"model_id": "rr-cohere", "model_type": "rerank", "base_url": fake.origin, "rerank_path": "/v2/rerank",
         "model": "rerank-v3.5", "timeout_s": 5},
    ])


# -- embeddings ------------------------------------------------------------------------------

async def test_embeddings_come_from_the_endpoint_in_order(openai):
    reg = openai_registry(openai)
    out = await reg.embed("embed", ["red apple pie", "blue sky"])
    assert out["vectors"] == [FakeOpenAI.embedding("red apple pie"), FakeOpenAI.embedding("blue sky")]
    assert out["usage"]["prompt_tokens"] == 5 and out["model_id"] == "embed"
    assert openai.request_paths[-1] == "/v1/embeddings"
    assert openai.requests[-1] == {"model": "text-embed-small", "input": ["red apple pie", "blue sky"]}


async def test_embedding_refusals_are_clear(openai):
    reg = openai_registry(openai)
    with pytest.raises(RunnerHostError) as info:
        await reg.embed("chat", ["x"])
    assert info.value.code is ErrorCode.INVALID_ARGUMENT and "llm model" in info.value.message
    with pytest.raises(RunnerHostError) as info:
        await reg.embed("embed", [])
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    openai.script(FakeOpenAI.error(503, "embedding backend down"), model="text-embed-small")
    with pytest.raises(RunnerHostError) as info:
        await reg.embed("embed", ["x"])
    assert info.value.code is ErrorCode.RUNTIME_ERROR and info.value.retryable
    assert "HTTP 503" in info.value.message


# -- rerank ----------------------------------------------------------------------------------

async def test_rerank_is_a_model_call_with_relevance_scores(openai):
    reg = openai_registry(openai)
    docs = ["blue sky", "apple pie recipe", "red apple pie with cream"]
    ranked = await reg.rerank("rr", "red apple pie", docs, top_n=2)
    assert ranked == [
        {"index": 2, "relevance_score": 1.0, "document": docs[2]},
        {"index": 1, "relevance_score": FakeOpenAI.relevance("red apple pie", docs[1]), "document": docs[1]},
    ]
    assert openai.request_paths[-1] == "/v1/rerank"
    sent = openai.requests[-1]
    assert sent["model"] == "jina-reranker-v2" and sent["query"] == "red apple pie" and sent["top_n"] == 2
    # Cohere v2 path
    assert [r["index"] for r in await reg.rerank("rr-cohere", "sky", docs)] == [0, 1, 2]
    assert openai.request_paths[-1] == "/v2/rerank"


async def test_rerank_caps_at_64_documents_and_refuses_non_rerank_models(openai, caplog):
    reg = openai_registry(openai)
    docs = [f"doc {i}" for i in range(MAX_RERANK_DOCUMENTS + 6)]
    with caplog.at_level(logging.WARNING):
        ranked = await reg.rerank("rr", "doc 3", docs)
    assert len(openai.requests[-1]["documents"]) == MAX_RERANK_DOCUMENTS
    assert len(ranked) == MAX_RERANK_DOCUMENTS and ranked[0]["index"] == 3
    assert any("scoring the first 64" in r.getMessage() for r in caplog.records)
    with pytest.raises(RunnerHostError) as info:
        await reg.rerank("chat", "q", ["a"])
    assert info.value.code is ErrorCode.INVALID_ARGUMENT and "rerank model" in info.value.message
    with pytest.raises(RunnerHostError) as info:
        await reg.rerank("nope", "q", ["a"])
    assert info.value.code is ErrorCode.NOT_FOUND


# -- token counting and reasoning ---------------------------------------------------------------

async def test_count_tokens_estimate_is_the_documented_formula(openai):
    reg = openai_registry(openai)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "x" * 41}]
    out = await reg.count_tokens("chat", messages)
    assert out == {"tokens": 3 + (4 + math.ceil(14 / 4)) + (4 + math.ceil(41 / 4)), "method": "estimate"}
    assert out["tokens"] == estimate_tokens(messages)
    assert openai.request_paths == [p for p in openai.request_paths]  # nothing was called for it


async def test_reasoning_level_becomes_reasoning_effort(openai):
    reg = openai_registry(openai)
    openai.script("ok", "ok")
    await reg.invoke("chat", [{"role": "user", "content": "hi"}], params={"reasoning_level": "low"})
    assert openai.requests[-1]["reasoning_effort"] == "low" and "reasoning_level" not in openai.requests[-1]
    await reg.invoke("chat", [{"role": "user", "content": "hi"}], params={"reasoning_level": "provider_default"})
    assert "reasoning_effort" not in openai.requests[-1]
    with pytest.raises(RunnerHostError) as info:
        await reg.invoke("chat", [{"role": "user", "content": "hi"}], params={"reasoning_level": "ludicrous"})
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


# -- LiteLLM: Anthropic Messages --------------------------------------------------------------

def anthropic_registry(fake: FakeAnthropic) -> ModelRegistry:
    return ModelRegistry([ModelProviderConfig(
        model_id="claude", kind="litellm", model="anthropic/claude-sonnet-4-5", base_url=fake.base_url,
        api_key_env=KEY_ENV, timeout_s=10, default_params={"max_tokens": 256})])


async def test_litellm_anthropic_invoke_and_tool_calls(anthropic):
    reg = anthropic_registry(anthropic)
    anthropic.script(FakeAnthropic.text("Hello from Claude", usage=(21, 4)),
                     FakeAnthropic.tool_use("calculator", {"expression": "6*7"}))
    out = await reg.invoke("claude", [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "hi"}])
    assert out["message"] == {"role": "assistant", "content": "Hello from Claude"}
    assert out["usage"] == {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25}
    sent = anthropic.messages_requests()[-1]
    assert sent["model"] == "claude-sonnet-4-5" and sent["max_tokens"] == 256
    assert sent["messages"][-1]["role"] == "user" and "Be brief." in json.dumps(sent["system"])
    assert anthropic.request_headers[-1]["x-api-key"] == SECRET

    tools = [{"type": "function", "function": {"name": "calculator", "description": "math",
                                               "parameters": {"type": "object",
                                                              "properties": {"expression": {"type": "string"}}}}}]
    out = await reg.invoke("claude", [{"role": "user", "content": "6*7?"}], tools=tools)
    [call] = out["message"]["tool_calls"]
    assert call["function"]["name"] == "calculator" and json.loads(call["function"]["arguments"]) == {
        "expression": "6*7"}
    assert anthropic.messages_requests()[-1]["tools"][0]["name"] == "calculator"


async def test_litellm_anthropic_stream(anthropic):
    reg = anthropic_registry(anthropic)
    anthropic.script(FakeAnthropic.text("streamed from the messages API", usage=(9, 5)))
    items = [i async for i in reg.stream("claude", [{"role": "user", "content": "hi"}])]
    deltas = "".join(i["delta"]["content"] for i in items if "delta" in i and "content" in i["delta"])
    assert deltas == "streamed from the messages API"
    final = items[-1]
    assert final["message"]["content"] == "streamed from the messages API"
    assert final["usage"]["completion_tokens"] == 5
    assert anthropic.messages_requests()[-1]["stream"] is True


async def test_litellm_errors_are_mapped_and_scrubbed(anthropic, caplog):
    reg = anthropic_registry(anthropic)
    anthropic.script(FakeAnthropic.error(529, f"overloaded (key {SECRET})"))
    with caplog.at_level(logging.DEBUG), pytest.raises(RunnerHostError) as info:
        await reg.invoke("claude", [{"role": "user", "content": "hi"}])
    assert info.value.code is ErrorCode.RUNTIME_ERROR and info.value.retryable
    assert SECRET not in info.value.message and SECRET not in json.dumps(info.value.details)
    assert not any(SECRET in r.getMessage() for r in caplog.records)
    anthropic.script(FakeAnthropic.error(429, "slow down"))
    with pytest.raises(RunnerHostError) as info:
        await reg.invoke("claude", [{"role": "user", "content": "hi"}])
    assert info.value.code is ErrorCode.RATE_LIMITED


async def test_litellm_counts_tokens_and_knows_the_context_window(anthropic):
    reg = anthropic_registry(anthropic)
    out = await reg.count_tokens("claude", [{"role": "user", "content": "hello there world"}])
    assert out["method"] == "litellm" and out["tokens"] > 0
    entry = reg.catalog()["claude"]
    assert entry["provider"] == "anthropic" and entry["model_type"] == "llm"
    assert entry["context_window"] == 200000 and entry["max_output_tokens"] > 0


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="base_url is required"):
        ModelProviderConfig(model_id="m", model="x")
    assert ModelProviderConfig(model_id="m", model="x", base_url="http://h/v1", model_type="chat").model_type == "llm"
    with pytest.raises(ValueError):
        ModelProviderConfig(model_id="m", model="x", base_url="http://h/v1", model_type="vision")
