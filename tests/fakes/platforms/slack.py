"""A fake Slack: the Web API (``POST /api/<method>``) and an Events API *sender* that signs
requests the way Slack does (``v0:<timestamp>:<body>``, HMAC-SHA256 with the signing secret).

Web API: auth.test, chat.postMessage, chat.update. A wrong bot token is ``invalid_auth``;
``fail_next(method, 429, retry_after=2)`` answers HTTP 429 with ``Retry-After`` and
``{"ok": false, "error": "ratelimited"}`` like Slack. ``channels[channel]`` holds messages by ts,
with ``thread_ts`` kept.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections import defaultdict, deque
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ._server import ThreadedServer


class FakeSlack(ThreadedServer):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.channels: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self._failures: dict[str, deque] = defaultdict(deque)
        self._ts = itertools.count(1)

    def fail_next(self, method: str, status: int = 429, *, retry_after: int = 1) -> None:
        with self.lock:
            self._failures[method].append((status, retry_after))

    def messages(self, channel: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(m) for _, m in sorted(self.channels[channel].items())]

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/{method}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            params = json.loads(raw or b"{}")
        else:
            params = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            for key in ("blocks",):
                if isinstance(params.get(key), str):
                    params[key] = json.loads(params[key])
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        with self.lock:
            self.calls.append((method, params))
            failure = self._failures[method].popleft() if self._failures[method] else None
        if failure is not None:
            status, retry_after = failure
            if status == 429:
                return JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429,
                                    headers={"Retry-After": str(retry_after)})
            return JSONResponse({"ok": False, "error": "internal_error"}, status_code=status)
        handler = getattr(self, "m_" + method.replace(".", "_"), None)
        if handler is None:
            return JSONResponse({"ok": False, "error": "unknown_method"})
        result = handler(params)
        return JSONResponse({"ok": True, **result} if "error" not in result else {"ok": False, **result})

    def m_auth_test(self, params):
        return {"url": "https://fake.slack/", "team": "T", "user": "rhbot", "team_id": "T1", "user_id": "UBOT",
                "bot_id": "BBOT"}

    def m_chat_postMessage(self, params):
        channel, text = params.get("channel"), params.get("text")
        if not channel:
            return {"error": "channel_not_found"}
        if not text and not params.get("blocks"):
            return {"error": "no_text"}
        ts = f"{1_700_000_000 + next(self._ts)}.000100"
        with self.lock:
            self.channels[channel][ts] = {"ts": ts, "text": text, "thread_ts": params.get("thread_ts"),
                                          "blocks": params.get("blocks"), "edits": 0}
        return {"channel": channel, "ts": ts, "message": {"type": "message", "text": text, "ts": ts}}

    def m_chat_update(self, params):
        channel, ts = params.get("channel"), params.get("ts")
        with self.lock:
            message = self.channels[channel].get(ts)
            if message is None:
                return {"error": "message_not_found"}
            message["text"] = params.get("text")
            message["edits"] += 1
        return {"channel": channel, "ts": ts, "text": params.get("text")}


def signed_headers(secret: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """What Slack sends with every Events API / interactivity request."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + stamp.encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature, "Content-Type": "application/json"}


def message_event(event_id: str, channel: str, text: str, *, user: str = "U1", ts: str = "1700000000.000001",
                  thread_ts: str | None = None, team: str = "T1") -> dict[str, Any]:
    event: dict[str, Any] = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
                             "channel_type": "channel", "event_ts": ts}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return {"token": "legacy", "team_id": team, "api_app_id": "A1", "type": "event_callback", "event_id": event_id,
            "event_time": 1_700_000_000, "event": event}
