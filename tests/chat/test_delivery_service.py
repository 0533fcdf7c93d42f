"""DeliveryService without Ray: real database (Postgres and SQLite), fake Telegram over real HTTP.

Streams by editing one message, retries a 429 honouring retry_after, splits long text, survives
a restart mid-stream without posting twice, never re-posts a part whose outcome is unknown."""
from __future__ import annotations

import itertools
import uuid

import pytest

from actors.core.delivery import ACTION_PART_BASE, ACTION_PART_STRIDE, DeliveryService
from platforms.config import DeliveryTuning
from platforms.credentials import Secret
from platforms.telegram import TelegramAdapter
from protocol.delivery import DeliveryPlan, DeliveryTarget
from protocol.events import EventEnvelope

from tests.chat.conftest import TELEGRAM_TOKEN, completed, delta, done

_chats = itertools.count(1000)


def plan_for(run_id: str, chat_id: int, *, edit: bool = True, size: int = 4096) -> DeliveryPlan:
    target = DeliveryTarget(connection="tg", platform="telegram", reply_target={
        "connection": "tg", "platform": "telegram", "chat_id": chat_id}, edit=edit, max_message_size=size,
        edit_interval_s=0.05)
    return DeliveryPlan(run_id=run_id, agent_id="echo", targets=[target])


@pytest.fixture
def telegram(fake_telegram):
    adapter = TelegramAdapter(Secret(TELEGRAM_TOKEN), api_base=fake_telegram.base_url)
    return adapter


def service(storage, telegram, waits, **tuning) -> DeliveryService:
    return DeliveryService(storage, lambda name: telegram, DeliveryTuning(**tuning), sleep=waits)


async def test_streams_by_editing_one_message(storage, telegram, waits, fake_telegram):
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat)
    engine = service(storage, telegram, waits)
    import asyncio
    for seq, word in enumerate(["Hello", " there", ",", " friend"]):
        await engine.on_frames(plan, [delta(seq, word)])
        await asyncio.sleep(0.06)  # past edit_interval_s: every batch may edit
    records = await engine.on_terminal(plan, done(4))
    shown = fake_telegram.messages(chat)
    assert [m["text"] for m in shown] == ["Hello there, friend"]
    assert shown[0]["edits"] >= 2  # posted early, then edited as the text grew
    assert [(r["part"], r["status"]) for r in records] == [(0, "delivered")]
    assert records[0]["platform_message_id"] == str(shown[0]["message_id"])


async def test_edit_rate_is_bounded(storage, telegram, waits, fake_telegram):
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat)
    plan.targets[0].__dict__["edit_interval_s"] = 30.0  # frozen model: set the pacing for this test only
    engine = service(storage, telegram, waits)
    for seq in range(50):
        await engine.on_frames(plan, [delta(seq, "x")])
    await engine.on_terminal(plan, done(50))
    shown = fake_telegram.messages(chat)
    assert [m["text"] for m in shown] == ["x" * 50]
    assert shown[0]["edits"] <= 1  # 50 batches inside one interval: first post + the final edit


async def test_429_once_is_retried_after_retry_after_and_posted_once(storage, telegram, waits, fake_telegram):
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat, edit=False)
    fake_telegram.fail_next("sendMessage", 429, retry_after=3)
    engine = service(storage, telegram, waits)
    await engine.on_frames(plan, [delta(0, "answer")])
    assert fake_telegram.messages(chat) == []  # no edits: sent when complete
    records = await engine.on_terminal(plan, done(1))
    assert [m["text"] for m in fake_telegram.messages(chat)] == ["answer"]
    assert 3 in waits.requested  # Retry-After honoured
    assert records[0]["status"] == "delivered" and records[0]["attempts"] == 2
    # a repeated terminal (the host retried after a crash) posts nothing new
    again = await service(storage, telegram, waits).on_terminal(plan, done(1))
    assert [m["text"] for m in fake_telegram.messages(chat)] == ["answer"]
    assert again[0]["attempts"] == 2


async def test_long_text_is_split_into_parts(storage, telegram, waits, fake_telegram):
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat, size=40)
    text = " ".join(f"word{i}" for i in range(30))
    engine = service(storage, telegram, waits)
    await engine.on_frames(plan, [completed(0, text)])
    records = await engine.on_terminal(plan, done(1))
    shown = [m["text"] for m in fake_telegram.messages(chat)]
    assert len(shown) > 1 and all(len(t) <= 40 for t in shown)
    assert " ".join(shown).split() == text.split()
    assert [r["part"] for r in records] == list(range(len(shown)))
    assert {r["status"] for r in records} == {"delivered"}


