"""A fake Telegram Bot API server: ``POST /bot<token>/<method>`` like api.telegram.org.

Methods: getMe, sendMessage, editMessageText, sendDocument (multipart), answerCallbackQuery,
setWebhook, deleteWebhook. Like the real API: a wrong token is 401 ``Unauthorized``; editing to
the same text is 400 ``message is not modified``; unknown chats / messages are 400.
``fail_next(method, 429, retry_after=1)`` scripts flood control (``parameters.retry_after``);
``chat_id=`` keeps a scripted failure for that chat's calls. ``failures_served`` records each
scripted failure actually answered, so a fault test can prove its fault hit.
``chats[chat_id]`` holds the messages as users would see them (text after the last edit).
"""
from __future__ import annotations

import itertools
import json
from collections import defaultdict, deque
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ._server import ThreadedServer


#: Form fields the Bot API takes as plain strings (the others may carry JSON: reply_markup, …).
_TEXT_PARAMS = frozenset({"text", "caption", "callback_query_id", "secret_token", "url"})


class FakeTelegram(ThreadedServer):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.chats: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.webhook: dict[str, Any] = {}
        self.answered_callbacks: list[str] = []
        self._failures: dict[str, deque] = defaultdict(deque)
        self.failures_served: list[tuple[str, int, dict[str, Any]]] = []  # (method, status, params)
        self._ids = itertools.count(100)

    def fail_next(self, method: str, status: int = 429, *, retry_after: int = 1, description: str | None = None,
                  chat_id: int | None = None) -> None:
        with self.lock:
            self._failures[method].append((status, retry_after, description, chat_id))

    def _take_failure(self, method: str, params: dict[str, Any]) -> tuple[int, int, str | None] | None:
        queue = self._failures[method]
        for failure in queue:
            if failure[3] is None or str(failure[3]) == str(params.get("chat_id")):
                queue.remove(failure)
                self.failures_served.append((method, failure[0], params))
                return failure[:3]
        return None

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(m) for _, m in sorted(self.chats[chat_id].items())]

    def method_count(self, method: str) -> int:
        with self.lock:
            return sum(1 for m, _ in self.calls if m == method)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/bot{token}/{method}", self._handle, methods=["POST", "GET"])])

    async def _params(self, request: Request) -> dict[str, Any]:
        kind = request.headers.get("content-type", "")
        if kind.startswith("application/json"):
            return await request.json()
        form = await request.form()
        params: dict[str, Any] = {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                params[key] = {"filename": value.filename, "size": len(await value.read())}
            elif key in _TEXT_PARAMS:  # text stays text, even when it reads as JSON ("42", "{...}")
                params[key] = value
            else:
                try:
                    params[key] = json.loads(value)
                except ValueError:
                    params[key] = value
        return params

    async def _handle(self, request: Request) -> JSONResponse:
        if request.path_params["token"] != self.token:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401)
        method = request.path_params["method"]
        params = await self._params(request)
        with self.lock:
            self.calls.append((method, params))
            failure = self._take_failure(method, params)
        if failure is not None:
            status, retry_after, description = failure
            body: dict[str, Any] = {"ok": False, "error_code": status,
                                    "description": description or (f"Too Many Requests: retry after {retry_after}"
                                                                   if status == 429 else "Internal Server Error")}
            if status == 429:
                body["parameters"] = {"retry_after": retry_after}
            return JSONResponse(body, status_code=status)
        handler = getattr(self, f"m_{method}", None)
        if handler is None:
            return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"}, status_code=404)
        try:
            return JSONResponse({"ok": True, "result": handler(params)})
        except ValueError as exc:
            return JSONResponse({"ok": False, "error_code": 400, "description": f"Bad Request: {exc}"},
                                status_code=400)

    # -- methods --------------------------------------------------------------------------
    def m_getMe(self, params):
        return {"id": 4242, "is_bot": True, "first_name": "RunnerHost", "username": "runnerhost_bot",
                "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    def m_setWebhook(self, params):
        self.webhook = dict(params)
        return True

    def m_deleteWebhook(self, params):
        self.webhook = {}
        return True

    def _message(self, chat_id: int, text: str | None, extra: dict[str, Any]) -> dict[str, Any]:
        message_id = next(self._ids)
        message = {"message_id": message_id, "date": 1_700_000_000, "text": text,
                   "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                   "from": {"id": 4242, "is_bot": True, "first_name": "RunnerHost"}, **extra}
        with self.lock:
            self.chats[chat_id][message_id] = {"message_id": message_id, "text": text, "edits": 0, **extra}
        return {k: v for k, v in message.items() if v is not None}

    def m_sendMessage(self, params):
        text = (params.get("text") or "").strip()  # the Bot API trims message text
        if not text:
            raise ValueError("message text is empty")
        if len(text) > 4096:
            raise ValueError("message is too long")
        extra = {"reply_markup": params["reply_markup"]} if params.get("reply_markup") else {}
        return self._message(int(params["chat_id"]), text, extra)

    def m_sendDocument(self, params):
        # the Bot API answers a Document object (file_id and file_unique_id are required fields)
        upload = params["document"]
        file_id = f"doc{next(self._ids)}"
        return self._message(int(params["chat_id"]), None, {"document": {
            "file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": upload["filename"],
            "file_size": upload["size"]}})

    def m_editMessageText(self, params):
        chat_id, message_id, text = int(params["chat_id"]), int(params["message_id"]), params["text"].strip()
        if len(text) > 4096:
            raise ValueError("MESSAGE_TOO_LONG")
        with self.lock:
            message = self.chats[chat_id].get(message_id)
            if message is None:
                raise ValueError("message to edit not found")
            if message["text"] == text:
                raise ValueError("message is not modified: specified new message content and reply markup "
                                 "are exactly the same as a current content and reply markup of the message")
            message["text"] = text
            message["edits"] += 1
        return {"message_id": message_id, "date": 1_700_000_000, "edit_date": 1_700_000_001, "text": text,
                "chat": {"id": chat_id, "type": "private"}}

    def m_answerCallbackQuery(self, params):
        with self.lock:
            self.answered_callbacks.append(params["callback_query_id"])
        return True


def text_update(update_id: int, chat_id: int, text: str, *, user_id: int = 7, message_id: int = 1,
                chat_type: str = "private") -> dict[str, Any]:
    """An Update as Telegram posts it to a webhook for a user's text message."""
    return {"update_id": update_id, "message": {
        "message_id": message_id, "date": 1_700_000_000, "text": text,
        "chat": {"id": chat_id, "type": chat_type, **({"first_name": "Ada"} if chat_type == "private" else {"title": "G"})},
        "from": {"id": user_id, "is_bot": False, "first_name": "Ada", "username": "ada"}}}


def callback_update(update_id: int, chat_id: int, data: str, *, user_id: int = 7, message_id: int = 100) -> dict[str, Any]:
    """An Update for a tap on an inline keyboard button."""
    return {"update_id": update_id, "callback_query": {
        "id": f"cbq{update_id}", "chat_instance": "ci1", "data": data,
        "from": {"id": user_id, "is_bot": False, "first_name": "Ada"},
        "message": {"message_id": message_id, "date": 1_700_000_000, "text": "question",
                    "chat": {"id": chat_id, "type": "private", "first_name": "Ada"}}}}
