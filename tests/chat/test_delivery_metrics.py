"""Every platform call of a delivery counts in ``runnerhost_deliveries_total`` by outcome."""
from __future__ import annotations

import uuid

import pytest

from actors import metrics
from actors.core.delivery import DeliveryService
from platforms.config import DeliveryTuning
from platforms.credentials import Secret
from platforms.telegram import TelegramAdapter
from protocol.delivery import DeliveryPlan, DeliveryTarget

from tests.chat.conftest import TELEGRAM_TOKEN, delta, done


@pytest.fixture
def counted(monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(metrics, "delivery", lambda platform, outcome: calls.append((platform, outcome)))
    return calls


def engine(storage, fake_telegram, waits) -> DeliveryService:
    adapter = TelegramAdapter(Secret(TELEGRAM_TOKEN), api_base=fake_telegram.base_url)
    return DeliveryService(storage, lambda name: adapter, DeliveryTuning(), sleep=waits)


def plan(chat_id: int) -> DeliveryPlan:
    target = DeliveryTarget(connection="tg", platform="telegram", reply_target={
        "connection": "tg", "platform": "telegram", "chat_id": chat_id}, edit=False)
    return DeliveryPlan(run_id=f"run_{uuid.uuid4().hex}", agent_id="echo", targets=[target])


async def test_a_429_then_success_counts_one_retry_and_one_ok(storage, fake_telegram, waits, counted):
    fake_telegram.fail_next("sendMessage", 429, retry_after=1)
    service, p = engine(storage, fake_telegram, waits), plan(7101)
    await service.on_frames(p, [delta(0, "answer")])
    records = await service.on_terminal(p, done(1))
    assert records[0]["status"] == "delivered"
    assert counted == [("telegram", "retry"), ("telegram", "ok")]


async def test_a_permanent_error_counts_failed(storage, fake_telegram, waits, counted):
    fake_telegram.fail_next("sendMessage", 400)
    service, p = engine(storage, fake_telegram, waits), plan(7102)
    await service.on_frames(p, [delta(0, "answer")])
    records = await service.on_terminal(p, done(1))
    assert records[0]["status"] == "failed"
    assert counted == [("telegram", "failed")]
