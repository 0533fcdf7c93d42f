"""Agent configuration and the per-event binding projection (SPEC §1, §3, §8)."""
from __future__ import annotations

from enum import Enum
from typing import Any, Collection, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import Annotated

from .errors import RunnerHostError, invalid_argument
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


#: What a secret ``runner_config`` value reads as through the API; sent back in a PUT, it keeps
#: the stored value (secrets are write-only, SPEC §3).
REDACTED = "<redacted>"

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
    #: Plugin storage is on by default, as in LangBot (``allow_plugin_storage``); the runner's
    #: manifest must still declare ``storage: [plugin]`` for a run to get it.
    storage: list[Literal["plugin", "workspace"]] = Field(default_factory=lambda: ["plugin"])
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
    """What the host delivers where (SPEC §13).

    ``reply``: results go back to the event's ``delivery.reply_target`` when it names a platform
    connection (``{"connection": …}``); ``webhooks``: names of configured signed-webhook connections
    that also receive every run's result; ``edit_interval_s``: the least time between two edits of a
    streamed message; ``send_artifacts``: artifacts go out as files where the platform takes them;
    ``enable_interactions``: ``interaction.requested`` results are stored and delivered.
    """

    streaming: bool = True
    max_message_size: int | None = Field(default=None, ge=1)
    surface: str | None = None
    reply: bool = True
    webhooks: list[str] = Field(default_factory=list, max_length=16)
    edit_interval_s: float = Field(default=1.0, ge=0.05, le=60)
    send_artifacts: bool = True
    enable_interactions: bool = False


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
    #: Where this agent's runs execute: "default" = what the runner declares; "pool" = the
    #: runner's worker pool (process isolation); "in_actor" = inside the run's RunActor (the
    #: operator trusts the runner's code: one hop less). Harness (session) runners ignore it.
    execution: Literal["default", "pool", "in_actor"] = "default"

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

    # -- write-only secrets (the runner's config_schema marks them: ConfigField.secret) ----------
    def redacted(self, secret_fields: Collection[str] | None) -> "AgentConfig":
        """This config as the API shows it: every secret ``runner_config`` value replaced by
        :data:`REDACTED`. ``None`` (the runner's schema is unknown) treats every value as secret."""
        config = self.runner_config
        if secret_fields is None:
            shown = {name: _mask(value) for name, value in config.items()}
        else:
            shown = {name: _mask(value) if name in secret_fields else value for name, value in config.items()}
        return self.model_copy(update={"runner_config": shown})

    def with_secrets_from(self, stored: "AgentConfig | None", secret_fields: Collection[str]) -> "AgentConfig":
        """A PUT body whose :data:`REDACTED` markers are filled from ``stored`` (same runner);
        a marker with no stored secret behind it → ``invalid_argument``."""
        kept = stored.runner_config if stored is not None and stored.runner_id == self.runner_id else {}
        config = dict(self.runner_config)
        for name in secret_fields:
            if name in config:
                config[name] = _restore(config[name], kept.get(name), name)
        if _holds_marker(config):
            raise invalid_argument(f"{REDACTED} stands for a stored secret; this agent has none there")
        return self.model_copy(update={"runner_config": config})


def _mask(value: Any) -> Any:
    """A secret value as shown: objects keep their keys, every value reads :data:`REDACTED`."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {key: _mask(item) for key, item in value.items()}
    return REDACTED


def _restore(value: Any, stored: Any, where: str) -> Any:
    if value == REDACTED:
        if stored is None or stored == REDACTED:
            raise invalid_argument(f"{where}: {REDACTED} stands for a stored secret; none is stored there",
                                   field=where)
        return stored
    if isinstance(value, dict):
        stored = stored if isinstance(stored, dict) else {}
        return {key: _restore(item, stored.get(key), f"{where}.{key}") for key, item in value.items()}
    return value


def _holds_marker(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_marker(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_marker(v) for v in value)
    return value == REDACTED


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
    execution: Literal["default", "pool", "in_actor"] = "default"

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
            execution=agent.execution,
        )

    @property
    def identity(self) -> str:
        """Stable across config versions: state must survive an agent edit."""
        return self.agent_id
