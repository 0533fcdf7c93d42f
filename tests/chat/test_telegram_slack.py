"""Telegram and Slack adapters: inbound mapping and authenticity, outbound against the fakes."""
from __future__ import annotations

import itertools
import json
import time
import uuid

import pytest

from actors.core.delivery import DeliveryService
from platforms import slack, telegram
from platforms.base import parse_button_data
from platforms.config import DeliveryTuning
from platforms.credentials import Secret
from platforms.slack import SlackAdapter
from platforms.telegram import TelegramAdapter
from protocol.delivery import DeliveryPlan, DeliveryTarget
from protocol.interactions import InteractionRequest
from tests.chat.conftest import SLACK_SIGNING_SECRET, SLACK_TOKEN, TELEGRAM_SECRET, TELEGRAM_TOKEN, delta, done
from tests.fakes.platforms.slack import message_event, signed_headers
from tests.fakes.platforms.telegram import callback_update, text_update

_ids = itertools.count(5000)
QUESTION = InteractionRequest(interaction_id="confirm-1", kind="confirmation", title="Deploy?",
                              fallback_text="Deploy to production? Answer yes or no.",
                              actions=[{"id": "yes", "label": "Yes", "style": "primary"},
                                       {"id": "no", "label": "No", "style": "danger"}])


# -- Telegram --------------------------------------------------------------------------------
def test_telegram_secret_token():
    secret = Secret(TELEGRAM_SECRET)
    assert telegram.verify({"x-telegram-bot-api-secret-token": TELEGRAM_SECRET}, secret)
    assert not telegram.verify({"x-telegram-bot-api-secret-token": "forged"}, secret)
    assert not telegram.verify({}, secret)


def test_telegram_text_message_is_one_event():
    inbound = telegram.parse(text_update(77, 12345, "hello bot", user_id=9, message_id=3), connection="tg",
                             bot_id="tgbot")
    [event] = inbound.events
    assert inbound.dedupe_key == "77"
    assert (event.event_type, event.source_event_type, event.source) == ("message.received", "message", "platform")
    assert event.event_id == "tg-tg-77" and event.conversation_id == "telegram:tgbot:12345"
    assert event.input.text == "hello bot" and event.actor.actor_id == "9" and event.actor.actor_name == "Ada"
    assert event.delivery.reply_target == {"connection": "tg", "platform": "telegram", "chat_id": 12345,
                                           "message_id": 3}
    assert (event.delivery.supports_edit, event.delivery.max_message_size) == (True, 4096)


def test_telegram_join_is_not_a_message():
    update = {"update_id": 78, "message": {
        "message_id": 4, "date": 1_700_000_000, "chat": {"id": -100, "type": "group", "title": "G"},
        "from": {"id": 1, "is_bot": False, "first_name": "Admin"},
        "new_chat_members": [{"id": 21, "is_bot": False, "first_name": "Bob"},
                             {"id": 22, "is_bot": False, "first_name": "Cy"}]}}
    events = telegram.parse(update, connection="tg", bot_id="tgbot").events
    assert [e.event_type for e in events] == ["group.member_joined", "group.member_joined"]
    assert [e.actor.actor_id for e in events] == ["21", "22"]
    assert all(e.input.text is None and not e.is_message for e in events)
    assert len({e.event_id for e in events}) == 2


def test_telegram_service_updates_are_ignored():
    update = {"update_id": 79, "message": {"message_id": 5, "date": 1_700_000_000,
                                           "chat": {"id": -100, "type": "group", "title": "G"},
                                           "pinned_message": {"message_id": 1, "date": 1, "chat": {"id": -100, "type": "group"}}}}
    assert telegram.parse(update, connection="tg", bot_id="tgbot").events == []


def test_telegram_button_tap_is_an_answer():
    inbound = telegram.parse(callback_update(80, 12345, "ia:ia_abc:1", user_id=9), connection="tg", bot_id="b")
    assert inbound.events == [] and inbound.answer is not None
    assert (inbound.answer.interaction_id, inbound.answer.values, inbound.answer.actor_id) == ("ia_abc",
                                                                                              {"choice_index": 1}, "9")
    assert inbound.answer.ack == {"callback_query_id": "cbq80"}


async def test_telegram_inline_keyboard(fake_telegram):
    adapter = TelegramAdapter(Secret(TELEGRAM_TOKEN), api_base=fake_telegram.base_url)
    chat = next(_ids)
    await adapter.send_interaction({"chat_id": chat}, "ia_0123", QUESTION)
    [shown] = fake_telegram.messages(chat)
    rows = shown["reply_markup"]["inline_keyboard"]
    assert [[b["text"] for b in row] for row in rows] == [["Yes"], ["No"]]
    assert [parse_button_data(row[0]["callback_data"]) for row in rows] == [("ia_0123", 0), ("ia_0123", 1)]


async def test_telegram_wrong_token_is_a_permanent_failure(fake_telegram):
    from platforms.base import PlatformError
    adapter = TelegramAdapter(Secret("1:wrong"), api_base=fake_telegram.base_url)
    with pytest.raises(PlatformError) as info:
        await adapter.send_text({"chat_id": 1}, "x")
    assert not info.value.retryable and "1:wrong" not in info.value.message


