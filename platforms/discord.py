"""Discord over hikari: the Gateway in (a long-lived websocket, resumed by hikari after a
drop), REST out (create / edit message, attachments, message components).

Inbound authenticity is the Gateway itself: only Discord, after our bot token's IDENTIFY,
sends on that socket, so there is no per-event signature to check. Mapping of raw dispatch
payloads (hikari's ``ShardPayloadEvent``): ``MESSAGE_CREATE`` by a non-bot → ``message.received``;
``MESSAGE_DELETE`` → ``message.recalled``; ``GUILD_MEMBER_ADD`` → ``group.member_joined``; a
component ``INTERACTION_CREATE`` on a rendered interaction → an interaction answer. Bots have no
friend requests on Discord. Everything else is ignored, never disguised as a message.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import hikari

from protocol.events import (
    EventActor,
    EventDelivery,
    EventEnvelope,
    EventInput,
    EventSubject,
)
from protocol.interactions import InteractionRequest
from protocol.logs import get_logger

from .base import (
    Inbound,
    InteractionAnswer,
    OutboundAdapter,
    PlatformError,
    button_data,
    parse_button_data,
)
from .credentials import Secret

log = get_logger(__name__)

PLATFORM = "discord"
MAX_MESSAGE = 2000
#: Guilds, guild messages, DMs, guild members (privileged) and message content (privileged).
DEFAULT_INTENTS = int(hikari.Intents.GUILDS | hikari.Intents.GUILD_MESSAGES | hikari.Intents.DM_MESSAGES
                      | hikari.Intents.GUILD_MEMBERS | hikari.Intents.MESSAGE_CONTENT)
_STYLES = {"primary": hikari.ButtonStyle.PRIMARY, "danger": hikari.ButtonStyle.DANGER,
           "default": hikari.ButtonStyle.SECONDARY}


def parse(name: str, data: dict[str, Any], *, connection: str, bot_id: str) -> Inbound:
    """One Gateway dispatch (``t`` = ``name``, ``d`` = ``data``)."""
    if name == "MESSAGE_CREATE":
        author = data.get("author") or {}
        if author.get("bot") or data.get("webhook_id"):
            return Inbound()
        guild = data.get("guild_id")
        channel = data["channel_id"]
        return Inbound(events=[EventEnvelope(
            event_id=f"discord-{connection}-{data['id']}", event_type="message.received", source="platform",
            source_event_type=name, bot_id=bot_id, workspace_id=guild,
            conversation_id=_conversation(guild, channel),
            actor=EventActor(actor_id=author.get("id"), actor_name=author.get("global_name") or author.get("username")),
            subject=EventSubject(subject_type="message", subject_id=data["id"]),
            input=EventInput(text=data.get("content") or ""),
            delivery=delivery(connection, channel, data["id"]),
            data={"guild_id": guild, "channel_id": channel, "message_id": data["id"]})])
    if name == "MESSAGE_DELETE":
        guild = data.get("guild_id")
        return Inbound(events=[EventEnvelope(
            event_id=f"discord-{connection}-delete-{data['id']}", event_type="message.recalled", source="platform",
            source_event_type=name, bot_id=bot_id, workspace_id=guild,
            conversation_id=_conversation(guild, data["channel_id"]), actor=EventActor(actor_type="system"),
            subject=EventSubject(subject_type="message", subject_id=data["id"]),
            delivery=delivery(connection, data["channel_id"], None),
            data={"guild_id": guild, "channel_id": data["channel_id"], "message_id": data["id"]})])
    if name == "GUILD_MEMBER_ADD":
        user = data.get("user") or {}
        guild = data["guild_id"]
        return Inbound(events=[EventEnvelope(
            event_id=f"discord-{connection}-join-{guild}-{user.get('id')}-{data.get('joined_at')}",
            event_type="group.member_joined", source="platform", source_event_type=name, bot_id=bot_id,
            workspace_id=guild, conversation_id=f"discord:{guild}",
            actor=EventActor(actor_id=user.get("id"), actor_name=user.get("global_name") or user.get("username")),
            subject=EventSubject(subject_type="guild", subject_id=guild),
            delivery=EventDelivery(surface=PLATFORM, supports_streaming=False, max_message_size=MAX_MESSAGE,
                                   platform_capabilities={"adapter": PLATFORM}),
            data={"guild_id": guild, "user_id": user.get("id")})])
    if name == "INTERACTION_CREATE" and data.get("type") == 3:  # MESSAGE_COMPONENT
        parsed = parse_button_data((data.get("data") or {}).get("custom_id"))
        if parsed is None:
            return Inbound()
        user = (data.get("member") or {}).get("user") or data.get("user") or {}
        interaction_id, index = parsed
        return Inbound(answer=InteractionAnswer(
            interaction_id=interaction_id, action_id=None, values={"choice_index": index},
            actor_id=user.get("id"), actor_name=user.get("username"),
            ack={"interaction_id": data["id"], "token": data["token"]}), dedupe_key=data["id"])
    return Inbound()


def delivery(connection: str, channel: str, message_id: str | None) -> EventDelivery:
    target: dict[str, Any] = {"connection": connection, "platform": PLATFORM, "channel_id": channel}
    if message_id:
        target["message_id"] = message_id
    return EventDelivery(surface=PLATFORM, reply_target=target, supports_streaming=True, supports_edit=True,
                         supports_reaction=True, max_message_size=MAX_MESSAGE,
                         platform_capabilities={"adapter": PLATFORM, "files": True,
                                                "interactions": {"field_types": ["select"],
                                                                 "action_styles": ["default", "primary",
                                                                                   "danger"]}})


def _conversation(guild: str | None, channel: str) -> str:
    return f"discord:{guild or 'dm'}:{channel}"


class DiscordAdapter(OutboundAdapter):
    """REST out through a hikari ``RESTApp`` (its bucket limiter honours 429 ``retry_after``)."""

    platform = PLATFORM
    supports_edit = True
    supports_files = True
    max_message_size = MAX_MESSAGE

    def __init__(self, token: Secret, *, api_base: str | None = None, max_rate_limit_s: float = 120.0) -> None:
        self._token = token
        self._app = hikari.RESTApp(url=_rest_url(api_base), max_rate_limit=max_rate_limit_s, max_retries=3)
        self._client: Any = None

    async def _rest(self) -> Any:
        if self._client is None:
            await self._app.start()
            self._client = self._app.acquire(self._token.reveal(), hikari.TokenType.BOT)
            self._client.start()
        return self._client

    async def _call(self, what: str, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        try:
            return await fn(await self._rest())
        except hikari.RateLimitTooLongError as exc:
            raise PlatformError("discord rate limited", retryable=True, retry_after=exc.retry_after,
                                status=429) from None
        except hikari.InternalServerError as exc:
            raise PlatformError(f"discord {what}: {exc.status}", retryable=True, status=int(exc.status)) from None
        except hikari.ClientHTTPResponseError as exc:
            raise PlatformError(f"discord {what}: {exc.status} {exc.message}"[:300], retryable=False,
                                status=int(exc.status)) from None
        except hikari.HTTPError as exc:
            raise PlatformError(f"discord {what}: {type(exc).__name__}", retryable=True) from None

    async def send_text(self, address: dict[str, Any], text: str) -> str:
        message = await self._call("create message", lambda c: c.create_message(int(address["channel_id"]), text))
        return str(message.id)

    async def edit_text(self, address: dict[str, Any], message_id: str, text: str) -> None:
        await self._call("edit message", lambda c: c.edit_message(int(address["channel_id"]), int(message_id), text))

    async def send_file(self, address: dict[str, Any], name: str, data: bytes, mime_type: str | None) -> str:
        message = await self._call("create message", lambda c: c.create_message(
            int(address["channel_id"]), attachment=hikari.Bytes(data, name, mimetype=mime_type)))
        return str(message.id)

    async def send_interaction(self, address: dict[str, Any], interaction_id: str,
                               request: InteractionRequest) -> str:
        buttons = request.buttons()
        if not buttons:
            return await super().send_interaction(address, interaction_id, request)
        styles = {a.id: a.style for a in request.actions}

        async def create(client: Any) -> Any:
            rows = []
            for start in range(0, min(len(buttons), 25), 5):  # ≤ 5 buttons a row, ≤ 5 rows
                row = client.build_message_action_row()
                for i, (value, label) in list(enumerate(buttons))[start:start + 5]:
                    row.add_interactive_button(_STYLES[styles.get(value, "default")], button_data(interaction_id, i),
                                               label=label[:80])
                rows.append(row)
            text = request.title if not request.description else f"**{request.title}**\n{request.description}"
            return await client.create_message(int(address["channel_id"]), text[:MAX_MESSAGE], components=rows)

        return str((await self._call("create message", create)).id)

    async def acknowledge(self, answer: InteractionAnswer, text: str) -> None:
        if answer.ack.get("interaction_id"):
            await self._call("interaction response", lambda c: c.create_interaction_response(
                int(answer.ack["interaction_id"]), answer.ack["token"],
                hikari.ResponseType.DEFERRED_MESSAGE_UPDATE))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            await self._app.close()


def _rest_url(api_base: str | None) -> str | None:
    return f"{api_base.rstrip('/')}/api/v10" if api_base else None


DispatchSink = Callable[[str, dict[str, Any]], Awaitable[None]]


class DiscordGateway:
    """The Gateway connection of one bot: hikari's ``GatewayBot`` (heartbeats, IDENTIFY,
    RESUME after a drop) with every raw dispatch handed to ``on_dispatch(name, data)``."""

    def __init__(self, token: Secret, *, on_dispatch: DispatchSink, api_base: str | None = None,
                 intents: int | None = None) -> None:
        self._on_dispatch = on_dispatch
        self._bot = hikari.GatewayBot(
            token.reveal(), banner=None, logs=None, rest_url=_rest_url(api_base),
            intents=hikari.Intents(intents if intents is not None else DEFAULT_INTENTS),
            cache_settings=hikari.impl.CacheSettings(components=hikari.api.CacheComponents.NONE),
            auto_chunk_members=False, suppress_optimization_warning=True)
        self._bot.subscribe(hikari.ShardPayloadEvent, self._payload)

    async def _payload(self, event: hikari.ShardPayloadEvent) -> None:
        try:
            await self._on_dispatch(event.name, dict(event.payload))
        except Exception:  # one bad event must not stop the shard's dispatching
            log.exception("discord dispatch %s failed", event.name)

    async def start(self) -> None:
        await self._bot.start(check_for_updates=False)

    async def close(self) -> None:
        await self._bot.close()

    @property
    def is_alive(self) -> bool:
        return self._bot.is_alive

    async def wait_closed(self) -> None:
        await self._bot.join()

    def latency(self) -> float:
        return self._bot.heartbeat_latency
