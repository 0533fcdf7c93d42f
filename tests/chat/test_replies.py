"""A runner's explicit messages (``RunnerAPI.message_send``; LangBot's reply / reply_message /
send_message / reply_stream) through the host-owned, recorded delivery — without Ray.

The real run flow (RunDriver, Registry, StorageService, RunSlots on Postgres and SQLite: see
``tests/actors/inprocess.py``) with the real delivery engine and Telegram adapter, against the
fake Telegram Bot API over real HTTP. The same flow on Ray and Serve is in
``tests/serve/test_platforms_e2e.py``.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import uuid

import pytest

from actors.core.delivery import ACTION_PART_BASE, DeliveryService
from platforms import telegram
from platforms.config import DeliveryTuning
from platforms.credentials import Secret
from platforms.telegram import TelegramAdapter
from protocol.agents import AgentConfig, DeliveryPolicy
from protocol.events import EventEnvelope
from tests.actors.inprocess import InProcessPorts, collect, make_driver
from tests.chat.conftest import TELEGRAM_TOKEN
from tests.chat.reply_runners import FOREIGN_CHAT, REPLY_PROBE_ID, SDK_REPLY_ID

_chats = itertools.count(7000)
RUNNERS = {REPLY_PROBE_ID: "tests.chat.reply_runners:ReplyProbeRunner",
           SDK_REPLY_ID: "tests.chat.reply_runners:EventProcessorRunner"}
AGENTS = {
    "replier": AgentConfig(runner_id=REPLY_PROBE_ID, delivery_policy=DeliveryPolicy(edit_interval_s=0.05)),
    # LangBot's agent / event-processor mode: the host delivers nothing by itself
    "quiet": AgentConfig(runner_id=REPLY_PROBE_ID, delivery_policy=DeliveryPolicy(reply=False)),
    "silent": AgentConfig(runner_id=REPLY_PROBE_ID, runner_config={"silent": True},
                          delivery_policy=DeliveryPolicy(reply=False)),
    "sdk": AgentConfig(runner_id=SDK_REPLY_ID, delivery_policy=DeliveryPolicy(reply=False)),
}


@pytest.fixture
async def host(db, fake_telegram):
    adapter = TelegramAdapter(Secret(TELEGRAM_TOKEN), api_base=fake_telegram.base_url)
    ports = InProcessPorts(db, AGENTS, extra_runners=RUNNERS, host_id=f"host_{uuid.uuid4().hex[:8]}")
    ports.delivery = DeliveryService(ports, lambda name: adapter, DeliveryTuning())
    driver = make_driver(ports, connections={"tg": "telegram"})
    await driver.slots.warm()
    yield ports, driver
    await delivered(driver)
    await driver.close()


async def delivered(driver) -> None:
    """Every run's host-owned delivery (a background task of the driver) has finished."""
    for _ in range(500):
        if not driver._deliveries:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("deliveries still running")


def from_telegram(chat: int, text: str = "hi") -> EventEnvelope:
    return EventEnvelope(event_type="message.received", source="platform", bot_id="tgbot",
                         conversation_id=f"telegram:tgbot:{chat}", actor={"actor_id": "9"}, input={"text": text},
                         delivery=telegram.delivery("tg", chat, 1, None))


async def run(driver, event: EventEnvelope, agent: str) -> tuple[list[dict], dict]:
    frames = await collect(await driver.submit(event, agent))
    terminal = frames[-1]
    assert terminal["type"] == "run.completed", terminal
    message = next((f for f in reversed(frames) if f["type"] == "message.completed"), None)
    return frames, json.loads(message["data"]["message"]["content"]) if message else {}


async def test_a_platform_run_posts_explicitly_once_per_key_and_only_into_its_chat(host, fake_telegram):
    ports, driver = host
    chat = next(_chats)
    frames, seen = await run(driver, from_telegram(chat), "replier")
    assert seen["automatic_reply"] is True and seen["message_send"] is True
    assert seen["status"] == "delivered" and seen["first"] == seen["again"] and len(seen["first"]) == 1
    assert seen["parts"] == [ACTION_PART_BASE] and seen["foreign"] == "unauthorized"
    assert seen["reused_key"] == "invalid_argument"
    await delivered(driver)
    rows = await ports.read("delivery_list", run_id=frames[0]["run_id"])
    texts = [m["text"] for m in fake_telegram.messages(chat)]
    assert texts.count("progress: 50%") == 1  # the retried call posted nothing new
    assert texts[-1] == json.dumps(seen, sort_keys=True)  # the run's result, delivered by the host
    assert fake_telegram.messages(FOREIGN_CHAT) == []
    explicit = [r for r in rows if r["part"] == ACTION_PART_BASE]
    assert [(r["status"], r["platform_message_id"], r["attempts"]) for r in explicit] == [
        ("delivered", seen["first"][0], 1)]  # the fact, one attempt


