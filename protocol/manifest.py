"""Runner manifests (SPEC §2): capabilities are not grants; permissions are an upper bound."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .agents import RunnerIdStr


class Capabilities(BaseModel):
    model_config = ConfigDict(extra="forbid")

    streaming: bool = False
    tool_calling: bool = False
    knowledge_retrieval: bool = False
    multimodal_input: bool = False
    skill_authoring: bool = False
    interrupt: bool = False
    steering: bool = False


class Permissions(BaseModel):
    """The most a runner may ever get. ``state``/``steering`` gate the host-owned APIs."""

    model_config = ConfigDict(extra="forbid")

    models: list[Literal["invoke", "stream", "rerank", "count_tokens"]] = Field(default_factory=list)
    tools: list[Literal["detail", "call"]] = Field(default_factory=list)
    knowledge_bases: list[Literal["list", "retrieve"]] = Field(default_factory=list)
    history: list[Literal["page", "search"]] = Field(default_factory=list)
    events: list[Literal["get", "page"]] = Field(default_factory=list)
    artifacts: list[Literal["metadata", "read"]] = Field(default_factory=list)
    storage: list[Literal["plugin", "workspace"]] = Field(default_factory=list)
    files: list[Literal["config", "knowledge"]] = Field(default_factory=list)
    state: list[Literal["read", "write"]] = Field(default_factory=list)
    steering: list[Literal["pull"]] = Field(default_factory=list)
    run_ledger: list[Literal["get", "list", "events_page", "cancel"]] = Field(default_factory=list)
    harness_gateway: bool = False


class ConfigField(BaseModel):
    """One item of a runner's config form.

    ``secret``: the value is write-only through the API (SPEC §3) — never returned, and a PUT that
    sends :data:`~protocol.agents.REDACTED` back keeps the stored value. On an ``object`` field every
    value of the object is secret (its keys stay visible)."""

    model_config = ConfigDict(extra="allow")

    name: str
    type: str
    label: dict[str, str] = Field(default_factory=dict)
    description: dict[str, str] | None = None
    required: bool = False
    default: Any = None
    options: list[dict[str, Any]] | None = None
    secret: bool = False


class RunnerManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: RunnerIdStr
    label: str
    description: str = ""
    version: str = "0.0.0"
    capabilities: Capabilities = Field(default_factory=Capabilities)
    permissions: Permissions = Field(default_factory=Permissions)
    config_schema: list[ConfigField] = Field(default_factory=list)
    #: Where a run's runner executes by default. "pool": any worker of the runner's pool (its own
    #: processes, isolated from the host's). "in_actor": inside the run's own RunActor — one hop
    #: less, for trusted in-process runners; an agent may choose "pool" instead. "session": turns
    #: of one (runner, binding, conversation, thread) go through one ConversationSessionActor,
    #: one at a time (external harnesses with a native session).
    execution: Literal["pool", "session", "in_actor"] = "pool"

    def secret_fields(self) -> frozenset[str]:
        return frozenset(f.name for f in self.config_schema if f.secret)


class RunnerDescriptor(BaseModel):
    """Registry view of a runner (``GET /v1/runners``)."""

    id: str
    label: str
    description: str
    capabilities: Capabilities
    permissions: Permissions
    config_schema: list[ConfigField]
    version: str
    execution: Literal["pool", "session", "in_actor"] = "pool"
    #: ``builtin``: shipped with RunnerHost; ``config``: ``[host] extra_runners`` or
    #: ``[[runners.langbot_plugins]]``; ``entry_point``: the ``runnerhost.runners`` group.
    source: Literal["builtin", "config", "entry_point"] = "builtin"

    def secret_fields(self) -> frozenset[str]:
        return frozenset(f.name for f in self.config_schema if f.secret)

    @classmethod
    def from_manifest(cls, manifest: RunnerManifest, source: str = "builtin") -> "RunnerDescriptor":
        return cls(
            id=manifest.id, label=manifest.label, description=manifest.description,
            capabilities=manifest.capabilities, permissions=manifest.permissions,
            config_schema=manifest.config_schema, version=manifest.version,
            execution=manifest.execution, source=source,
        )


# -- runner_config against config_schema --------------------------------------------------------
_NUMBER_TYPES = {"integer": int, "int": int, "number": (int, float), "float": (int, float)}
_TEXT_TYPES = {"string", "text", "textarea", "secret", "password", "prompt-editor", "llm-model-selector"}


def _config_problem(spec: ConfigField, value: Any) -> str | None:
    """Why ``value`` does not fit ``spec`` (None = fits or the type is not one we check)."""
    kind = spec.type.lower()
    if value is None:
        return "a value is required" if spec.required else None
    if kind in ("boolean", "bool"):
        return None if isinstance(value, bool) else "must be true or false"
    if kind in _NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES[kind]):
            return "must be an integer" if _NUMBER_TYPES[kind] is int else "must be a number"
        return None
    if kind in _TEXT_TYPES:
        return None if isinstance(value, str) else "must be a string"
    if kind in ("array", "list"):
        return None if isinstance(value, list) else "must be a list"
    if kind in ("object", "dict", "json"):
        return None if isinstance(value, dict) else "must be an object"
    if kind == "select" and spec.options:
        allowed = [o.get("name") for o in spec.options]
        return None if value in allowed else f"must be one of {allowed}"
    return None  # a type we do not know (e.g. a LangBot selector): the runner checks it


def check_runner_config(schema: list[ConfigField], config: dict[str, Any]) -> None:
    """Validate ``runner_config`` against the runner's ``config_schema``: declared fields must have
    their declared type (and a ``select`` one of its options), required ones must be present.
    Undeclared keys are left to the runner. Problems → ``invalid_argument`` whose
    ``details.errors`` use the HTTP validation shape (``loc`` = ``["runner_config", name]``)."""
    from .errors import invalid_argument

    errors = []
    for spec in schema:
        present = spec.name in config
        problem = _config_problem(spec, config.get(spec.name)) if present else (
            "a value is required" if spec.required and spec.default is None else None)
        if problem:
            errors.append({"loc": ["runner_config", spec.name], "msg": problem, "type": "runner_config"})
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise invalid_argument(f"invalid runner_config: {first['loc'][1]}: {first['msg']}{more}", errors=errors)
