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


async def test_each_platform_call_is_a_delivery_span_in_the_runs_trace(storage, fake_telegram, waits):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from actors import tracing

    spans = InMemorySpanExporter()
    tracing.configure(exporter=spans)
    try:
        root = tracing.start_run("run_traced", agent_id="echo")
        p = plan(7103).model_copy(update={"trace": tracing.carrier(root)})
        fake_telegram.fail_next("sendMessage", 429, retry_after=1)
        service = engine(storage, fake_telegram, waits)
        await service.on_frames(p, [delta(0, "answer")])
        await service.on_terminal(p, done(1))
        tracing.end_run(root, "completed")
        tracing.force_flush()
        deliveries = [s for s in spans.get_finished_spans() if s.name == tracing.SPAN_DELIVERY]
        assert len(deliveries) == 2  # the 429 and the retry that landed
        assert {s.context.trace_id for s in deliveries} == {root.get_span_context().trace_id}
        assert [s.attributes["runnerhost.attempt"] for s in deliveries] == [1, 2]
        assert deliveries[0].status.status_code.name == "ERROR" and deliveries[1].status.status_code.name != "ERROR"
    finally:
        tracing.configure(None)
