"""A LangBot SDK runner against the real host stack, judged by the SDK's own DTOs (issue 11, items 4–7).

Everything below the SDK runner is the production code path minus Ray: the SDK's
``RunnerAPIProxy`` → our ``HostActionHandler`` → ``LocalRunnerAPI`` (the runner-side client)
→ an in-process stand-in for the RunActor's ``api`` / ``api_stream`` → ``RunnerApiService``
(the frozen-snapshot checks) → ``StorageService`` on a real database (Postgres and SQLite)
and a real ``ModelRegistry`` talking HTTP to ``FakeOpenAI`` (chat, ``/embeddings``,
``/rerank``). The context is built by ``build_context`` from an envelope, a binding and the
catalog, exactly as the host builds it.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from langbot_plugin.api.definition.components.runner.runner import Runner as SDKRunner
from langbot_plugin.api.entities.builtin.provider.message import Message
from langbot_plugin.api.entities.builtin.rag.context import RetrievalResultEntry
from langbot_plugin.api.entities.builtin.runner.context import RunnerContext
from langbot_plugin.api.entities.builtin.runner.result import RunnerResult
from langbot_plugin.api.proxies.runner.common import PermissionDeniedError

from actors.core.authz import ResourceCatalog, compute_access
from actors.core.context_builder import build_context
from actors.core.runner_api import RunIdentity, RunnerApiService
from actors.core.steering import SteeringQueue
from actors.core.storage_service import StorageService
from actors.providers.models import ModelRegistry
from actors.core.api_client import LocalRunnerAPI
from protocol.agents import AgentBinding, AgentConfig, ResourcePolicy
from protocol.errors import ErrorCode, RunnerHostError
from protocol.events import EventEnvelope
from protocol.results import ResultValidator
from runners.langbot_sdk import langbot_runner
from tests.fakes.openai_server import FakeOpenAI, Reply

RUNNER_ID = "plugin:acme/fidelity/default"
KB_TEXT, KB_VEC = "handbook", "recipes"


# -- the in-process host ------------------------------------------------------------------------

class DirectBackend:
    """The RunActor's backend without actors: storage ops in a transaction, models in-process."""

    def __init__(self, db, models: ModelRegistry, knowledge: dict[str, dict[str, Any]]) -> None:
        self.db, self.models, self.knowledge = db, models, knowledge
        self.storage = StorageService()

    async def read(self, kind, **kwargs):
        async with self.db.transaction() as session:
            return await self.storage.read(session, kind, kwargs)

    async def write(self, kind, **kwargs):
        async with self.db.transaction() as session:
            return await self.storage.write(session, kind, kwargs)

    async def invoke_llm(self, model_id, messages, tools, params):
        return await self.models.invoke(model_id, messages, tools, params)

    def stream_llm(self, model_id, messages, tools, params):
        return self.models.stream(model_id, messages, tools, params)

    async def rerank(self, model_id, query, documents, top_n, params=None):
        return await self.models.rerank(model_id, query, documents, top_n, params)

    async def count_tokens(self, model_id, messages, tools):
        return await self.models.count_tokens(model_id, messages, tools)

    async def embed(self, model_id, texts):
        return await self.models.embed(model_id, texts)

    async def knowledge_config(self, kb_id):
        return dict(self.knowledge.get(kb_id) or {})

    async def tool_detail(self, name):
        raise AssertionError("no tools here")

    async def call_tool(self, name, parameters):
        raise AssertionError("no tools here")


def local_api(service: RunnerApiService, run_id: str, token: str) -> LocalRunnerAPI:
    """The runner-side client as an in-actor runner gets it: same page models, same checks."""
    async def call(rid, tok, method, kwargs):
        assert (rid, tok) == (run_id, token)
        return await service.call(method, kwargs)

    async def stream(rid, tok, method, kwargs):
        assert (rid, tok) == (run_id, token)
        async for chunk in service.invoke_llm_stream(**kwargs):
            yield chunk
    return LocalRunnerAPI(run_id, token, call, stream)


# -- the SDK runner (public SDK API only) --------------------------------------------------------

