"""Frame helpers shared by the host and the HTTP layer."""
from __future__ import annotations

import asyncio
from typing import Any

from protocol.results import TERMINAL_TYPES


def is_terminal(frame: dict[str, Any]) -> bool:
    return frame.get("type") in TERMINAL_TYPES


def failed_frame(run_id: str, code: str, error: str, retryable: bool, sequence: int | None) -> dict[str, Any]:
    return {"run_id": run_id, "type": "run.failed",
            "data": {"code": code, "error": error, "retryable": retryable}, "sequence": sequence}


def take_ready(first: Any, queue: asyncio.Queue, end: object) -> tuple[list[Any], bool]:
    """``first`` plus whatever is already queued, stopping at the ``end`` marker: (items, ended).

    Never waits: a batch is what is ready now, so the first item of a burst is never held back,
    and a burst crosses the next hop as one object."""
    items: list[Any] = []
    item = first
    while True:
        if item is end:
            return items, True
        items.append(item)
        if queue.empty():
            return items, False
        item = queue.get_nowait()
