"""Native-format parsers: one harness JSON line in, internal events out.

Each parser is stateful per run (it remembers the session id, tool names by
call id, partial-message bookkeeping) and never raises on bad input: malformed
JSON, non-object lines and unknown native events are logged as warnings and
skipped. :func:`make_parser` picks one by harness ``kind``.
"""
from __future__ import annotations

import json
from typing import Any

from ..events import HarnessEvent
from protocol.logs import get_logger

log = get_logger(__name__)

#: After this many warnings about bad lines a parser only logs at debug level.
WARN_LIMIT = 20


class NativeParser:
    """Base of the per-kind parsers. Subclasses implement :meth:`parse_event`."""

    kind: str = "?"

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.lines = 0
        self.bad_lines = 0
        self.unknown_events = 0
        self._warnings = 0

    # -- public entry points -------------------------------------------------
    def parse_line(self, line: bytes | str) -> list[HarnessEvent]:
        """Parse one stdout line (without or with its newline)."""
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        line = line.strip()
        if not line:
            return []
        self.lines += 1
        try:
            obj = json.loads(line)
        except ValueError:
            self.bad_lines += 1
            self._warn("%s: skipped a malformed JSON line (%d chars)", self.kind, len(line))
            return []
        if not isinstance(obj, dict):
            self.bad_lines += 1
            self._warn("%s: skipped a non-object JSON line (%s)", self.kind, type(obj).__name__)
            return []
        try:
            return self.parse_event(obj)
        except Exception:  # a parser bug on odd input must not kill the run
            self.bad_lines += 1
            log.warning("%s: could not interpret a %r event", self.kind, obj.get("type"), exc_info=True)
            return []

    def parse_event(self, obj: dict[str, Any]) -> list[HarnessEvent]:
        raise NotImplementedError

    def parse_lines(self, lines) -> list[HarnessEvent]:
        """Convenience: parse an iterable of lines (fixtures, tests)."""
        out: list[HarnessEvent] = []
        for line in lines:
            out.extend(self.parse_line(line))
        return out

    # -- helpers ---------------------------------------------------------------
    def unknown(self, what: str) -> list[HarnessEvent]:
        self.unknown_events += 1
        self._warn("%s: ignored unknown native event %s", self.kind, what)
        return []

    def _warn(self, msg: str, *args: Any) -> None:
        self._warnings += 1
        if self._warnings <= WARN_LIMIT:
            log.warning(msg, *args)
        else:
            log.debug(msg, *args)


def make_parser(kind: str) -> NativeParser:
    if kind == "claude":
        from .claude import ClaudeParser
        return ClaudeParser()
    if kind == "codex":
        from .codex import CodexParser
        return CodexParser()
    raise ValueError(f"unknown harness kind {kind!r}")


__all__ = ["NativeParser", "make_parser"]
