"""OneBot v11 (the protocol QQ bridges such as NapCat / go-cqhttp speak) over reverse WebSocket.

In reverse WebSocket mode the *bridge* connects to us (``ws://host:port/``, role ``Universal``)
and sends events as JSON frames; we send actions (``{"action", "params", "echo"}``) on the same
socket and get ``{"status", "retcode", "data", "echo"}`` back. No SDK is worth taking for this
small protocol, so it is written here from the v11 spec:

* :class:`OneBotServer`: a ``websockets`` server; checks the access token (``Authorization:
  Bearer <token>`` or ``?access_token=``; wrong → HTTP 401, nothing accepted) and keeps one
  :class:`OneBotLink` per bridge (``X-Self-ID``);
* :func:`parse`: ``message`` (private / group) → ``message.received``; ``notice``
  ``group_increase`` → ``group.member_joined``, ``group_recall`` / ``friend_recall`` →
  ``message.recalled``; ``request`` ``friend`` → ``friend.request_received``; heartbeats and
  lifecycle meta events are not events;
* :class:`OneBotAdapter`: ``send_msg`` out (no edits in v11: results go out complete), images
  as ``base64://`` segments.
"""
from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import re
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from protocol.events import (
    EventActor,
    EventDelivery,
    EventEnvelope,
    EventInput,
    EventSubject,
)
from protocol.logs import get_logger

from .base import Inbound, OutboundAdapter, PlatformError
from .credentials import Secret

log = get_logger(__name__)

PLATFORM = "onebot"
#: QQ accepts long messages, but bridges and clients fold them; keep parts readable.
MAX_MESSAGE = 4500
ACTION_TIMEOUT_S = 15.0
_CQ = re.compile(r"\[CQ:[^\]]*\]")
_UNESCAPE = (("&#91;", "["), ("&#93;", "]"), ("&#44;", ","), ("&amp;", "&"))


def message_text(message: Any) -> str:
    """Plain text of a v11 message: the ``text`` segments of an array, or a CQ-code string
    without its codes."""
    if isinstance(message, list):
        return "".join(str((seg.get("data") or {}).get("text", "")) for seg in message
                       if isinstance(seg, dict) and seg.get("type") == "text")
    text = _CQ.sub("", str(message or ""))
    for code, char in _UNESCAPE:
        text = text.replace(code, char)
    return text


