"""Fixtures of the platform suite: fake platform servers over real HTTP, credentials in the env."""
from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest

from actors.core.storage_port import DirectStorage
from tests.fakes.platforms.telegram import FakeTelegram

TELEGRAM_TOKEN = "123456:TEST-" + uuid.uuid4().hex
TELEGRAM_SECRET = "tg-secret-" + uuid.uuid4().hex


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


SLACK_TOKEN = "xoxb-test-" + uuid.uuid4().hex
SLACK_SIGNING_SECRET = "slack-signing-" + uuid.uuid4().hex
#: Discord tokens start with the base64 of the bot's user id (hikari reads it).
DISCORD_TOKEN = (__import__("base64").b64encode(b"900000000000000001").decode().rstrip("=")
                 + ".Gtest." + uuid.uuid4().hex)
WEBHOOK_SECRET = "hook-secret-" + uuid.uuid4().hex
ONEBOT_TOKEN = "onebot-" + uuid.uuid4().hex


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
