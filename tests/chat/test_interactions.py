"""Interactions without Ray: validated, stored, rendered as Telegram buttons, answered once."""
from __future__ import annotations

import itertools
import time
import uuid

import pytest

from actors.core.delivery import DeliveryService
from actors.core.interactions import InteractionService, public_id, validate_request
from platforms import telegram
from platforms.base import InteractionAnswer, parse_button_data
from platforms.config import DeliveryTuning
from platforms.credentials import Secret
from platforms.telegram import TelegramAdapter
from protocol.delivery import DeliveryPlan, DeliveryTarget
from protocol.errors import ErrorCode, RunnerHostError
from protocol.events import EventEnvelope
from tests.chat.conftest import TELEGRAM_TOKEN, delta, done
from tests.fakes.platforms.telegram import callback_update
from tests.waiting import wait_until

_chats = itertools.count(3000)


def ask(interaction_id: str = "approve", **extra) -> dict:
    return {"type": "action.requested", "sequence": 1, "data": {
        "action": "interaction.requested", "target": None, "payload": {
            "interaction_id": interaction_id, "kind": "choice", "title": "Ship it?",
            "fallback_text": "Ship it? (yes/no)",
            "fields": [{"id": "answer", "label": "Answer", "type": "select", "required": True,
                        "options": [{"value": "yes", "label": "Yes"}, {"value": "no", "label": "No"}]}],
            **extra}}}


def plan_for(chat: int, run_id: str | None = None) -> DeliveryPlan:
    origin_event = EventEnvelope(event_type="message.received", source="platform", bot_id="tgbot",
                                 conversation_id=f"telegram:tgbot:{chat}", actor={"actor_id": "7"},
                                 delivery=telegram.delivery("tg", chat, 1, None))
    from protocol.delivery import event_origin
    target = DeliveryTarget(connection="tg", platform="telegram", reply_target=origin_event.delivery.reply_target,
                            edit=True, edit_interval_s=0.05)
    return DeliveryPlan(run_id=run_id or f"run_{uuid.uuid4().hex}", agent_id="asker", targets=[target],
                        origin=event_origin(origin_event), enable_interactions=True)


@pytest.fixture
def parts(storage, fake_telegram, waits):
    interactions = InteractionService(storage)
    adapter = TelegramAdapter(Secret(TELEGRAM_TOKEN), api_base=fake_telegram.base_url)
    engine = DeliveryService(storage, lambda _: adapter, DeliveryTuning(), interactions=interactions.request,
                             sleep=waits)
    return interactions, engine


def test_request_and_submission_match_langbot_sdk():
    from langbot_plugin.api.entities.builtin.runner.input import AgentInput as SdkInput
    from langbot_plugin.api.entities.builtin.runner.interaction import InteractionRequest as SdkRequest
    request, _ = validate_request(ask()["data"]["payload"], now=time.time())
    SdkRequest.model_validate(request.model_dump(mode="json"))
    from protocol.context import InputContext
    from protocol.interactions import InteractionSubmission
    ours = InputContext(interaction=InteractionSubmission(interaction_id="approve", values={"answer": "yes"}))
    assert SdkInput.model_validate(ours.model_dump(mode="json")).interaction.values == {"answer": "yes"}


@pytest.mark.parametrize("payload, code", [
    ({"interaction_id": "x", "title": "t"}, ErrorCode.INVALID_ARGUMENT),  # no fallback_text
    ({"interaction_id": "x", "title": "t", "fallback_text": "f", "expires_at": 1}, ErrorCode.INVALID_ARGUMENT),
    ({"interaction_id": "x", "title": "t", "fallback_text": "f", "expires_at": int(time.time()) + 3 * 86400},
     ErrorCode.INVALID_ARGUMENT),
    ({"interaction_id": "x", "title": "t", "fallback_text": "f" * 20000, "description": "d" * 10000,
      "fields": [{"id": f"f{i}", "label": "l" * 512, "type": "select",
                  "options": [{"value": "v" * 512, "label": "l" * 512, "description": "d" * 2000}] * 40}
                 for i in range(50)]}, ErrorCode.PAYLOAD_TOO_LARGE),
])
def test_invalid_requests_are_refused(payload, code):
    with pytest.raises(RunnerHostError) as info:
        validate_request(payload, now=time.time())
    assert info.value.code == code


