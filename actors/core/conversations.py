"""The per-conversation index of active runs and the multitask decision (SPEC §8).

Invariants: a run id is in at most one conversation lane; ``release`` removes it and
wakes everything waiting on it. Every entry records the host that admitted it, so the
lanes of a host that is gone can be released as a whole. Admission is idempotent on the
run id (a retried admit returns the first decision). The event id of every admitted
run is indexed (and remembered for a while after release), so a re-sent event is
recognised before it can start a second run. The index never executes anything — it
only decides; the caller carries out the decision.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from protocol.agents import MultitaskStrategy


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
    DUPLICATE = "duplicate"  # the event was already admitted as ``target``'s run: join it


@dataclass
class LaneEntry:
    run_id: str
    runner_id: str
    steerable: bool
    actor: Any = None            # the address of the RunActor serving it, once leased
    started: bool = False
    host_id: str | None = None   # the host that admitted it (and drives it)
    event_id: str | None = None
    digest: str | None = None    # of the submitting request (duplicate vs. conflict)
    admission: "Admission | None" = None
    cancel_requested: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # its own waits: cancel


@dataclass
class Admission:
    decision: Decision
    run_id: str
    wait_for: list[str] = field(default_factory=list)
    target: LaneEntry | None = None
    same_body: bool = True       # DUPLICATE: the re-sent request equals the first one


#: Event ids remembered after their run left the index (recognises late client retries cheaply;
#: older ones are still recognised by the event log when the accept write finds them).
RECENT_EVENTS = 10_000


class ConversationIndex:
    def __init__(self) -> None:
        self._lanes: dict[str, list[LaneEntry]] = {}
        self._runs: dict[str, tuple[str | None, LaneEntry]] = {}
        self._events: dict[str, LaneEntry] = {}
        self._recent: collections.OrderedDict[str, tuple[str, str | None]] = collections.OrderedDict()

    # -- queries ---------------------------------------------------------------
    def get(self, run_id: str) -> LaneEntry | None:
        found = self._runs.get(run_id)
        return found[1] if found else None

    def lane(self, conv_key: str) -> list[LaneEntry]:
        return list(self._lanes.get(conv_key, ()))

    def active_count(self) -> int:
        return len(self._runs)

    # -- decisions ---------------------------------------------------------------
    def duplicate_of(self, event_id: str | None, digest: str | None, run_id: str) -> Admission | None:
        """A DUPLICATE admission when ``event_id`` belongs to an admitted (or recently released) run."""
        if event_id is None:
            return None
        entry = self._events.get(event_id)
        if entry is not None and entry.run_id != run_id:
            return Admission(Decision.DUPLICATE, run_id, target=entry,
                             same_body=entry.digest is None or entry.digest == digest)
        recent = self._recent.get(event_id)
        if recent is not None and recent[0] != run_id:
            return Admission(Decision.DUPLICATE, run_id, wait_for=[recent[0]],
                             same_body=recent[1] is None or recent[1] == digest)
        return None

    def admit(self, conv_key: str | None, run_id: str, runner_id: str,
              strategy: MultitaskStrategy, steerable: bool, *, host_id: str | None = None,
              event_id: str | None = None, digest: str | None = None) -> Admission:
        known = self.get(run_id)
        if known is not None and known.admission is not None:
            return known.admission  # a retried admit
        duplicate = self.duplicate_of(event_id, digest, run_id)
        if duplicate is not None:
            return duplicate
        admission = self._decide(conv_key, run_id, runner_id, strategy, steerable)
        if admission.decision not in (Decision.REJECT, Decision.STEER):
            entry = self.get(run_id)
            entry.host_id, entry.event_id, entry.digest, entry.admission = host_id, event_id, digest, admission
            if event_id is not None:
                self._events[event_id] = entry
        return admission

    def _decide(self, conv_key: str | None, run_id: str, runner_id: str,
                strategy: MultitaskStrategy, steerable: bool) -> Admission:
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

    def admit_fallback(self, conv_key: str | None, run_id: str, runner_id: str, steerable: bool, *,
                       host_id: str | None = None, event_id: str | None = None,
                       digest: str | None = None) -> Admission:
        """A steer that could not be claimed becomes a queued normal run."""
        known = self.get(run_id)
        if known is not None and known.admission is not None:
            return known.admission
        lane = self._lanes.get(conv_key, []) if conv_key else []
        others = [e.run_id for e in lane]
        entry = LaneEntry(run_id, runner_id, steerable, host_id=host_id, event_id=event_id, digest=digest)
        self._register(conv_key, entry)
        entry.admission = Admission(Decision.QUEUE if others else Decision.START, run_id, wait_for=others)
        if event_id is not None:
            self._events[event_id] = entry
        return entry.admission

    def mark_started(self, run_id: str, actor: Any) -> None:
        entry = self.get(run_id)
        if entry is not None:
            entry.started = True
            entry.actor = actor

    def release(self, run_id: str, *, accepted: bool = True) -> bool:
        """Remove the run from its lane and wake its waiters. ``accepted=False``: the run was never
        accepted (its accept failed or found a duplicate), so its event id is not remembered."""
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
        if entry.event_id is not None and self._events.get(entry.event_id) is entry:
            del self._events[entry.event_id]
            if accepted:
                self._recent[entry.event_id] = (entry.run_id, entry.digest)
            while len(self._recent) > RECENT_EVENTS:
                self._recent.popitem(last=False)
        entry.done.set()
        entry.wake.set()
        return True

    def release_host(self, host_id: str) -> list[str]:
        """Release every run a (gone) host admitted; their run ids."""
        runs = [rid for rid, (_, entry) in self._runs.items() if entry.host_id == host_id]
        for rid in runs:
            self.release(rid)
        return runs

    def request_cancel(self, run_id: str) -> bool:
        """Mark a run that has not started cancelled: its own waits end at once."""
        entry = self.get(run_id)
        if entry is None or entry.started:
            return False
        entry.cancel_requested = True
        entry.wake.set()
        return True

    async def wait_released(self, run_ids: list[str], timeout: float | None, waiter: str | None = None) -> str:
        """Wait until every run of ``run_ids`` is released: ``"released"``, ``"timeout"``, or
        ``"cancelled"`` when ``waiter`` (the waiting run) is cancelled meanwhile."""
        own = self.get(waiter) if waiter is not None else None
        if own is not None and own.cancel_requested:
            return "cancelled"
        events = [entry.done for rid in run_ids if (entry := self.get(rid)) is not None]
        if not events:
            return "released"
        released = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in events)))
        waits = {released}
        if own is not None:
            waits.add(asyncio.ensure_future(own.wake.wait()))
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if released in done:
            return "released"
        return "cancelled" if own is not None and own.cancel_requested else "timeout"

    def entries(self) -> list[LaneEntry]:
        return [entry for _, entry in self._runs.values()]

    def _register(self, conv_key: str | None, entry: LaneEntry) -> None:
        self._runs[entry.run_id] = (conv_key, entry)
        if conv_key is not None:
            self._lanes.setdefault(conv_key, []).append(entry)
