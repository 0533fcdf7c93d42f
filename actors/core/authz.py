"""The frozen authorization snapshot (SPEC §3).

``effective access = manifest.permissions ∩ binding.resource_policy ∩
runner_config selections ∩ event scope`` is computed once per run by
:func:`compute_access` and frozen into an :class:`AccessSnapshot`. The RunActor
checks every runner-API call against it; nothing recomputes policy later, so a
config change mid-run cannot widen (or narrow) a running run's grants.

Every read of events, runs and artifacts is bounded by a
:class:`~protocol.read_scope.ReadScope` the snapshot derives
(:meth:`AccessSnapshot.read_scope`): the run's own conversation (another one
only with the cross-conversation grant) or, for a run whose event has no
conversation, the run itself — never "no filter".
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from protocol.agents import AgentBinding
from protocol.context import (
    AvailableApis,
    KnowledgeBaseResource,
    ModelResource,
    Resources,
    StorageResource,
    ToolResource,
)
from protocol.errors import ErrorCode, RunnerHostError, unauthorized
from protocol.manifest import RunnerManifest
from protocol.read_scope import ReadScope


@dataclass(frozen=True)
class AccessSnapshot:
    """What one run may do. Immutable; safe to share across tasks."""

    run_id: str
    runner_id: str
    conversation_id: str | None
    thread_id: str | None
    models: dict[str, frozenset[str]] = field(default_factory=dict)
    tools: dict[str, frozenset[str]] = field(default_factory=dict)
    knowledge_bases: dict[str, frozenset[str]] = field(default_factory=dict)
    history: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    artifacts: frozenset[str] = frozenset()
    storage: frozenset[str] = frozenset()
    state_ops: frozenset[str] = frozenset()
    state_scopes: frozenset[str] = frozenset()
    steering: bool = False
    run_ledger: frozenset[str] = frozenset()
    harness_gateway: bool = False
    cross_conversation_history: bool = False
    #: The run's event came from a platform chat it may post explicit messages into (its own
    #: conversation only: no grant reaches another one).
    message_send: bool = False
    max_payload_bytes: int = 1 << 20
    deadline_at: float | None = None

    # -- checks ---------------------------------------------------------------
    def require(self, allowed: bool, what: str) -> None:
        if not allowed:
            raise unauthorized(f"{what} is not granted to this run", run_id=self.run_id)

    def check_deadline(self, now: float | None = None) -> None:
        if self.deadline_at is not None and (now or time.time()) > self.deadline_at:
            raise RunnerHostError(ErrorCode.DEADLINE_EXCEEDED, "the run's deadline has passed",
                                  details={"run_id": self.run_id})

    def check_model(self, model_id: str, op: str) -> None:
        self.require(op in self.models.get(model_id, ()), f"model {model_id!r} ({op})")

    def check_tool(self, tool_name: str, op: str) -> None:
        self.require(op in self.tools.get(tool_name, ()), f"tool {tool_name!r} ({op})")

    def check_kb(self, kb_id: str, op: str) -> None:
        self.require(op in self.knowledge_bases.get(kb_id, ()), f"knowledge base {kb_id!r} ({op})")

    def check_history(self, op: str, conversation_id: str | None) -> str:
        """Return the conversation to read; another conversation needs an explicit grant."""
        self.require(op in self.history, f"history.{op}")
        target = conversation_id or self.conversation_id
        if target is None:
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, "this run has no conversation")
        if target != self.conversation_id and not self.cross_conversation_history:
            raise unauthorized("history of another conversation is not granted",
                               run_id=self.run_id)
        return target

    def check_events(self, op: str, conversation_id: str | None, *, bot_id: str | None = None,
                     workspace_id: str | None = None) -> ReadScope:
        """The scope of an event read (see :meth:`read_scope`)."""
        self.require(op in self.events, f"events.{op}")
        return self.read_scope(conversation_id, bot_id=bot_id, workspace_id=workspace_id)

    def read_scope(self, conversation_id: str | None = None, *, bot_id: str | None = None,
                   workspace_id: str | None = None) -> ReadScope:
        """What a page/list of this run may return: ``conversation_id`` (default: the run's own;
        another one only with the cross-conversation grant), or — for a run without a
        conversation that names none — the run's own event and run. Rows of another bot or
        workspace than the run's are never in it."""
        target = conversation_id or self.conversation_id
        if target is not None and target != self.conversation_id and not self.cross_conversation_history:
            raise unauthorized("another conversation is not granted", run_id=self.run_id)
        if target is None:
            return ReadScope.of_run(self.run_id, bot_id=bot_id, workspace_id=workspace_id)
        return ReadScope.of_conversation(target, bot_id=bot_id, workspace_id=workspace_id)

    def lookup_scope(self, *, bot_id: str | None = None, workspace_id: str | None = None,
                     cross_conversation: bool = True) -> ReadScope:
        """What a read by id of this run may return: its own conversation and run (any
        conversation with the cross-conversation grant, when ``cross_conversation`` allows it)."""
        return ReadScope(conversation_id=self.conversation_id, run_id=self.run_id, bot_id=bot_id,
                         workspace_id=workspace_id,
                         any_conversation=cross_conversation and self.cross_conversation_history)

    def check_state(self, scope: str, op: str) -> None:
        self.require(op in self.state_ops, f"state.{op}")
        self.require(scope in self.state_scopes, f"state scope {scope!r}")

    def check_payload(self, size: int) -> None:
        if size > self.max_payload_bytes:
            raise RunnerHostError(ErrorCode.PAYLOAD_TOO_LARGE,
                                  f"payload of {size} bytes exceeds {self.max_payload_bytes}",
                                  details={"limit": self.max_payload_bytes})

    # -- what the runner is told ---------------------------------------------
    def available_apis(self) -> AvailableApis:
        return AvailableApis(
            history_page="page" in self.history,
            history_search="search" in self.history,
            event_get="get" in self.events,
            event_page="page" in self.events,
            artifact_metadata="metadata" in self.artifacts,
            artifact_read="read" in self.artifacts,
            state=bool(self.state_ops and self.state_scopes),
            storage=bool(self.storage),
            steering_pull=self.steering,
            run_get="get" in self.run_ledger,
            run_list="list" in self.run_ledger,
            run_events_page="events_page" in self.run_ledger,
            run_cancel="cancel" in self.run_ledger,
            message_send=self.message_send,
        )

    def resources(self, catalog: "ResourceCatalog | None" = None) -> Resources:
        catalog = catalog or ResourceCatalog()
        return Resources(
            models=[ModelResource(model_id=m, provider=catalog.model_provider(m),
                                  operations=sorted(ops)) for m, ops in sorted(self.models.items())],
            tools=[ToolResource(tool_name=t, description=catalog.tool_description(t),
                                parameters=catalog.tool_schema(t), operations=sorted(ops))
                   for t, ops in sorted(self.tools.items())],
            knowledge_bases=[KnowledgeBaseResource(kb_id=k, kb_name=k, operations=sorted(ops))
                             for k, ops in sorted(self.knowledge_bases.items())],
            storage=StorageResource(plugin_storage="plugin" in self.storage,
                                    workspace_storage="workspace" in self.storage),
        )


