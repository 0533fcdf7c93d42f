"""Internal harness events → protocol result frames (SPEC §5).

:class:`ResultAssembler` is fed :mod:`runners.harness.events` one at a time and
returns the :class:`~protocol.results.RunResult` frames to yield:

* text → ``message.delta`` (streamed as it arrives; blocks separated by a blank
  line, so the deltas concatenate to exactly the completed message);
* tool use → ``tool.call.started`` / ``tool.call.completed``;
* a native session id → ``state.updated`` {scope ``conversation``, key
  ``external.session_id``} once, for a run that started a new native session. A
  run that resumed a session keeps that id whatever the harness reports:
  Claude Code 2.1.x tags every ``--resume`` invocation with a fresh
  ``session_id`` that names no session on disk (upstream #8069 / #58760) — the
  transcript is appended to the resumed session's file, and only the original id
  resumes again. Persisting the tag would break the next turn with "No
  conversation found", so it is recorded in :attr:`ResultAssembler.invocation_ids`
  and never stored;
* :meth:`resume_failed` → the ``action.requested`` ``session.resume_failed``
  frame that tells the client and the record that a turn lost its native context;
* the end of the run (:meth:`finish` / :meth:`fail`) → at most one
  ``message.completed`` (whenever any assistant text was produced) followed by
  exactly one terminal ``run.completed`` or ``run.failed``.

Every string that leaves the assembler goes through the run's
:class:`~runners.harness.redact.Redactor`.
"""
from __future__ import annotations

from typing import Any

from protocol.logs import get_logger
from protocol.results import RunResult

from .events import (
    FinalResult,
    HarnessError,
    HarnessEvent,
    Reasoning,
    SessionStarted,
    TextDelta,
    TextMessage,
    ToolUseResult,
    ToolUseStarted,
    Usage,
)
from .redact import Redactor

log = get_logger(__name__)

SESSION_STATE_KEY = "external.session_id"
#: ``action.requested`` contract with the host (runners/README.md): a resume fell back to a
#: fresh native session, so the conversation's earlier context is gone for the harness.
RESUME_FAILED_ACTION = "session.resume_failed"
RESUME_FAILED_TARGET = {"kind": "harness_session"}
MAX_REASON_CHARS = 500
BLOCK_SEPARATOR = "\n\n"
MAX_ERROR_CHARS = 4000


def normalize_usage(native: dict[str, Any], total_cost_usd: float | None = None) -> dict[str, Any]:
    """Native usage → LangBot ``LLMTokenUsage`` (prompt/completion/total + native extras)."""
    usage: dict[str, Any] = {k: v for k, v in native.items() if isinstance(k, str)}

    def num(key: str) -> int:
        v = native.get(key)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0

    prompt = num("input_tokens") + num("cache_creation_input_tokens") + num("cache_read_input_tokens")
    completion = num("output_tokens")
    usage.setdefault("prompt_tokens", prompt)
    usage.setdefault("completion_tokens", completion)
    usage.setdefault("total_tokens", prompt + completion)
    if total_cost_usd is not None:
        usage["total_cost_usd"] = total_cost_usd
    return usage


