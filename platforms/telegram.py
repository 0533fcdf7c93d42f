"""Telegram (Bot API) over python-telegram-bot: webhook updates in, ``sendMessage`` /
``editMessageText`` / ``sendDocument`` / inline keyboards out.

Inbound authenticity: Telegram sends the ``secret_token`` given to ``setWebhook`` in the
``X-Telegram-Bot-Api-Secret-Token`` header; anything else is refused (:meth:`verify`).
Mapping: a text / caption message → ``message.received``; ``new_chat_members`` (or a
``chat_member`` update that makes someone a member) → ``group.member_joined``, one event per
member; a ``callback_query`` on a rendered interaction → an interaction answer. The Bot API
has no recall or friend-request updates, so those types never come from Telegram; other
updates are ignored rather than disguised as messages.
"""
from __future__ import annotations

import datetime as dtm
import hmac
import logging
import re
from typing import Any, Mapping

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Update
from telegram.error import (
    BadRequest,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from protocol.events import (
    EventActor,
    EventDelivery,
    EventEnvelope,
    EventInput,
    EventSubject,
)
from protocol.interactions import InteractionRequest

from .base import (
    Inbound,
    InteractionAnswer,
    OutboundAdapter,
    PlatformError,
    button_data,
    parse_button_data,
)
from .credentials import Secret

PLATFORM = "telegram"
#: A bot token in a Bot API URL (``/bot<id>:<secret>/method``), as httpx logs every request URL.
_TOKEN_IN_URL = re.compile(r"bot\d+:[A-Za-z0-9_-]+")


class _RedactTokens(logging.Filter):
    """Keeps bot tokens out of httpx's (and python-telegram-bot's) request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str) and "bot" in record.msg:
            record.msg = _TOKEN_IN_URL.sub("bot***", record.msg)
        return True


_REDACT = _RedactTokens()


def _protect_loggers() -> None:
    """Filter every httpx / python-telegram-bot logger (a filter does not reach child loggers)."""
    names = {"httpx", "telegram.Bot", "telegram.ext.ExtBot"} | {
        n for n in logging.root.manager.loggerDict if n.startswith(("telegram", "httpx"))}
    for name in names:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)
SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_MESSAGE = 4096
DEFAULT_API = "https://api.telegram.org"
#: The member statuses that mean "is in the chat" (a chat_member update into one of these is a join).
_MEMBER = {"member", "administrator", "creator", "restricted"}


def verify(headers: Mapping[str, str], secret: Secret) -> bool:
    presented = headers.get(SECRET_HEADER) or headers.get(SECRET_HEADER.title()) or ""
    return hmac.compare_digest(presented.encode(), secret.reveal().encode())


def parse(data: dict[str, Any], *, connection: str, bot_id: str) -> Inbound:
    update = Update.de_json(data, None)
    dedupe = str(update.update_id)
    if update.callback_query is not None:
        return _callback(update, dedupe)
    message = update.message
    if message is not None and message.new_chat_members:
        return Inbound(events=[_joined(update, message.chat, m, connection, bot_id, i, message.message_id)
                               for i, m in enumerate(message.new_chat_members)], dedupe_key=dedupe)
    member = update.chat_member
    if member is not None and member.new_chat_member.status in _MEMBER \
            and member.old_chat_member.status not in _MEMBER:
        return Inbound(events=[_joined(update, member.chat, member.new_chat_member.user, connection, bot_id, 0,
                                       None)], dedupe_key=dedupe)
    if message is None or (message.text is None and message.caption is None):
        return Inbound(dedupe_key=dedupe)
    chat = message.chat
    user = message.from_user
    thread = str(message.message_thread_id) if message.is_topic_message and message.message_thread_id else None
    event = EventEnvelope(
        event_id=f"tg-{connection}-{update.update_id}", event_type="message.received",
        event_time=int(message.date.timestamp()), source="platform", source_event_type="message",
        bot_id=bot_id, conversation_id=_conversation(bot_id, chat.id), thread_id=thread,
        actor=_actor(user), subject=EventSubject(subject_type="message", subject_id=str(message.message_id),
                                                 data={"chat_type": chat.type}),
        input=EventInput(text=message.text if message.text is not None else message.caption),
        delivery=delivery(connection, chat.id, message.message_id, thread),
        data={"chat_id": chat.id, "chat_type": chat.type, "message_id": message.message_id})
    return Inbound(events=[event], dedupe_key=dedupe)


def delivery(connection: str, chat_id: int, message_id: int | None, thread: str | None) -> EventDelivery:
    target: dict[str, Any] = {"connection": connection, "platform": PLATFORM, "chat_id": chat_id}
    if message_id is not None:
        target["message_id"] = message_id
    if thread is not None:
        target["message_thread_id"] = int(thread)
    return EventDelivery(surface=PLATFORM, reply_target=target, supports_streaming=True, supports_edit=True,
                         supports_reaction=True, max_message_size=MAX_MESSAGE,
                         platform_capabilities={"adapter": PLATFORM, "files": True,
                                                "interactions": {"field_types": ["select"],
                                                                 "action_styles": ["default"]}})


def _conversation(bot_id: str, chat_id: int) -> str:
    return f"telegram:{bot_id}:{chat_id}"


def _actor(user: Any) -> EventActor:
    if user is None:
        return EventActor(actor_type="system")
    return EventActor(actor_type="bot" if user.is_bot else "user", actor_id=str(user.id),
                      actor_name=user.full_name, metadata={"username": user.username} if user.username else {})


def _joined(update: Update, chat: Any, user: Any, connection: str, bot_id: str, index: int,
            message_id: int | None) -> EventEnvelope:
    suffix = f"-{index}" if index else ""
    return EventEnvelope(
        event_id=f"tg-{connection}-{update.update_id}{suffix}", event_type="group.member_joined",
        source="platform", source_event_type="new_chat_members" if message_id is not None else "chat_member",
        bot_id=bot_id, conversation_id=_conversation(bot_id, chat.id), actor=_actor(user),
        subject=EventSubject(subject_type="group", subject_id=str(chat.id), data={"title": chat.title}),
        delivery=delivery(connection, chat.id, None, None),
        data={"chat_id": chat.id, "user_id": user.id})


def _callback(update: Update, dedupe: str) -> Inbound:
    query = update.callback_query
    parsed = parse_button_data(query.data)
    if parsed is None:
        return Inbound(dedupe_key=dedupe)
    interaction_id, index = parsed
    return Inbound(answer=InteractionAnswer(
        interaction_id=interaction_id, action_id=None, values={"choice_index": index},
        actor_id=str(query.from_user.id), actor_name=query.from_user.full_name,
        ack={"callback_query_id": query.id}), dedupe_key=dedupe)


class TelegramAdapter(OutboundAdapter):
    platform = PLATFORM
    supports_edit = True
    supports_files = True
    max_message_size = MAX_MESSAGE

    def __init__(self, token: Secret, *, api_base: str | None = None, timeout_s: float = 20.0) -> None:
        _protect_loggers()
        base = (api_base or DEFAULT_API).rstrip("/")
        request = HTTPXRequest(read_timeout=timeout_s, write_timeout=timeout_s, connect_timeout=timeout_s)
        self._token = token
        self._bot = Bot(token.reveal(), base_url=f"{base}/bot", base_file_url=f"{base}/file/bot",
                        request=request)
        self._ready = False

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            if not self._ready:
                await self._bot.initialize()
                self._ready = True
            return await getattr(self._bot, method)(**kwargs)
        except RetryAfter as exc:
            after = exc.retry_after
            seconds = after.total_seconds() if isinstance(after, dtm.timedelta) else float(after)
            raise PlatformError("telegram flood control", retryable=True, retry_after=seconds, status=429) from None
        except (TimedOut, NetworkError) as exc:
            if isinstance(exc, BadRequest):
                raise PlatformError(self._scrub(f"telegram {method}: {exc.message}"), retryable=False,
                                    status=400) from None
            raise PlatformError(f"telegram {method}: {type(exc).__name__}", retryable=True) from None
        except Forbidden as exc:
            raise PlatformError(self._scrub(f"telegram {method}: {exc.message}"), retryable=False, status=403) from None
        except TelegramError as exc:
            raise PlatformError(self._scrub(f"telegram {method}: {exc.message}"), retryable=False) from None

    def _scrub(self, text: str) -> str:
        """python-telegram-bot quotes a rejected token in its error text: never pass it on."""
        return text.replace(self._token.reveal(), "***")

    @staticmethod
    def _where(address: dict[str, Any]) -> dict[str, Any]:
        where: dict[str, Any] = {"chat_id": address["chat_id"]}
        if address.get("message_thread_id"):
            where["message_thread_id"] = address["message_thread_id"]
        return where

    async def send_text(self, address: dict[str, Any], text: str) -> str:
        message = await self._call("send_message", text=text, **self._where(address))
        return str(message.message_id)

    async def edit_text(self, address: dict[str, Any], message_id: str, text: str) -> None:
        try:
            await self._call("edit_message_text", chat_id=address["chat_id"], message_id=int(message_id), text=text)
        except PlatformError as exc:
            if "not modified" not in exc.message:  # the same text again is not a failure
                raise

    async def send_file(self, address: dict[str, Any], name: str, data: bytes, mime_type: str | None) -> str:
        message = await self._call("send_document", document=InputFile(data, filename=name),
                                   **self._where(address))
        return str(message.message_id)

    async def send_interaction(self, address: dict[str, Any], interaction_id: str,
                               request: InteractionRequest) -> str:
        buttons = request.buttons()
        if not buttons:
            return await super().send_interaction(address, interaction_id, request)
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(label[:64], callback_data=button_data(
            interaction_id, i))] for i, (_, label) in enumerate(buttons)])
        text = request.title if not request.description else f"{request.title}\n\n{request.description}"
        message = await self._call("send_message", text=text, reply_markup=keyboard, **self._where(address))
        return str(message.message_id)

    async def acknowledge(self, answer: InteractionAnswer, text: str) -> None:
        query_id = answer.ack.get("callback_query_id")
        if query_id:
            await self._call("answer_callback_query", callback_query_id=query_id, text=text[:200])

    async def close(self) -> None:
        if self._ready:
            await self._bot.shutdown()
