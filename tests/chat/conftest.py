"""Fixtures of the platform suite: fake platform servers over real HTTP, credentials in the env."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from actors.core.storage_port import DirectStorage
from tests.fakes.platforms.telegram import FakeTelegram
from tests.fakes.platforms.tokens import (DISCORD_TOKEN, ONEBOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_TOKEN,  # noqa: F401
                                          TELEGRAM_SECRET, TELEGRAM_TOKEN, WEBHOOK_SECRET)


@pytest.fixture(scope="session")
def fake_telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(TELEGRAM_TOKEN) as fake:
        yield fake


@pytest.fixture
def storage(db) -> DirectStorage:
    return DirectStorage(db)


class Waits:
    """An injected ``sleep`` that records what the engine asked for and waits only briefly."""

    def __init__(self) -> None:
        self.requested: list[float] = []

    async def __call__(self, seconds: float) -> None:
        import asyncio
        self.requested.append(seconds)
        await asyncio.sleep(min(seconds, 0.01))


@pytest.fixture
def waits() -> Waits:
    return Waits()


def delta(seq: int, text: str) -> dict[str, Any]:
    return {"type": "message.delta", "data": {"chunk": {"role": "assistant", "content": text}}, "sequence": seq}


def completed(seq: int, text: str) -> dict[str, Any]:
    return {"type": "message.completed", "data": {"message": {"role": "assistant", "content": text}}, "sequence": seq}


def done(seq: int) -> dict[str, Any]:
    return {"type": "run.completed", "data": {"finish_reason": "stop"}, "sequence": seq}


@pytest.fixture(scope="session")
def fake_slack():
    from tests.fakes.platforms.slack import FakeSlack
    with FakeSlack(SLACK_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_discord():
    from tests.fakes.platforms.discord import FakeDiscord
    with FakeDiscord(DISCORD_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="session")
def webhook_receiver():
    from tests.fakes.platforms.webhook_receiver import WebhookReceiver
    with WebhookReceiver(WEBHOOK_SECRET) as fake:
        yield fake
