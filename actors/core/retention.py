"""The retention job: what expires or goes stale is removed, a bounded amount per round.

One round (:meth:`Retention.run`, the storage write op ``retention``) removes, in
its unit of work:

* expired artifacts (``expires_at`` passed) and their files;
* harness sessions idle past ``session_idle_s``: the ``agent_runtime_session``
  row is marked ``cleaned`` and the session's workspace directory is deleted
  (the next turn starts a fresh session; a session actor exits long before,
  after ``[host] session_idle_s``);
* workspace directories no active session owns, untouched for ``session_idle_s``
  (e.g. the one-off sessions of conversation-less runs);
* ``cleaned`` session rows older than ``cleaned_session_keep_s``;
* EventLog and Transcript rows older than their ``*_max_age_s`` — off by default.

Each kind removes at most ``batch_limit`` rows per round; ``more`` in the report
says a kind hit the limit, so the caller runs another round soon. Workspaces are
directories on the node running the round (the storage actor's): on a cluster,
harness workspaces on other nodes are not reached. :func:`run_retention` is what
the host calls every ``interval_s``.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.logs import get_logger
from protocol.sessions import SessionKey
from runners.harness.runner import RUNNER_ID as HARNESS_RUNNER_ID
from runners.harness.runner import default_workspace_root
from runners.harness.session import remove_session_dir, session_dirs
from store.agents import AgentStore
from store.event_log import EventLogStore
from store.runtime_sessions import RuntimeSession, RuntimeSessionStore
from store.transcript import TranscriptStore

log = get_logger(__name__)

DAY_S = 86_400.0


class RetentionPolicy(BaseModel):
    """``[retention]``: ages are seconds; ``None`` turns a kind off."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(default=3600.0, gt=0)  # how often the host runs a round
    batch_limit: int = Field(default=500, ge=1, le=100_000)  # rows per kind per round
    artifacts: bool = True  # expired artifacts and their files
    session_idle_s: float | None = Field(default=7 * DAY_S, gt=0)
    cleaned_session_keep_s: float | None = Field(default=30 * DAY_S, ge=0)
    workspace_roots: list[str] = Field(default_factory=list)  # besides the default and the agents' own
    event_log_max_age_s: float | None = Field(default=None, gt=0)
    transcript_max_age_s: float | None = Field(default=None, gt=0)


@dataclass
class RetentionReport:
    artifacts: int = 0
    sessions_retired: int = 0
    sessions_deleted: int = 0
    workspaces_removed: int = 0
    workspace_errors: int = 0
    events: int = 0
    transcript_items: int = 0
    more: bool = False  # some kind hit the batch limit: run another round soon
    roots: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Retention:
    """One round of the policy inside the caller's unit of work."""

    def __init__(self, policy: RetentionPolicy,
                 artifact_store: Callable[[AsyncSession], Any] | None = None) -> None:
        self.policy = policy
        self._artifacts = artifact_store

    async def run(self, session: AsyncSession, *, now: float | None = None) -> RetentionReport:
        policy, report = self.policy, RetentionReport()
        now = time.time() if now is None else now
        limit = policy.batch_limit
        if policy.artifacts and self._artifacts is not None:
            report.artifacts = await self._artifacts(session).cleanup_expired(limit=limit)
        sessions = RuntimeSessionStore(session)
        retired: list[RuntimeSession] = []
        if policy.session_idle_s is not None:
            retired = await sessions.retire_idle(now - policy.session_idle_s, limit=limit)
            report.sessions_retired = len(retired)
        if policy.cleaned_session_keep_s is not None:
            report.sessions_deleted = await sessions.delete_cleaned(now - policy.cleaned_session_keep_s, limit=limit)
        if policy.session_idle_s is not None:
            report.roots = await self._workspace_roots(session)
            owned = {_digest(s) for s in await sessions.list_active("conversation")}
            gone = {_digest(s) for s in retired}
            removed, errors = await asyncio.to_thread(_sweep_workspaces, report.roots, gone - owned, owned,
                                                      now - policy.session_idle_s)
            report.workspaces_removed, report.workspace_errors = removed, errors
        if policy.event_log_max_age_s is not None:
            report.events = await EventLogStore(session).cleanup_older_than(policy.event_log_max_age_s, limit=limit)
        if policy.transcript_max_age_s is not None:
            report.transcript_items = await TranscriptStore(session).cleanup_older_than(
                policy.transcript_max_age_s, limit=limit)
        report.more = limit in (report.artifacts, report.sessions_retired, report.sessions_deleted,
                                report.events, report.transcript_items)
        return report

    async def _workspace_roots(self, session: AsyncSession) -> list[str]:
        """The configured roots, the harness default, and every harness agent's own ``workspace_root``."""
        roots = [*self.policy.workspace_roots, default_workspace_root()]
        for agent in await AgentStore(session).list():
            if agent.config.runner_id == HARNESS_RUNNER_ID:
                root = agent.config.runner_config.get("workspace_root")
                if isinstance(root, str) and root:
                    roots.append(root)
        return list(dict.fromkeys(roots))


def _digest(session: RuntimeSession) -> str:
    return SessionKey(session.runner_id or "", session.binding_id, session.conversation_id,
                      session.thread_id).digest()


def _sweep_workspaces(roots: list[str], retired: set[str], owned: set[str], stale_before: float) -> tuple[int, int]:
    """Remove the retired sessions' directories and the unowned ones untouched since ``stale_before``."""
    removed = errors = 0
    for root in roots:
        for digest, mtime in session_dirs(root):
            if digest in owned or (digest not in retired and mtime >= stale_before):
                continue
            try:
                removed += remove_session_dir(root, digest)
            except OSError as exc:  # a busy or foreign directory must not fail the round
                errors += 1
                log.warning("retention: could not remove workspace %s under %s (%s)", digest[:12], root,
                            type(exc).__name__)
    return removed, errors


async def run_retention(storage_write: Callable[..., Awaitable[Any]], policy: RetentionPolicy, *,
                        max_rounds: int = 10) -> dict[str, Any]:
    """What the host runs every ``policy.interval_s``: rounds of the storage op ``retention`` until
    nothing is left over (at most ``max_rounds``); returns the summed report."""
    total: dict[str, Any] = {}
    for _ in range(max_rounds):
        report = await storage_write("retention", policy=policy.model_dump(mode="json"))
        for key, value in report.items():
            if isinstance(value, int) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
        total["more"] = report["more"]
        if not report["more"]:
            break
    return total
