"""EventEnvelope: the host-internal model of one inbound event (SPEC §1)."""
from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .text import reject_unstorable

from .interactions import InteractionSubmission

#: The stable event types. A platform's own event name goes into ``source_event_type``.
STABLE_EVENT_TYPES: frozenset[str] = frozenset({
    "message.received",
    "message.recalled",
    "group.member_joined",
    "friend.request_received",
    "schedule.triggered",
    "api.invoked",
    "interaction.submitted",
})

EventSource = Literal["platform", "webui", "api", "scheduler", "system"]

_ID_FIELD = Field(default=None, max_length=256)


class Strict(BaseModel):
    """Inbound wire models reject unknown fields so typos fail loudly."""

    model_config = ConfigDict(extra="forbid")


class EventActor(Strict):
    actor_type: str = Field(default="user", max_length=64)
    actor_id: str | None = _ID_FIELD
    actor_name: str | None = _ID_FIELD
    metadata: dict[str, Any] = Field(default_factory=dict)


class EventSubject(Strict):
    subject_type: str = Field(max_length=64)
    subject_id: str | None = _ID_FIELD
    data: dict[str, Any] = Field(default_factory=dict)


class ImageUrl(BaseModel):
    url: str


class ContentPart(BaseModel):
    """One content element (text / image_url / image_base64 / file_url / file_base64)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=32)
    text: str | None = None
    image_url: ImageUrl | None = None
    image_base64: str | None = None
    file_url: str | None = None
    file_base64: str | None = None
    file_name: str | None = None

    @field_validator("image_url", mode="before")
    @classmethod
    def _bare_url(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


class AttachmentRef(BaseModel):
    """Lightweight attachment metadata; bytes live in the artifact store."""

    model_config = ConfigDict(extra="forbid")

    ref: str | None = None
    id: str | None = None
    type: str | None = None
    mime_type: str | None = None
    size: int | None = Field(default=None, ge=0)
    name: str | None = None
    source: str | None = None
    url: str | None = None
    path: str | None = None
    content: str | None = None


class EventInput(Strict):
    text: str | None = None
    contents: list[ContentPart] = Field(default_factory=list)
    attachments: list[AttachmentRef] = Field(default_factory=list)
    #: The host-validated answer of an ``interaction.submitted`` event (LangBot ``InteractionSubmission``).
    interaction: InteractionSubmission | None = None

    def to_text(self) -> str:
        if self.text is not None:
            return self.text
        return " ".join(p.text for p in self.contents if p.type == "text" and p.text)


class EventDelivery(Strict):
    surface: str = Field(default="api", max_length=64)
    reply_target: dict[str, Any] | None = None
    supports_streaming: bool = True
    supports_edit: bool = False
    supports_reaction: bool = False
    max_message_size: int | None = Field(default=None, ge=1)
    platform_capabilities: dict[str, Any] = Field(default_factory=dict)


class RawRef(Strict):
    ref_id: str | None = None
    storage_key: str | None = None


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


class EventEnvelope(Strict):
    """One event. ``event_id`` and ``event_time`` (epoch seconds) are filled when absent."""

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=128)
    event_type: str = Field(min_length=1, max_length=128)
    event_time: int = Field(default_factory=lambda: int(time.time()), ge=0)
    source: EventSource = "api"
    source_event_type: str | None = Field(default=None, max_length=128)
    bot_id: str | None = _ID_FIELD
    workspace_id: str | None = _ID_FIELD
    conversation_id: str | None = _ID_FIELD
    thread_id: str | None = _ID_FIELD
    actor: EventActor = Field(default_factory=EventActor)
    subject: EventSubject | None = None
    input: EventInput = Field(default_factory=EventInput)
    delivery: EventDelivery = Field(default_factory=EventDelivery)
    raw_ref: RawRef | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        """Text no database column can hold is refused here, at intake (:mod:`protocol.text`)."""
        return reject_unstorable(data)

    @field_validator("event_type")
    @classmethod
    def _stable_type(cls, value: str) -> str:
        if value not in STABLE_EVENT_TYPES:
            raise ValueError(
                f"unknown event_type {value!r}; stable types are {sorted(STABLE_EVENT_TYPES)}"
                " (put a platform's own name into source_event_type)"
            )
        return value

    @property
    def is_message(self) -> bool:
        return self.event_type == "message.received"
