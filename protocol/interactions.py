"""Human-in-the-loop interactions (SPEC §13): LangBot 4.11's ``interaction.requested`` contract.

A runner asks a question with an ``action.requested`` result whose ``action`` is
``interaction.requested`` and whose ``payload`` is an :class:`InteractionRequest`. The host
validates and stores it, renders it on the platform, and turns the user's answer into an
``interaction.submitted`` event whose ``input.interaction`` is an :class:`InteractionSubmission`.
Field names are LangBot's (``langbot_plugin.api.entities.builtin.runner.interaction``): a
compatibility contract, checked against the SDK in the tests.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

INTERACTION_REQUESTED_ACTION = "interaction.requested"
INTERACTION_SUBMITTED_EVENT = "interaction.submitted"

InteractionFieldType = Literal["text", "textarea", "select", "multiselect", "number", "boolean", "file"]
InteractionActionStyle = Literal["default", "primary", "danger"]
InteractionStatus = Literal["pending", "answered", "expired"]
INTERACTION_STATUSES: tuple[str, ...] = ("pending", "answered", "expired")

#: Largest accepted request, encoded (LangBot: 256 KiB).
MAX_REQUEST_BYTES = 256 * 1024
#: Lifetime of a request without ``expires_at`` (LangBot: 30 min) and the longest allowed (24 h).
DEFAULT_TTL_S = 30 * 60
MAX_TTL_S = 24 * 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InteractionOption(_Strict):
    value: str = Field(min_length=1, max_length=512)
    label: str = Field(min_length=1, max_length=512)
    description: str | None = Field(default=None, max_length=2000)


class InteractionField(_Strict):
    id: str = Field(min_length=1, max_length=128)
    label: str = Field(min_length=1, max_length=512)
    type: InteractionFieldType
    required: bool = False
    options: list[InteractionOption] = Field(default_factory=list, max_length=100)
    placeholder: str | None = Field(default=None, max_length=1000)
    default: JsonValue = None


class InteractionAction(_Strict):
    id: str = Field(min_length=1, max_length=128)
    label: str = Field(min_length=1, max_length=512)
    style: InteractionActionStyle = "default"


class InteractionRequest(_Strict):
    """What a runner asks. ``fallback_text`` is what text-only surfaces show."""

    interaction_id: str = Field(min_length=1, max_length=255)
    kind: Literal["form", "confirmation", "choice"] = "form"
    title: str = Field(min_length=1, max_length=1000)
    description: str | None = Field(default=None, max_length=10000)
    fields: list[InteractionField] = Field(default_factory=list, max_length=50)
    actions: list[InteractionAction] = Field(default_factory=list, max_length=20)
    expires_at: int | None = None
    fallback_text: str = Field(min_length=1, max_length=20000)

    def buttons(self) -> list[tuple[str, str]]:
        """``(value, label)`` pairs a one-tap surface can offer: the actions, else the options
        of a single select field. Empty when the form needs typed input."""
        if self.actions:
            return [(a.id, a.label) for a in self.actions]
        if len(self.fields) == 1 and self.fields[0].type == "select":
            return [(o.value, o.label) for o in self.fields[0].options]
        return []


class InteractionSubmission(_Strict):
    """A host-validated answer; becomes ``input.interaction`` of an ``interaction.submitted`` event."""

    interaction_id: str = Field(min_length=1, max_length=255)
    action_id: str | None = Field(default=None, max_length=128)
    values: dict[str, JsonValue] = Field(default_factory=dict)
    submitted_at: int | None = None


class InteractionAnswer(_Strict):
    """Body of ``POST /v1/interactions/{id}/submit``: the answering user plus the answer."""

    action_id: str | None = Field(default=None, max_length=128)
    values: dict[str, JsonValue] = Field(default_factory=dict)
    actor_id: str | None = Field(default=None, max_length=256)
    actor_name: str | None = Field(default=None, max_length=256)


class InteractionRecord(BaseModel):
    """An interaction as stored and listed (``GET /v1/interactions``)."""

    interaction_id: str
    run_id: str
    agent_id: str | None = None
    conversation_id: str | None = None
    thread_id: str | None = None
    actor_id: str | None = None
    status: InteractionStatus
    request: dict[str, Any]
    reply_target: dict[str, Any] | None = None
    answer: dict[str, Any] | None = None
    answer_event_id: str | None = None
    created_at: int
    expires_at: int
    answered_at: int | None = None
