"""Discord (hikari Gateway + REST), OneBot v11 reverse WebSocket and the signed webhook,
each against its fake over real sockets."""
from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest
from websockets.exceptions import InvalidStatus

from actors.core.delivery import DeliveryService
from platforms import discord, onebot
from platforms.base import PlatformError
from platforms.config import DeliveryTuning
from platforms.credentials import Secret
from platforms.discord import DiscordAdapter, DiscordGateway
from platforms.onebot import OneBotAdapter, OneBotServer
from platforms.webhook import WebhookAdapter
from protocol.delivery import DeliveryPlan, DeliveryTarget
from tests.chat.conftest import DISCORD_TOKEN, ONEBOT_TOKEN, WEBHOOK_SECRET, completed, delta, done
from tests.fakes.platforms.discord import message_create
from tests.fakes.platforms.onebot import FakeOneBotBridge, group_message, private_message
from tests.waiting import wait_until

_ids = itertools.count(800_000)


async def eventually(check, timeout: float = 10.0):
    return await wait_until(check, timeout=timeout, what=getattr(check, "__name__", "the check"))


# -- Discord -----------------------------------------------------------------------------------
def test_discord_dispatch_mapping():
    [event] = discord.parse("MESSAGE_CREATE", message_create("11", "22", "hey"), connection="dc", bot_id="b").events
    assert (event.event_type, event.source_event_type, event.conversation_id) == (
        "message.received", "MESSAGE_CREATE", "discord:700:22")
    assert event.delivery.reply_target == {"connection": "dc", "platform": "discord", "channel_id": "22",
                                           "message_id": "11"}
    assert event.delivery.max_message_size == 2000 and event.delivery.supports_edit
    bot_message = message_create("12", "22", "beep")
    bot_message["author"]["bot"] = True
    assert discord.parse("MESSAGE_CREATE", bot_message, connection="dc", bot_id="b").events == []
    [recalled] = discord.parse("MESSAGE_DELETE", {"id": "11", "channel_id": "22", "guild_id": "700"},
                               connection="dc", bot_id="b").events
    assert recalled.event_type == "message.recalled" and recalled.input.text is None
    [joined] = discord.parse("GUILD_MEMBER_ADD", {"guild_id": "700", "user": {"id": "5", "username": "bo"},
                                                  "joined_at": "2026"}, connection="dc", bot_id="b").events
    assert joined.event_type == "group.member_joined" and joined.delivery.reply_target is None
    assert discord.parse("TYPING_START", {"channel_id": "22"}, connection="dc", bot_id="b").events == []


async def test_discord_gateway_receives_and_resumes_after_a_drop(fake_discord):
    received: list[tuple[str, dict]] = []

    async def on_dispatch(name, data):
        received.append((name, data))

    gateway = DiscordGateway(Secret(DISCORD_TOKEN), on_dispatch=on_dispatch, api_base=fake_discord.base_url)
    await gateway.start()
    try:
        identifies = fake_discord.identifies
        await asyncio.to_thread(fake_discord.dispatch, "MESSAGE_CREATE", message_create("31", "40", "first"))
        await eventually(lambda: any(d.get("id") == "31" for n, d in received if n == "MESSAGE_CREATE"))
        await asyncio.to_thread(fake_discord.drop)
        await asyncio.to_thread(fake_discord.dispatch, "MESSAGE_CREATE", message_create("32", "40", "while away"))
        await eventually(lambda: any(d.get("id") == "32" for n, d in received if n == "MESSAGE_CREATE"))
        assert fake_discord.resumes >= 1 and fake_discord.identifies == identifies  # resumed, not re-identified
        messages = [d["id"] for n, d in received if n == "MESSAGE_CREATE"]
        assert messages.count("31") == 1 and messages.count("32") == 1
    finally:
        await gateway.close()


async def test_discord_rest_streams_by_edit_despite_a_429(storage, waits, fake_discord):
    adapter = DiscordAdapter(Secret(DISCORD_TOKEN), api_base=fake_discord.base_url)
    channel = str(next(_ids))
    target = DeliveryTarget(connection="dc", platform="discord", reply_target={"channel_id": channel}, edit=True,
                            max_message_size=2000, edit_interval_s=0.05)
    plan = DeliveryPlan(run_id=f"run_{uuid.uuid4().hex}", targets=[target])
    fake_discord.fail_next("create_message", 429, retry_after=0.3)
    engine = DeliveryService(storage, lambda _: adapter, DeliveryTuning(), sleep=waits)
    try:
        await engine.on_frames(plan, [delta(0, "Hello")])
        await asyncio.sleep(0.06)
        await engine.on_frames(plan, [delta(1, " world")])
        records = await engine.on_terminal(plan, done(2))
    finally:
        await adapter.close()
    [shown] = fake_discord.messages(channel)
    assert shown["content"] == "Hello world" and shown["edits"] >= 1
    assert records[0]["status"] == "delivered" and records[0]["platform_message_id"] == shown["id"]
    assert sum(1 for m, c in fake_discord.calls if m == "create_message" and c == channel) == 2  # 429, then 200


