"""The per-conversation index of active runs and the multitask decision (SPEC §8).

Invariant: a run id is in at most one conversation lane; ``release`` removes it
and wakes everything waiting on it. The index never executes anything — it
only decides; the caller carries out the decision.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from protocol.agents import MultitaskStrategy
from protocol.errors import ErrorCode, RunnerHostError


def conversation_key(bot_id: str | None, workspace_id: str | None,
                     conversation_id: str | None, thread_id: str | None) -> str | None:
    """Unambiguous key of a conversation lane; ``None`` for conversation-less events."""
    if conversation_id is None:
        return None
    raw = json.dumps([bot_id, workspace_id, conversation_id, thread_id], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class Decision(str, Enum):
    START = "start"          # run now
    QUEUE = "queue"          # run after ``wait_for`` are released
    STEER = "steer"          # offer the input to ``target``'s steering queue
    REJECT = "reject"        # refuse; nothing changes
    INTERRUPT = "interrupt"  # cancel ``wait_for``, then run
    ROLLBACK = "rollback"    # cancel + revert ``wait_for``, then run


@dataclass
class LaneEntry:
    run_id: str
    runner_id: str
    steerable: bool
    actor: Any = None            # the address of the RunActor serving it, once leased
    started: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Admission:
    decision: Decision
    run_id: str
    wait_for: list[str] = field(default_factory=list)
    target: LaneEntry | None = None


class ConversationIndex:
    def __init__(self) -> None:
        self._lanes: dict[str, list[LaneEntry]] = {}
        self._runs: dict[str, tuple[str | None, LaneEntry]] = {}

    # -- queries ---------------------------------------------------------------
    def get(self, run_id: str) -> LaneEntry | None:
        found = self._runs.get(run_id)
        return found[1] if found else None

    def lane(self, conv_key: str) -> list[LaneEntry]:
        return list(self._lanes.get(conv_key, ()))

    def active_count(self) -> int:
        return len(self._runs)

    # -- decisions ---------------------------------------------------------------
    def admit(self, conv_key: str | None, run_id: str, runner_id: str,
              strategy: MultitaskStrategy, steerable: bool) -> Admission:
        if run_id in self._runs:
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, f"run {run_id} is already admitted")
        lane = self._lanes.get(conv_key, []) if conv_key else []
        others = [e.run_id for e in lane]
        decision = Decision.START
        target = None
        if lane:
            if strategy is MultitaskStrategy.REJECT:
                return Admission(Decision.REJECT, run_id, wait_for=others)
            if strategy is MultitaskStrategy.STEER:
                running = [e for e in lane if e.started and e.steerable and e.actor is not None]
                if running:
                    return Admission(Decision.STEER, run_id, target=running[-1])
                decision = Decision.QUEUE  # nothing to steer into: the normal path
            elif strategy is MultitaskStrategy.ENQUEUE:
                decision = Decision.QUEUE
            elif strategy is MultitaskStrategy.INTERRUPT:
                decision = Decision.INTERRUPT
            elif strategy is MultitaskStrategy.ROLLBACK:
                decision = Decision.ROLLBACK
            elif strategy is MultitaskStrategy.PARALLEL:
                others = []
        self._register(conv_key, LaneEntry(run_id, runner_id, steerable))
        return Admission(decision, run_id, wait_for=others if decision is not Decision.START else [],
                         target=target)

    def admit_fallback(self, conv_key: str | None, run_id: str, runner_id: str, steerable: bool) -> Admission:
        """A steer that could not be claimed becomes a queued normal run."""
        lane = self._lanes.get(conv_key, []) if conv_key else []
        others = [e.run_id for e in lane]
        self._register(conv_key, LaneEntry(run_id, runner_id, steerable))
        return Admission(Decision.QUEUE if others else Decision.START, run_id, wait_for=others)

    def mark_started(self, run_id: str, actor: Any) -> None:
        entry = self.get(run_id)
        if entry is not None:
            entry.started = True
            entry.actor = actor

    def release(self, run_id: str) -> bool:
        found = self._runs.pop(run_id, None)
        if found is None:
            return False
        conv_key, entry = found
        if conv_key is not None:
            lane = self._lanes.get(conv_key, [])
            if entry in lane:
                lane.remove(entry)
            if not lane:
                self._lanes.pop(conv_key, None)
        entry.done.set()
        return True

    async def wait_released(self, run_ids: list[str], timeout: float | None) -> bool:
        events = [entry.done for rid in run_ids if (entry := self.get(rid)) is not None]
        if not events:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _register(self, conv_key: str | None, entry: LaneEntry) -> None:
        self._runs[entry.run_id] = (conv_key, entry)
        if conv_key is not None:
            self._lanes.setdefault(conv_key, []).append(entry)
