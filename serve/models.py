"""Declarative request/response models of the HTTP API (they shape the OpenAPI document)."""
from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocol.agents import AgentConfig
from protocol.errors import ErrorBody
from protocol.events import EventEnvelope
from protocol.text import reject_unstorable


def _reject_unstorable(cls: type, data: Any) -> Any:
    """Text no database column can hold is refused at intake (:mod:`protocol.text`)."""
    return reject_unstorable(data)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]*$"


class RunStatusFilter(str, Enum):
    created = "created"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    timeout = "timeout"


class SubmitEventRequest(BaseModel):
    """``POST /v1/events``. ``event.event_id`` and ``event.event_time`` are filled in when absent."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "agent_id": "echo",
        "event": {"event_type": "message.received", "conversation_id": "c1", "input": {"text": "hello"}},
    }]})

    agent_id: str | None = Field(default=None, min_length=1, max_length=128,
                                 description="Address one agent; omit to resolve the binding from the event")
    event: EventEnvelope


class Frame(BaseModel):
    """One result frame (an NDJSON line / the ``data`` of one SSE event)."""

    run_id: str | None = None
    type: str = Field(description="run.queued, run.started, message.delta, message.completed, ..., "
                                  "event.steered, and exactly one terminal run.completed | run.failed")
    data: dict[str, Any] = Field(default_factory=dict)
    sequence: int | None = None


class RunAccepted(BaseModel):
    """``?wait=false``: the event and its run are on record; the run continues in the background."""

    run_id: str | None = Field(description="the run (None: a re-sent event that was steered into another run)")
    type: str = Field(description="type of the run's first frame: run.started, run.queued, event.steered, or "
                                  "run.duplicate when this event_id was accepted before (its run is reported)")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)

    _storable = model_validator(mode="before")(_reject_unstorable)


class CancelAccepted(BaseModel):
    run_id: str
    cancel_requested: bool


class AgentView(BaseModel):
    agent_id: str
    version: int
    config: AgentConfig


class KnowledgeDocument(BaseModel):
    """Body of ``PUT /v1/knowledge/{kb_id}/documents/{doc_id}`` (replaces the document)."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=4 << 20)
    title: str | None = Field(default=None, max_length=512)
    metadata: dict[str, Any] = Field(default_factory=dict)

    _storable = model_validator(mode="before")(_reject_unstorable)


class KnowledgeIngested(BaseModel):
    kb_id: str
    doc_id: str
    chunks: int


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    auth: Literal["api_keys", "loopback_only"]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "invalid_argument (malformed JSON, unknown fields, bad values, "
                                             "bad cursor)"},
    401: {"model": ErrorBody, "description": "unauthorized (missing/wrong API key or scope)"},
}
NOT_FOUND = {404: {"model": ErrorBody, "description": "not_found / no_binding"}}
CONFLICT = {409: {"model": ErrorBody, "description": "conflict"}}
TOO_LARGE = {413: {"model": ErrorBody, "description": "payload_too_large (body over the configured cap)"}}
RATE_LIMITED = {429: {"model": ErrorBody, "description": "rate_limited"}}