async def test_discord_file_and_buttons(fake_discord):
    from protocol.interactions import InteractionRequest
    adapter = DiscordAdapter(Secret(DISCORD_TOKEN), api_base=fake_discord.base_url)
    channel = str(next(_ids))
    try:
        await adapter.send_file({"channel_id": channel}, "report.txt", b"hello file", "text/plain")
        await adapter.send_interaction({"channel_id": channel}, "ia_9", InteractionRequest(
            interaction_id="q", title="Pick", fallback_text="Pick one",
            fields=[{"id": "color", "label": "Color", "type": "select",
                     "options": [{"value": "r", "label": "Red"}, {"value": "g", "label": "Green"}]}]))
    finally:
        await adapter.close()
    file_message, prompt = fake_discord.messages(channel)
    assert file_message["attachments"][0]["filename"] == "report.txt"
    buttons = prompt["components"][0]["components"]
    assert [(b["label"], b["custom_id"]) for b in buttons] == [("Red", "ia:ia_9:0"), ("Green", "ia:ia_9:1")]


# -- OneBot v11 ---------------------------------------------------------------------------------
async def test_onebot_reverse_websocket_in_and_out(storage, waits):
    events = []

    async def on_event(self_id, frame):
        events.extend(onebot.parse(frame, connection="qq", bot_id=self_id).events)

    server = OneBotServer(connection="qq", access_token=Secret(ONEBOT_TOKEN), on_event=on_event)
    await server.start()
    url = f"ws://127.0.0.1:{server.port}/"
    forged = FakeOneBotBridge(url, access_token="wrong")
    with pytest.raises(InvalidStatus) as info:
        await forged.connect()
    assert info.value.response.status_code == 401
    bridge = FakeOneBotBridge(url, self_id=10001, access_token=ONEBOT_TOKEN)
    await bridge.connect()
    try:
        await bridge.post(private_message(1, 42, "你好"))
        await bridge.post(group_message(2, 900, 42, "[CQ:at,qq=10001] hi &#91;all&#93;"))
        await bridge.post({"post_type": "notice", "notice_type": "group_increase", "sub_type": "approve",
                           "group_id": 900, "user_id": 43, "operator_id": 1})
        await bridge.post({"post_type": "request", "request_type": "friend", "user_id": 44, "comment": "hi",
                           "flag": "f1"})
        await bridge.post({"post_type": "meta_event", "meta_event_type": "heartbeat", "status": {}, "interval": 5000})
        # a sentinel after the heartbeat: once it is in, the heartbeat was handled (frames are handled in order)
        await bridge.post(private_message(3, 42, "sentinel"))
        await eventually(lambda: len(events) >= 5)
        assert events.pop().input.text == "sentinel"
        assert [e.event_type for e in events] == ["message.received", "message.received", "group.member_joined",
                                                  "friend.request_received"]  # the heartbeat made no event
        assert events[0].input.text == "你好" and events[0].conversation_id == "onebot:10001:private:42"
        assert events[1].input.text == " hi [all]" and events[1].delivery.reply_target["group_id"] == 900
        assert events[0].delivery.supports_edit is False
        # out: sent when complete (no edits in v11), one retryable failure retried
        target = DeliveryTarget(connection="qq", platform="onebot", reply_target=events[1].delivery.reply_target,
                                edit=False, max_message_size=4500)
        plan = DeliveryPlan(run_id=f"run_{uuid.uuid4().hex}", targets=[target])
        bridge.fail_next()
        engine = DeliveryService(storage, lambda _: OneBotAdapter(server), DeliveryTuning(), sleep=waits)
        await engine.on_frames(plan, [delta(0, "reply")])
        assert bridge.sent == []
        records = await engine.on_terminal(plan, done(1))
        assert [(s["message_type"], s["group_id"], s["message"][0]["data"]["text"]) for s in bridge.sent] == [
            ("group", 900, "reply")]
        assert records[0]["status"] == "delivered" and records[0]["attempts"] == 2
        assert records[0]["platform_message_id"] == str(bridge.sent[0]["message_id"])
    finally:
        await bridge.close()
        await server.close()


# -- generic signed webhook -----------------------------------------------------------------------
def signed_webhook(receiver, event_id: str) -> tuple[WebhookAdapter, DeliveryTarget]:
    """The webhook adapter with the right secret, and a target answering ``event_id``."""
    adapter = WebhookAdapter(f"{receiver.base_url}/hook", Secret(WEBHOOK_SECRET))
    return adapter, DeliveryTarget(connection="hook", platform="webhook", reply_target={"event_id": event_id},
                                   max_message_size=1 << 20)


