"""The context LangBot fills, filled by ``build_context``; the runner's own ``timeout`` field.

Pure (no Ray, no database): ``build_context`` from an envelope, a binding, the frozen
snapshot and the catalog, judged by the SDK's ``RunnerContext``; ``effective_timeout_s``
on bindings and descriptors.
"""
from __future__ import annotations

import pytest
from langbot_plugin.api.entities.builtin.runner import context as runner_context  # dev extra: missing fails

from actors.core.authz import ResourceCatalog, compute_access
from actors.core.context_builder import build_context
from actors.core.deadlines import MAX_TIMEOUT_S, effective_timeout_s
from protocol.agents import AgentBinding, AgentConfig, ResourcePolicy
from protocol.events import EventEnvelope
from protocol.manifest import Capabilities, ConfigField, Permissions, RunnerDescriptor, RunnerManifest

RUNNER = "plugin:acme/ctx/default"
CATALOG = ResourceCatalog(
    models={"gpt": {"provider": "openai-compatible", "model_type": "llm", "context_window": 128000,
                    "max_output_tokens": 8192},
            "emb": {"provider": "openai-compatible", "model_type": "embedding"},
            "rr": {"provider": "cohere", "model_type": "rerank"}},
    tools={"calculator": {"description": "math", "parameters": {"type": "object"}, "tool_type": "builtin"},
           "search": {"description": "web", "parameters": {"type": "object"}, "tool_type": "mcp"}},
    knowledge_bases=["kb"])
SKILLS = {"pdf": {"display_name": "PDF", "description": "Read PDFs"}, "sql": {"description": "Write SQL"}}


def manifest(**perms) -> RunnerManifest:
    return RunnerManifest(id=RUNNER, label="ctx", capabilities=Capabilities(streaming=True),
                          permissions=Permissions(**perms))


def context(*, conversation: str | None = "c1", policy: ResourcePolicy | None = None, data: dict | None = None,
            config: dict | None = None, skills=SKILLS, perms: dict | None = None):
    perms = perms or {"models": ["invoke", "stream", "rerank", "count_tokens"], "tools": ["call"],
                      "storage": ["plugin"], "run_ledger": ["get", "list", "events_page"]}
    binding = AgentBinding.from_agent("a", AgentConfig(
        runner_id=RUNNER, runner_config=config or {},
        resource_policy=policy or ResourcePolicy(models=None, tools=None, skills=None)))
    event = EventEnvelope.model_validate({"event_type": "message.received", "conversation_id": conversation,
                                          "input": {"text": "hi"}, "data": data or {}})
    snapshot = compute_access(run_id="r1", manifest=manifest(**perms), binding=binding,
                              conversation_id=conversation, thread_id=None, catalog=CATALOG)
    return build_context(run_id="r1", event=event, binding=binding, snapshot=snapshot, catalog=CATALOG,
                         runtime_metadata={"binding_id": "a", "agent_id": "a"}, skill_catalog=skills)


def test_models_tools_and_skills_carry_langbot_types():
    ctx = context()
    models = {m.model_id: (m.model_type, m.operations) for m in ctx.resources.models}
    assert models == {"gpt": ("llm", ["count_tokens", "invoke", "stream"]), "emb": ("embedding", ["invoke"]),
                      "rr": ("rerank", ["rerank"])}
    assert {t.tool_name: t.tool_type for t in ctx.resources.tools} == {"calculator": "builtin", "search": "mcp"}
    assert [(s.skill_name, s.display_name, s.description) for s in ctx.resources.skills] == [
        ("pdf", "PDF", "Read PDFs"), ("sql", None, "Write SQL")]
    # the policy narrows skills like any other resource; unknown names are not invented
    narrowed = context(policy=ResourcePolicy(models=None, skills=["sql", "nope"]))
    assert [s.skill_name for s in narrowed.resources.skills] == ["sql"]
    assert context(policy=ResourcePolicy(models=None)).resources.skills == []  # default policy: none


