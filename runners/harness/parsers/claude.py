"""Claude Code ``--output-format stream-json --verbose`` parser.

Native lines handled (one JSON object per line):

* ``{"type":"system","subtype":"init","session_id",…,"tools","mcp_servers"}``
* ``{"type":"assistant","message":{"content":[{"type":"text"|"tool_use"|"thinking",…}]},
  "parent_tool_use_id","session_id"}``
* ``{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id","content","is_error"}]}}``
* ``{"type":"stream_event","event":{"type":"content_block_delta","delta":{"type":"text_delta","text"}}}``
  (``--include-partial-messages``); other stream events are bookkeeping only.
* ``{"type":"result","subtype":"success"|"error_max_turns"|"error_during_execution"|…,
  "is_error","result","session_id","usage","total_cost_usd","errors"}`` — a ``--resume``
  of a session Claude Code cannot load is this line alone (``error_during_execution``,
  the stale ``session_id``, ``errors: ["No conversation found with session ID: …"]``,
  exit 1), parsed as ``FinalResult(session_missing=True)``.

Every line may carry ``session_id``; the first one seen (and any change) becomes
a :class:`SessionStarted`. Text produced inside a sub-agent (``parent_tool_use_id``
set) is not part of the reply and is reported as :class:`Reasoning`.
"""
from __future__ import annotations

import re
from typing import Any

from ..events import (
    FinalResult,
    HarnessEvent,
    Reasoning,
    SessionStarted,
    TextDelta,
    TextMessage,
    ToolUseResult,
    ToolUseStarted,
    Usage,
)
from . import NativeParser, log

#: What Claude Code says (in ``result.errors``) when ``--resume`` names a session it cannot
#: load: the session file is gone (``No conversation found with session ID: <id>``) or the
#: value is not a usable session id (``--resume requires a valid session ID …``).
SESSION_MISSING_RE = re.compile(r"No conversation found with session ID|--resume requires a valid session ID")

_KNOWN_SYSTEM = {"init", "compact_boundary", "status", "hook_response", "hook_started",
                 "api_retry", "informational"}
_QUIET_STREAM = {"message_start", "message_delta", "message_stop", "ping"}


def tool_result_text(content: Any) -> str:
    """Flatten a ``tool_result`` content (string or list of blocks) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict):
                if block.get("type") == "text":
                    parts.append(str(block.get("text") or ""))
                else:
                    parts.append(f"[{block.get('type', 'block')}]")
            else:
                parts.append(str(block))
        return "".join(parts)
    return str(content)


class ClaudeParser(NativeParser):
    kind = "claude"

    def __init__(self) -> None:
        super().__init__()
        self.init: dict[str, Any] | None = None
        self._tool_names: dict[str, str] = {}
        # Number of text blocks whose deltas were streamed and whose full
        # ``assistant`` message has not arrived yet.
        self._streamed_pending = 0
        self._block_open = False
        self._pending_start = False

    def parse_event(self, obj: dict[str, Any]) -> list[HarnessEvent]:
        out: list[HarnessEvent] = []
        sid = obj.get("session_id")
        if isinstance(sid, str) and sid and sid != self.session_id:
            self.session_id = sid
            out.append(SessionStarted(sid))
        etype = obj.get("type")
        handler = {
            "system": self._system,
            "assistant": self._assistant,
            "user": self._user,
            "stream_event": self._stream_event,
            "result": self._result,
        }.get(etype)
        if handler is None:
            return out + self.unknown(f"type={etype!r}")
        return out + handler(obj)

    # -- handlers ------------------------------------------------------------
    def _system(self, obj: dict[str, Any]) -> list[HarnessEvent]:
        subtype = obj.get("subtype")
        if subtype == "init":
            self.init = {k: obj.get(k) for k in ("cwd", "model", "tools", "mcp_servers",
                                                  "permissionMode", "claude_code_version")}
            return []
        if subtype not in _KNOWN_SYSTEM:
            return self.unknown(f"system subtype={subtype!r}")
        return []

    def _assistant(self, obj: dict[str, Any]) -> list[HarnessEvent]:
        message = obj.get("message") or {}
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        nested = bool(obj.get("parent_tool_use_id"))
        out: list[HarnessEvent] = []
        for block in content or []:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "text":
                text = str(block.get("text") or "")
                if nested:
                    out.append(Reasoning(text))
                    continue
                streamed = self._streamed_pending > 0
                if streamed:
                    self._streamed_pending -= 1
                out.append(TextMessage(text, streamed=streamed))
            elif btype in ("tool_use", "server_tool_use", "mcp_tool_use"):
                call_id = str(block.get("id") or "")
                name = str(block.get("name") or "tool")
                self._tool_names[call_id] = name
                params = block.get("input")
                out.append(ToolUseStarted(call_id, name, params if isinstance(params, dict) else {"input": params}))
            elif btype in ("thinking", "redacted_thinking"):
                out.append(Reasoning(str(block.get("thinking") or "")))
            else:
                self.unknown(f"assistant content type={btype!r}")
        return out

    def _user(self, obj: dict[str, Any]) -> list[HarnessEvent]:
        message = obj.get("message") or {}
        content = message.get("content") if isinstance(message, dict) else None
        out: list[HarnessEvent] = []
        if not isinstance(content, list):
            return out  # a replayed user prompt (string content): nothing to report
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            call_id = str(block.get("tool_use_id") or "")
            text = tool_result_text(block.get("content"))
            is_error = bool(block.get("is_error"))
            out.append(ToolUseResult(
                call_id, self._tool_names.get(call_id),
                result=None if is_error else {"content": text},
                error=(text or "tool error") if is_error else None,
            ))
        return out

    def _stream_event(self, obj: dict[str, Any]) -> list[HarnessEvent]:
        event = obj.get("event") or {}
        if obj.get("parent_tool_use_id"):
            return []
        etype = event.get("type") if isinstance(event, dict) else None
        if etype == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "text":
                self._streamed_pending += 1
                self._block_open = True
                self._pending_start = True
            return []
        if etype == "content_block_stop":
            self._block_open = False
            return []
        if etype == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") != "text_delta":
                return []  # input_json_delta, thinking_delta, signature_delta
            text = str(delta.get("text") or "")
            start = self._pending_start
            if not self._block_open:  # a delta without content_block_start
                self._streamed_pending += 1
                self._block_open = True
                start = True
            self._pending_start = False
            return [TextDelta(text, block_start=start)] if text else []
        if etype in _QUIET_STREAM:
            return []
        log.debug("claude: ignored stream event %r", etype)
        return []

    def _result(self, obj: dict[str, Any]) -> list[HarnessEvent]:
        out: list[HarnessEvent] = []
        usage = obj.get("usage")
        cost = obj.get("total_cost_usd")
        if isinstance(usage, dict) or cost is not None:
            out.append(Usage(usage if isinstance(usage, dict) else {},
                             float(cost) if isinstance(cost, (int, float)) else None))
        subtype = str(obj.get("subtype") or "success")
        is_error = bool(obj.get("is_error")) or subtype != "success"
        result = obj.get("result")
        text = result if isinstance(result, str) else None
        error = None
        if is_error:
            errors = obj.get("errors")
            if isinstance(errors, list) and errors:
                error = "; ".join(str(e) for e in errors)
            else:
                error = text or subtype
        missing = bool(is_error and error and subtype == "error_during_execution"
                       and SESSION_MISSING_RE.search(error))
        out.append(FinalResult(is_error=is_error, text=text, subtype=subtype, error=error,
                               session_missing=missing))
        return out
