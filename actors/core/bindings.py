"""Binding resolution: exactly one binding per event (SPEC §1).

An agent whose scope names a bot or workspace is *routable*: events without an
explicit ``agent_id`` resolve through it. Two routable agents that could both
match one event are a configuration error, rejected when loaded — never a
fan-out. Agents with an empty scope are reachable by ``agent_id`` only.
"""
from __future__ import annotations

from dataclasses import dataclass

from protocol.agents import AgentBinding, AgentConfig
from protocol.errors import ErrorCode, RunnerHostError, invalid_argument


def _routable(agent: AgentConfig) -> bool:
    return agent.scope.bot_id is not None or agent.scope.workspace_id is not None


def _event_types_overlap(a: AgentConfig, b: AgentConfig) -> bool:
    return "*" in a.event_types or "*" in b.event_types or bool(set(a.event_types) & set(b.event_types))


@dataclass(frozen=True)
class AgentEntry:
    agent_id: str
    config: AgentConfig
    version: int


class BindingResolver:
    def __init__(self) -> None:
        self._agents: dict[str, AgentEntry] = {}

    @property
    def agents(self) -> dict[str, AgentEntry]:
        return dict(self._agents)

    def load(self, entries: list[AgentEntry]) -> None:
        """Replace the agent set, refusing ambiguous routing as a whole."""
        self.check_unambiguous(entries)
        self._agents = {e.agent_id: e for e in entries}

    def put(self, entry: AgentEntry) -> None:
        others = [e for e in self._agents.values() if e.agent_id != entry.agent_id]
        self.check_unambiguous(others + [entry])
        self._agents[entry.agent_id] = entry

    def remove(self, agent_id: str) -> None:
        self._agents.pop(agent_id, None)

    @staticmethod
    def check_unambiguous(entries: list[AgentEntry]) -> None:
        routable = [e for e in entries if e.config.enabled and _routable(e.config)]
        for i, a in enumerate(routable):
            for b in routable[i + 1:]:
                if a.config.scope.overlaps(b.config.scope) and _event_types_overlap(a.config, b.config):
                    raise invalid_argument(
                        f"agents {a.agent_id!r} and {b.agent_id!r} both match the same events; "
                        "narrow one scope or its event_types",
                        agents=[a.agent_id, b.agent_id])

    def resolve(self, *, agent_id: str | None, event_type: str, bot_id: str | None,
                workspace_id: str | None, source: str | None) -> AgentBinding:
        if agent_id is not None:
            entry = self._agents.get(agent_id)
            if entry is None:
                raise RunnerHostError(ErrorCode.NOT_FOUND, f"unknown agent {agent_id!r}",
                                      details={"agent_id": agent_id})
            cfg = entry.config
            if not cfg.enabled:
                raise RunnerHostError(ErrorCode.NO_BINDING, f"agent {agent_id!r} is disabled",
                                      details={"agent_id": agent_id})
            if not cfg.handles(event_type):
                raise RunnerHostError(ErrorCode.NO_BINDING,
                                      f"agent {agent_id!r} does not handle {event_type!r}",
                                      details={"agent_id": agent_id, "event_type": event_type})
            if _routable(cfg) and not cfg.scope.matches(bot_id, workspace_id, source):
                raise RunnerHostError(ErrorCode.NO_BINDING,
                                      f"agent {agent_id!r} is not bound to this bot/workspace",
                                      details={"agent_id": agent_id})
            return AgentBinding.from_agent(entry.agent_id, cfg, entry.version)
        matches = [e for e in self._agents.values()
                   if e.config.enabled and _routable(e.config) and e.config.handles(event_type)
                   and e.config.scope.matches(bot_id, workspace_id, source)]
        if not matches:
            raise RunnerHostError(
                ErrorCode.NO_BINDING,
                "no agent is bound to this event; pass agent_id or bind an agent to its bot/workspace",
                details={"event_type": event_type, "bot_id": bot_id, "workspace_id": workspace_id})
        if len(matches) > 1:  # unreachable after load-time checks; kept as a guard
            raise invalid_argument("ambiguous binding", agents=[m.agent_id for m in matches])
        e = matches[0]
        return AgentBinding.from_agent(e.agent_id, e.config, e.version)
