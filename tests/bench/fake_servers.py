"""Local HTTP servers that speak like the bench's targets, over real HTTP (uvicorn in a thread).

* RunnerHost-like NDJSON: ``POST /<behaviour>/v1/events`` where the behaviour is ``ok`` (four
  frames ending ``run.completed``), ``failed`` (ends ``run.failed``), ``noterm`` (a delta, then the
  stream just ends), ``badline`` (the last line is cut JSON), ``cut`` (the connection drops
  mid-stream), ``http500`` (an error-model 500), ``slow`` (``ok`` after 50 ms); every arrival's
  server-side time is recorded.
* LangGraph-like SSE: ``POST /threads`` and ``POST /threads/{id}/runs/stream`` answering like
  ``langgraph dev`` does (``metadata`` then ``values`` events, no terminal event); ``mode`` picks
  ``ok``, ``error`` (an ``error`` event), ``wrong`` (a reply that is not the echo) or ``novalues``.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


def _frame(run_id: str, kind: str, seq: int, data: dict[str, Any]) -> str:
    return json.dumps({"run_id": run_id, "type": kind, "sequence": seq, "data": data}) + "\n"


class FakeTargets:
    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.langgraph_mode = "ok"
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=[
            Route("/{behaviour}/v1/events", self.events, methods=["POST"]),
            Route("/threads", self.threads, methods=["POST"]),
            Route("/threads/{thread_id}/runs/stream", self.lg_stream, methods=["POST"]),
        ])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def events(self, request: Request):
        self.arrivals.append(time.perf_counter())
        behaviour = request.path_params["behaviour"]
        body = json.loads(await request.body())
        text = body["event"]["input"]["text"]
        run_id = f"run_{uuid.uuid4().hex[:8]}"
        if behaviour == "http500":
            return JSONResponse({"code": "runtime_error", "message": "boom", "retryable": True, "details": {}},
                                status_code=500)
        if behaviour == "slow":
            await asyncio.sleep(0.05)
        if behaviour == "accept" and request.query_params.get("wait") == "false":  # ?wait=false: 202 after 30 ms
            await asyncio.sleep(0.03)
            return JSONResponse({"run_id": run_id, "type": "run.started"}, status_code=202)

        async def frames():
            yield _frame(run_id, "run.started", 0, {})
            yield _frame(run_id, "message.delta", 1, {"chunk": {"role": "assistant", "content": f"echo: {text}"}})
            if behaviour == "noterm":
                return
            if behaviour == "cut":
                raise RuntimeError("connection lost mid-stream")
            if behaviour == "badline":
                yield '{"run_id": "' + run_id + '", "type": "run.comp'
                return
            yield _frame(run_id, "message.completed", 2, {"message": {"role": "assistant", "content": f"echo: {text}"}})
            if behaviour == "failed":
                yield _frame(run_id, "run.failed", 3, {"code": "runner.error", "error": "x", "retryable": False})
            else:
                yield _frame(run_id, "run.completed", 3, {"finish_reason": "stop"})
        return StreamingResponse(frames(), media_type="application/x-ndjson")

    async def threads(self, request: Request):
        return JSONResponse({"thread_id": str(uuid.uuid4())})

    async def lg_stream(self, request: Request):
        body = json.loads(await request.body())
        text = body["input"]["messages"][-1]["content"]
        mode = self.langgraph_mode
        human = {"content": text, "type": "human", "id": "h"}

        async def events():
            yield f"event: metadata\ndata: {json.dumps({'run_id': 'r', 'attempt': 1})}\n\n"
            yield f"event: values\ndata: {json.dumps({'messages': [human]})}\n\n"
            if mode == "error":
                yield f"event: error\ndata: {json.dumps({'error': 'ValueError', 'message': 'boom'})}\n\n"
                return
            if mode == "novalues":
                return
            reply = "something else" if mode == "wrong" else f"echo: {text}"
            yield f"event: values\ndata: {json.dumps({'messages': [human, {'content': reply, 'type': 'ai'}]})}\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    def __enter__(self) -> "FakeTargets":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