def parse(event: dict[str, Any], *, connection: str, bot_id: str) -> Inbound:
    post = event.get("post_type")
    self_id = str(event.get("self_id") or bot_id)
    base = dict(source="platform", bot_id=self_id, event_time=int(event.get("time") or 0) or None)
    base = {k: v for k, v in base.items() if v is not None}
    if post == "message":
        kind = event.get("message_type")
        group = event.get("group_id")
        sender = event.get("sender") or {}
        user = event.get("user_id")
        conversation, target = _where(self_id, kind, group, user)
        return Inbound(events=[EventEnvelope(
            **base, event_id=f"onebot-{connection}-{self_id}-{event.get('message_id')}",
            event_type="message.received", source_event_type=f"message.{kind}",
            conversation_id=conversation,
            actor=EventActor(actor_id=str(user), actor_name=sender.get("card") or sender.get("nickname")),
            subject=EventSubject(subject_type="message", subject_id=str(event.get("message_id"))),
            input=EventInput(text=message_text(event.get("message"))),
            delivery=delivery(connection, {**target, "message_id": event.get("message_id")}),
            data={"message_type": kind, "group_id": group, "user_id": user,
                  "message_id": event.get("message_id")})])
    if post == "notice":
        notice = event.get("notice_type")
        group = event.get("group_id")
        user = event.get("user_id")
        key = f"onebot-{connection}-{self_id}-{notice}-{event.get('time')}-{group}-{user}-{event.get('message_id')}"
        if notice == "group_increase":
            conversation, target = _where(self_id, "group", group, user)
            return Inbound(events=[EventEnvelope(
                **base, event_id=key, event_type="group.member_joined",
                source_event_type=f"notice.group_increase.{event.get('sub_type')}", conversation_id=conversation,
                actor=EventActor(actor_id=str(user)),
                subject=EventSubject(subject_type="group", subject_id=str(group)),
                delivery=delivery(connection, target),
                data={"group_id": group, "user_id": user, "operator_id": event.get("operator_id")})])
        if notice in ("group_recall", "friend_recall"):
            kind = "group" if notice == "group_recall" else "private"
            conversation, target = _where(self_id, kind, group, user)
            return Inbound(events=[EventEnvelope(
                **base, event_id=key, event_type="message.recalled", source_event_type=f"notice.{notice}",
                conversation_id=conversation, actor=EventActor(actor_id=str(user)),
                subject=EventSubject(subject_type="message", subject_id=str(event.get("message_id"))),
                delivery=delivery(connection, target),
                data={"group_id": group, "user_id": user, "message_id": event.get("message_id"),
                      "operator_id": event.get("operator_id")})])
        return Inbound()
    if post == "request" and event.get("request_type") == "friend":
        user = event.get("user_id")
        conversation, target = _where(self_id, "private", None, user)
        return Inbound(events=[EventEnvelope(
            **base, event_id=f"onebot-{connection}-{self_id}-friend-{event.get('flag')}",
            event_type="friend.request_received", source_event_type="request.friend",
            conversation_id=conversation, actor=EventActor(actor_id=str(user)),
            subject=EventSubject(subject_type="friend_request", subject_id=str(event.get("flag")),
                                 data={"comment": event.get("comment")}),
            delivery=delivery(connection, target),
            data={"user_id": user, "comment": event.get("comment"), "flag": event.get("flag")})])
    return Inbound()


def _where(self_id: str, kind: str | None, group: Any, user: Any) -> tuple[str, dict[str, Any]]:
    if kind == "group":
        return f"onebot:{self_id}:group:{group}", {"self_id": self_id, "message_type": "group", "group_id": group}
    return f"onebot:{self_id}:private:{user}", {"self_id": self_id, "message_type": "private", "user_id": user}


def delivery(connection: str, target: dict[str, Any]) -> EventDelivery:
    return EventDelivery(surface=PLATFORM, reply_target={"connection": connection, "platform": PLATFORM, **target},
                         supports_streaming=False, supports_edit=False, supports_reaction=False,
                         max_message_size=MAX_MESSAGE,
                         platform_capabilities={"adapter": PLATFORM, "files": "images"})


class OneBotLink:
    """One bridge's socket: actions out (matched to replies by ``echo``), events in."""

    def __init__(self, ws: ServerConnection, self_id: str) -> None:
        self.ws = ws
        self.self_id = self_id
        self._pending: dict[str, asyncio.Future] = {}
        self._echo = itertools.count(1)

    async def call(self, action: str, params: dict[str, Any], *, timeout_s: float = ACTION_TIMEOUT_S) -> Any:
        echo = f"rh-{next(self._echo)}"
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[echo] = future
        try:
            await self.ws.send(json.dumps({"action": action, "params": params, "echo": echo}))
            reply = await asyncio.wait_for(future, timeout_s)
        except ConnectionClosed:
            raise PlatformError("onebot bridge disconnected", retryable=True) from None
        except asyncio.TimeoutError:
            raise PlatformError(f"onebot {action}: no reply in {timeout_s:.0f}s", retryable=True) from None
        finally:
            self._pending.pop(echo, None)
        if reply.get("status") == "failed" or reply.get("retcode") not in (0, 1):
            code = reply.get("retcode")
            # 1400 bad request, 1401/1403 token, 1404 unknown action: the request is wrong, retry won't help
            raise PlatformError(f"onebot {action}: retcode {code} {reply.get('wording') or reply.get('msg') or ''}".strip(),
                                retryable=code not in (1400, 1401, 1403, 1404), status=code)
        return reply.get("data")

    def resolve(self, frame: dict[str, Any]) -> bool:
        future = self._pending.get(str(frame.get("echo")))
        if future is None or future.done():
            return False
        future.set_result(frame)
        return True

    def fail_all(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionClosed(None, None))


