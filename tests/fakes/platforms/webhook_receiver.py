"""A receiver of RunnerHost's signed webhooks: checks the HMAC-SHA256 signature like a real
receiver would (401 on a bad one), records deliveries, and can answer 429 / 500 on demand."""
from __future__ import annotations

import hashlib
import hmac
import json
from collections import deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ._server import ThreadedServer


class WebhookReceiver(ThreadedServer):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.rejected = 0
        self._failures: deque = deque()

    def fail_next(self, status: int = 429, retry_after: int | None = 1) -> None:
        with self.lock:
            self._failures.append((status, retry_after))

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> JSONResponse:
        body = await request.body()
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("x-runnerhost-signature", "")):
            with self.lock:
                self.rejected += 1
            return JSONResponse({"error": "bad signature"}, status_code=401)
        with self.lock:
            failure = self._failures.popleft() if self._failures else None
            if failure is None:
                self.received.append({"delivery": request.headers.get("x-runnerhost-delivery"),
                                      "body": json.loads(body)})
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return JSONResponse({"error": "try later"}, status_code=status, headers=headers)
        return JSONResponse({"ok": True})
