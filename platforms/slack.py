"""Slack (Events API + Web API) over slack_sdk.

Inbound authenticity: ``X-Slack-Signature`` / ``X-Slack-Request-Timestamp`` checked with
slack_sdk's :class:`SignatureVerifier` against the signing secret (5-minute window). A
``url_verification`` request is answered with its challenge. Slack retries a delivery it
thinks failed (``X-Slack-Retry-Num``) with the same ``event_id``: :attr:`Inbound.dedupe_key`
carries it, and the envelope's ``event_id`` derives from it.

Mapping: ``message`` (plain, ``thread_broadcast``, ``file_share``) and ``app_mention`` →
``message.received``; ``message`` / ``message_deleted`` → ``message.recalled``;
``member_joined_channel`` → ``group.member_joined``. A message in a thread carries the
thread's ``thread_ts`` as ``thread_id`` and is answered in that thread. Messages of bots
(including ourselves) are ignored, so a bot never answers itself. Block Kit button taps
(``block_actions``) on a rendered interaction become interaction answers.
"""
from __future__ import annotations

import json
from typing import Any, Mapping
from urllib.parse import parse_qs

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from protocol.errors import invalid_argument
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

PLATFORM = "slack"
DEFAULT_API = "https://slack.com/api/"
#: Slack truncates very long messages and a section block takes 3000 characters: stay below.
MAX_MESSAGE = 3000
_MESSAGE_SUBTYPES = {None, "thread_broadcast", "file_share"}
_STYLES = {"primary": "primary", "danger": "danger"}


def verify(headers: Mapping[str, str], body: bytes, secret: Secret) -> bool:
    verifier = SignatureVerifier(secret.reveal())
    try:
        return verifier.is_valid(body=body, timestamp=headers.get("x-slack-request-timestamp", ""),
                                 signature=headers.get("x-slack-signature", ""))
    except ValueError:  # a missing or non-numeric timestamp: slack_sdk parses it with int()
        return False