EventSink = Callable[[str, dict[str, Any]], Awaitable[None]]


class OneBotServer:
    """Reverse-WebSocket endpoint for OneBot v11 bridges of one connection."""

    def __init__(self, *, connection: str, access_token: Secret | None, on_event: EventSink,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.connection = connection
        self._token = access_token
        self._on_event = on_event
        self._host, self._port = host, port
        self._server: Server | None = None
        self.links: dict[str, OneBotLink] = {}
        self._connected = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await serve(self._handle, self._host, self._port, process_request=self._authorize,
                                   max_size=16 << 20)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _authorize(self, ws: ServerConnection, request: Request) -> Response | None:
        if self._token is None:
            return None
        presented = _bearer(request.headers) or (parse_qs(urlsplit(request.path).query).get("access_token") or [""])[0]
        if hmac.compare_digest(presented.encode(), self._token.reveal().encode()):
            return None
        return Response(401, "Unauthorized", Headers([("Content-Type", "text/plain")]), b"invalid access token\n")

    async def _handle(self, ws: ServerConnection) -> None:
        self_id = ws.request.headers.get("X-Self-ID") or "unknown"
        link = OneBotLink(ws, self_id)
        self.links[self_id] = link
        self._connected.set()
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    log.warning("onebot %s: dropped a non-JSON frame", self.connection)
                    continue
                if "echo" in frame and "post_type" not in frame:
                    link.resolve(frame)
                elif frame.get("post_type"):
                    asyncio.ensure_future(self._deliver(self_id, frame))
        except ConnectionClosed:
            pass
        finally:
            link.fail_all()
            if self.links.get(self_id) is link:
                del self.links[self_id]

    async def _deliver(self, self_id: str, frame: dict[str, Any]) -> None:
        try:
            await self._on_event(self_id, frame)
        except Exception:  # one bad event must not take the socket down
            log.exception("onebot %s: event handling failed", self.connection)

    async def wait_connected(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    def link(self, self_id: str | None) -> OneBotLink:
        if self_id and self_id in self.links:
            return self.links[self_id]
        if self_id is None and len(self.links) == 1:
            return next(iter(self.links.values()))
        raise PlatformError("no OneBot bridge connected for this bot", retryable=True)


def _bearer(headers: Headers) -> str:
    value = headers.get("Authorization") or ""
    for prefix in ("Bearer ", "Token "):
        if value.startswith(prefix):
            return value[len(prefix):]
    return ""


class OneBotAdapter(OutboundAdapter):
    """Sends through the connected bridge of a :class:`OneBotServer` (in the same process)."""

    platform = PLATFORM
    supports_files = True
    max_message_size = MAX_MESSAGE

    def __init__(self, server: OneBotServer) -> None:
        self._server = server

    async def _send(self, address: dict[str, Any], message: list[dict[str, Any]]) -> str:
        params: dict[str, Any] = {"message_type": address["message_type"], "message": message}
        if address["message_type"] == "group":
            params["group_id"] = address["group_id"]
        else:
            params["user_id"] = address["user_id"]
        data = await self._server.link(address.get("self_id")).call("send_msg", params)
        return str((data or {}).get("message_id"))

    async def send_text(self, address: dict[str, Any], text: str) -> str:
        return await self._send(address, [{"type": "text", "data": {"text": text}}])

    async def send_file(self, address: dict[str, Any], name: str, data: bytes, mime_type: str | None) -> str:
        import base64
        if not (mime_type or "").startswith("image/"):
            raise PlatformError("onebot v11 sends images only", retryable=False)
        return await self._send(address, [{"type": "image",
                                           "data": {"file": "base64://" + base64.b64encode(data).decode()}}])