async def test_telegram_round_trip(parts, storage, fake_telegram):
    interactions, engine = parts
    chat = next(_chats)
    plan = plan_for(chat)
    await engine.on_frames(plan, [delta(0, "Let me check.")])
    await engine.on_frames(plan, [ask()])
    await engine.on_terminal(plan, done(2))
    text_message, prompt = fake_telegram.messages(chat)
    assert text_message["text"] == "Let me check."
    buttons = [row[0] for row in prompt["reply_markup"]["inline_keyboard"]]
    assert [b["text"] for b in buttons] == ["Yes", "No"]
    [pending] = await storage.read("interaction_list", status="pending", run_id=plan.run_id)
    assert pending["interaction_id"] == public_id(plan.run_id, "approve")
    # the user taps "No" → the callback update becomes an answer → an interaction.submitted event
    inbound = telegram.parse(callback_update(9001, chat, buttons[1]["callback_data"], user_id=7), connection="tg",
                             bot_id="tgbot")
    record, event = await interactions.answer(inbound.answer.interaction_id, inbound.answer,
                                              source_event_type="callback_query")
    assert record["status"] == "answered" and record["answer"]["values"] == {"answer": "no"}
    assert (event.event_type, event.conversation_id, event.source) == ("interaction.submitted",
                                                                      f"telegram:tgbot:{chat}", "platform")
    assert event.input.interaction.interaction_id == "approve" and event.input.interaction.values == {"answer": "no"}
    assert event.delivery.reply_target["chat_id"] == chat  # the resumed run answers where it was asked
    # a second tap is refused
    with pytest.raises(RunnerHostError) as info:
        await interactions.answer(inbound.answer.interaction_id, inbound.answer, source_event_type="callback_query")
    assert info.value.code is ErrorCode.CONFLICT and info.value.details["status"] == "answered"


async def test_replayed_request_is_stored_once(parts, storage):
    interactions, engine = parts
    plan = plan_for(next(_chats))
    first = await interactions.request(plan, ask()["data"]["payload"])
    again = await interactions.request(plan, ask()["data"]["payload"])
    assert first["interaction_id"] == again["interaction_id"]
    assert len(await storage.read("interaction_list", run_id=plan.run_id)) == 1


async def test_foreign_expired_and_invalid_answers_are_refused(parts, storage):
    interactions, _ = parts
    plan = plan_for(next(_chats))
    stored = await interactions.request(plan, ask()["data"]["payload"])
    iid = stored["interaction_id"]
    with pytest.raises(RunnerHostError) as info:  # asked of actor 7, answered by 8
        await interactions.answer(iid, InteractionAnswer(iid, None, {"answer": "yes"}, "8", None),
                                  source_event_type="http")
    assert info.value.code is ErrorCode.UNAUTHORIZED
    for values in ({"answer": "maybe"}, {}, {"answer": "yes", "extra": 1}):
        with pytest.raises(RunnerHostError) as info:
            await interactions.answer(iid, InteractionAnswer(iid, None, values, "7", None), source_event_type="http")
        assert info.value.code is ErrorCode.INVALID_ARGUMENT
    late = await interactions.request(plan, ask("late", expires_at=int(time.time()) + 1)["data"]["payload"])

    async def late_expired() -> bool:  # expiry is the store's clock passing expires_at, seen on every read
        rows = await storage.read("interaction_list", run_id=plan.run_id)
        return any(r["interaction_id"] == late["interaction_id"] and r["status"] == "expired" for r in rows)
    await wait_until(late_expired, timeout=30, interval=0.1, what="the late interaction to expire")
    with pytest.raises(RunnerHostError) as info:
        await interactions.answer(late["interaction_id"], InteractionAnswer("x", None, {"answer": "yes"}, "7", None),
                                  source_event_type="http")
    assert info.value.code is ErrorCode.CONFLICT and info.value.details["status"] == "expired"
    statuses = {r["interaction_id"]: r["status"] for r in await storage.read("interaction_list", run_id=plan.run_id)}
    assert statuses == {iid: "pending", late["interaction_id"]: "expired"}
    with pytest.raises(RunnerHostError) as info:
        await storage.read("interaction_get", id="ia_doesnotexist")
    assert info.value.code is ErrorCode.NOT_FOUND
    assert parse_button_data("ia:x") is None
