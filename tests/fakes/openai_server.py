"""A real OpenAI-compatible HTTP server for tests, with scripted replies.

``FakeOpenAI`` runs a small Starlette app under uvicorn in a background thread
on ``127.0.0.1:<random port>`` and serves ``POST /v1/chat/completions``
(streamed as SSE or not, as the request asks). Replies come from FIFO queues —
one per model name plus a shared one — filled with :meth:`FakeOpenAI.script`::

    with FakeOpenAI() as fake:
        fake.script(FakeOpenAI.tool_call("calculator", {"expression": "6*7"}),
                    FakeOpenAI.text("It is 42."))
        fake.script(FakeOpenAI.error(500), model="gpt-primary")
        ... point a client at fake.base_url ...
        assert fake.requests[1]["messages"][-1]["role"] == "tool"

Every request body is recorded in ``.requests`` (headers in
``.request_headers``). With no scripted reply left the server answers 500
``no scripted reply`` unless ``default=`` was given, so unexpected calls show.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator


@dataclass
class Reply:
    """One scripted response."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"id", "name", "arguments"}]
    status: int = 200
    error: str | None = None
    usage: tuple[int, int] | None = (11, 7)  # (prompt_tokens, completion_tokens)
    delay_s: float = 0.0  # sleep before answering (timeouts)
    stream_error_after: int | None = None  # emit N content chunks, then an error chunk, no [DONE]
    finish_reason: str | None = None


class FakeOpenAI:
    """Context manager / fixture-friendly fake of an OpenAI-compatible endpoint."""

    def __init__(self, *, default: Reply | None = None, api_key: str | None = None) -> None:
        self.default = default
        self.api_key = api_key  # when set, requests must carry "Bearer <api_key>" (else 401)
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self._queues: dict[str | None, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port: int | None = None

    # -- scripting ------------------------------------------------------------------
    @staticmethod
    def text(content: str, **kw: Any) -> Reply:
        return Reply(content=content, **kw)

    @staticmethod
    def tool_call(name: str, arguments: dict[str, Any] | str, *, id: str | None = None,
                  content: str | None = None, **kw: Any) -> Reply:
        return Reply(content=content, tool_calls=[{"id": id or f"call_{uuid.uuid4().hex[:8]}",
                                                   "name": name, "arguments": arguments}], **kw)

    @staticmethod
    def tool_calls(calls: list[dict[str, Any]], *, content: str | None = None, **kw: Any) -> Reply:
        return Reply(content=content, tool_calls=[{"id": c.get("id") or f"call_{uuid.uuid4().hex[:8]}",
                                                   "name": c["name"], "arguments": c.get("arguments", {})}
                                                  for c in calls], **kw)

    @staticmethod
    def error(status: int = 500, message: str = "scripted failure", **kw: Any) -> Reply:
        return Reply(status=status, error=message, **kw)

    def script(self, *replies: Reply | str, model: str | None = None) -> "FakeOpenAI":
        """Queue replies (a bare string is a text reply); ``model`` scopes them to one model name."""
        with self._lock:
            for reply in replies:
                self._queues[model].append(self.text(reply) if isinstance(reply, str) else reply)
        return self

    def pending(self, model: str | None = None) -> int:
        with self._lock:
            return len(self._queues[model])

    def reset(self) -> None:
        with self._lock:
            self._queues.clear()
            self.requests.clear()
            self.request_headers.clear()

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("model") == model]

    def _next(self, model: str | None) -> Reply:
        with self._lock:
            for key in (model, None):
                if self._queues[key]:
                    return self._queues[key].popleft()
        return self.default or Reply(status=500, error="no scripted reply left")

    # -- lifecycle ------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeOpenAI is not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAI":
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("FakeOpenAI did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # don't wait for clients' idle keep-alive connections
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the app ------------------------------------------------------------------------
    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        async def completions(request: Request) -> Any:
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"error": {"message": "invalid JSON"}}, status_code=400)
            with self._lock:
                self.requests.append(body)
                self.request_headers.append({k.lower(): v for k, v in request.headers.items()})
            if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
                presented = request.headers.get("authorization", "")
                return JSONResponse({"error": {"message": f"Incorrect API key provided: {presented}",
                                               "type": "invalid_request_error"}}, status_code=401)
            reply = self._next(body.get("model"))
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.status >= 400:
                return JSONResponse({"error": {"message": reply.error or "error", "type": "server_error",
                                               "code": reply.status}}, status_code=reply.status)
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return StreamingResponse(self._sse(body, reply, include_usage), media_type="text/event-stream")
            return JSONResponse(self._completion(body, reply))

        return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])

    @staticmethod
    def _args(arguments: Any) -> str:
        return arguments if isinstance(arguments, str) else json.dumps(arguments)

    @staticmethod
    def _usage(reply: Reply) -> dict[str, int] | None:
        if reply.usage is None:
            return None
        p, c = reply.usage
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def _finish(self, reply: Reply) -> str:
        return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [{"id": tc["id"], "type": "function",
                                      "function": {"name": tc["name"], "arguments": self._args(tc["arguments"])}}
                                     for tc in reply.tool_calls]
        out: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish(reply)}],
        }
        if reply.usage is not None:
            out["usage"] = self._usage(reply)
        return out

    async def _sse(self, body: dict[str, Any], reply: Reply, include_usage: bool) -> AsyncIterator[bytes]:
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": body.get("model")}

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n".encode()

        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        pieces = _split_words(reply.content or "")
        for n, piece in enumerate(pieces):
            if reply.stream_error_after is not None and n >= reply.stream_error_after:
                yield f"data: {json.dumps({'error': {'message': 'stream broke', 'type': 'server_error'}})}\n\n".encode()
                return
            yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
            await asyncio.sleep(0)
        for i, tc in enumerate(reply.tool_calls):
            args = self._args(tc["arguments"])
            half = len(args) // 2
            yield event([{"index": 0, "delta": {"tool_calls": [{
                "index": i, "id": tc["id"], "type": "function",
                "function": {"name": tc["name"], "arguments": args[:half]}}]}, "finish_reason": None}])
            yield event([{"index": 0, "delta": {"tool_calls": [{
                "index": i, "function": {"arguments": args[half:]}}]}, "finish_reason": None}])
        yield event([{"index": 0, "delta": {}, "finish_reason": self._finish(reply)}])
        if include_usage and reply.usage is not None:
            yield event([], usage=self._usage(reply))
        yield b"data: [DONE]\n\n"


def _split_words(text: str) -> list[str]:
    """Split on spaces keeping them, so the pieces join back to ``text``."""
    if not text:
        return []
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + ([words[-1]] if words[-1] else [])