class ResultAssembler:
    def __init__(self, run_id: str, *, resumed_session_id: str | None = None,
                 state_scope: str = "conversation", state_key: str = SESSION_STATE_KEY,
                 redactor: Redactor | None = None) -> None:
        self.run_id = run_id
        self.state_scope = state_scope
        self.state_key = state_key
        self.redactor = redactor or Redactor()
        self.resumed_session_id = resumed_session_id
        self.session_id: str | None = None
        #: Per-invocation ids reported while resuming ``resumed_session_id`` (never persisted).
        self.invocation_ids: list[str] = []
        self.final: FinalResult | None = None
        self.errors: list[str] = []
        self.usage: dict[str, Any] | None = None
        self.terminal: RunResult | None = None
        self._segments: list[str] = []
        self._open_stream = False     # the last segment is being streamed through deltas
        self._reported_ids: set[str] = set()
        self._tool_names: dict[str, str] = {}

    # -- feeding -------------------------------------------------------------
    @property
    def text(self) -> str:
        return BLOCK_SEPARATOR.join(s for s in self._segments if s)

    @property
    def done(self) -> bool:
        return self.terminal is not None

    def feed(self, event: HarnessEvent) -> list[RunResult]:
        if self.terminal is not None:
            return []
        if isinstance(event, SessionStarted):
            return self._session(event.session_id)
        if isinstance(event, TextDelta):
            return self._delta(event)
        if isinstance(event, TextMessage):
            return self._message(event)
        if isinstance(event, ToolUseStarted):
            self._close_stream()
            self._tool_names[event.tool_call_id] = event.tool_name
            return [self._frame("tool.call.started", {
                "tool_call_id": event.tool_call_id, "tool_name": event.tool_name,
                "parameters": event.parameters if isinstance(event.parameters, dict) else {},
            })]
        if isinstance(event, ToolUseResult):
            name = event.tool_name or self._tool_names.get(event.tool_call_id) or "unknown"
            result = event.result
            if result is not None and not isinstance(result, dict):
                result = {"content": result}
            return [self._frame("tool.call.completed", {
                "tool_call_id": event.tool_call_id, "tool_name": name,
                "result": result, "error": event.error,
            })]
        if isinstance(event, Usage):
            self.usage = normalize_usage(event.usage, event.total_cost_usd)
            return []
        if isinstance(event, FinalResult):
            self.final = event
            return []
        if isinstance(event, HarnessError):
            self.errors.append(event.message)
            log.warning("run %s: harness reported an error: %s", self.run_id,
                        self.redactor.scrub_diagnostic(event.message)[:500])
            return []
        if isinstance(event, Reasoning):
            return []
        log.warning("run %s: unknown internal event %r", self.run_id, type(event).__name__)
        return []

    def _session(self, session_id: str) -> list[RunResult]:
        self.session_id = session_id
        if self.resumed_session_id is not None:
            if session_id != self.resumed_session_id and session_id not in self.invocation_ids:
                self.invocation_ids.append(session_id)
                log.info("run %s: harness tagged this resume of %s as %s; keeping the resumed id",
                         self.run_id, self.resumed_session_id, session_id)
            return []
        if session_id in self._reported_ids:
            return []
        self._reported_ids.add(session_id)
        return [self._frame("state.updated", {"scope": self.state_scope, "key": self.state_key,
                                              "value": session_id})]

    def _delta(self, event: TextDelta) -> list[RunResult]:
        if not event.text:
            return []
        chunk = event.text
        if event.block_start or not self._open_stream:
            if self.text:
                chunk = BLOCK_SEPARATOR + chunk
            self._segments.append(event.text)
            self._open_stream = True
        else:
            self._segments[-1] += event.text
        return [self._delta_frame(chunk)]

    def _message(self, event: TextMessage) -> list[RunResult]:
        if event.streamed and self._segments:
            # Already streamed: the full block is authoritative for the transcript.
            self._segments[-1] = event.text if event.text else self._segments[-1]
            self._open_stream = False
            return []
        self._close_stream()
        if not event.text:
            return []
        chunk = (BLOCK_SEPARATOR + event.text) if self.text else event.text
        self._segments.append(event.text)
        return [self._delta_frame(chunk)]

    def _close_stream(self) -> None:
        self._open_stream = False

    # -- ending ----------------------------------------------------------------
    def finish(self, exit_code: int | None, stderr_tail: str = "") -> list[RunResult]:
        """The process ended (or was stopped after its final result): the terminal frames."""
        if self.terminal is not None:
            return []
        final = self.final
        if final is not None and not final.is_error:
            if not self.text and final.text:
                return [*self._message(TextMessage(final.text)), *self._complete()]
            if exit_code not in (0, None):
                log.warning("run %s: harness exited with %s after a successful result",
                            self.run_id, exit_code)
            return self._complete()
        if final is not None:
            detail = final.error or final.subtype
            return self.fail(f"harness.{final.subtype}" if final.subtype != "success" else "harness.error",
                             f"harness reported {final.subtype}: {detail}")
        if exit_code not in (0, None):
            how = (f"was killed by signal {-exit_code}" if exit_code < 0
                   else f"exited with code {exit_code}")
            parts = [f"harness {how} without a result"]
            if self.errors:
                parts.append("error: " + self.errors[-1])
            if stderr_tail.strip():
                parts.append("stderr: " + stderr_tail.strip())
            return self.fail("harness.exit_nonzero", "; ".join(parts))
        if self.errors:
            return self.fail("harness.error", self.errors[-1])
        if self.text:
            return self._complete()
        return self.fail("harness.no_result", "harness exited without a result or any message"
                         + (f"; stderr: {stderr_tail.strip()}" if stderr_tail.strip() else ""))

    def fail(self, code: str, error: str, retryable: bool = False) -> list[RunResult]:
        """A terminal failure (from the harness, or the process layer: timeout, caps, …)."""
        if self.terminal is not None:
            return []
        out = self._completed_message()
        error = self.redactor.scrub_diagnostic(error)
        if len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS] + "…"
        self.terminal = self._frame("run.failed", {"code": code, "error": error, "retryable": retryable},
                                    usage=self.usage)
        return [*out, self.terminal]

    def _complete(self) -> list[RunResult]:
        out = self._completed_message()
        if not out:
            return self.fail("runner.empty_output", "harness finished without producing any message")
        self.terminal = self._frame("run.completed", {"finish_reason": "stop"}, usage=self.usage)
        return [*out, self.terminal]

    def _completed_message(self) -> list[RunResult]:
        text = self.text
        if not text:
            return []
        return [self._frame("message.completed",
                            {"message": {"role": "assistant", "content": text}, "file_ids": []})]

    def resume_failed(self, reason: str, previous_session_id: str | None) -> RunResult:
        """``action.requested`` ``session.resume_failed``: ``previous_session_id`` could not be
        resumed and this turn ran in a fresh native session (its id, if the harness reported one)."""
        reason = self.redactor.scrub_diagnostic(reason.strip() or "the native session could not be resumed")
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS] + "…"
        return self._frame("action.requested", {
            "action": RESUME_FAILED_ACTION, "target": dict(RESUME_FAILED_TARGET),
            "payload": {"resumed": False, "reason": reason, "previous_session_id": previous_session_id,
                        "new_session_id": self.session_id}})

    # -- frames ----------------------------------------------------------------
    def _delta_frame(self, text: str) -> RunResult:
        return self._frame("message.delta", {"chunk": {"role": "assistant", "content": text}})

    def _frame(self, rtype: str, data: dict[str, Any], usage: dict[str, Any] | None = None) -> RunResult:
        return RunResult(run_id=self.run_id, type=rtype, data=self.redactor.scrub_obj(data),
                         usage=self.redactor.scrub_obj(usage) if usage else None)
