"""Builds the RunContext a runner receives (SPEC §4): the event and handles, never history.

What LangBot fills, filled the same way (see runners/langbot_sdk/README.md):

* ``resources.models[].model_type`` (``llm`` / ``embedding`` / ``rerank``) and operations
  narrowed to what that type can do; ``resources.tools[].tool_type`` (``builtin`` / ``mcp``);
  ``resources.skills`` from ``skill_catalog`` ∩ the policy's ``skills`` (``None`` = all);
* ``runtime.metadata``: ``streaming_supported`` and, for the run's model (``runner_config``
  ``model`` / ``model_id`` when granted, else the first granted llm),
  ``model_context_window_tokens`` / ``model_max_output_tokens`` when the catalog knows them;
* ``variables``: the scalar values of the event's ``data["variables"]``;
* ``adapter.extra.params``: the event's ``data["params"]`` (workflow inputs Dify / n8n /
  DashScope runners read).
"""
from __future__ import annotations

from typing import Any

from protocol.agents import AgentBinding
from protocol.context import (
    ActorContext,
    AdapterContext,
    ContextAccess,
    ConversationContext,
    DeliveryContext,
    EventContext,
    InlinePolicy,
    InputContext,
    Resources,
    RunContext,
    RuntimeContext,
    SkillResource,
    StateSnapshot,
    SubjectContext,
    Trigger,
)
from protocol.events import EventEnvelope

from .authz import AccessSnapshot, ResourceCatalog

HOST_VERSION = "runnerhost/0.1.0"

#: What each model type can be asked for (LangBot: ``llm`` invoke/stream/count_tokens, ``rerank``).
MODEL_TYPE_OPERATIONS: dict[str, frozenset[str]] = {
    "llm": frozenset({"invoke", "stream", "count_tokens"}),
    "embedding": frozenset({"invoke"}),
    "rerank": frozenset({"rerank"}),
}
_SCALARS = (str, int, float, bool, type(None))


def granted_resources(snapshot: AccessSnapshot, catalog: ResourceCatalog,
                      policy_skills: list[str] | None, skill_catalog: dict[str, dict[str, Any]] | None) -> Resources:
    """The snapshot's resources with LangBot's types, per-type operations and skills."""
    resources = snapshot.resources(catalog)
    for model in resources.models:
        info = catalog.models.get(model.model_id) or {}
        model.model_type = info.get("model_type") or "llm"
        allowed = MODEL_TYPE_OPERATIONS.get(model.model_type)
        if allowed is not None:
            model.operations = [op for op in model.operations if op in allowed]
    for tool in resources.tools:
        tool.tool_type = (catalog.tools.get(tool.tool_name) or {}).get("tool_type")
    skills = skill_catalog or {}
    names = sorted(skills) if policy_skills is None else [n for n in policy_skills if n in skills]
    resources.skills = [SkillResource(skill_name=n, display_name=skills[n].get("display_name"),
                                      description=skills[n].get("description")) for n in names]
    return resources


def run_model(config: dict[str, Any], resources: Resources) -> str | None:
    """The chat model the run will mostly talk to: its configured one when granted, else the first llm."""
    llms = {m.model_id for m in resources.models if m.model_type == "llm"}
    for key in ("model", "model_id", "llm_model", "llm-model"):
        value = config.get(key)
        if isinstance(value, str) and value in llms:
            return value
    return next((m.model_id for m in resources.models if m.model_type == "llm"), None)


