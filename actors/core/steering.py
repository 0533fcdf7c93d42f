"""The bounded steering queue a RunActor owns (SPEC §8)."""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SteeringEntry:
    source_event_id: str
    item: dict[str, Any]  # a protocol.pages.SteeringItem as JSON
    claimed_at: float = field(default_factory=time.time)


class SteeringQueue:
    """FIFO of claimed inputs. ``offer`` never blocks: a full queue says no.

    Invariant: every entry leaves exactly once, either through ``pull``
    (→ ``steering.injected``) or ``drain`` at run end (→ ``steering.dropped``).
    """

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self._items: deque[SteeringEntry] = deque()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, entry: SteeringEntry) -> bool:
        if self._closed or len(self._items) >= self.capacity:
            return False
        self._items.append(entry)
        return True

    def pull(self, mode: str = "all", limit: int | None = None) -> list[SteeringEntry]:
        if mode not in ("all", "one-at-a-time"):
            from protocol.errors import invalid_argument
            raise invalid_argument("steering mode must be 'all' or 'one-at-a-time'")
        n = 1 if mode == "one-at-a-time" else len(self._items)
        if limit is not None:
            n = min(n, max(0, int(limit)))
        return [self._items.popleft() for _ in range(min(n, len(self._items)))]

    def close_and_drain(self) -> list[SteeringEntry]:
        """Refuse further offers and return what was never pulled."""
        self._closed = True
        rest = list(self._items)
        self._items.clear()
        return rest

    def reset(self, capacity: int | None = None) -> None:
        self._items.clear()
        self._closed = False
        if capacity is not None:
            self.capacity = capacity
