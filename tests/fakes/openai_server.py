"""A real OpenAI-compatible HTTP server for tests, with scripted replies.

``FakeOpenAI`` runs a small Starlette app under uvicorn in a background thread
on ``127.0.0.1:<random port>`` and serves

* ``POST /v1/chat/completions`` (streamed as SSE or not, as the request asks);
* ``POST /v1/responses`` (the Responses API, SSE as Codex reads it:
  ``response.created`` → ``response.output_item.added`` → ``response.output_text.delta``…
  → ``response.output_item.done``
  → ``response.completed``);
* ``POST /v1/embeddings`` — deterministic bag-of-words vectors (:meth:`FakeOpenAI.embedding`),
  so texts sharing words are close by cosine;
* ``POST /v1/rerank`` and ``/v2/rerank`` (Cohere / Jina shape: ``{"results": [{"index",
  "relevance_score", "document"?}]}``) scored by :meth:`FakeOpenAI.relevance`.

Chat and Responses replies come from FIFO queues — one per model name plus a
shared one — filled with :meth:`FakeOpenAI.script`; with none queued, ``responder``
(a function of the request body) answers if set. Embeddings and rerank answer a
queued error ``Reply`` for their model, else compute::

    with FakeOpenAI() as fake:
        fake.script(FakeOpenAI.tool_call("calculator", {"expression": "6*7"}),
                    FakeOpenAI.text("It is 42."))
        fake.script(FakeOpenAI.error(500), model="gpt-primary")
        ... point a client at fake.base_url ...
        assert fake.requests[1]["messages"][-1]["role"] == "tool"

Every request body is recorded in ``.requests`` (headers in
``.request_headers``, paths in ``.request_paths``). With no scripted reply left the
server answers 500 ``no scripted reply`` unless ``default=`` or ``responder`` was
given, so unexpected calls show.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from ._server import ThreadedServer


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


class FakeOpenAI(ThreadedServer):
    """Context manager / fixture-friendly fake of an OpenAI-compatible endpoint."""

    name = "fake-openai"

    def __init__(self, *, default: Reply | None = None, api_key: str | None = None) -> None:
        super().__init__()
        self.default = default
        self.api_key = api_key  # when set, requests must carry "Bearer <api_key>" (else 401)
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.request_paths: list[str] = []
        #: Answers a chat / Responses request when nothing is queued: ``responder(body) -> Reply``.
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self.embedding_dim = EMBEDDING_DIM
        self._queues: dict[str | None, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()

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
            self.request_paths.clear()

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("model") == model]

    def _next(self, model: str | None, body: dict[str, Any] | None = None) -> Reply:
        with self._lock:
            for key in (model, None):
                if self._queues[key]:
                    return self._queues[key].popleft()
        if self.responder is not None and body is not None:
            return self.responder(body)
        return self.default or Reply(status=500, error="no scripted reply left")

    def _queued_error(self, model: str | None) -> Reply | None:
        """A scripted error for ``model`` (embeddings / rerank answer it instead of computing)."""
        with self._lock:
            queue = self._queues[model]
            if queue and queue[0].status >= 400:
                return queue.popleft()
        return None

    # -- the deterministic "models" of embeddings and rerank -----------------------------
    @staticmethod
    def embedding(text: str, dim: int = 0) -> list[float]:
        """Unit-length bag-of-words vector: each word adds ±1 at a hashed index."""
        dim = dim or EMBEDDING_DIM
        vec = [0.0] * dim
        for word in _words(text):
            h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
            vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [round(v / norm, 6) for v in vec]

    @staticmethod
    def relevance(query: str, document: str) -> float:
        """Share of the query's distinct words that occur in the document (0..1)."""
        q = set(_words(query))
        return round(len(q & set(_words(document))) / len(q), 6) if q else 0.0

    # -- lifecycle (ThreadedServer) ----------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

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
                self.request_paths.append(request.url.path)
            if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
                presented = request.headers.get("authorization", "")
                return JSONResponse({"error": {"message": f"Incorrect API key provided: {presented}",
                                               "type": "invalid_request_error"}}, status_code=401)
            reply = self._next(body.get("model"), body)
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
            if reply.status >= 400:
                return JSONResponse({"error": {"message": reply.error or "error", "type": "server_error",
                                               "code": reply.status}}, status_code=reply.status)
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return StreamingResponse(self._sse(body, reply, include_usage), media_type="text/event-stream")
            return JSONResponse(self._completion(body, reply))

        async def recorded(request: Request) -> dict[str, Any] | JSONResponse:
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"error": {"message": "invalid JSON"}}, status_code=400)
            with self._lock:
                self.requests.append(body)
                self.request_headers.append({k.lower(): v for k, v in request.headers.items()})
                self.request_paths.append(request.url.path)
            if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
                return JSONResponse({"error": {"message": "Incorrect API key provided",
                                               "type": "invalid_request_error"}}, status_code=401)
            if not isinstance(body, dict):
                return JSONResponse({"error": {"message": "body must be an object"}}, status_code=400)
            return body

        def error_response(reply: Reply) -> JSONResponse:
            return JSONResponse({"error": {"message": reply.error or "error", "type": "server_error",
                                           "code": reply.status}}, status_code=reply.status)

        async def embeddings(request: Request) -> Any:
            body = await recorded(request)
            if isinstance(body, JSONResponse):
                return body
            if (failure := self._queued_error(body.get("model"))) is not None:
                return error_response(failure)
            raw = body.get("input")
            texts = [raw] if isinstance(raw, str) else raw
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                return JSONResponse({"error": {"message": "input must be a string or a list of strings",
                                               "type": "invalid_request_error"}}, status_code=400)
            dim = body.get("dimensions") or self.embedding_dim
            tokens = sum(len(_words(t)) for t in texts)
            return JSONResponse({"object": "list", "model": body.get("model"),
                                 "data": [{"object": "embedding", "index": i, "embedding": self.embedding(t, dim)}
                                          for i, t in enumerate(texts)],
                                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

        async def rerank(request: Request) -> Any:
            body = await recorded(request)
            if isinstance(body, JSONResponse):
                return body
            if (failure := self._queued_error(body.get("model"))) is not None:
                return error_response(failure)
            query, docs = body.get("query"), body.get("documents")
            if not isinstance(query, str) or not isinstance(docs, list):
                return JSONResponse({"error": {"message": "query and documents are required",
                                               "type": "invalid_request_error"}}, status_code=400)
            texts = [d if isinstance(d, str) else str((d or {}).get("text", "")) for d in docs]
            results = sorted(({"index": i, "relevance_score": self.relevance(query, t)} for i, t in enumerate(texts)),
                             key=lambda r: (-r["relevance_score"], r["index"]))
            if isinstance(body.get("top_n"), int):
                results = results[:body["top_n"]]
            if body.get("return_documents"):
                for r in results:
                    r["document"] = {"text": texts[r["index"]]}
            return JSONResponse({"id": f"rerank-{uuid.uuid4().hex[:8]}", "model": body.get("model"),
                                 "results": results, "usage": {"total_tokens": sum(len(_words(t)) for t in texts)}})

        async def responses(request: Request) -> Any:
            body = await recorded(request)
            if isinstance(body, JSONResponse):
                return body
            reply = self._next(body.get("model"), body)
            if reply.status >= 400:
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                return error_response(reply)
            # a delay happens inside the stream: a client that gives up just closes it
            return StreamingResponse(self._responses_sse(reply), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                                 Route("/v1/responses", responses, methods=["POST"]),
                                 Route("/v1/embeddings", embeddings, methods=["POST"]),
                                 Route("/v1/rerank", rerank, methods=["POST"]),
                                 Route("/v2/rerank", rerank, methods=["POST"])])

    async def _responses_sse(self, reply: Reply) -> AsyncIterator[bytes]:
        rid, mid = f"resp_{uuid.uuid4().hex[:12]}", f"msg_{uuid.uuid4().hex[:12]}"

        def event(etype: str, **payload: Any) -> bytes:
            return f"event: {etype}\ndata: {json.dumps({'type': etype, **payload})}\n\n".encode()

        yield event("response.created", response={"id": rid})
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        yield event("response.output_item.added", output_index=0, item={
            "type": "message", "role": "assistant", "id": mid, "status": "in_progress", "content": []})
        text = reply.content or ""
        for piece in _split_words(text):
            yield event("response.output_text.delta", item_id=mid, output_index=0, content_index=0, delta=piece)
            await asyncio.sleep(0)
        yield event("response.output_item.done", output_index=0, item={
            "type": "message", "role": "assistant", "id": mid, "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]})
        p, c = reply.usage or (0, 0)
        yield event("response.completed", response={"id": rid, "usage": {
            "input_tokens": p, "input_tokens_details": None, "output_tokens": c,
            "output_tokens_details": None, "total_tokens": p + c}})

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


EMBEDDING_DIM = 32


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", (text or "").lower())


def _split_words(text: str) -> list[str]:
    """Split on spaces keeping them, so the pieces join back to ``text``."""
    if not text:
        return []
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + ([words[-1]] if words[-1] else [])
