"""Codex ``codex exec --json`` (JSONL) parser.

Native lines handled (one JSON object per line):

* ``{"type":"thread.started","thread_id"}`` → session id
* ``{"type":"turn.started"}``
* ``{"type":"item.started"|"item.updated"|"item.completed","item":{"id","type",…}}`` with item
  types ``agent_message`` {text}, ``reasoning`` {text}, ``command_execution``
  {command, aggregated_output, exit_code, status}, ``mcp_tool_call`` {server, tool,
  arguments, result, error, status}, ``file_change`` {changes, status},
  ``web_search`` {query}, ``todo_list`` {items}, ``error`` {message}
* ``{"type":"turn.completed","usage":{input_tokens, cached_input_tokens, output_tokens}}``
* ``{"type":"turn.failed","error":{"message"}}`` and ``{"type":"error","message"}``

Older builds spelled the item type ``item_type`` and the reply ``assistant_message``;
both spellings are accepted. MCP tools are named ``mcp__<server>__<tool>`` (the
Claude Code convention) so both harnesses report them alike.
"""
from __future__ import annotations

from typing import Any

from ..events import (
    FinalResult,
    HarnessError,
    HarnessEvent,
    Reasoning,
    SessionStarted,
    TextMessage,
    ToolUseResult,
    ToolUseStarted,
    Usage,
)
from . import NativeParser

_TOOL_ITEMS = {"command_execution", "mcp_tool_call", "file_change", "web_search"}
_QUIET_ITEMS = {"todo_list"}


def _item_type(item: dict[str, Any]) -> str:
    itype = item.get("type") or item.get("item_type") or ""
    return "agent_message" if itype == "assistant_message" else str(itype)


def _error_message(err: Any) -> str | None:
    if err is None:
        return None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


class CodexParser(NativeParser):
    kind = "codex"

    def __init__(self) -> None:
        super().__init__()
        self._started: set[str] = set()

    def parse_event(self, obj: dict[str, Any]) -> list[HarnessEvent]:
        etype = obj.get("type")
        if etype == "thread.started":
            tid = obj.get("thread_id")
            if isinstance(tid, str) and tid and tid != self.session_id:
                self.session_id = tid
                return [SessionStarted(tid)]
            return []
        if etype == "turn.started":
            return []
        if etype in ("item.started", "item.updated", "item.completed"):
            item = obj.get("item")
            if not isinstance(item, dict):
                return self.unknown(f"{etype} without an item")
            return self._item(etype, item)
        if etype == "turn.completed":
            usage = obj.get("usage")
            out: list[HarnessEvent] = []
            if isinstance(usage, dict):
                out.append(Usage(usage))
            out.append(FinalResult(is_error=False, text=None, subtype="success"))
            return out
        if etype == "turn.failed":
            msg = _error_message(obj.get("error")) or "turn failed"
            return [FinalResult(is_error=True, text=None, subtype="turn_failed", error=msg)]
        if etype == "error":
            return [HarnessError(_error_message(obj.get("message")) or "codex error")]
        return self.unknown(f"type={etype!r}")

    def _item(self, etype: str, item: dict[str, Any]) -> list[HarnessEvent]:
        itype = _item_type(item)
        item_id = str(item.get("id") or "")
        done = etype == "item.completed"
        if itype == "agent_message":
            return [TextMessage(str(item.get("text") or ""))] if done else []
        if itype == "reasoning":
            return [Reasoning(str(item.get("text") or ""))] if done else []
        if itype == "error":
            return [HarnessError(str(item.get("message") or "codex item error"), fatal=False)] if done else []
        if itype in _QUIET_ITEMS:
            return []
        if itype not in _TOOL_ITEMS:
            return self.unknown(f"item type={itype!r}") if etype != "item.updated" else []
        name, params = self._tool_call(itype, item)
        out: list[HarnessEvent] = []
        if item_id not in self._started and etype != "item.updated":
            self._started.add(item_id)
            out.append(ToolUseStarted(item_id, name, params))
        if done:
            result, error = self._tool_outcome(itype, item)
            out.append(ToolUseResult(item_id, name, result=result, error=error))
        return out

    @staticmethod
    def _tool_call(itype: str, item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if itype == "command_execution":
            return "shell", {"command": item.get("command")}
        if itype == "mcp_tool_call":
            args = item.get("arguments")
            return (f"mcp__{item.get('server') or 'unknown'}__{item.get('tool') or 'unknown'}",
                    args if isinstance(args, dict) else {"arguments": args})
        if itype == "file_change":
            return "file_change", {"changes": item.get("changes") or []}
        return "web_search", {"query": item.get("query")}

    @staticmethod
    def _tool_outcome(itype: str, item: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        status = item.get("status")
        if itype == "command_execution":
            code = item.get("exit_code")
            result = {"output": item.get("aggregated_output") or "", "exit_code": code}
            if status in ("failed", "declined") or (isinstance(code, int) and code != 0):
                return result, f"command {status or 'failed'} (exit code {code})"
            return result, None
        if itype == "mcp_tool_call":
            error = _error_message(item.get("error"))
            res = item.get("result")
            result = res if isinstance(res, dict) else ({"content": res} if res is not None else None)
            if status == "failed" and not error:
                error = "mcp tool call failed"
            return result, error
        if itype == "file_change":
            return {"changes": item.get("changes") or [], "status": status}, (
                "file change failed" if status == "failed" else None)
        return {"query": item.get("query")}, None
