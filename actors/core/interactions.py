"""Human-in-the-loop interactions (SPEC §13): validate and store a runner's request, turn an
answer into the ``interaction.submitted`` event that starts the next run.

* :meth:`InteractionService.request` — the :class:`~actors.core.delivery.DeliveryService` hook:
  validates an ``interaction.requested`` payload (LangBot's ``InteractionRequest``, ≤ 256 KiB,
  expiry in the future and at most 24 h away, 30 min when unset) and stores it ``pending``
  under a host id derived from (run, runner's interaction id), so a replayed frame stores nothing
  twice. An invalid request is logged and dropped, like any invalid result.
* :meth:`InteractionService.answer` — validates an answer against the form (known action,
  required fields, option values, types), refuses one from another user than the asked one
  (``unauthorized``) and one that is late or repeated (``conflict``), records it (compare-and-set)
  and returns the event to submit: same bot, workspace, conversation, thread and delivery
  surface as the asking event, ``input.interaction`` filled in.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable

from pydantic import ValidationError

from platforms.base import InteractionAnswer, parse_interaction_answer
from protocol.delivery import DeliveryPlan
from protocol.errors import (
    ErrorCode,
    RunnerHostError,
    invalid_argument,
    payload_too_large,
    unauthorized,
)
from protocol.events import (
    EventActor,
    EventDelivery,
    EventEnvelope,
    EventInput,
    EventSubject,
)
from protocol.interactions import (
    DEFAULT_TTL_S,
    INTERACTION_SUBMITTED_EVENT,
    MAX_REQUEST_BYTES,
    MAX_TTL_S,
    InteractionRequest,
    InteractionSubmission,
)
from protocol.logs import get_logger

from .storage_port import StoragePort

log = get_logger(__name__)


def public_id(run_id: str, interaction_id: str) -> str:
    """The host's id of a request: short enough for Telegram's 64-byte callback data."""
    return "ia_" + hashlib.sha256(f"{run_id}\x00{interaction_id}".encode()).hexdigest()[:24]


def validate_request(payload: dict[str, Any], *, now: float) -> tuple[InteractionRequest, float]:
    """The request and its expiry, or ``invalid_argument`` / ``payload_too_large``."""
    size = len(json.dumps(payload, default=str).encode())
    if size > MAX_REQUEST_BYTES:
        raise payload_too_large(f"interaction request is {size} bytes; the limit is {MAX_REQUEST_BYTES}")
    try:
        request = InteractionRequest.model_validate(payload)
    except ValidationError as exc:
        raise invalid_argument("invalid interaction request",
                               errors=exc.errors(include_url=False, include_context=False, include_input=False)) from None
    expires = float(request.expires_at) if request.expires_at is not None else now + DEFAULT_TTL_S
    if expires <= now:
        raise invalid_argument("interaction request has already expired")
    if expires > now + MAX_TTL_S:
        raise invalid_argument(f"interaction expiry is more than {MAX_TTL_S // 3600} h away")
    field_ids = [f.id for f in request.fields]
    if len(field_ids) != len(set(field_ids)) or len({a.id for a in request.actions}) != len(request.actions):
        raise invalid_argument("interaction field and action ids must be unique")
    return request, expires


def validate_answer(request: InteractionRequest, action_id: str | None, values: dict[str, Any]) -> None:
    actions = {a.id for a in request.actions}
    if actions and action_id not in actions:
        raise invalid_argument("unknown action for this interaction", allowed=sorted(actions))
    if not actions and action_id is not None:
        raise invalid_argument("this interaction has no actions")
    fields = {f.id: f for f in request.fields}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise invalid_argument("unknown interaction fields", fields=unknown)
    for field in request.fields:
        if field.id not in values or values[field.id] is None:
            if field.required:
                raise invalid_argument(f"field {field.id!r} is required", field=field.id)
            continue
        value = values[field.id]
        options = {o.value for o in field.options}
        ok = {
            "text": isinstance(value, str), "textarea": isinstance(value, str), "file": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "select": isinstance(value, str) and (not options or value in options),
            "multiselect": isinstance(value, list) and all(isinstance(v, str) and (not options or v in options)
                                                           for v in value),
        }[field.type]
        if not ok:
            raise invalid_argument(f"invalid value for field {field.id!r} ({field.type})", field=field.id)


class InteractionService:
    def __init__(self, storage: StoragePort, clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._clock = clock

    async def request(self, plan: DeliveryPlan, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Store a runner's request (the delivery engine's interaction hook)."""
        try:
            request, expires = validate_request(payload, now=self._clock())
        except RunnerHostError as exc:
            log.warning("run %s: interaction request dropped: %s", plan.run_id, exc.message)
            return None
        origin = plan.origin
        return await self._storage.write(
            "interaction_create", id=public_id(plan.run_id, request.interaction_id),
            interaction_id=request.interaction_id, run_id=plan.run_id, agent_id=plan.agent_id,
            conversation_id=origin.get("conversation_id"), thread_id=origin.get("thread_id"),
            actor_id=origin.get("actor_id"), request=request.model_dump(mode="json"), origin=origin,
            expires_at=expires)

    async def answer(self, interaction_id: str, answer: InteractionAnswer, *, source_event_type: str) -> tuple[
            dict[str, Any], EventEnvelope]:
        """Record the one accepted answer; returns ``(record, event to submit)``."""
        record = await self._storage.read("interaction_get", id=interaction_id)
        if record["status"] == "expired":
            raise RunnerHostError(ErrorCode.CONFLICT, "interaction expired",
                                  details={"interaction_id": interaction_id, "status": "expired"})
        if record["status"] == "answered":
            raise RunnerHostError(ErrorCode.CONFLICT, "interaction already answered",
                                  details={"interaction_id": interaction_id, "status": "answered"})
        if answer.actor_id is not None and record["actor_id"] is not None and answer.actor_id != record["actor_id"]:
            raise unauthorized("this interaction was asked of another user", interaction_id=interaction_id)
        request = InteractionRequest.model_validate(record["request"])
        action_id, values = answer.action_id, dict(answer.values)
        if "choice_index" in values and set(values) == {"choice_index"}:  # a tapped button
            try:
                action_id, values = parse_interaction_answer(request, int(values["choice_index"]))
            except (ValueError, TypeError):
                raise invalid_argument("no such choice for this interaction") from None
        validate_answer(request, action_id, values)
        now = int(self._clock())
        submission = InteractionSubmission(interaction_id=request.interaction_id, action_id=action_id,
                                           values=values, submitted_at=now)
        origin = await self._storage.read("interaction_origin", id=interaction_id)
        event = EventEnvelope(
            event_id=f"{interaction_id}-answer", event_type=INTERACTION_SUBMITTED_EVENT, event_time=now,
            source=origin.get("source") or "api", source_event_type=source_event_type,
            bot_id=origin.get("bot_id"), workspace_id=origin.get("workspace_id"),
            conversation_id=origin.get("conversation_id"), thread_id=origin.get("thread_id"),
            actor=EventActor(actor_id=answer.actor_id or record["actor_id"], actor_name=answer.actor_name),
            subject=EventSubject(subject_type="interaction", subject_id=request.interaction_id,
                                 data={"action_id": action_id, "asking_run_id": record["run_id"]}),
            input=EventInput(interaction=submission),
            delivery=EventDelivery.model_validate(origin.get("delivery") or {}),
            data={"interaction_id": interaction_id, "run_id": record["run_id"]})
        stored = await self._storage.write("interaction_answer", id=interaction_id,
                                           answer=submission.model_dump(mode="json"), event_id=event.event_id)
        return stored, event
