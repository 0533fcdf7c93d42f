"""RunContext (SPEC §4): event-first, handles not history.

Field names follow the LangBot runner protocol v1 so the JSON we send validates
as ``langbot_plugin...RunnerContext``. There is deliberately no ``messages`` or
``bootstrap`` field: runners pull history through the runner API.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .events import AttachmentRef, ContentPart, RawRef
from .interactions import InteractionSubmission


class _Wire(BaseModel):
    # Outbound models: tolerate fields a newer peer adds, never invent our own.
    model_config = ConfigDict(extra="ignore")


class Trigger(_Wire):
    type: str
    source: Literal["platform", "webui", "api", "scheduler", "system", "host_adapter"] = "api"
    timestamp: int | None = None


class EventContext(_Wire):
    event_id: str
    event_type: str
    event_time: int | None = None
    source: str
    source_event_type: str | None = None
    raw_ref: RawRef | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class ConversationContext(_Wire):
    conversation_id: str | None = None
    thread_id: str | None = None
    launcher_type: str | None = None
    launcher_id: str | None = None
    sender_id: str | None = None
    bot_id: str | None = None
    workspace_id: str | None = None
    session_id: str | None = None


class ActorContext(_Wire):
    actor_type: str
    actor_id: str | None = None
    actor_name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class SubjectContext(_Wire):
    subject_type: str
    subject_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class InputContext(_Wire):
    text: str | None = None
    contents: list[ContentPart] = Field(default_factory=list)
    attachments: list[AttachmentRef] = Field(default_factory=list)
    interaction: InteractionSubmission | None = None


class DeliveryContext(_Wire):
    #: The host delivers the run's message results to the conversation the event came from (a
    #: platform chat, by the binding's delivery policy). False: results reach only the run's
    #: stream, ledger and transcript — to speak in the chat a runner calls ``message_send``.
    automatic_reply: bool = False
    surface: str = "api"
    reply_target: dict[str, Any] | None = None
    supports_streaming: bool = True
    supports_edit: bool = False
    supports_reaction: bool = False
    max_message_size: int | None = None
    platform_capabilities: dict[str, Any] = Field(default_factory=dict)


class ModelResource(_Wire):
    model_id: str
    model_type: str | None = None
    provider: str | None = None
    operations: list[Literal["invoke", "stream", "rerank", "count_tokens"]] = Field(default_factory=list)


class ToolResource(_Wire):
    tool_name: str
    tool_type: str | None = None
    description: str | None = None
    operations: list[Literal["detail", "call"]] = Field(default_factory=list)
    parameters: dict[str, Any] | None = None


class KnowledgeBaseResource(_Wire):
    kb_id: str
    kb_name: str | None = None
    kb_type: str | None = None
    operations: list[Literal["list", "retrieve"]] = Field(default_factory=list)


class SkillResource(_Wire):
    skill_name: str
    display_name: str | None = None
    description: str | None = None


class FileResource(_Wire):
    file_id: str
    kind: Literal["config", "knowledge"]
    name: str | None = None
    operations: list[Literal["metadata", "read"]] = Field(default_factory=list)


class StorageResource(_Wire):
    plugin_storage: bool = False
    workspace_storage: bool = False


class Resources(_Wire):
    models: list[ModelResource] = Field(default_factory=list)
    tools: list[ToolResource] = Field(default_factory=list)
    knowledge_bases: list[KnowledgeBaseResource] = Field(default_factory=list)
    skills: list[SkillResource] = Field(default_factory=list)
    files: list[FileResource] = Field(default_factory=list)
    storage: StorageResource = Field(default_factory=StorageResource)
    platform_capabilities: dict[str, Any] = Field(default_factory=dict)


class InlinePolicy(_Wire):
    mode: Literal["none", "current_event", "recent_tail", "summary_tail"] = "current_event"
    delivered_count: int = 0
    source_total_count: int | None = None
    messages_complete: bool = False
    reason: str | None = None


class AvailableApis(_Wire):
    """Which runner-API calls this run may make (derived from the frozen snapshot)."""

    history_page: bool = False
    history_search: bool = False
    event_get: bool = False
    event_page: bool = False
    artifact_metadata: bool = False
    artifact_read: bool = False
    state: bool = False
    storage: bool = False
    steering_pull: bool = False
    run_get: bool = False
    run_list: bool = False
    run_events_page: bool = False
    run_cancel: bool = False
    #: ``message_send``: the run's event came from a platform chat it may speak in.
    message_send: bool = False


class ContextAccess(_Wire):
    conversation_id: str | None = None
    thread_id: str | None = None
    latest_cursor: str | None = None
    event_seq: int | None = None
    transcript_seq: int | None = None
    has_history_before: bool = False
    inline_policy: InlinePolicy = Field(default_factory=InlinePolicy)
    available_apis: AvailableApis = Field(default_factory=AvailableApis)


class StateSnapshot(_Wire):
    conversation: dict[str, Any] = Field(default_factory=dict)
    actor: dict[str, Any] = Field(default_factory=dict)
    subject: dict[str, Any] = Field(default_factory=dict)
    runner: dict[str, Any] = Field(default_factory=dict)


class RuntimeContext(_Wire):
    host_version: str | None = None
    langbot_version: str | None = None  # the LangBot-protocol name of host_version
    trace_id: str | None = None
    deadline_at: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AdapterContext(_Wire):
    extra: dict[str, Any] = Field(default_factory=dict)


class RunContext(_Wire):
    run_id: str
    trigger: Trigger
    event: EventContext
    conversation: ConversationContext | None = None
    actor: ActorContext | None = None
    subject: SubjectContext | None = None
    input: InputContext = Field(default_factory=InputContext)
    delivery: DeliveryContext = Field(default_factory=DeliveryContext)
    resources: Resources = Field(default_factory=Resources)
    context: ContextAccess = Field(default_factory=ContextAccess)
    state: StateSnapshot = Field(default_factory=StateSnapshot)
    runtime: RuntimeContext = Field(default_factory=RuntimeContext)
    variables: dict[str, Any] = Field(default_factory=dict)  # public invocation variables (scalars)
    config: dict[str, Any] = Field(default_factory=dict)
    adapter: AdapterContext | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