class FidelityRunner(SDKRunner):
    """Calls what LangBot's local-agent calls, and reports what it got."""

    async def run(self, ctx: RunnerContext):
        api, seen = ctx.api, {}
        model, embed, rr = ctx.config["model"], ctx.config["embedding"], ctx.config["rerank"]
        messages = [Message(role="system", content="You are terse."), Message(role="user", content=ctx.input.text)]
        seen["tokens"] = await api.count_tokens(model, messages)
        seen["vectors"] = await api.invoke_embedding(embed, ["red apple", "blue sky"])
        seen["rerank"] = await api.invoke_rerank(rr, "red apple pie", ["blue sky", "apple pie", "red apple pie"],
                                                 top_k=2)
        try:
            await api.invoke_rerank(model, "q", ["a"])
        except PermissionDeniedError as exc:  # the context says an llm model has no "rerank" operation
            seen["rerank_on_llm"] = {"refused_by": "sdk", "message": str(exc)}
        seen["kb_text"] = await api.retrieve_knowledge(KB_TEXT, "reset password", top_k=3)
        seen["kb_filtered"] = await api.retrieve_knowledge(KB_TEXT, "password", top_k=3, filters={"lang": "de"})
        seen["kb_vector"] = await api.retrieve_knowledge(KB_VEC, "apple pie", top_k=2)
        result = await api.invoke_llm_with_usage(model, messages, reasoning_level="low")
        seen["reply"] = result.message.content
        back = await ctx.run_events_page(direction="backward", limit=2)
        older = await ctx.run_events_page(before_cursor=back.next_cursor, limit=2)
        seen["events_back"] = [e.sequence for e in back.items]
        seen["events_older"] = [e.sequence for e in older.items]
        seen["runs"] = (await ctx.run_list()).total_count is not None
        seen["version"] = await api.get_langbot_version()
        await api.set_plugin_storage("k", b"v")
        seen["storage"] = (await api.get_plugin_storage("k")).decode()
        seen["ctx"] = {
            "models": {m.model_id: [m.model_type, sorted(m.operations)] for m in ctx.resources.models},
            "metadata": ctx.runtime.metadata, "variables": ctx.variables, "params": ctx.adapter.extra.get("params"),
            "apis": ctx.context.available_apis.model_dump(), "plugin_storage": ctx.resources.storage.plugin_storage,
        }
        yield RunnerResult.action_requested(ctx.run_id, "report", payload={"seen": seen})
        yield RunnerResult.run_completed(ctx.run_id, message=Message(role="assistant", content=seen["reply"]))


FidelityHost = langbot_runner(
    FidelityRunner, author="acme", plugin="fidelity", runner="default",
    capabilities={"streaming": True, "knowledge_retrieval": True},
    permissions={"models": ["invoke", "stream", "rerank", "count_tokens"], "knowledge_bases": ["retrieve"],
                 "storage": ["plugin"], "history": ["page"]},
    config_schema=[{"name": "model", "type": "llm-model-selector"}])


# -- the test ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as server:
        server.responder = lambda body: Reply(content="answered: " + str(body["messages"][-1]["content"]))
        yield server


async def seed(backend: DirectBackend, run_id: str, envelope: EventEnvelope, binding: AgentBinding) -> None:
    await backend.write("knowledge_ingest", kb_id=KB_TEXT, doc_id="pw-en", title="Reset your password",
                        content="To reset a forgotten password open settings and press reset.",
                        metadata={"lang": "en"})
    await backend.write("knowledge_ingest", kb_id=KB_TEXT, doc_id="pw-de", title="Passwort",
                        content="Password zurücksetzen: Einstellungen öffnen.", metadata={"lang": "de"})
    for doc_id, text in [("pie", "apple pie with cinnamon"), ("soup", "tomato soup"),
                         ("tart", "red apple tart and apple pie crust")]:
        await backend.write("knowledge_ingest", kb_id=KB_VEC, doc_id=doc_id, title=None, content=text)
    await backend.write("run_accept", run_id=run_id, event=envelope.model_dump(mode="json"), agent_id="fid",
                        binding_id=binding.binding_id, runner_id=RUNNER_ID, status="running",
                        deadline_at=time.time() + 60, scope_keys={})
    await backend.write("run_events", run_id=run_id, frames=[
        {"sequence": n, "type": "message.delta", "data": {"chunk": {"role": "assistant", "content": f"p{n}"}}}
        for n in range(1, 6)])