async def test_webhook_is_signed_and_retried(storage, waits, webhook_receiver):
    adapter, target = signed_webhook(webhook_receiver, "e1")
    plan = DeliveryPlan(run_id=f"run_{uuid.uuid4().hex}", targets=[target])
    webhook_receiver.fail_next(503, retry_after=2)
    records = await DeliveryService(storage, lambda _: adapter, sleep=waits).on_terminal(plan, completed(0, "done"))
    mine = [r for r in webhook_receiver.received if r["body"].get("run_id") == plan.run_id]
    assert [(r["body"]["text"], r["body"]["part"]) for r in mine] == [("done", 0)]
    assert mine[0]["delivery"] == f"{plan.run_id}:{target.key}:0"
    assert 2 in waits.requested and records[0]["attempts"] == 2 and records[0]["status"] == "delivered"


async def test_webhook_with_wrong_secret_fails_permanently(storage, waits, webhook_receiver):
    adapter = WebhookAdapter(f"{webhook_receiver.base_url}/hook", Secret("not-the-secret"))
    target = DeliveryTarget(connection="hook", platform="webhook", reply_target={"event_id": "e2"})
    plan = DeliveryPlan(run_id=f"run_{uuid.uuid4().hex}", targets=[target])
    rejected = webhook_receiver.rejected
    records = await DeliveryService(storage, lambda _: adapter, sleep=waits).on_terminal(plan, completed(0, "x"))
    assert webhook_receiver.rejected == rejected + 1
    assert records[0]["status"] == "failed" and records[0]["attempts"] == 1 and "401" in records[0]["last_error"]
    with pytest.raises(PlatformError):
        await adapter.send_text({}, "again")


# -- interactions where the platform has no buttons: the text fallback ----------------------------
def ask_frame(seq: int) -> dict:
    return {"type": "action.requested", "sequence": seq, "data": {
        "action": "interaction.requested", "target": None, "payload": {
            "interaction_id": "approve", "kind": "choice", "title": "Ship it?", "fallback_text": "Ship it? (yes/no)",
            "fields": [{"id": "answer", "label": "Answer", "type": "select", "required": True,
                        "options": [{"value": "yes", "label": "Yes"}, {"value": "no", "label": "No"}]}]}}}


def fallback(run_id: str) -> str:
    from actors.core.interactions import public_id
    return f"Ship it? (yes/no)\nOptions: Yes, No\n(interaction {public_id(run_id, 'approve')})"


async def ask_through(storage, waits, adapter, target: DeliveryTarget, conversation_id: str) -> tuple[str, list]:
    """A run asks a question through the delivery engine (with the real interaction store)."""
    from actors.core.delivery import INTERACTION_PART_BASE
    from actors.core.interactions import InteractionService, public_id
    run_id = f"run_{uuid.uuid4().hex}"
    plan = DeliveryPlan(run_id=run_id, agent_id="asker", targets=[target], enable_interactions=True,
                        origin={"conversation_id": conversation_id, "actor_id": "42"})
    engine = DeliveryService(storage, lambda _: adapter, DeliveryTuning(), sleep=waits,
                             interactions=InteractionService(storage).request)
    await engine.on_frames(plan, [delta(0, "let me check"), ask_frame(1)])
    records = await engine.on_terminal(plan, done(2))
    stored = await storage.read("interaction_get", id=public_id(run_id, "approve"))
    assert stored["status"] == "pending" and stored["conversation_id"] == conversation_id
    prompts = [r for r in records if r["part"] == INTERACTION_PART_BASE]
    assert [r["status"] for r in prompts] == ["delivered"]
    return run_id, records


async def test_onebot_renders_an_interaction_as_text(storage, waits):
    server = OneBotServer(connection="qq", access_token=Secret(ONEBOT_TOKEN), on_event=lambda *_: asyncio.sleep(0))
    await server.start()
    bridge = FakeOneBotBridge(f"ws://127.0.0.1:{server.port}/", self_id=10001, access_token=ONEBOT_TOKEN)
    await bridge.connect()
    try:
        await server.wait_connected(5)
        user = next(_ids)
        [event] = onebot.parse(private_message(1, user, "deploy?"), connection="qq", bot_id="10001").events
        target = DeliveryTarget(connection="qq", platform="onebot", reply_target=event.delivery.reply_target,
                                edit=False, max_message_size=4500)
        run_id, _ = await ask_through(storage, waits, OneBotAdapter(server), target, event.conversation_id)
        texts = [[seg["data"]["text"] for seg in s["message"]] for s in bridge.sent if s.get("user_id") == user]
        assert sorted(texts) == sorted([[fallback(run_id)], ["let me check"]])
    finally:
        await bridge.close()
        await server.close()


async def test_webhook_renders_an_interaction_as_text(storage, waits, webhook_receiver):
    from actors.core.delivery import INTERACTION_PART_BASE
    adapter, target = signed_webhook(webhook_receiver, "e3")
    run_id, _ = await ask_through(storage, waits, adapter, target, f"http:{uuid.uuid4().hex[:8]}")
    mine = sorted(((r["body"]["part"], r["body"]["text"]) for r in webhook_receiver.received
                   if r["body"].get("run_id") == run_id))
    assert mine == [(0, "let me check"), (INTERACTION_PART_BASE, fallback(run_id))]