async def test_without_automatic_reply_only_explicit_messages_reach_the_chat(host, fake_telegram):
    ports, driver = host
    chat = next(_chats)
    _, seen = await run(driver, from_telegram(chat), "quiet")
    assert seen["automatic_reply"] is False and seen["message_send"] is True and seen["status"] == "delivered"
    await delivered(driver)
    assert [m["text"] for m in fake_telegram.messages(chat)] == ["progress: 50%"]  # the result is not delivered
    # a run that says everything explicitly and yields no message has answered (not runner.empty_output)
    chat = next(_chats)
    event = from_telegram(chat)
    frames, _ = await run(driver, event, "silent")
    await delivered(driver)
    run_record = await ports.read("run_get", run_id=frames[0]["run_id"])
    assert run_record["status"] == "completed"
    assert [m["text"] for m in fake_telegram.messages(chat)] == ["progress: 50%"]
    history = await ports.read("history_page", conversation_id=event.conversation_id, limit=10)
    assert [(i["role"], i["content"]) for i in history["items"]] == [("user", "hi"), ("assistant", "progress: 50%")]


async def test_an_http_run_is_told_it_has_no_delivery_target(host):
    _, driver = host
    event = EventEnvelope(event_type="message.received", conversation_id=f"c-{uuid.uuid4().hex[:8]}",
                          actor={"actor_id": "u1"}, input={"text": "hi"})
    _, seen = await run(driver, event, "replier")
    assert seen["automatic_reply"] is False and seen["message_send"] is False
    assert (seen["error"], seen["reason"]) == ("invalid_argument", "no_delivery_target")
    assert "no delivery target" in seen["message"]


async def test_a_langbot_sdk_event_processor_replies_through_the_host(host, fake_telegram):
    ports, driver = host
    chat = next(_chats)
    frames = await collect(await driver.submit(from_telegram(chat), "sdk"))
    assert frames[-1]["type"] == "run.completed", frames[-1]
    await delivered(driver)
    texts = [m["text"] for m in fake_telegram.messages(chat)]
    assert texts[:3] == ["sdk: hello", "sdk: chain[Image]", "sdk: streamed"]  # reply_stream: the final text, once
    notes = json.loads(texts[3])
    assert notes == {"automatic_reply": False, "not_sent": ["Image"], "foreign": "unauthorized",
                     "stream": "delivered"}
    assert len(texts) == 4 and fake_telegram.messages(FOREIGN_CHAT) == []
    # the SDK traced each reply as tool.call.* results, which are in the run's stream
    traced = [(f["type"], f["data"]["tool_name"]) for f in frames if f["type"].startswith("tool.call")]
    assert traced.count(("tool.call.completed", "event_reply")) == 4
    assert ("tool.call.completed", "platform_send_message") in traced
    rows = await ports.read("delivery_list", run_id=frames[0]["run_id"])
    assert [r["status"] for r in rows] == ["delivered"] * 4


def test_the_plan_names_the_own_chat_whatever_the_policy():
    from protocol.delivery import plan_delivery
    connections = {"tg": "telegram", "hook": "webhook"}
    event = from_telegram(5)
    auto = plan_delivery("r1", "a", DeliveryPolicy(), event, connections)
    assert auto.automatic_reply and auto.own_chat == auto.targets[0] and auto.own_chat.reply_target["chat_id"] == 5
    quiet = plan_delivery("r1", "a", DeliveryPolicy(reply=False, webhooks=["hook"]), event, connections)
    assert not quiet.automatic_reply and quiet.own_chat == auto.own_chat
    assert [t.platform for t in quiet.targets] == ["webhook"]  # results still go to the webhook
    http = EventEnvelope(event_type="message.received", conversation_id="c", input={"text": "hi"})
    assert plan_delivery("r1", "a", DeliveryPolicy(), http, connections).own_chat is None
    # a reply target on a connection this host does not have is no chat of the run's
    assert plan_delivery("r1", "a", DeliveryPolicy(), event, {"hook": "webhook"}).own_chat is None
