"""Delivery targets and records (SPEC §13): where a run's results go, and what happened there.

A :class:`DeliveryTarget` is resolved once per run from the binding's ``delivery_policy`` and the
event's ``delivery.reply_target`` (:func:`delivery_targets`). Its :attr:`~DeliveryTarget.key` is
stable, so ``(run_id, target key, part)`` names one platform message forever: the unique key of
the ``delivery`` table that makes a retried delivery never post twice.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .agents import DeliveryPolicy
from .events import EventEnvelope

Platform = Literal["telegram", "slack", "discord", "onebot", "webhook"]
PLATFORMS: tuple[str, ...] = ("telegram", "slack", "discord", "onebot", "webhook")
DELIVERY_STATUSES: tuple[str, ...] = ("pending", "sending", "streaming", "delivered", "failed", "unknown")


class DeliveryTarget(BaseModel):
    """One destination of a run's results on one platform connection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connection: str = Field(min_length=1, max_length=128)
    platform: Platform
    #: Platform address: chat_id / channel / channel_id / message_type+user_id|group_id, plus the
    #: message replied to and the thread (``thread_id``) where the platform has them.
    reply_target: dict[str, Any] = Field(default_factory=dict)
    #: Stream by editing one message (only where the platform edits messages).
    edit: bool = False
    max_message_size: int = Field(default=4000, ge=16)
    edit_interval_s: float = Field(default=1.0, ge=0.05)
    send_artifacts: bool = True

    @property
    def key(self) -> str:
        """``<connection>:<hash of the address>``: equal targets share it, across processes."""
        address = {k: v for k, v in self.reply_target.items() if k not in ("connection", "platform")}
        digest = hashlib.sha256(json.dumps(address, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"{self.connection}:{digest}"


class DeliveryRecord(BaseModel):
    """One row of ``GET /v1/runs/{id}/deliveries``: one platform message (part) of one target."""

    run_id: str
    target_key: str
    part: int
    platform: str
    connection: str
    platform_message_id: str | None = None
    status: str
    attempts: int
    last_error: str | None = None
    content_length: int = 0
    created_at: int
    updated_at: int


class SentMessage(BaseModel):
    """What ``message_send`` answers: the message's delivery facts (one record per platform
    message it took; a text longer than the platform's ``max_message_size`` is split)."""

    #: ``delivered``; ``failed`` (the platform refused it; raised, not returned, by the runner
    #: API); ``unknown`` (an earlier attempt was interrupted mid-call and is never re-posted).
    status: str
    connection: str
    platform: str
    target_key: str
    parts: list[DeliveryRecord]

    @property
    def platform_message_ids(self) -> list[str]:
        return [p.platform_message_id for p in self.parts if p.platform_message_id]


def own_chat(policy: DeliveryPolicy, event: EventEnvelope, connections: dict[str, str]) -> DeliveryTarget | None:
    """The conversation the event came from, as a target on its platform connection (None: the
    event has no reply target on a configured chat connection, e.g. an HTTP-only event).

    The reply target must be the event's own address (the adapter put it there), so a run can
    only ever speak where its event came from."""
    reply = event.delivery.reply_target or {}
    name = reply.get("connection")
    if name not in connections or connections[name] == "webhook":
        return None
    size = min(x for x in (policy.max_message_size, event.delivery.max_message_size, 1 << 20) if x)
    return DeliveryTarget(
        connection=name, platform=connections[name], reply_target=dict(reply),
        edit=bool(policy.streaming and event.delivery.supports_edit),
        max_message_size=max(size, 16), edit_interval_s=policy.edit_interval_s,
        send_artifacts=policy.send_artifacts)


def delivery_targets(policy: DeliveryPolicy, event: EventEnvelope,
                     connections: dict[str, str]) -> list[DeliveryTarget]:
    """The targets the host delivers the run's results to. ``connections`` maps each configured
    connection name to its platform; a reply target naming an unknown connection is not a target
    (nothing to send with). The event's own chat (:func:`own_chat`) when ``policy.reply``;
    webhooks are operator-configured per binding.
    """
    targets: list[DeliveryTarget] = []
    chat = own_chat(policy, event, connections) if policy.reply else None
    if chat is not None:
        targets.append(chat)
    for hook in policy.webhooks:
        if connections.get(hook) == "webhook":
            targets.append(DeliveryTarget(
                connection=hook, platform="webhook",
                reply_target={"event_id": event.event_id, "conversation_id": event.conversation_id},
                max_message_size=policy.max_message_size or (1 << 20), send_artifacts=policy.send_artifacts))
    return targets


class DeliveryPlan(BaseModel):
    """Everything the delivery side needs about one run, fixed when the run starts.

    ``origin`` is the routing of the run's event (source, bot_id, workspace_id, conversation_id,
    thread_id, actor_id, delivery), kept so an interaction's answer can start the next run on
    the same conversation and surface."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(min_length=1, max_length=128)
    agent_id: str | None = None
    #: Where the host delivers the run's results by itself.
    targets: list[DeliveryTarget] = Field(default_factory=list)
    origin: dict[str, Any] = Field(default_factory=dict)
    enable_interactions: bool = False
    #: The run's own conversation on its platform (:func:`own_chat`), whether or not results are
    #: delivered there by the host: the one place a runner's explicit messages (``message_send``)
    #: may go. None: the event came from no chat (HTTP-only, schedules).
    own_chat: DeliveryTarget | None = None
    #: W3C trace headers of the run's root span: delivery spans join the run's trace.
    trace: dict[str, str] = Field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing for the host to deliver by itself (explicit runner messages aside)."""
        return not self.targets and not self.enable_interactions

    @property
    def automatic_reply(self) -> bool:
        """The host delivers the run's message results to the conversation it came from."""
        return any(t.platform != "webhook" for t in self.targets)


def event_origin(event: EventEnvelope) -> dict[str, Any]:
    return {"event_id": event.event_id, "source": event.source, "bot_id": event.bot_id,
            "workspace_id": event.workspace_id, "conversation_id": event.conversation_id,
            "thread_id": event.thread_id, "actor_id": event.actor.actor_id,
            "delivery": event.delivery.model_dump(mode="json")}


def plan_delivery(run_id: str, agent_id: str | None, policy: DeliveryPolicy, event: EventEnvelope,
                  connections: dict[str, str], trace: dict[str, str] | None = None) -> DeliveryPlan:
    """The run's :class:`DeliveryPlan` (``plan.empty``: nothing to do for this run)."""
    return DeliveryPlan(run_id=run_id, agent_id=agent_id, targets=delivery_targets(policy, event, connections),
                        origin=event_origin(event), enable_interactions=policy.enable_interactions,
                        own_chat=own_chat(policy, event, connections), trace=trace or {})
