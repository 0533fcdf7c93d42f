"""One external-harness session's turn discipline (SPEC §10, ConversationSessionActor).

State machine: IDLE → BUSY (one turn; every other turn waits its turn in
arrival order) → IDLE … → REAPED after ``idle_s`` without a turn. A reaped
session is rebuilt from Postgres: the external session id lives in the
``agent_runtime_session`` row and in conversation state ``external.session_id``.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from protocol.context import RunContext
from protocol.lifecycle import SessionStatus

EXTERNAL_SESSION_KEY = "external.session_id"


class TurnGate:
    """FIFO, one turn at a time; tracks idleness for the reaper."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.status = SessionStatus.IDLE
        self.idle_since = time.monotonic()
        self.turns = 0
        self.max_concurrent_seen = 0
        self._inside = 0

    async def __aenter__(self) -> "TurnGate":
        if self.status is SessionStatus.REAPED:
            raise RuntimeError("session was reaped")
        await self._lock.acquire()
        self._inside += 1
        self.max_concurrent_seen = max(self.max_concurrent_seen, self._inside)
        self.status = SessionStatus.BUSY
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._inside -= 1
        self.turns += 1
        self.status = SessionStatus.IDLE
        self.idle_since = time.monotonic()
        self._lock.release()

    def reapable(self, idle_s: float) -> bool:
        return (self.status is SessionStatus.IDLE and not self._lock.locked()
                and time.monotonic() - self.idle_since >= idle_s)


def with_resume_id(ctx: RunContext, stored_session_id: str | None) -> RunContext:
    """Rebuild: a stored external session id fills in missing conversation state."""
    if stored_session_id:
        ctx.state.conversation.setdefault(EXTERNAL_SESSION_KEY, stored_session_id)
    return ctx


async def observe_session_id(batches: AsyncIterator[list[dict[str, Any]]],
                             on_session_id: Callable[[str], Awaitable[None]]
                             ) -> AsyncIterator[list[dict[str, Any]]]:
    """Relay result batches; persist the external session id as soon as the runner reports one
    (before the batch that carries it moves on)."""
    async for batch in batches:
        for frame in batch:
            data = frame.get("data") or {}
            if (frame.get("type") == "state.updated" and data.get("scope") == "conversation"
                    and data.get("key") == EXTERNAL_SESSION_KEY and isinstance(data.get("value"), str)):
                await on_session_id(data["value"])
        yield batch