async def test_restart_mid_stream_edits_the_same_message(storage, telegram, waits, fake_telegram):
    """The delivery actor dies after the first frames; a new one continues from the ledger."""
    chat = next(_chats)
    run_id = f"run_{uuid.uuid4().hex}"
    event = EventEnvelope(event_type="message.received", conversation_id=f"c-{run_id}", input={"text": "hi"})
    await storage.write("run_accept", run_id=run_id, event=event.model_dump(mode="json"), agent_id="echo",
                        binding_id="echo@1", runner_id="plugin:builtin/echo/default", status="running",
                        deadline_at=None, scope_keys={})
    first = [delta(0, "one "), delta(1, "two ")]
    await storage.write("run_events", run_id=run_id, frames=first)
    plan = plan_for(run_id, chat)
    await service(storage, telegram, waits).on_frames(plan, first)
    assert [m["text"] for m in fake_telegram.messages(chat)] == ["one two"]
    rest = [delta(2, "three"), done(3)]
    await storage.write("run_events", run_id=run_id, frames=rest)
    fresh = service(storage, telegram, waits)  # new process: nothing in memory
    await fresh.on_frames(plan, rest[:1])
    records = await fresh.on_terminal(plan, rest[1])
    shown = fake_telegram.messages(chat)
    assert [m["text"] for m in shown] == ["one two three"]
    assert len(records) == 1 and records[0]["status"] == "delivered"


async def test_a_part_left_sending_is_never_reposted(storage, telegram, waits, fake_telegram):
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat, edit=False)
    target = plan.targets[0]
    await storage.write("delivery_open", run_id=plan.run_id, target_key=target.key, part=0, platform="telegram",
                        connection="tg", target=target.reply_target)
    await storage.write("delivery_record", run_id=plan.run_id, target_key=target.key, part=0, status="sending")
    records = await service(storage, telegram, waits).on_terminal(plan, completed(0, "maybe posted"))
    assert fake_telegram.messages(chat) == []
    assert records[0]["status"] == "unknown" and "not re-sent" in records[0]["last_error"]


async def test_failed_run_without_text_says_so(storage, telegram, waits, fake_telegram):
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat)
    await service(storage, telegram, waits).on_terminal(plan, {
        "type": "run.failed", "data": {"code": "runner.error", "error": "secret stack", "retryable": False},
        "sequence": 0})
    texts = [m["text"] for m in fake_telegram.messages(chat)]
    assert texts == ["⚠️ The run failed (runner.error)."]


async def test_permanent_error_is_recorded_failed(storage, telegram, waits, fake_telegram):
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat, edit=False)
    fake_telegram.fail_next("sendMessage", 400, description="Bad Request: chat not found")
    records = await service(storage, telegram, waits).on_terminal(plan, completed(0, "lost"))
    assert records[0]["status"] == "failed" and "chat not found" in records[0]["last_error"].lower()
    assert records[0]["attempts"] == 1


async def test_runner_send_message_is_once_per_key_and_only_to_its_own_chat(storage, telegram, waits, fake_telegram):
    from protocol.errors import ErrorCode, RunnerHostError
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat)
    engine = service(storage, telegram, waits)
    sent = await engine.send_message(plan, "progress: 50%", key="call-1")
    again = await service(storage, telegram, waits).send_message(plan, "progress: 50%", key="call-1")  # retried
    assert sent["status"] == again["status"] == "delivered"
    assert [p["platform_message_id"] for p in sent["parts"]] == [p["platform_message_id"] for p in again["parts"]]
    assert again["parts"][0]["attempts"] == 1  # the retry made no platform call
    await engine.send_message(plan, "progress: 90%", key="call-2", address={"chat_id": chat})
    assert [m["text"] for m in fake_telegram.messages(chat)] == ["progress: 50%", "progress: 90%"]
    for address in ({"chat_id": chat + 1}, {"connection": "other", "chat_id": chat}):
        with pytest.raises(RunnerHostError) as info:
            await engine.send_message(plan, "leak", key="call-3", address=address)
        assert info.value.code is ErrorCode.UNAUTHORIZED
    assert len(fake_telegram.messages(chat + 1)) == 0


async def test_an_explicit_message_goes_to_the_own_chat_even_without_automatic_delivery(storage, telegram, waits,
                                                                                       fake_telegram):
    """``delivery_policy.reply = false``: no result target, but the run's own chat for its messages."""
    from protocol.errors import ErrorCode, RunnerHostError
    chat = next(_chats)
    own = plan_for(f"run_{uuid.uuid4().hex}", chat).targets[0]
    plan = DeliveryPlan(run_id=f"run_{uuid.uuid4().hex}", targets=[], own_chat=own)
    assert not plan.automatic_reply and plan.empty
    sent = await service(storage, telegram, waits).send_message(plan, "only this", key="k", ordinal=2)
    assert [p["part"] for p in sent["parts"]] == [ACTION_PART_BASE + 2 * ACTION_PART_STRIDE]
    assert [m["text"] for m in fake_telegram.messages(chat)] == ["only this"]
    hook = DeliveryTarget(connection="hook", platform="webhook", reply_target={"event_id": "e"})
    for nowhere in (DeliveryPlan(run_id="run_x"), DeliveryPlan(run_id="run_x", targets=[hook])):
        with pytest.raises(RunnerHostError) as info:
            await service(storage, telegram, waits).send_message(nowhere, "hello?", key="k", ordinal=0)
        assert info.value.code is ErrorCode.INVALID_ARGUMENT and info.value.details["reason"] == "no_delivery_target"