async def test_sdk_runner_gets_what_langbot_gives(db, fake):
    registry = ModelRegistry([
        {"model_id": "gpt", "base_url": fake.base_url, "model": "gpt-main", "timeout_s": 5,
         "context_window": 128000, "max_output_tokens": 4096},
        {"model_id": "embed", "model_type": "embedding", "base_url": fake.base_url, "model": "emb-1", "timeout_s": 5},
        {"model_id": "rr", "model_type": "rerank", "base_url": fake.base_url, "model": "rr-1", "timeout_s": 5},
    ])
    backend = DirectBackend(db, registry, {KB_VEC: {"embedding_model_id": "embed"}})
    run_id, conv = f"run-{uuid.uuid4().hex[:8]}", f"conv-{uuid.uuid4().hex[:8]}"
    envelope = EventEnvelope.model_validate({
        "event_id": f"ev-{run_id}", "event_type": "message.received", "conversation_id": conv,
        "input": {"text": "hello there"},
        "data": {"params": {"topic": "billing"}, "variables": {"user_name": "Ada", "nested": {"no": 1}}}})
    binding = AgentBinding.from_agent("fid", AgentConfig(
        runner_id=RUNNER_ID, runner_config={"model": "gpt", "embedding": "embed", "rerank": "rr"},
        resource_policy=ResourcePolicy(models=None, knowledge_bases=None)))
    await seed(backend, run_id, envelope, binding)

    catalog = ResourceCatalog(models=registry.catalog(), knowledge_bases=[KB_TEXT, KB_VEC])
    manifest = FidelityHost.manifest
    snapshot = compute_access(run_id=run_id, manifest=manifest, binding=binding, conversation_id=conv,
                              thread_id=None, catalog=catalog, deadline_at=time.time() + 60)
    identity = RunIdentity(run_id=run_id, runner_id=RUNNER_ID, binding_identity="fid", bot_id=None, workspace_id=None,
                           conversation_id=conv, thread_id=None, actor_type="user", actor_id=None,
                           subject_type=None, subject_id=None)

    async def on_pulled(_):
        return None
    service = RunnerApiService(snapshot, identity, backend, SteeringQueue(), on_pulled, lambda s: f"k:{s}")
    ctx = build_context(run_id=run_id, event=envelope, binding=binding, snapshot=snapshot, catalog=catalog,
                        runtime_metadata={"binding_id": "fid", "agent_id": "fid"})
    RunnerContext.model_validate(ctx.to_wire())  # the SDK's judge of the context
    api = local_api(service, run_id, "tok")

    results = [r async for r in FidelityHost().run(ctx, api)]
    validator = ResultValidator(run_id)
    for r in results:
        assert validator.check(r).accepted, r
        RunnerResult.model_validate(r)
    assert results[-1]["type"] == "run.completed", results[-1]
    seen = next(r for r in results if r["type"] == "action.requested")["data"]["payload"]["seen"]

    # 4. count_tokens: answered (the documented estimate: gpt-main is no tiktoken model)
    assert seen["tokens"] == 3 + (4 + 4) + (4 + 3)
    # 5. embeddings and rerank are model calls over HTTP
    assert seen["vectors"] == [FakeOpenAI.embedding("red apple"), FakeOpenAI.embedding("blue sky")]
    assert [(r["index"], r["relevance_score"]) for r in seen["rerank"]] == [
        (2, 1.0), (1, FakeOpenAI.relevance("red apple pie", "apple pie"))]
    assert "/v1/embeddings" in fake.request_paths and "/v1/rerank" in fake.request_paths
    assert seen["rerank_on_llm"]["refused_by"] == "sdk" and "'rerank'" in seen["rerank_on_llm"]["message"]
    with pytest.raises(RunnerHostError) as info:  # and the host refuses it too, clearly
        await api.invoke_rerank("gpt", "q", ["a"])
    assert info.value.code is ErrorCode.INVALID_ARGUMENT and "needs a rerank model" in info.value.message
    # 6. knowledge in the SDK's RetrievalResultEntry shape, filters, vector bases
    for key in ("kb_text", "kb_filtered", "kb_vector"):
        entries = [RetrievalResultEntry.model_validate(e) for e in seen[key]]
        assert entries, key
        assert all(e.content[0].type == "text" and e.score is not None for e in entries)
    assert seen["kb_text"][0]["id"] == "pw-en" and seen["kb_text"][0]["metadata"]["title"] == "Reset your password"
    assert [e["id"] for e in seen["kb_filtered"]] == ["pw-de"]
    assert {e["id"] for e in seen["kb_vector"]} == {"pie", "tart"}  # the soup is not about apple pie
    assert seen["kb_vector"][0]["score"] >= seen["kb_vector"][1]["score"]
    vec = seen["kb_vector"][0]
    assert vec["distance"] == pytest.approx(1 - vec["score"]) and vec["metadata"]["kb_id"] == KB_VEC
    # 7. reasoning_level is advertised (the SDK refuses it otherwise) and honoured; run events page
    #    backward; the context is filled
    assert seen["version"].startswith("runnerhost/")
    chat = [b for b, p in zip(fake.requests, fake.request_paths) if p == "/v1/chat/completions"][-1]
    assert chat["reasoning_effort"] == "low"
    assert seen["reply"].startswith("answered: ")
    assert seen["events_back"] == [4, 5] and seen["events_older"] == [2, 3]
    assert seen["storage"] == "v"
    c = seen["ctx"]
    assert c["models"] == {"gpt": ["llm", ["count_tokens", "invoke", "stream"]], "embed": ["embedding", ["invoke"]],
                           "rr": ["rerank", ["rerank"]]}
    assert c["metadata"]["streaming_supported"] is True
    assert c["metadata"]["model_context_window_tokens"] == 128000
    assert c["metadata"]["model_max_output_tokens"] == 4096
    assert c["variables"] == {"user_name": "Ada"} and c["params"] == {"topic": "billing"}
    assert c["apis"]["run_list"] is True and c["plugin_storage"] is True
    # the vectors were written once; a second search embeds nothing new
    n = fake.request_paths.count("/v1/embeddings")
    await api.retrieve_knowledge(KB_VEC, "tomato", top_k=1)
    assert fake.request_paths.count("/v1/embeddings") == n + 1  # the query only
    await asyncio.sleep(0)


