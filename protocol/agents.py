"""Agent configuration and the per-event binding projection (SPEC §1, §3, §8)."""
from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import Annotated

from .errors import RunnerHostError
from .events import STABLE_EVENT_TYPES
from .ids import validate_runner_id
from .text import reject_unstorable


def _runner_id(value: str) -> str:
    try:
        return validate_runner_id(value)
    except RunnerHostError as exc:
        raise ValueError(exc.message) from None


RunnerIdStr = Annotated[str, AfterValidator(_runner_id)]


class MultitaskStrategy(str, Enum):
    STEER = "steer"
    ENQUEUE = "enqueue"
    REJECT = "reject"
    INTERRUPT = "interrupt"
    ROLLBACK = "rollback"
    PARALLEL = "parallel"


StateScope = Literal["conversation", "actor", "subject", "runner"]
STATE_SCOPES: tuple[str, ...] = ("conversation", "actor", "subject", "runner")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourcePolicy(_Config):
    """What the binding allows. ``None`` on a list means "everything the manifest asks"."""

    models: list[str] | None = Field(default_factory=list)
    tools: list[str] | None = Field(default_factory=list)
    knowledge_bases: list[str] | None = Field(default_factory=list)
    skills: list[str] | None = Field(default_factory=list)
    history: list[Literal["page", "search"]] = Field(default_factory=lambda: ["page", "search"])
    events: list[Literal["get", "page"]] = Field(default_factory=lambda: ["get", "page"])
    artifacts: list[Literal["metadata", "read"]] = Field(default_factory=lambda: ["metadata", "read"])
    storage: list[Literal["plugin", "workspace"]] = Field(default_factory=list)
    files: list[Literal["config", "knowledge"]] = Field(default_factory=list)
    state: bool = True
    steering: bool = True
    run_ledger: list[Literal["get", "list", "events_page", "cancel"]] = Field(
        default_factory=lambda: ["get", "events_page"])
    harness_gateway: bool = False
    cross_conversation_history: bool = False
    max_payload_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)


class StatePolicy(_Config):
    enable_state: bool = True
    state_scopes: list[StateScope] = Field(default_factory=lambda: list(STATE_SCOPES))


class DeliveryPolicy(_Config):
    streaming: bool = True
    max_message_size: int | None = Field(default=None, ge=1)
    surface: str | None = None


class BindingScope(_Config):
    """Which events an agent answers; ``None`` matches anything."""

    bot_id: str | None = None
    workspace_id: str | None = None
    sources: list[str] | None = None

    def matches(self, bot_id: str | None, workspace_id: str | None, source: str | None) -> bool:
        if self.bot_id is not None and self.bot_id != bot_id:
            return False
        if self.workspace_id is not None and self.workspace_id != workspace_id:
            return False
        if self.sources is not None and source not in self.sources:
            return False
        return True

    def overlaps(self, other: "BindingScope") -> bool:
        def meet(a, b):
            return a is None or b is None or a == b
        sources_meet = (self.sources is None or other.sources is None
                        or bool(set(self.sources) & set(other.sources)))
        return meet(self.bot_id, other.bot_id) and meet(self.workspace_id, other.workspace_id) and sources_meet


class AgentConfig(_Config):
    """Persistent agent configuration (the ``agent`` table and ``PUT /v1/agents/{id}``)."""

    runner_id: RunnerIdStr
    runner_config: dict[str, Any] = Field(default_factory=dict)
    resource_policy: ResourcePolicy = Field(default_factory=ResourcePolicy)
    state_policy: StatePolicy = Field(default_factory=StatePolicy)
    delivery_policy: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    event_types: list[str] = Field(default_factory=lambda: ["message.received"], min_length=1)
    multitask_strategy: MultitaskStrategy = MultitaskStrategy.PARALLEL
    timeout_s: float = Field(default=300.0, gt=0, le=24 * 3600)
    enabled: bool = True
    scope: BindingScope = Field(default_factory=BindingScope)
    description: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        """Text no database column can hold is refused here, at intake (:mod:`protocol.text`)."""
        return reject_unstorable(data)

    @field_validator("event_types")
    @classmethod
    def _known_event_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t != "*" and t not in STABLE_EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event types {unknown}")
        return value

    def handles(self, event_type: str) -> bool:
        return "*" in self.event_types or event_type in self.event_types


class AgentBinding(_Config):
    """The effective projection resolved for one event: one event → one binding."""

    binding_id: str
    agent_id: str
    scope: BindingScope
    event_types: list[str]
    runner_id: RunnerIdStr
    runner_config: dict[str, Any] = Field(default_factory=dict)
    resource_policy: ResourcePolicy
    state_policy: StatePolicy
    delivery_policy: DeliveryPolicy
    multitask_strategy: MultitaskStrategy
    timeout_s: float

    @classmethod
    def from_agent(cls, agent_id: str, agent: AgentConfig, version: int = 0) -> "AgentBinding":
        return cls(
            binding_id=f"{agent_id}@{version}",
            agent_id=agent_id,
            scope=agent.scope,
            event_types=list(agent.event_types),
            runner_id=agent.runner_id,
            runner_config=dict(agent.runner_config),
            resource_policy=agent.resource_policy,
            state_policy=agent.state_policy,
            delivery_policy=agent.delivery_policy,
            multitask_strategy=agent.multitask_strategy,
            timeout_s=agent.timeout_s,
        )

    @property
    def identity(self) -> str:
        """Stable across config versions: state must survive an agent edit."""
        return self.agent_id