async def test_a_long_explicit_message_is_split_into_ordered_parts(storage, telegram, waits, fake_telegram):
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat, size=40)
    text = " ".join(f"word{i}" for i in range(30))
    sent = await service(storage, telegram, waits).send_message(plan, text, key="long", ordinal=1)
    shown = [m["text"] for m in fake_telegram.messages(chat)]
    assert len(shown) > 1 and all(len(t) <= 40 for t in shown) and " ".join(shown).split() == text.split()
    first = ACTION_PART_BASE + ACTION_PART_STRIDE
    assert [p["part"] for p in sent["parts"]] == list(range(first, first + len(shown)))
    assert sent["status"] == "delivered" and len(sent["parts"]) == len(shown)


async def test_the_results_stream_never_touches_an_explicit_message_in_flight(storage, telegram, waits,
                                                                              fake_telegram):
    """A delivery engine that (re)starts the results' stream while a runner's message is being posted
    must not take that message for one interrupted by a crash."""
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat)
    target = plan.targets[0]
    await storage.write("delivery_open", run_id=plan.run_id, target_key=target.key, part=ACTION_PART_BASE,
                        platform="telegram", connection="tg", target=target.reply_target)
    await storage.write("delivery_record", run_id=plan.run_id, target_key=target.key, part=ACTION_PART_BASE,
                        status="sending")  # send_message is posting it right now
    await service(storage, telegram, waits).on_frames(plan, [delta(0, "hello")])
    [row] = [r for r in await storage.read("delivery_parts", run_id=plan.run_id, target_key=target.key)
             if r["part"] == ACTION_PART_BASE]
    assert row["status"] == "sending" and row["last_error"] is None


def artifact(seq: int, name: str, raw: bytes, mime_type: str) -> dict:
    import base64
    import hashlib
    return {"type": "artifact.created", "sequence": seq, "data": {
        "artifact_id": f"art_{seq}", "name": name, "mime_type": mime_type, "size_bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(), "content_base64": base64.b64encode(raw).decode()}}


async def test_an_artifact_goes_out_as_a_telegram_document_once(storage, telegram, waits, fake_telegram):
    """``artifact.created`` with inline content → ``sendDocument`` as part 1000, after the text;
    a repeated terminal (the host retried after a crash) sends no second file."""
    from actors.core.delivery import FILE_PART_BASE
    chat = next(_chats)
    plan = plan_for(f"run_{uuid.uuid4().hex}", chat)
    raw = b"id,total\n1,42\n"
    frames = [completed(0, "here is the report"), artifact(1, "report.csv", raw, "text/csv")]
    engine = service(storage, telegram, waits)
    await engine.on_frames(plan, frames)
    records = await engine.on_terminal(plan, done(2))
    shown = fake_telegram.messages(chat)
    assert [m["text"] for m in shown] == ["here is the report", None]
    assert (shown[1]["document"]["file_name"], shown[1]["document"]["file_size"]) == ("report.csv", len(raw))
    assert [(r["part"], r["status"]) for r in records] == [(0, "delivered"), (FILE_PART_BASE, "delivered")]
    assert records[1]["platform_message_id"] == str(shown[1]["message_id"]) and records[1]["attempts"] == 1
    again = await service(storage, telegram, waits).on_terminal(plan, done(2))
    assert len(fake_telegram.messages(chat)) == 2
    assert [r["attempts"] for r in again] == [r["attempts"] for r in records]
    documents = [p for m, p in fake_telegram.calls if m == "sendDocument" and str(p.get("chat_id")) == str(chat)]
    assert len(documents) == 1


async def test_artifacts_stay_home_when_the_target_sends_none(storage, telegram, waits, fake_telegram):
    chat = next(_chats)
    target = plan_for("x", chat).targets[0].model_copy(update={"send_artifacts": False})
    plan = DeliveryPlan(run_id=f"run_{uuid.uuid4().hex}", agent_id="echo", targets=[target])
    engine = service(storage, telegram, waits)
    await engine.on_frames(plan, [completed(0, "text only"), artifact(1, "secret.bin", b"\x00\x01", "application/x")])
    records = await engine.on_terminal(plan, done(2))
    assert [m["text"] for m in fake_telegram.messages(chat)] == ["text only"]
    assert [r["part"] for r in records] == [0]