# -- metadata filters: the grammar ----------------------------------------------------------------

HITS = [{"doc_id": "a", "title": "A", "metadata": {"lang": "en", "year": 2023, "tags": "x"}},
        {"doc_id": "b", "title": "B", "metadata": {"lang": "de", "year": 2025}},
        {"doc_id": "c", "title": "C", "metadata": {"lang": "fr", "year": "unknown"}}]


@pytest.mark.parametrize("filters, expected", [
    ({"lang": "de"}, ["b"]),
    ({"lang": {"$ne": "de"}}, ["a", "c"]),
    ({"year": {"$gte": 2024}}, ["b"]),                 # a string year never compares: no match, no error
    ({"lang": {"$in": ["en", "fr"]}}, ["a", "c"]),
    ({"lang": {"$nin": ["en"]}, "year": {"$lt": 2030}}, ["b"]),
    ({"$or": [{"lang": "en"}, {"doc_id": "c"}]}, ["a", "c"]),
    ({"$and": [{"year": {"$gt": 2000}}, {"title": "B"}]}, ["b"]),
])
def test_filter_grammar(filters, expected):
    from store.knowledge import compile_filter
    keep = compile_filter(filters)
    assert [h["doc_id"] for h in HITS if keep(h)] == expected


@pytest.mark.parametrize("filters", [{"lang": {"$regex": "d.*"}}, {"$not": {"lang": "de"}}, {"$or": []},
                                     {"lang": {"$in": "de"}}, {"a": {}}])
def test_bad_filters_are_invalid_argument(filters):
    from store.knowledge import compile_filter
    with pytest.raises(RunnerHostError) as info:
        compile_filter(filters)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