def test_runtime_metadata_variables_and_adapter_params():
    ctx = context(config={"model": "gpt"}, data={"params": {"workflow_input": 1},
                                                 "variables": {"user": "Ada", "n": 2, "deep": {"x": 1}}})
    assert ctx.runtime.metadata == {"streaming_supported": True, "model_context_window_tokens": 128000,
                                    "model_max_output_tokens": 8192, "binding_id": "a", "agent_id": "a"}
    assert ctx.variables == {"user": "Ada", "n": 2}
    assert ctx.adapter.extra == {"params": {"workflow_input": 1}}
    plain = context(data={"other": 1})
    assert plain.adapter.extra == {} and plain.variables == {}
    # the run's model is the configured chat model when granted, else the first llm
    assert context(config={"model": "emb"}).runtime.metadata["model_context_window_tokens"] == 128000


def test_run_list_is_advertised_with_a_conversation_and_plugin_storage_is_on_by_default():
    with_conv = context(policy=ResourcePolicy(models=None))
    assert with_conv.context.available_apis.run_list is True
    assert with_conv.resources.storage.plugin_storage is True  # ResourcePolicy.storage defaults to ["plugin"]
    without = context(conversation=None, policy=ResourcePolicy(models=None))
    assert without.context.available_apis.run_list is False
    # never more than the manifest allows
    assert context(perms={"run_ledger": ["get"]}).context.available_apis.run_list is False
    assert context(perms={"models": ["invoke"]}).resources.storage.plugin_storage is False


def test_the_context_validates_as_the_sdk_runner_context():
    ctx = context(config={"model": "gpt"}, data={"params": {"p": 1}, "variables": {"v": "x"}})
    lb = runner_context.RunnerContext.model_validate(ctx.to_wire())
    assert lb.variables == {"v": "x"} and lb.adapter.extra == {"params": {"p": 1}}
    assert {m.model_id: m.model_type for m in lb.resources.models} == {"emb": "embedding", "gpt": "llm",
                                                                       "rr": "rerank"}
    assert lb.resources.skills[0].skill_name == "pdf"
    assert lb.runtime.metadata["streaming_supported"] is True


# -- effective_timeout_s -------------------------------------------------------------------------

def binding(timeout_s: float = 300.0, **config) -> AgentBinding:
    return AgentBinding.from_agent("a", AgentConfig(runner_id=RUNNER, runner_config=config, timeout_s=timeout_s))


def descriptor(*fields: ConfigField) -> RunnerDescriptor:
    return RunnerDescriptor.from_manifest(RunnerManifest(id=RUNNER, label="d", config_schema=list(fields)))


TIMEOUT = ConfigField(name="timeout", type="integer", default=120)


@pytest.mark.parametrize("config, fields, expected", [
    ({}, (), 300.0),                                     # no timeout field: the binding decides
    ({"timeout": 45}, (), 300.0),                        # a key the runner does not declare is not a deadline
    ({}, (TIMEOUT,), 120.0),                             # declared: its default
    ({"timeout": 45}, (TIMEOUT,), 45.0),                 # declared and configured
    ({"timeout": "90"}, (TIMEOUT,), 90.0),               # a numeric string (forms send strings)
    ({"timeout": 0}, (TIMEOUT,), 300.0),                 # unusable values fall back to the binding
    ({"timeout": -5}, (TIMEOUT,), 300.0),
    ({"timeout": "soon"}, (TIMEOUT,), 300.0),
    ({"timeout": True}, (TIMEOUT,), 300.0),
    ({"timeout": None}, (TIMEOUT,), 300.0),
    ({"timeout": 10 ** 9}, (TIMEOUT,), MAX_TIMEOUT_S),   # capped like an agent's timeout_s
    ({}, (ConfigField(name="timeout", type="integer"),), 300.0),  # declared without a default
])
def test_effective_timeout(config, fields, expected):
    assert effective_timeout_s(binding(**config), descriptor(*fields)) == expected


def test_effective_timeout_takes_a_manifest_too_and_respects_the_binding_default():
    m = RunnerManifest(id=RUNNER, label="m", config_schema=[TIMEOUT])
    assert effective_timeout_s(binding(timeout_s=30), m) == 120.0
    assert effective_timeout_s(binding(timeout_s=30), RunnerManifest(id=RUNNER, label="m")) == 30.0
