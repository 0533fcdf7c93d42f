"""A run in flight as its readers see it: the frames published so far, for any number of followers.

Invariants: frames are published in ``sequence`` order, the terminal frame last; only the
newest ``keep`` frames stay in memory — a follower that falls behind them (a slow client, a
late joiner) reads the older ones from the ledger, where they were flushed long before
(a RunActor flushes every 64 frames or 0.25 s), then continues live. A follower never sees a
frame twice, never misses one, and ends after the terminal frame.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Any, AsyncIterator, Awaitable, Callable

from .. import constants
from .frames import is_terminal

#: Reads ledger frames of the run with ``sequence`` ≥ the given one (ascending, a page at a time).
LedgerReader = Callable[[int], Awaitable[list[dict[str, Any]]]]


class LiveRun:
    def __init__(self, run_id: str, keep: int = 512) -> None:
        self.run_id = run_id
        self.keep = keep
        self._frames: collections.deque[dict[str, Any]] = collections.deque()
        self._changed = asyncio.Condition()
        self.first_sequence: int | None = None  # of the first frame ever published
        self.next_sequence = 0                  # one past the last published frame
        self.done = False

    async def publish(self, frames: list[dict[str, Any]]) -> None:
        if not frames:
            return
        async with self._changed:
            for frame in frames:
                if self.first_sequence is None:
                    self.first_sequence = frame["sequence"]
                self._frames.append(frame)
                self.next_sequence = frame["sequence"] + 1
                if is_terminal(frame):
                    self.done = True
            while len(self._frames) > self.keep:
                self._frames.popleft()
            self._changed.notify_all()

    @property
    def kept_from(self) -> int:
        """Sequence of the oldest frame still in memory."""
        return self._frames[0]["sequence"] if self._frames else self.next_sequence

    def recent(self) -> list[dict[str, Any]]:
        """The frames still in memory (to record what readers saw, should the run end abnormally)."""
        return list(self._frames)

    async def follow(self, from_sequence: int | None, ledger: LedgerReader) -> AsyncIterator[dict[str, Any]]:
        """Frames from ``from_sequence`` (default: the first) to the terminal one."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.first_sequence is not None or self.done)
        sequence = self.first_sequence if from_sequence is None else from_sequence
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: self.done or self.next_sequence > sequence)
                behind = sequence < self.kept_from
                frames = [] if behind else [f for f in self._frames if f["sequence"] >= sequence]
            if behind:  # fell behind what is kept: catch up from the ledger
                frames = [f for f in await ledger(sequence) if f["sequence"] >= sequence]
                if not frames:  # not flushed yet (cannot happen past `keep`): wait for more
                    await asyncio.sleep(constants.LEDGER_CATCH_UP_POLL_S)
                    continue
            for frame in frames:
                yield frame
                sequence = frame["sequence"] + 1
                if is_terminal(frame):
                    return
            if self.done and sequence >= self.next_sequence:
                return  # ended (nothing more will be published)
