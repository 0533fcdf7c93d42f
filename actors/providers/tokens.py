"""Token counting for ``count_tokens`` when the provider has no tokenizer we can run.

:func:`estimate_tokens` is the documented estimate: per message 4 tokens of
framing plus ⌈characters / 4⌉ of its text (string content, text parts, tool-call
names and arguments), ⌈characters / 4⌉ of the tools' JSON, plus 3 tokens that
prime the reply. It over-counts rather than under-counts English prose and is
within a small factor for code; it is meant for budgeting a context window, not
billing.

:func:`tiktoken_tokens` counts with ``tiktoken`` when it is installed and knows the
model name (OpenAI models), using the same framing.
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable

MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3
CHARS_PER_TOKEN = 4


def message_texts(message: dict[str, Any]) -> list[str]:
    """The strings of one chat message that a model reads."""
    out: list[str] = []
    content = message.get("content")
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
    for call in message.get("tool_calls") or []:
        fn = (call or {}).get("function") or {}
        out.append(str(fn.get("name") or ""))
        args = fn.get("arguments")
        out.append(args if isinstance(args, str) else json.dumps(args or {}))
    for key in ("name", "tool_call_id"):
        if isinstance(message.get(key), str):
            out.append(message[key])
    return out


def _count(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
           measure: Callable[[str], int]) -> int:
    total = REPLY_PRIMING
    for message in messages:
        total += MESSAGE_OVERHEAD + sum(measure(t) for t in message_texts(message) if t)
    if tools:
        total += measure(json.dumps(tools, separators=(",", ":")))
    return total


def estimate_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    return _count(messages, tools, lambda text: math.ceil(len(text) / CHARS_PER_TOKEN))


def tiktoken_tokens(model: str, messages: list[dict[str, Any]],
                    tools: list[dict[str, Any]] | None = None) -> int | None:
    """Exact for OpenAI models ``tiktoken`` knows; None when it is absent or the model is unknown."""
    try:
        import tiktoken
        encoding = tiktoken.encoding_for_model(model)
    except Exception:  # not installed, unknown model, or its encoding file is not available offline
        return None
    return _count(messages, tools, lambda text: len(encoding.encode(text, disallowed_special=())))