def parse(body: bytes, content_type: str, *, connection: str, bot_id: str) -> Inbound:
    """One verified request of the Events API or of interactivity (form-encoded ``payload``)."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        payload = parse_qs(body.decode()).get("payload", [None])[0]
        if payload is None:
            raise invalid_argument("slack interactivity request without payload")
        return _interactivity(json.loads(payload))
    try:
        data = json.loads(body)
    except ValueError:
        raise invalid_argument("slack request body is not JSON") from None
    kind = data.get("type")
    if kind == "url_verification":
        return Inbound(reply={"challenge": data.get("challenge", "")})
    if kind != "event_callback":
        return Inbound()
    event = data.get("event") or {}
    event_id = str(data.get("event_id") or "")
    team = str(data.get("team_id") or event.get("team") or "")
    envelope = _event(event, event_id=event_id, team=team, connection=connection, bot_id=bot_id,
                      event_time=data.get("event_time"))
    return Inbound(events=[envelope] if envelope else [], dedupe_key=event_id or None)


def _event(event: dict[str, Any], *, event_id: str, team: str, connection: str, bot_id: str,
           event_time: Any) -> EventEnvelope | None:
    kind = event.get("type")
    subtype = event.get("subtype")
    channel = event.get("channel")
    common = dict(event_id=f"slack-{connection}-{event_id}", source="platform", bot_id=bot_id,
                  workspace_id=team or None, event_time=int(event_time) if event_time else None)
    common = {k: v for k, v in common.items() if v is not None}
    if kind in ("message", "app_mention") and subtype in _MESSAGE_SUBTYPES:
        if event.get("bot_id") or not event.get("user"):
            return None
        thread = event.get("thread_ts")
        return EventEnvelope(
            **common, event_type="message.received", source_event_type=kind,
            conversation_id=_conversation(team, channel), thread_id=thread,
            actor=EventActor(actor_id=event["user"]),
            subject=EventSubject(subject_type="message", subject_id=event.get("ts"),
                                 data={"channel_type": event.get("channel_type")}),
            input=EventInput(text=event.get("text") or ""),
            delivery=delivery(connection, channel, thread, event.get("ts")),
            data={"channel": channel, "ts": event.get("ts"), "thread_ts": thread})
    if kind == "message" and subtype == "message_deleted":
        previous = event.get("previous_message") or {}
        return EventEnvelope(
            **common, event_type="message.recalled", source_event_type="message.message_deleted",
            conversation_id=_conversation(team, channel), thread_id=previous.get("thread_ts"),
            actor=EventActor(actor_id=previous.get("user")) if previous.get("user") else EventActor(actor_type="system"),
            subject=EventSubject(subject_type="message", subject_id=event.get("deleted_ts")),
            delivery=delivery(connection, channel, previous.get("thread_ts"), None),
            data={"channel": channel, "deleted_ts": event.get("deleted_ts")})
    if kind == "member_joined_channel":
        return EventEnvelope(
            **common, event_type="group.member_joined", source_event_type=kind,
            conversation_id=_conversation(team, channel), actor=EventActor(actor_id=event.get("user")),
            subject=EventSubject(subject_type="channel", subject_id=channel,
                                 data={"channel_type": event.get("channel_type")}),
            delivery=delivery(connection, channel, None, None),
            data={"channel": channel, "inviter": event.get("inviter")})
    return None


def delivery(connection: str, channel: str | None, thread_ts: str | None, ts: str | None) -> EventDelivery:
    target: dict[str, Any] = {"connection": connection, "platform": PLATFORM, "channel": channel}
    if thread_ts:
        target["thread_ts"] = thread_ts
    if ts:
        target["message_ts"] = ts
    return EventDelivery(surface=PLATFORM, reply_target=target, supports_streaming=True, supports_edit=True,
                         supports_reaction=True, max_message_size=MAX_MESSAGE,
                         platform_capabilities={"adapter": PLATFORM, "files": False,
                                                "interactions": {"field_types": ["select"],
                                                                 "action_styles": ["default", "primary",
                                                                                   "danger"]}})


def _conversation(team: str, channel: str | None) -> str:
    return f"slack:{team}:{channel}"


def _interactivity(payload: dict[str, Any]) -> Inbound:
    if payload.get("type") != "block_actions":
        return Inbound()
    user = payload.get("user") or {}
    for action in payload.get("actions") or []:
        parsed = parse_button_data(action.get("value"))
        if parsed is not None:
            interaction_id, index = parsed
            return Inbound(answer=InteractionAnswer(
                interaction_id=interaction_id, action_id=None, values={"choice_index": index},
                actor_id=user.get("id"), actor_name=user.get("username") or user.get("name"),
                ack={"response_url": payload.get("response_url")}))
    return Inbound()


class SlackAdapter(OutboundAdapter):
    platform = PLATFORM
    supports_edit = True
    max_message_size = MAX_MESSAGE

    def __init__(self, token: Secret, *, api_base: str | None = None, timeout_s: float = 20.0) -> None:
        base = (api_base.rstrip("/") + "/api/") if api_base else DEFAULT_API
        self._client = AsyncWebClient(token=token.reveal(), base_url=base, timeout=int(timeout_s))

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await getattr(self._client, method)(**kwargs)
            return dict(response.data)  # type: ignore[arg-type]
        except SlackApiError as exc:
            status = exc.response.status_code
            error = (exc.response.data or {}).get("error", "error") if isinstance(exc.response.data, dict) else "error"
            if status == 429 or error == "ratelimited":
                after = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after") or "1"
                raise PlatformError("slack rate limited", retryable=True, retry_after=float(after),
                                    status=429) from None
            raise PlatformError(f"slack {method}: {error}", retryable=status >= 500, status=status) from None
        except (SlackRequestError, OSError, TimeoutError) as exc:
            raise PlatformError(f"slack {method}: {type(exc).__name__}", retryable=True) from None

    async def send_text(self, address: dict[str, Any], text: str, **extra: Any) -> str:
        kwargs: dict[str, Any] = {"channel": address["channel"], "text": text, **extra}
        if address.get("thread_ts"):
            kwargs["thread_ts"] = address["thread_ts"]
        return str((await self._call("chat_postMessage", **kwargs))["ts"])

    async def edit_text(self, address: dict[str, Any], message_id: str, text: str) -> None:
        await self._call("chat_update", channel=address["channel"], ts=message_id, text=text)

    async def send_interaction(self, address: dict[str, Any], interaction_id: str,
                               request: InteractionRequest) -> str:
        buttons = request.buttons()
        if not buttons:
            return await super().send_interaction(address, interaction_id, request)
        styles = {a.id: _STYLES.get(a.style) for a in request.actions}
        elements = []
        for i, (value, label) in enumerate(buttons):
            element: dict[str, Any] = {"type": "button", "action_id": f"rh_interaction_{i}",
                                       "text": {"type": "plain_text", "text": label[:75]},
                                       "value": button_data(interaction_id, i)}
            if styles.get(value):
                element["style"] = styles[value]
            elements.append(element)
        text = request.title if not request.description else f"*{request.title}*\n{request.description}"
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
                  {"type": "actions", "block_id": f"rh_{interaction_id}"[:255], "elements": elements}]
        return await self.send_text(address, request.fallback_text[:3000], blocks=blocks)

    async def close(self) -> None:
        session = getattr(self._client, "session", None)
        if session is not None:
            await session.close()