@dataclass
class ResourceCatalog:
    """Host resources that exist: model ids, tools (with schemas), knowledge bases."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    knowledge_bases: list[str] = field(default_factory=list)

    def model_provider(self, model_id: str) -> str | None:
        return (self.models.get(model_id) or {}).get("provider")

    def tool_description(self, name: str) -> str | None:
        return (self.tools.get(name) or {}).get("description")

    def tool_schema(self, name: str) -> dict[str, Any] | None:
        return (self.tools.get(name) or {}).get("parameters")


def named_selection(policy: list[str] | None, config_selection: Any) -> set[str] | None:
    """policy ∩ runner_config selection: the names a grant can hold whatever exists; ``None``
    (no policy list, no selection list) means every existing one."""
    named = None if policy is None else set(policy)
    if isinstance(config_selection, list):
        wanted = {str(x) for x in config_selection}
        named = wanted if named is None else named & wanted
    return named


def _select(policy: list[str] | None, existing: Iterable[str], config_selection: Any) -> list[str]:
    """policy ∩ existing ∩ runner_config selection (``None`` policy = all existing)."""
    pool = list(existing) if policy is None else [x for x in policy if x in set(existing)]
    named = named_selection(policy, config_selection)
    return pool if named is None else [x for x in pool if x in named]


def compute_access(
    *,
    run_id: str,
    manifest: RunnerManifest,
    binding: AgentBinding,
    conversation_id: str | None,
    thread_id: str | None,
    catalog: ResourceCatalog | None = None,
    deadline_at: float | None = None,
    own_chat: bool = False,
) -> AccessSnapshot:
    """``own_chat``: the event came from a platform chat (``DeliveryPlan.own_chat``), where the
    run may post explicit messages."""
    catalog = catalog or ResourceCatalog()
    perms = manifest.permissions
    policy = binding.resource_policy
    cfg = binding.runner_config or {}

    model_ops = frozenset(perms.models)
    models = {m: model_ops for m in _select(policy.models, catalog.models, cfg.get("models"))} if model_ops else {}
    tool_ops = frozenset(perms.tools)
    tools = {t: tool_ops for t in _select(policy.tools, catalog.tools, cfg.get("tools"))} if tool_ops else {}
    kb_ops = frozenset(perms.knowledge_bases)
    kbs = ({k: kb_ops for k in _select(policy.knowledge_bases, catalog.knowledge_bases,
                                        cfg.get("knowledge_bases"))} if kb_ops else {})
    state_policy = binding.state_policy
    state_scopes = frozenset(state_policy.state_scopes) if (state_policy.enable_state and policy.state) else frozenset()
    if conversation_id is None:
        state_scopes -= {"conversation"}
    return AccessSnapshot(
        run_id=run_id,
        runner_id=binding.runner_id,
        conversation_id=conversation_id,
        thread_id=thread_id,
        models=models,
        tools=tools,
        knowledge_bases=kbs,
        history=frozenset(perms.history) & frozenset(policy.history) if conversation_id else frozenset(),
        events=frozenset(perms.events) & frozenset(policy.events),
        artifacts=frozenset(perms.artifacts) & frozenset(policy.artifacts),
        storage=frozenset(perms.storage) & frozenset(policy.storage),
        state_ops=frozenset(perms.state) if state_scopes else frozenset(),
        state_scopes=state_scopes if perms.state else frozenset(),
        steering=bool(perms.steering) and policy.steering and manifest.capabilities.steering,
        run_ledger=frozenset(perms.run_ledger) & (frozenset(policy.run_ledger) | ({"list"} if conversation_id else set())),
        harness_gateway=perms.harness_gateway and policy.harness_gateway,
        cross_conversation_history=policy.cross_conversation_history,
        message_send=own_chat,
        max_payload_bytes=policy.max_payload_bytes,
        deadline_at=deadline_at,
    )
