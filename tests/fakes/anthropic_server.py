"""A real Anthropic Messages API server for tests, with scripted replies.

``FakeAnthropic`` serves, over real HTTP on ``127.0.0.1:<random port>``:

* ``POST /v1/messages`` — JSON, or SSE when the body says ``"stream": true``, in the
  Messages API's event grammar (``message_start``, ``content_block_start``,
  ``content_block_delta`` with ``text_delta`` / ``input_json_delta``,
  ``content_block_stop``, ``message_delta`` with ``stop_reason`` and ``usage``,
  ``message_stop``, and ``ping``); errors as ``{"type": "error", "error": {"type",
  "message"}}`` with the API's status codes;
* ``POST /v1/messages/count_tokens`` — ``{"input_tokens": n}`` (words of the text, a fake
  tokenizer);

and answers anything else with 404 (recorded, so a test sees what a client asked for).
The ``x-api-key`` header must equal ``api_key`` when one is set (401 otherwise).

Replies come from a FIFO queue filled with :meth:`FakeAnthropic.script`; with none
queued, ``responder(body) -> AReply`` answers if set, else 500 ``no scripted reply``.
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from ._server import ThreadedServer

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


@dataclass
class AReply:
    """One scripted Messages API response."""

    text: str | None = None
    tool_uses: list[dict[str, Any]] = field(default_factory=list)  # [{"id"?, "name", "input"}]
    status: int = 200
    error: str | None = None
    usage: tuple[int, int] = (13, 5)  # (input_tokens, output_tokens)
    delay_s: float = 0.0
    stop_reason: str | None = None


def message_text(message: dict[str, Any]) -> str:
    """The text of one request message (string content or text blocks)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(str(b.get("text") or "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def last_text(message: dict[str, Any]) -> str:
    """The last text block of a message (Claude Code puts system reminders in earlier blocks)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    texts = [str(b.get("text") or "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]
    return texts[-1] if texts else ""


def tool_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content or [] if isinstance(b, dict) and b.get("type") == "tool_result"] \
        if isinstance(content, list) else []


class FakeAnthropic(ThreadedServer):
    name = "fake-anthropic"

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.request_paths: list[str] = []
        self.request_headers: list[dict[str, str]] = []
        self.responder: Callable[[dict[str, Any]], AReply] | None = None
        self._queue: deque[AReply] = deque()
        self._lock = threading.Lock()
        self.open_streams = 0

    @property
    def base_url(self) -> str:
        """What ``ANTHROPIC_BASE_URL`` / LiteLLM's ``api_base`` take (no ``/v1``)."""
        return self.origin

    # -- scripting ------------------------------------------------------------------
    @staticmethod
    def text(text: str, **kw: Any) -> AReply:
        return AReply(text=text, **kw)

    @staticmethod
    def tool_use(name: str, tool_input: dict[str, Any], *, text: str | None = None, **kw: Any) -> AReply:
        return AReply(text=text, tool_uses=[{"id": f"toolu_{uuid.uuid4().hex[:20]}", "name": name,
                                             "input": tool_input}], **kw)

    @staticmethod
    def error(status: int = 500, message: str = "scripted failure", **kw: Any) -> AReply:
        return AReply(status=status, error=message, **kw)

    def script(self, *replies: AReply | str) -> "FakeAnthropic":
        with self._lock:
            self._queue.extend(self.text(r) if isinstance(r, str) else r for r in replies)
        return self

    def messages_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [b for b, p in zip(self.requests, self.request_paths) if p == "/v1/messages"]

    def _next(self, body: dict[str, Any]) -> AReply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None:
            return self.responder(body)
        return AReply(status=500, error="no scripted reply left")

    # -- the app ------------------------------------------------------------------------
    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        def error(status: int, message: str) -> JSONResponse:
            return JSONResponse({"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"),
                                                            "message": message}}, status_code=status)

        async def recorded(request: Request) -> dict[str, Any] | JSONResponse:
            raw = await request.body()
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"_raw": raw[:200].decode("utf-8", "replace")}
            with self._lock:
                self.requests.append(body)
                self.request_paths.append(request.url.path)
                self.request_headers.append({k.lower(): v for k, v in request.headers.items()})
            if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
                return error(401, "invalid x-api-key")
            if not isinstance(body, dict) or "_raw" in body:
                return error(400, "the request body is not a JSON object")
            return body

        async def messages(request: Request) -> Any:
            body = await recorded(request)
            if isinstance(body, JSONResponse):
                return body
            if not isinstance(body.get("messages"), list) or not isinstance(body.get("max_tokens"), int):
                return error(400, "messages and max_tokens are required")
            reply = self._next(body)
            if body.get("stream") and reply.status < 400:
                # a delay happens inside the stream: a client that gives up just closes it
                return StreamingResponse(self._sse(body, reply), media_type="text/event-stream")
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.status >= 400:
                return error(reply.status, reply.error or "error")
            return JSONResponse(self._message(body, reply))

        async def count_tokens(request: Request) -> Any:
            body = await recorded(request)
            if isinstance(body, JSONResponse):
                return body
            words = sum(len(re.findall(r"\w+", message_text(m))) for m in body.get("messages") or [])
            words += len(re.findall(r"\w+", json.dumps(body.get("system") or "")))
            return JSONResponse({"input_tokens": words})

        async def other(request: Request) -> Any:
            await recorded(request)
            return error(404, f"{request.method} {request.url.path} is not served by the fake")

        return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"]),
                                 Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
                                 Route("/{path:path}", other, methods=["GET", "POST", "PUT", "DELETE"])])

    # -- bodies -------------------------------------------------------------------------
    @staticmethod
    def _blocks(reply: AReply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reply.text:
            blocks.append({"type": "text", "text": reply.text})
        for use in reply.tool_uses:
            blocks.append({"type": "tool_use", "id": use.get("id") or f"toolu_{uuid.uuid4().hex[:20]}",
                           "name": use["name"], "input": use.get("input") or {}})
        return blocks

    @staticmethod
    def _stop(reply: AReply) -> str:
        return reply.stop_reason or ("tool_use" if reply.tool_uses else "end_turn")

    def _message(self, body: dict[str, Any], reply: AReply) -> dict[str, Any]:
        i, o = reply.usage
        return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                "model": body.get("model"), "content": self._blocks(reply), "stop_reason": self._stop(reply),
                "stop_sequence": None, "usage": {"input_tokens": i, "output_tokens": o,
                                                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}

    async def _sse(self, body: dict[str, Any], reply: AReply) -> AsyncIterator[bytes]:
        def event(etype: str, **payload: Any) -> bytes:
            return f"event: {etype}\ndata: {json.dumps({'type': etype, **payload})}\n\n".encode()

        i, o = reply.usage
        self.open_streams += 1
        try:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            yield event("message_start", message={
                "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                "model": body.get("model"), "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": i, "output_tokens": 1, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0}})
            yield event("ping")
            for index, block in enumerate(self._blocks(reply)):
                if block["type"] == "text":
                    yield event("content_block_start", index=index, content_block={"type": "text", "text": ""})
                    words = block["text"].split(" ")
                    for n, word in enumerate(words):
                        piece = word if n == len(words) - 1 else word + " "
                        yield event("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
                        await asyncio.sleep(0)
                else:
                    yield event("content_block_start", index=index, content_block={
                        "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}})
                    args = json.dumps(block["input"])
                    half = len(args) // 2
                    for part in (args[:half], args[half:]):
                        yield event("content_block_delta", index=index,
                                    delta={"type": "input_json_delta", "partial_json": part})
                yield event("content_block_stop", index=index)
            yield event("message_delta", delta={"stop_reason": self._stop(reply), "stop_sequence": None},
                        usage={"output_tokens": o})
            yield event("message_stop")
        finally:
            self.open_streams -= 1
