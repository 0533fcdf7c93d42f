"""Frame helpers shared by the host and the HTTP layer."""
from __future__ import annotations

from typing import Any

from protocol.results import TERMINAL_TYPES


def is_terminal(frame: dict[str, Any]) -> bool:
    return frame.get("type") in TERMINAL_TYPES


def failed_frame(run_id: str, code: str, error: str, retryable: bool, sequence: int | None) -> dict[str, Any]:
    return {"run_id": run_id, "type": "run.failed",
            "data": {"code": code, "error": error, "retryable": retryable}, "sequence": sequence}