def build_context(
    *,
    run_id: str,
    event: EventEnvelope,
    binding: AgentBinding,
    snapshot: AccessSnapshot,
    catalog: ResourceCatalog | None = None,
    handles: dict[str, Any] | None = None,
    state: dict[str, dict[str, Any]] | None = None,
    trace_id: str | None = None,
    runtime_metadata: dict[str, Any] | None = None,
    skill_catalog: dict[str, dict[str, Any]] | None = None,
    automatic_reply: bool = False,
) -> RunContext:
    """``automatic_reply``: the host delivers the run's message results to the event's chat
    (``DeliveryPlan.automatic_reply``) — told to the runner as ``delivery.automatic_reply``."""
    handles = handles or {}
    delivery = event.delivery
    policy = binding.delivery_policy
    catalog = catalog or ResourceCatalog()
    resources = granted_resources(snapshot, catalog, binding.resource_policy.skills, skill_catalog)
    supports_streaming = delivery.supports_streaming and policy.streaming
    metadata: dict[str, Any] = {"streaming_supported": supports_streaming}
    model_id = run_model(binding.runner_config or {}, resources)
    if model_id is not None:
        info = catalog.models.get(model_id) or {}
        if info.get("context_window"):
            metadata["model_context_window_tokens"] = info["context_window"]
        if info.get("max_output_tokens"):
            metadata["model_max_output_tokens"] = info["max_output_tokens"]
    metadata.update(runtime_metadata or {})
    data = event.data or {}
    variables = data.get("variables") if isinstance(data.get("variables"), dict) else {}
    params = data.get("params") if isinstance(data.get("params"), dict) else None
    return RunContext(
        run_id=run_id,
        trigger=Trigger(type=event.event_type, source=event.source, timestamp=event.event_time),
        event=EventContext(
            event_id=event.event_id, event_type=event.event_type, event_time=event.event_time,
            source=event.source, source_event_type=event.source_event_type, raw_ref=event.raw_ref,
            data=event.data,
        ),
        conversation=ConversationContext(
            conversation_id=event.conversation_id, thread_id=event.thread_id,
            launcher_type=event.subject.subject_type if event.subject else event.actor.actor_type,
            launcher_id=event.subject.subject_id if event.subject else event.actor.actor_id,
            sender_id=event.actor.actor_id, bot_id=event.bot_id, workspace_id=event.workspace_id,
            session_id=handles.get("session_id"),
        ),
        actor=ActorContext(**event.actor.model_dump()),
        subject=SubjectContext(**event.subject.model_dump()) if event.subject else None,
        input=InputContext(text=event.input.text, contents=event.input.contents,
                           attachments=event.input.attachments, interaction=event.input.interaction),
        delivery=DeliveryContext(
            automatic_reply=automatic_reply,
            surface=policy.surface or delivery.surface,
            reply_target=delivery.reply_target,
            supports_streaming=supports_streaming,
            supports_edit=delivery.supports_edit,
            supports_reaction=delivery.supports_reaction,
            max_message_size=policy.max_message_size or delivery.max_message_size,
            platform_capabilities=delivery.platform_capabilities,
        ),
        resources=resources,
        context=ContextAccess(
            conversation_id=event.conversation_id,
            thread_id=event.thread_id,
            latest_cursor=handles.get("latest_cursor"),
            event_seq=handles.get("event_seq"),
            transcript_seq=handles.get("transcript_seq"),
            has_history_before=bool(handles.get("has_history_before")),
            inline_policy=InlinePolicy(mode="current_event", delivered_count=1 if event.is_message else 0,
                                       source_total_count=handles.get("transcript_seq"),
                                       messages_complete=False,
                                       reason="history is pulled through history_page"),
            available_apis=snapshot.available_apis(),
        ),
        state=StateSnapshot(**(state or {})),
        runtime=RuntimeContext(host_version=HOST_VERSION, langbot_version=HOST_VERSION, trace_id=trace_id or run_id,
                               deadline_at=snapshot.deadline_at, metadata=metadata),
        variables={k: v for k, v in variables.items() if isinstance(k, str) and isinstance(v, _SCALARS)},
        config=dict(binding.runner_config),
        adapter=AdapterContext(extra={"params": params} if params is not None else {}),
        metadata={"agent_id": binding.agent_id, "binding_id": binding.binding_id},
    )
