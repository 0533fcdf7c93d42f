"""Frames on the wire: NDJSON (default) or Server-Sent Events (``Accept: text/event-stream``).

Both carry the same frame objects ``{"run_id", "type", "data", "sequence"}``:

* NDJSON — one JSON object per line.
* SSE — ``event: <type>`` / ``id: <sequence>`` / ``data: <json>`` blocks; a
  ``: keep-alive`` comment every 15 s of silence.

The host guarantees exactly one terminal frame per run and drives each run
in its own task. :func:`detached` starts a run outside the HTTP request's Ray
task, so a client that hangs up (Serve then cancels the request, and Ray
cancels its child calls recursively) does not cut the run short — it
completes and its facts are recorded. :func:`relay` reads frames through a
queue; should the source ever raise mid-stream, the client still gets a
terminal ``run.failed`` frame instead of a broken stream. Frames that are
ready together go out as one body chunk (one message to the Serve proxy), and the
opening frame waits a moment for the rest of a short run.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Awaitable, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse

from actors import constants
from actors.core.frames import is_terminal, take_ready
from actors.tasks import spawn_detached
from protocol.logs import get_logger

log = get_logger("runnerhost.serve")

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
KEEPALIVE_S = 15.0

_END = object()
_background: set[asyncio.Task] = set()
T = TypeVar("T")


async def detached(coro: Awaitable[T]) -> T:
    """Await ``coro`` in a task (and context) that the request's cancellation does not reach."""
    return await asyncio.shield(spawn_detached(_as_coroutine(coro)))


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def wants_sse(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return SSE in accept and NDJSON not in accept


def encode_ndjson(frame: dict[str, Any]) -> bytes:
    return (json.dumps(frame, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode()


def encode_sse(frame: dict[str, Any]) -> bytes:
    lines = [f"event: {frame.get('type', 'message')}"]
    if frame.get("sequence") is not None:
        lines.append(f"id: {frame['sequence']}")
    lines.append("data: " + json.dumps(frame, ensure_ascii=False, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode()


def _failure_frame(run_id: str | None, exc: BaseException) -> dict[str, Any]:
    return {"run_id": run_id, "type": "run.failed", "sequence": None,
            "data": {"code": "host.stream_error", "error": "the result stream was interrupted",
                     "retryable": True}}


async def relay(source: AsyncIterator[dict[str, Any]], *, keepalive: float | None = None,
                linger: float | None = None) -> AsyncIterator[list[dict[str, Any]] | None]:
    """Yield the frames of ``source`` in batches of those already available; ``None`` marks a
    keep-alive tick (after ``keepalive`` s of silence).

    Only the opening batch may wait, up to ``linger`` seconds (default
    ``constants.RELAY_FIRST_LINGER_S``) and never past the terminal frame, for the frames behind
    it: a short run's whole stream leaves as one body chunk (one message to the Serve proxy),
    while every later frame goes out as soon as it is ready.

    The source is read ahead into a bounded queue (a slow client holds back only its own
    reader: the run is driven by its own task and never waits for one). When the response
    ends — terminal frame or client gone — the reader is stopped.
    """
    linger = constants.RELAY_FIRST_LINGER_S if linger is None else linger
    queue: asyncio.Queue = asyncio.Queue(maxsize=constants.RELAY_QUEUE_FRAMES)
    seen_terminal = False
    last_run_id: str | None = None

    async def pump() -> None:
        try:
            async for frame in source:
                await queue.put(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the host should never get here; never break the stream
            log.exception("result stream failed")
            await queue.put(exc)
        else:
            await queue.put(_END)

    def absorb(items: list[Any], batch: list[dict[str, Any]]) -> bool:
        """Move ready items into ``batch``; True when the stream ends with them."""
        nonlocal seen_terminal, last_run_id
        for item in items:
            if isinstance(item, BaseException):  # the source broke: end with a terminal frame
                if not seen_terminal:
                    batch.append(_failure_frame(last_run_id, item))
                return True
            last_run_id = item.get("run_id", last_run_id)
            seen_terminal = seen_terminal or is_terminal(item)
            batch.append(item)
        return False

    task = asyncio.create_task(pump())
    _background.add(task)
    task.add_done_callback(_background.discard)
    opening = True
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive) if keepalive else await queue.get()
            except asyncio.TimeoutError:
                yield None
                continue
            items, ended = take_ready(item, queue, _END)
            batch: list[dict[str, Any]] = []
            ended = absorb(items, batch) or ended
            if opening and linger > 0:
                opening = False
                deadline = asyncio.get_running_loop().time() + linger
                while not ended and not seen_terminal:
                    try:
                        item = await asyncio.wait_for(queue.get(), deadline - asyncio.get_running_loop().time())
                    except asyncio.TimeoutError:
                        break
                    items, ended = take_ready(item, queue, _END)
                    ended = absorb(items, batch) or ended
            if batch:
                yield batch
            if ended:
                return
    finally:
        if not task.done():
            task.cancel()


def stream_response(request: Request, source: AsyncIterator[dict[str, Any]], *,
                    headers: dict[str, str] | None = None) -> StreamingResponse:
    sse = wants_sse(request)

    async def body() -> AsyncIterator[bytes]:
        encode = encode_sse if sse else encode_ndjson
        async for batch in relay(source, keepalive=KEEPALIVE_S if sse else None):
            if batch is None:
                yield b": keep-alive\n\n"
            else:
                yield b"".join(encode(frame) for frame in batch)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
    return StreamingResponse(body(), media_type=SSE if sse else NDJSON, headers=headers)
