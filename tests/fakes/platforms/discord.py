"""A fake Discord: REST (``/api/v10``) and the Gateway (a WebSocket with zlib-stream transport
compression), close enough to the real ones for hikari to run against it.

REST: ``GET /gateway/bot``, ``GET /users/@me``, ``POST /channels/{id}/messages`` (JSON or
multipart with files), ``PATCH /channels/{id}/messages/{id}``, ``POST
/interactions/{id}/{token}/callback``. A wrong token is 401; ``fail_next(route, 429,
retry_after=0.5)`` answers a 429 with Discord's body (``retry_after``) and rate-limit headers.
Gateway: HELLO → IDENTIFY → READY, heartbeats ACKed, ``dispatch(name, data)`` sends an event,
``drop()`` closes the socket with 4000 (resumable); a RESUME replays the events the client
missed and sends RESUMED. ``identifies`` / ``resumes`` count the handshakes.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import zlib
from collections import defaultdict, deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ._server import ThreadedServer

BOT_ID = "900000000000000001"


def user(user_id: str, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {"id": user_id, "username": name, "discriminator": "0", "global_name": name, "avatar": None,
            "bot": bot, "public_flags": 0, "flags": 0}


def message(message_id: str, channel_id: str, content: str, *, author: dict[str, Any] | None = None,
            guild_id: str | None = None, components: list | None = None,
            attachments: list | None = None) -> dict[str, Any]:
    payload = {"id": message_id, "channel_id": channel_id, "author": author or user(BOT_ID, "runnerhost", bot=True),
               "content": content, "timestamp": "2026-11-29T00:00:00.000000+00:00", "edited_timestamp": None,
               "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
               "attachments": attachments or [], "embeds": [], "pinned": False, "type": 0, "flags": 0,
               "components": components or []}
    if guild_id:
        payload["guild_id"] = guild_id
    return payload


class FakeDiscord(ThreadedServer):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.channels: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.calls: list[tuple[str, str]] = []
        self.interaction_callbacks: list[dict[str, Any]] = []
        self.identifies = 0
        self.resumes = 0
        self._failures: dict[str, deque] = defaultdict(deque)
        self._ids = itertools.count(1_000_000_000_000_000_000)
        self._seq = 0
        self._log: list[dict[str, Any]] = []  # dispatches sent, for RESUME replay
        self._ws: WebSocket | None = None
        self._deflate: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.session_id = "fake-session-1"
        self.ready = asyncio.Event()

    # -- scripting (called from the test thread) ------------------------------------------
    def fail_next(self, route: str, status: int = 429, *, retry_after: float = 0.5) -> None:
        """``route`` is ``"create_message"`` or ``"edit_message"``."""
        with self.lock:
            self._failures[route].append((status, retry_after))

    def messages(self, channel_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(m) for _, m in sorted(self.channels[channel_id].items())]

    def dispatch(self, name: str, data: dict[str, Any], *, timeout: float = 5.0) -> None:
        asyncio.run_coroutine_threadsafe(self._dispatch(name, data), self._loop).result(timeout)

    def drop(self, *, timeout: float = 5.0) -> None:
        """Close the Gateway socket the way a network blip or a Discord restart does (resumable)."""
        asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(timeout)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # -- the app ----------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/api/v10/gateway/bot", self._gateway_bot, methods=["GET"]),
            Route("/api/v10/users/@me", self._me, methods=["GET"]),
            Route("/api/v10/channels/{channel}/messages", self._create, methods=["POST"]),
            Route("/api/v10/channels/{channel}/messages/{message}", self._edit, methods=["PATCH"]),
            Route("/api/v10/interactions/{id}/{token}/callback", self._callback, methods=["POST"]),
            WebSocketRoute("/gateway", self._gateway),
        ])

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bot {self.token}"

    @staticmethod
    def _unauthorized() -> JSONResponse:
        return JSONResponse({"message": "401: Unauthorized", "code": 0}, status_code=401)

    def _failure(self, route: str) -> Response | None:
        with self.lock:
            failure = self._failures[route].popleft() if self._failures[route] else None
        if failure is None:
            return None
        status, retry_after = failure
        if status == 429:
            return JSONResponse({"message": "You are being rate limited.", "retry_after": retry_after,
                                 "global": False}, status_code=429,
                                headers={"Retry-After": str(retry_after), "X-RateLimit-Limit": "5",
                                         "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": str(retry_after),
                                         "X-RateLimit-Bucket": "fakebucket", "X-RateLimit-Scope": "user"})
        return JSONResponse({"message": "Internal Server Error", "code": 0}, status_code=status)

    async def _gateway_bot(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._unauthorized()
        return JSONResponse({"url": f"ws://127.0.0.1:{self.port}/gateway", "shards": 1,
                             "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0,
                                                     "max_concurrency": 1}})

    async def _me(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return self._unauthorized()
        return JSONResponse({**user(BOT_ID, "runnerhost", bot=True), "mfa_enabled": False, "locale": "en-US",
                             "verified": True, "premium_type": 0})

    async def _body(self, request: Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            payload = json.loads(form.get("payload_json") or "{}")
            files = []
            for key, value in form.multi_items():
                if key.startswith("files[") and hasattr(value, "read"):
                    files.append({"filename": value.filename, "size": len(await value.read())})
            return payload, files
        return await request.json(), []

    async def _create(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.calls.append(("create_message", request.path_params["channel"]))
        failed = self._failure("create_message")
        if failed is not None:
            return failed
        channel = request.path_params["channel"]
        payload, files = await self._body(request)
        content = payload.get("content") or ""
        if len(content) > 2000:
            return JSONResponse({"message": "Invalid Form Body", "code": 50035}, status_code=400)
        message_id = str(next(self._ids))
        counter = itertools.count(1)  # Discord numbers every component of a message in its reply
        components = [{**row, "id": next(counter),
                       "components": [{**c, "id": next(counter)} for c in row.get("components", [])]}
                      for row in payload.get("components") or []]
        payload["components"] = components
        attachments = [{"id": str(next(self._ids)), "filename": f["filename"], "size": f["size"],
                        "url": f"https://cdn.fake/{f['filename']}", "proxy_url": f"https://cdn.fake/{f['filename']}"}
                       for f in files]
        with self.lock:
            self.channels[channel][message_id] = {"id": message_id, "content": content, "edits": 0,
                                                  "components": payload.get("components") or [],
                                                  "attachments": attachments}
        return JSONResponse(message(message_id, channel, content, components=payload.get("components"),
                                    attachments=attachments))

    async def _edit(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._unauthorized()
        self.calls.append(("edit_message", request.path_params["channel"]))
        failed = self._failure("edit_message")
        if failed is not None:
            return failed
        channel, message_id = request.path_params["channel"], request.path_params["message"]
        payload, _ = await self._body(request)
        with self.lock:
            stored = self.channels[channel].get(message_id)
            if stored is None:
                return JSONResponse({"message": "Unknown Message", "code": 10008}, status_code=404)
            if "content" in payload:
                stored["content"] = payload["content"]
                stored["edits"] += 1
            content = stored["content"]
        return JSONResponse(message(message_id, channel, content))

    async def _callback(self, request: Request) -> Response:
        self.interaction_callbacks.append({"id": request.path_params["id"], **(await request.json())})
        return Response(status_code=204)

    # -- gateway --------------------------------------------------------------------------------
    async def _send(self, ws: WebSocket, payload: dict[str, Any]) -> None:
        data = self._deflate.compress(json.dumps(payload).encode()) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        await ws.send_bytes(data)

    async def _dispatch(self, name: str, data: dict[str, Any]) -> None:
        self._seq += 1
        payload = {"op": 0, "t": name, "s": self._seq, "d": data}
        self._log.append(payload)
        if self._ws is not None:
            await self._send(self._ws, payload)

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close(code=4000)

    async def _gateway(self, ws: WebSocket) -> None:
        self._loop = asyncio.get_running_loop()
        await ws.accept()
        self._deflate = zlib.compressobj()
        await self._send(ws, {"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        try:
            while True:
                received = await ws.receive()
                if received["type"] == "websocket.disconnect":
                    return
                raw = received.get("text") if received.get("text") is not None else received.get("bytes", b"").decode()
                frame = json.loads(raw)
                op = frame.get("op")
                if op == 1:
                    await self._send(ws, {"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    if frame["d"].get("token") != self.token:
                        await ws.close(code=4004)  # authentication failed
                        return
                    self.identifies += 1
                    self._ws = ws
                    await self._dispatch("READY", {
                        "v": 10, "user": user(BOT_ID, "runnerhost", bot=True), "guilds": [],
                        "session_id": self.session_id, "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
                        "shard": [0, 1], "application": {"id": BOT_ID, "flags": 0}})
                elif op == 6:
                    resume = frame["d"]
                    if resume.get("token") != self.token or resume.get("session_id") != self.session_id:
                        await self._send(ws, {"op": 9, "d": False, "s": None, "t": None})
                        continue
                    self.resumes += 1
                    self._ws = ws
                    for missed in [p for p in self._log if p["s"] > int(resume.get("seq") or 0)]:
                        await self._send(ws, missed)
                    self._seq += 1
                    await self._send(ws, {"op": 0, "t": "RESUMED", "s": self._seq, "d": {}})
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if self._ws is ws:
                self._ws = None


def message_create(message_id: str, channel_id: str, content: str, *, guild_id: str = "700",
                   user_id: str = "555", name: str = "ada") -> dict[str, Any]:
    """A MESSAGE_CREATE dispatch of a user's message."""
    return {**message(message_id, channel_id, content, author=user(user_id, name), guild_id=guild_id),
            "member": {"roles": [], "joined_at": "2026-01-01T00:00:00+00:00", "deaf": False, "mute": False}}
