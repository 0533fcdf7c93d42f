"""The registry's logic: runner descriptors, agents → bindings, active-run index.

Admission answers are compact: the binding travels once per host (by ``binding_id``, an
immutable ``agent@version``), not with every event.
"""
from __future__ import annotations

from typing import Any

from protocol.agents import AgentBinding, AgentConfig
from protocol.errors import ErrorCode, RunnerHostError
from protocol.manifest import check_runner_config

from .bindings import AgentEntry, BindingResolver
from .conversations import Admission, ConversationIndex, Decision, conversation_key
from .discovery import RunnerSpec, discover


class Registry:
    def __init__(self, extra_runners: dict[str, str] | None = None) -> None:
        self._extra = extra_runners or {}
        self.specs: dict[str, RunnerSpec] = {}
        self.warnings: list[str] = []
        self.resolver = BindingResolver()
        self.index = ConversationIndex()
        self._tokens: dict[str, tuple[str, Any]] = {}
        self._bindings: dict[str, AgentBinding] = {}  # every binding ever resolved, by binding_id
        self.refresh()

    # -- runners -------------------------------------------------------------------
    def refresh(self) -> list[str]:
        self.specs, self.warnings = discover(self._extra)
        return self.warnings

    def spec(self, runner_id: str) -> RunnerSpec:
        spec = self.specs.get(runner_id)
        if spec is None:
            raise RunnerHostError(ErrorCode.NOT_FOUND, f"unknown runner {runner_id!r}",
                                  details={"runner_id": runner_id})
        return spec

    # -- agents --------------------------------------------------------------------
    def check_agent(self, agent_id: str, config: dict[str, Any]) -> AgentConfig:
        """Would this agent load? Unknown runner, a ``runner_config`` its runner's ``config_schema``
        refuses, or ambiguous routing → invalid_argument."""
        cfg = AgentConfig.model_validate(config)
        if cfg.runner_id not in self.specs:
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, f"unknown runner {cfg.runner_id!r}",
                                  details={"runner_id": cfg.runner_id, "known": sorted(self.specs)})
        check_runner_config(self.specs[cfg.runner_id].descriptor.config_schema, cfg.runner_config)
        others = [e for e in self.resolver.agents.values() if e.agent_id != agent_id]
        self.resolver.check_unambiguous(others + [AgentEntry(agent_id, cfg, 0)])
        return cfg

    def put_agent(self, agent_id: str, config: dict[str, Any], version: int) -> None:
        cfg = self.check_agent(agent_id, config)
        self.resolver.put(AgentEntry(agent_id, cfg, version))

    def load_agents(self, rows: list[tuple[str, dict[str, Any], int]]) -> None:
        entries = [AgentEntry(a, AgentConfig.model_validate(c), v) for a, c, v in rows]
        self.resolver.load(entries)

    # -- admission -------------------------------------------------------------------
    def admit(self, *, run_id: str, agent_id: str | None, event: dict[str, Any], actor: Any = None,
              host_id: str | None = None, digest: str | None = None) -> dict[str, Any]:
        """Resolve the binding and decide (SPEC §8). ``actor``: the RunActor the host already
        holds a free slot of, recorded as started when the decision is START."""
        binding = self._resolve(agent_id, event)
        spec = self.spec(binding.runner_id)
        descriptor = spec.descriptor
        steerable = bool(descriptor.capabilities.steering and descriptor.permissions.steering
                         and binding.resource_policy.steering)
        conv_key = conversation_key(event.get("bot_id"), event.get("workspace_id"),
                                    event.get("conversation_id"), event.get("thread_id"))
        admission = self.index.admit(conv_key, run_id, binding.runner_id, binding.multitask_strategy, steerable,
                                     host_id=host_id, event_id=event.get("event_id"), digest=digest)
        if admission.decision is Decision.START and actor is not None:
            self.index.mark_started(run_id, actor)
        return self._describe(admission, binding, conv_key)

    def _resolve(self, agent_id: str | None, event: dict[str, Any]) -> AgentBinding:
        binding = self.resolver.resolve(
            agent_id=agent_id, event_type=event["event_type"], bot_id=event.get("bot_id"),
            workspace_id=event.get("workspace_id"), source=event.get("source"))
        return self._bindings.setdefault(binding.binding_id, binding)

    def binding(self, binding_id: str) -> dict[str, Any]:
        """What a host caches per ``binding_id``: the binding, its runner's descriptor and target."""
        binding = self._bindings.get(binding_id)
        if binding is None:
            raise RunnerHostError(ErrorCode.NOT_FOUND, f"unknown binding {binding_id!r}",
                                  details={"binding_id": binding_id})
        spec = self.spec(binding.runner_id)
        return {"binding": binding.model_dump(mode="json"), "descriptor": spec.descriptor.model_dump(mode="json"),
                "runner_target": spec.target}

    def release(self, run_id: str, accepted: bool = True) -> bool:
        self.revoke_run_tokens(run_id)
        return self.index.release(run_id, accepted=accepted)

    def release_host(self, host_id: str) -> list[str]:
        """Release the lanes (and tokens) of every run a gone host admitted."""
        runs = self.index.release_host(host_id)
        for run_id in runs:
            self.revoke_run_tokens(run_id)
        return runs

    def admit_fallback(self, *, run_id: str, runner_id: str, conv_key: str | None, steerable: bool,
                       actor: Any = None, host_id: str | None = None, event_id: str | None = None,
                       digest: str | None = None) -> dict[str, Any]:
        admission = self.index.admit_fallback(conv_key, run_id, runner_id, steerable, host_id=host_id,
                                              event_id=event_id, digest=digest)
        if admission.decision is Decision.START and actor is not None:
            self.index.mark_started(run_id, actor)
        return {"decision": admission.decision.value, "wait_for": admission.wait_for}

    @staticmethod
    def _describe(admission: Admission, binding: AgentBinding, conv_key: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"decision": admission.decision.value, "wait_for": admission.wait_for,
                               "binding_id": binding.binding_id, "conv_key": conv_key}
        if admission.decision is Decision.STEER and admission.target is not None:
            out["targets"] = [{"run_id": admission.target.run_id, "actor": admission.target.actor}]
        elif admission.decision is Decision.DUPLICATE:
            live = admission.target
            out["duplicate"] = {"run_id": live.run_id if live else admission.wait_for[0],
                                "same_body": admission.same_body, "live": live is not None}
        return out

    # -- harness gateway capability tokens (stored hashed; dead when the run ends) --------
    def register_token(self, token_hash: str, run_id: str, actor: Any) -> None:
        self._tokens[token_hash] = (run_id, actor)

    def resolve_token(self, token_hash: str) -> tuple[str, Any]:
        found = self._tokens.get(token_hash)
        if found is None:
            raise RunnerHostError(ErrorCode.UNAUTHORIZED, "invalid or expired capability token")
        return found

    def revoke_run_tokens(self, run_id: str) -> int:
        dead = [h for h, (rid, _) in self._tokens.items() if rid == run_id]
        for h in dead:
            del self._tokens[h]
        return len(dead)

    def run_actors_of(self, run_ids: list[str]) -> list[dict[str, Any]]:
        out = []
        for rid in run_ids:
            entry = self.index.get(rid)
            if entry is not None:
                out.append({"run_id": rid, "actor": entry.actor, "host_id": entry.host_id})
        return out
