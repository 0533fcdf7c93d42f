"""The statuses runs and sessions are recorded with (SPEC §7, §9).

The transitions between them are owned by the state machines that drive them:
:mod:`actors.core.lifecycle` (a run, in the host) and :mod:`actors.core.session` (a
conversation's session); the ledger's SQL only ever moves a run forward (never out of a
terminal status)."""
from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMEOUT})

class SessionStatus(str, Enum):
    """ConversationSessionActor lifecycle: idle ⇄ busy → reaped (rebuilt on demand)."""

    IDLE = "idle"
    BUSY = "busy"
    REAPED = "reaped"
