"""The state scope keys one event's run may address (its binding's enabled scopes that the
event has the parts for: no actor id, no actor scope)."""
from __future__ import annotations

from protocol.agents import AgentBinding
from protocol.events import EventEnvelope
from protocol.scopes import ScopeKeyBuilder


def scope_keys_for(event: EventEnvelope, binding: AgentBinding) -> dict[str, str]:
    policy = binding.state_policy
    if not policy.enable_state:
        return {}
    builder = ScopeKeyBuilder(
        runner_id=binding.runner_id, binding_identity=binding.identity, bot_id=event.bot_id,
        workspace_id=event.workspace_id, conversation_id=event.conversation_id, thread_id=event.thread_id,
        actor_type=event.actor.actor_type, actor_id=event.actor.actor_id,
        subject_type=event.subject.subject_type if event.subject else None,
        subject_id=event.subject.subject_id if event.subject else None)
    available = {"runner": True, "conversation": bool(event.conversation_id),
                 "actor": bool(event.actor.actor_id),
                 "subject": bool(event.subject and event.subject.subject_id)}
    return builder.keys(scope for scope in policy.state_scopes if available[scope])
