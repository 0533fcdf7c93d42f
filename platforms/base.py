"""What every platform adapter offers, and the pieces they share.

* :class:`PlatformError`: a failed platform call, with ``retryable`` and the platform's
  ``retry_after`` (429 / flood control), which the delivery engine honours;
* :class:`OutboundAdapter`: send / edit text, send a file, render an interaction prompt;
* :class:`Inbound`: what parsing one inbound payload yields — events to run, an interaction
  answer, or an immediate HTTP reply (Slack's URL verification);
* :func:`split_text`: cut a text into platform-sized parts, deterministically.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from protocol.events import EventEnvelope
from protocol.interactions import InteractionRequest


class PlatformError(Exception):
    """A platform call failed. ``message`` never carries a credential."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


@dataclass
class InteractionAnswer:
    """A user's tap on a rendered interaction: the host's interaction id and what was chosen."""

    interaction_id: str
    action_id: str | None
    values: dict[str, Any]
    actor_id: str | None
    actor_name: str | None
    #: Platform handle to acknowledge the tap (Telegram callback_query id, Discord interaction).
    ack: dict[str, Any] = field(default_factory=dict)


@dataclass
class Inbound:
    """The outcome of one inbound payload."""

    events: list[EventEnvelope] = field(default_factory=list)
    answer: InteractionAnswer | None = None
    #: Body to answer the platform with right away (e.g. Slack's ``{"challenge": …}``).
    reply: dict[str, Any] | None = None
    #: The platform's own id of this delivery, for de-duplication of its retries.
    dedupe_key: str | None = None


class OutboundAdapter(ABC):
    """Sends to one platform connection. ``address`` is a reply target the inbound side built."""

    platform: str = ""
    supports_edit: bool = False
    supports_files: bool = False
    max_message_size: int = 4000

    @abstractmethod
    async def send_text(self, address: dict[str, Any], text: str) -> str:
        """Post a message; returns the platform's message id."""

    async def edit_text(self, address: dict[str, Any], message_id: str, text: str) -> None:
        raise PlatformError(f"{self.platform} cannot edit messages", retryable=False)

    async def send_file(self, address: dict[str, Any], name: str, data: bytes, mime_type: str | None) -> str:
        raise PlatformError(f"{self.platform} cannot send files", retryable=False)

    async def send_interaction(self, address: dict[str, Any], interaction_id: str,
                               request: InteractionRequest) -> str:
        """Render a question natively; the default is the request's ``fallback_text``."""
        return await self.send_text(address, fallback_text(interaction_id, request))

    async def acknowledge(self, answer: InteractionAnswer, text: str) -> None:
        """Tell the platform the tap was handled (where it expects that)."""

    async def close(self) -> None:
        """Release connections."""


def fallback_text(interaction_id: str, request: InteractionRequest) -> str:
    """A text-only rendering: the fallback text plus how to answer over HTTP."""
    lines = [request.fallback_text]
    buttons = request.buttons()
    if buttons:
        lines.append("Options: " + ", ".join(label for _, label in buttons))
    lines.append(f"(interaction {interaction_id})")
    return "\n".join(lines)


#: callback data of a rendered button: ``ia:<interaction id>:<index of the choice>`` (≤ 64 bytes).
CALLBACK_PREFIX = "ia:"


def button_data(interaction_id: str, index: int) -> str:
    return f"{CALLBACK_PREFIX}{interaction_id}:{index}"


def parse_button_data(data: str | None) -> tuple[str, int] | None:
    if not data or not data.startswith(CALLBACK_PREFIX):
        return None
    try:
        interaction_id, index = data[len(CALLBACK_PREFIX):].rsplit(":", 1)
        return interaction_id, int(index)
    except ValueError:
        return None


def split_text(text: str, limit: int) -> list[str]:
    """Parts of at most ``limit`` characters, cut at the last newline (else space) in the second
    half of a window, so a part already sent keeps its content as the text grows."""
    if limit < 1:
        raise ValueError("limit must be positive")
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n"), window.rfind(" "))
        if cut < limit // 2:
            cut = limit
        parts.append(rest[:cut])
        rest = rest[cut:].lstrip("\n ") if cut < limit else rest[cut:]
    parts.append(rest)
    return parts


def message_text(content: Any) -> str:
    """Plain text of a result message's ``content`` (a string or a list of content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def parse_interaction_answer(request: InteractionRequest, index: int) -> tuple[str | None, dict[str, Any]]:
    """``(action_id, values)`` of the ``index``-th button of :meth:`InteractionRequest.buttons`."""
    buttons = request.buttons()
    if not 0 <= index < len(buttons):
        raise ValueError("no such choice")
    value = buttons[index][0]
    if request.actions:
        return value, {}
    return None, {request.fields[0].id: value}
