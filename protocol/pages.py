"""Page results of the runner API and the HTTP read endpoints (SPEC §6, §7)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .context import ActorContext, ConversationContext, EventContext, InputContext, SubjectContext


class _Page(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TranscriptItem(_Page):
    transcript_id: str
    event_id: str
    conversation_id: str | None = None
    bot_id: str | None = None
    workspace_id: str | None = None
    thread_id: str | None = None
    run_id: str | None = None
    role: str
    item_type: str = "message"
    content: str | None = None
    content_json: dict[str, Any] | None = None
    attachment_refs: list[dict[str, Any]] = Field(default_factory=list)
    seq: int | None = None
    cursor: str | None = None
    created_at: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class HistoryPage(_Page):
    items: list[TranscriptItem] = Field(default_factory=list)
    next_cursor: str | None = None
    prev_cursor: str | None = None
    has_more: bool = False
    total_count: int | None = None


class HistorySearchResult(_Page):
    items: list[TranscriptItem] = Field(default_factory=list)
    total_count: int | None = None
    query: str


class EventRecord(_Page):
    event_id: str
    event_type: str
    event_time: int | None = None
    source: str
    bot_id: str | None = None
    workspace_id: str | None = None
    conversation_id: str | None = None
    thread_id: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    actor_name: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    input_summary: str | None = None
    input_ref: str | None = None
    raw_ref: str | None = None
    seq: int | None = None
    cursor: str | None = None
    created_at: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class EventPage(_Page):
    items: list[EventRecord] = Field(default_factory=list)
    next_cursor: str | None = None
    prev_cursor: str | None = None
    has_more: bool = False
    total_count: int | None = None


class SteeringItem(_Page):
    claimed_run_id: str
    runner_id: str
    claimed_at: int | None = None
    event: EventContext
    input: InputContext
    conversation: ConversationContext | None = None
    actor: ActorContext | None = None
    subject: SubjectContext | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SteeringPullResult(_Page):
    items: list[SteeringItem] = Field(default_factory=list)


class ArtifactMetadata(_Page):
    artifact_id: str
    artifact_type: str
    mime_type: str | None = None
    name: str | None = None
    size_bytes: int
    sha256: str
    storage: Literal["db", "file"]
    conversation_id: str | None = None
    run_id: str | None = None
    runner_id: str | None = None
    created_at: int | None = None
    expires_at: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ArtifactReadResult(_Page):
    artifact_id: str
    offset: int
    length: int
    total_size: int
    eof: bool
    content_base64: str
    mime_type: str | None = None


class RunRecord(_Page):
    """One ``agent_run`` row (compatible with the LangBot ``AgentRun`` DTO)."""

    run_id: str
    event_id: str | None = None
    agent_id: str | None = None
    binding_id: str | None = None
    runner_id: str | None = None
    conversation_id: str | None = None
    thread_id: str | None = None
    workspace_id: str | None = None
    bot_id: str | None = None
    status: str
    status_reason: str | None = None
    created_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    updated_at: int | None = None
    deadline_at: int | None = None
    cancel_requested_at: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RunEventRecord(_Page):
    run_id: str
    sequence: int
    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    usage: dict[str, Any] | None = None
    created_at: int | None = None
    source: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RunPage(_Page):
    items: list[RunRecord] = Field(default_factory=list)
    next_cursor: str | None = None
    prev_cursor: str | None = None
    has_more: bool = False
    total_count: int = 0


class RunEventPage(_Page):
    items: list[RunEventRecord] = Field(default_factory=list)
    next_cursor: str | None = None
    prev_cursor: str | None = None
    has_more: bool = False
    total_count: int | None = None


class StateEntry(_Page):
    key: str
    value: Any = None
    updated_at: int | None = None


class StateList(_Page):
    items: list[StateEntry] = Field(default_factory=list)
    has_more: bool = False