# -- Slack ------------------------------------------------------------------------------------
def test_slack_signature_and_window():
    body = json.dumps(message_event("Ev1", "C1", "hi")).encode()
    secret = Secret(SLACK_SIGNING_SECRET)
    assert slack.verify({k.lower(): v for k, v in signed_headers(SLACK_SIGNING_SECRET, body).items()}, body, secret)
    forged = {k.lower(): v for k, v in signed_headers("not-the-secret", body).items()}
    assert not slack.verify(forged, body, secret)
    stale = {k.lower(): v for k, v in signed_headers(SLACK_SIGNING_SECRET, body,
                                                     timestamp=int(time.time()) - 600).items()}
    assert not slack.verify(stale, body, secret)  # replay outside the 5-minute window
    tampered = {k.lower(): v for k, v in signed_headers(SLACK_SIGNING_SECRET, body).items()}
    assert not slack.verify(tampered, body.replace(b"hi", b"ho"), secret)
    # no headers, or a timestamp that is not a number: refused (not an error, which would be a 500)
    assert not slack.verify({}, body, secret)
    assert not slack.verify({**forged, "x-slack-request-timestamp": "soon"}, body, secret)


def test_slack_url_verification():
    body = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "x"}).encode()
    inbound = slack.parse(body, "application/json", connection="sl", bot_id="b")
    assert inbound.reply == {"challenge": "c-123"} and inbound.events == []


def test_slack_thread_message_maps_thread_id():
    body = json.dumps(message_event("Ev2", "C9", "in thread", ts="171.2", thread_ts="171.1")).encode()
    inbound = slack.parse(body, "application/json", connection="sl", bot_id="b")
    [event] = inbound.events
    assert inbound.dedupe_key == "Ev2" and event.event_id == "slack-sl-Ev2"
    assert (event.conversation_id, event.thread_id, event.workspace_id) == ("slack:T1:C9", "171.1", "T1")
    assert event.delivery.reply_target["thread_ts"] == "171.1"


def test_slack_non_messages_and_bots():
    deleted = {"type": "event_callback", "team_id": "T1", "event_id": "Ev3", "event": {
        "type": "message", "subtype": "message_deleted", "channel": "C1", "deleted_ts": "9.9",
        "previous_message": {"user": "U7", "text": "oops", "ts": "9.9"}}}
    [event] = slack.parse(json.dumps(deleted).encode(), "application/json", connection="sl", bot_id="b").events
    assert (event.event_type, event.source_event_type, event.input.text) == (
        "message.recalled", "message.message_deleted", None)
    joined = {"type": "event_callback", "team_id": "T1", "event_id": "Ev4",
              "event": {"type": "member_joined_channel", "user": "U8", "channel": "C1"}}
    [event] = slack.parse(json.dumps(joined).encode(), "application/json", connection="sl", bot_id="b").events
    assert event.event_type == "group.member_joined" and event.actor.actor_id == "U8"
    bot = message_event("Ev5", "C1", "I am a bot")
    bot["event"]["bot_id"] = "BBOT"
    assert slack.parse(json.dumps(bot).encode(), "application/json", connection="sl", bot_id="b").events == []


async def test_slack_streams_by_chat_update_in_thread_with_429_once(storage, waits, fake_slack):
    adapter = SlackAdapter(Secret(SLACK_TOKEN), api_base=fake_slack.base_url)
    channel = f"C{next(_ids)}"
    target = DeliveryTarget(connection="sl", platform="slack", reply_target={
        "connection": "sl", "channel": channel, "thread_ts": "171.1"}, edit=True, max_message_size=3000,
        edit_interval_s=0.05)
    plan = DeliveryPlan(run_id=f"run_{uuid.uuid4().hex}", targets=[target])
    fake_slack.fail_next("chat.postMessage", 429, retry_after=2)
    engine = DeliveryService(storage, lambda _: adapter, DeliveryTuning(), sleep=waits)
    import asyncio
    await engine.on_frames(plan, [delta(0, "part one")])  # first post hits the 429: kept for the next flush
    await asyncio.sleep(0.06)
    await engine.on_frames(plan, [delta(1, " and two")])
    records = await engine.on_terminal(plan, done(2))
    [shown] = fake_slack.messages(channel)
    assert shown["text"] == "part one and two" and shown["thread_ts"] == "171.1"
    assert records[0]["status"] == "delivered" and records[0]["platform_message_id"] == shown["ts"]
    assert sum(1 for m, p in fake_slack.calls if m == "chat.postMessage" and p.get("channel") == channel) == 2
    assert any(1.5 < w <= 2 for w in waits.requested)  # the next update waited out Retry-After


async def test_slack_block_kit_buttons_round_trip(fake_slack):
    adapter = SlackAdapter(Secret(SLACK_TOKEN), api_base=fake_slack.base_url)
    channel = f"C{next(_ids)}"
    await adapter.send_interaction({"channel": channel}, "ia_77", QUESTION)
    [shown] = fake_slack.messages(channel)
    buttons = shown["blocks"][1]["elements"]
    assert [(b["text"]["text"], b.get("style")) for b in buttons] == [("Yes", "primary"), ("No", "danger")]
    assert shown["text"] == QUESTION.fallback_text  # notifications and old clients
    payload = {"type": "block_actions", "user": {"id": "U1", "username": "ada"},
               "actions": [{"action_id": buttons[1]["action_id"], "value": buttons[1]["value"]}]}
    from urllib.parse import urlencode
    inbound = slack.parse(urlencode({"payload": json.dumps(payload)}).encode(),
                          "application/x-www-form-urlencoded", connection="sl", bot_id="b")
    assert (inbound.answer.interaction_id, inbound.answer.values) == ("ia_77", {"choice_index": 1})


async def test_bot_token_never_reaches_the_logs(fake_telegram, caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    adapter = TelegramAdapter(Secret(TELEGRAM_TOKEN), api_base=fake_telegram.base_url)
    await adapter.send_text({"chat_id": next(_ids)}, "hello")
    assert any("sendMessage" in r.getMessage() for r in caplog.records)  # httpx did log the request
    assert TELEGRAM_TOKEN not in caplog.text and TELEGRAM_TOKEN.split(":")[1] not in caplog.text
