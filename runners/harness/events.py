"""The small internal event model between the native parsers and the assembler.

Parsers (``parsers/claude.py``, ``parsers/codex.py``) turn one native JSON line
into zero or more of these; :mod:`runners.harness.assembly` turns them into
protocol result frames. Nothing here knows about either side's wire format.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class SessionStarted:
    """The harness reported its native session id (Claude ``session_id``, Codex ``thread_id``)."""

    session_id: str


@dataclass(frozen=True)
class TextDelta:
    """A partial piece of assistant text (Claude ``--include-partial-messages``).

    ``block_start`` marks the first delta of a new text block.
    """

    text: str
    block_start: bool = False


@dataclass(frozen=True)
class TextMessage:
    """One complete assistant text block.

    ``streamed`` is true when the parser already emitted :class:`TextDelta` s that
    add up to this text, so the assembler must not stream it a second time.
    """

    text: str
    streamed: bool = False


@dataclass(frozen=True)
class Reasoning:
    """Model reasoning/thinking text. Not part of the reply; kept for completeness."""

    text: str


@dataclass(frozen=True)
class ToolUseStarted:
    tool_call_id: str
    tool_name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolUseResult:
    tool_call_id: str
    tool_name: str | None = None
    result: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Usage:
    """Token usage as the harness reports it (native keys)."""

    usage: dict[str, Any]
    total_cost_usd: float | None = None


@dataclass(frozen=True)
class FinalResult:
    """The harness finished its turn.

    ``text`` is the harness's own final answer when it reports one (Claude's
    ``result``); ``subtype`` is the native outcome (``success``,
    ``error_max_turns``, …).
    """

    is_error: bool = False
    text: str | None = None
    subtype: str = "success"
    error: str | None = None
    #: The harness could not find (or would not accept) the native session it was asked to
    #: resume — Claude Code's ``error_during_execution`` with ``errors: ["No conversation found
    #: with session ID: …"]``. Nothing of the turn ran; a fresh session may take over.
    session_missing: bool = False


@dataclass(frozen=True)
class HarnessError:
    """The harness reported an error (Codex ``turn.failed`` / ``error``)."""

    message: str
    fatal: bool = True


HarnessEvent = Union[SessionStarted, TextDelta, TextMessage, Reasoning, ToolUseStarted,
                     ToolUseResult, Usage, FinalResult, HarnessError]

__all__ = [
    "FinalResult", "HarnessError", "HarnessEvent", "Reasoning", "SessionStarted",
    "TextDelta", "TextMessage", "ToolUseResult", "ToolUseStarted", "Usage",
]
