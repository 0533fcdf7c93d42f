"""Builds the RunContext a runner receives (SPEC §4): the event and handles, never history."""
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
    RunContext,
    RuntimeContext,
    StateSnapshot,
    SubjectContext,
    Trigger,
)
from protocol.events import EventEnvelope

from .authz import AccessSnapshot, ResourceCatalog

HOST_VERSION = "runnerhost/0.1.0"


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
) -> RunContext:
    handles = handles or {}
    delivery = event.delivery
    policy = binding.delivery_policy
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
            surface=policy.surface or delivery.surface,
            reply_target=delivery.reply_target,
            supports_streaming=delivery.supports_streaming and policy.streaming,
            supports_edit=delivery.supports_edit,
            supports_reaction=delivery.supports_reaction,
            max_message_size=policy.max_message_size or delivery.max_message_size,
            platform_capabilities=delivery.platform_capabilities,
        ),
        resources=snapshot.resources(catalog),
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
                               deadline_at=snapshot.deadline_at, metadata=dict(runtime_metadata or {})),
        config=dict(binding.runner_config),
        adapter=AdapterContext(extra={}),
        metadata={"agent_id": binding.agent_id, "binding_id": binding.binding_id},
    )
