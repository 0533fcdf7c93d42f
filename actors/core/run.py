"""Per-run bookkeeping a RunActor delegates to: frames, verdicts, undo log, terminal.

Host frames (``run.started``, ``run.queued``, …) and the runner's accepted
results share one host ``sequence`` that starts at 0 and rises by one; that is
the ``agent_run_event.sequence`` of the ledger, so a replay is the stream.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from protocol.lifecycle import RunStatus
from protocol.results import Classified, ResultType, ResultValidator, RunResult

from .lifecycle import status_of


def frame(run_id: str, type_: str, data: dict[str, Any], sequence: int) -> dict[str, Any]:
    return {"run_id": run_id, "type": type_, "data": data, "sequence": sequence}


@dataclass
class StateUndo:
    scope_key: str
    scope: str
    key: str
    previous: Any  # None = the key did not exist


@dataclass
class RunBook:
    run_id: str
    runner_id: str
    validator: ResultValidator = field(init=False)
    next_sequence: int = 0
    assistant_text: list[str] = field(default_factory=list)
    completed_message: dict[str, Any] | None = None
    undo: list[StateUndo] = field(default_factory=list)
    unflushed: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    sent_texts: list[str] = field(default_factory=list)  # explicit messages (message_send), in order

    def __post_init__(self) -> None:
        self.validator = ResultValidator(self.run_id)

    def host_frame(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        f = frame(self.run_id, type_, data, self.next_sequence)
        self.next_sequence += 1
        self.unflushed.append(f)
        return f

    def take_unflushed(self) -> list[dict[str, Any]]:
        out, self.unflushed = self.unflushed, []
        return out

    def accept(self, raw: Any) -> tuple[Classified, dict[str, Any] | None]:
        """Validate one raw runner result; return the frame to relay (None = not relayed)."""
        verdict = self.validator.check(raw)
        if not verdict.accepted:
            return verdict, None
        result = verdict.result
        if result.type == ResultType.MESSAGE_DELTA.value:
            chunk = result.data.get("chunk") or {}
            content = chunk.get("content")
            if isinstance(content, str):
                self.assistant_text.append(content)
        elif result.type == ResultType.MESSAGE_COMPLETED.value:
            self.completed_message = result.data.get("message")
        if result.is_terminal:
            return verdict, None  # the terminal frame is emitted by finish()
        return verdict, self.host_frame(result.type, result.data)

    def record_message_sent(self, text: str) -> None:
        """The runner spoke through ``message_send``: a run that ends without message results has
        still answered (no ``runner.empty_output``), and what it said is its transcript item."""
        self.validator.saw_message = True
        self.sent_texts.append(text)

    def record_state_write(self, scope_key: str, scope: str, key: str, previous: Any) -> None:
        # Only the first write of a key in this run matters for rollback.
        if not any(u.scope_key == scope_key and u.key == key for u in self.undo):
            self.undo.append(StateUndo(scope_key, scope, key, previous))

    def assistant_message(self) -> str | None:
        if self.completed_message is not None:
            content = self.completed_message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
        if self.assistant_text:
            return "".join(self.assistant_text)
        terminal = self.validator.terminal
        if terminal is not None and isinstance(terminal.data.get("message"), dict):
            content = terminal.data["message"].get("content")
            return content if isinstance(content, str) else None
        if self.sent_texts:  # it answered through message_send only
            return "\n\n".join(self.sent_texts)
        return None

    def finish(self, override: RunResult | None = None) -> tuple[RunStatus, dict[str, Any]]:
        """Terminal status and frame. ``override`` wins (timeout, cancel, crash)."""
        terminal = override or self.validator.finish()
        return status_of(terminal.type, terminal.data.get("code")), self.host_frame(terminal.type, terminal.data)
