"""A fake OneBot v11 bridge (what NapCat / go-cqhttp do in reverse-WebSocket mode): it
connects to our endpoint with ``X-Self-ID`` / ``X-Client-Role: Universal`` and the access
token, posts events, and answers ``send_msg`` actions with a ``message_id`` (``fail_next()``
makes the next action fail with a retryable retcode, as a bridge under load does)."""
from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


class FakeOneBotBridge:
    def __init__(self, url: str, *, self_id: int = 10001, access_token: str | None = None) -> None:
        self.url = url
        self.self_id = self_id
        self.access_token = access_token
        self.sent: list[dict[str, Any]] = []  # actions received, as the bridge executed them
        self.failed_actions = 0
        self._fail = 0
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._ids = itertools.count(5000)

    async def connect(self) -> None:
        headers = {"X-Self-ID": str(self.self_id), "X-Client-Role": "Universal"}
        if self.access_token is not None:
            headers["Authorization"] = f"Bearer {self.access_token}"
        self._ws = await connect(self.url, additional_headers=headers)
        self._reader = asyncio.ensure_future(self._read())

    def fail_next(self, times: int = 1) -> None:
        self._fail += times

    async def _read(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            frame = json.loads(raw)
            if self._fail:
                self._fail -= 1
                self.failed_actions += 1
                await self._ws.send(json.dumps({"status": "failed", "retcode": 100, "data": None,
                                                "wording": "busy", "echo": frame.get("echo")}))
                continue
            if frame.get("action") in ("send_msg", "send_private_msg", "send_group_msg"):
                message_id = next(self._ids)
                self.sent.append({**frame["params"], "message_id": message_id})
                reply = {"status": "ok", "retcode": 0, "data": {"message_id": message_id}, "echo": frame.get("echo")}
            else:
                reply = {"status": "failed", "retcode": 1404, "data": None, "echo": frame.get("echo")}
            await self._ws.send(json.dumps(reply))

    async def post(self, event: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps({"self_id": self.self_id, "time": 1_700_000_000, **event}))

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()


def private_message(message_id: int, user_id: int, text: str) -> dict[str, Any]:
    return {"post_type": "message", "message_type": "private", "sub_type": "friend", "message_id": message_id,
            "user_id": user_id, "message": [{"type": "text", "data": {"text": text}}], "raw_message": text,
            "font": 0, "sender": {"user_id": user_id, "nickname": "ada"}}


def group_message(message_id: int, group_id: int, user_id: int, text: str) -> dict[str, Any]:
    return {"post_type": "message", "message_type": "group", "sub_type": "normal", "message_id": message_id,
            "group_id": group_id, "user_id": user_id, "message": text, "raw_message": text, "font": 0,
            "sender": {"user_id": user_id, "nickname": "ada", "card": "Ada"}}
