"""Fixtures of the platform suite: fake platform servers over real HTTP, credentials in the env."""
from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import pytest

from actors.core.storage_port import DirectStorage
from tests.fakes.platforms.telegram import FakeTelegram
from tests.serve.conftest import serve_app, serve_pg_url, serve_ray  # noqa: F401  (the Serve fixtures)

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


# -- a Serve app with platform connections (Ray: run under flock /tmp/rh-ray.lock) ---------------
ENV = {"RH_TEST_TG_TOKEN": TELEGRAM_TOKEN, "RH_TEST_TG_SECRET": TELEGRAM_SECRET,
       "RH_TEST_SLACK_TOKEN": SLACK_TOKEN, "RH_TEST_SLACK_SECRET": SLACK_SIGNING_SECRET,
       "RH_TEST_DISCORD_TOKEN": DISCORD_TOKEN, "RH_TEST_ONEBOT_TOKEN": ONEBOT_TOKEN,
       "RH_TEST_HOOK_SECRET": WEBHOOK_SECRET}
PLATFORM_APP = "runnerhost-platforms"
PREFIX = "/p"


@pytest.fixture(scope="session")
async def platforms_pg_url():
    from tests.conftest import pg_database
    async with pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def platform_app(serve_app, platforms_pg_url, fake_telegram, fake_slack, fake_discord, webhook_receiver,
                 tmp_path_factory):
    """A second Serve application (own namespace, database and route prefix) with one connection
    per platform, pointed at the fakes; credentials reach it only through its runtime env."""
    from ray import serve

    from actors.host_config import PoolConfig
    from platforms.config import ConnectionConfig, PlatformsSettings
    from protocol.agents import AgentConfig, DeliveryPolicy
    from serve.config import ApiKey, HostSettings, ServerSettings, Settings, StorageSettings, hash_key
    from serve.deployment import build_app
    from tests.serve.conftest import ADMIN_KEY, INGEST_KEY, READ_KEY, ECHO, ServeApp, wait_healthy, worker_env

    reply = DeliveryPolicy(edit_interval_s=0.2, enable_interactions=True, webhooks=["hook"])
    agents = {
        "chat": AgentConfig(runner_id=ECHO, runner_config={"delay_s": 0.4, "chunks": 6}, delivery_policy=reply),
        "ask": AgentConfig(runner_id="plugin:test/ask/default", delivery_policy=reply,
                           event_types=["message.received", "interaction.submitted"]),
        "clock": AgentConfig(runner_id=ECHO, event_types=["schedule.triggered"],
                             delivery_policy=DeliveryPolicy(webhooks=["hook"])),
    }
    connections = {
        "tg": ConnectionConfig(platform="telegram", agent_id="chat", token_env="RH_TEST_TG_TOKEN",
                               secret_env="RH_TEST_TG_SECRET", api_base=fake_telegram.base_url),
        "tgask": ConnectionConfig(platform="telegram", agent_id="ask", token_env="RH_TEST_TG_TOKEN",
                                  secret_env="RH_TEST_TG_SECRET", api_base=fake_telegram.base_url),
        "sl": ConnectionConfig(platform="slack", agent_id="chat", token_env="RH_TEST_SLACK_TOKEN",
                               secret_env="RH_TEST_SLACK_SECRET", api_base=fake_slack.base_url),
        "dc": ConnectionConfig(platform="discord", agent_id="chat", token_env="RH_TEST_DISCORD_TOKEN",
                               api_base=fake_discord.base_url),
        "qq": ConnectionConfig(platform="onebot", agent_id="chat", token_env="RH_TEST_ONEBOT_TOKEN", listen_port=0),
        "hook": ConnectionConfig(platform="webhook", url=f"{webhook_receiver.base_url}/hook",
                                 secret_env="RH_TEST_HOOK_SECRET"),
    }
    namespace = f"rh-plat-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        server=ServerSettings(host="127.0.0.1", port=int(serve_app.url.rsplit(":", 1)[1])),
        storage=StorageSettings(data_dir=str(tmp_path_factory.mktemp("plat-data")), database_url=platforms_pg_url),
        host=HostSettings(namespace=namespace,
                          extra_runners={"plugin:test/ask/default": "tests.chat.ask_runner:AskRunner"}),
        pools=PoolConfig(run_actors_min=1, run_actors_max=8, workers_min=1, workers_max=1, acquire_timeout_s=30),
        agents=agents,
        api_keys=[ApiKey(name="admin", sha256=hash_key(ADMIN_KEY), scopes=["admin"]),
                  ApiKey(name="ingest", sha256=hash_key(INGEST_KEY), scopes=["ingest"]),
                  ApiKey(name="read", sha256=hash_key(READ_KEY), scopes=["read"])],
        platforms=PlatformsSettings(connections=connections, scheduler_enabled=False),
    ).resolved()
    runtime_env = worker_env()
    runtime_env["env_vars"].update(ENV)
    serve.run(build_app(settings, ray_actor_options={"runtime_env": runtime_env}), name=PLATFORM_APP,
              route_prefix=PREFIX, blocking=False)
    url = f"{serve_app.url}{PREFIX}"
    wait_healthy(url, timeout=90)
    import ray
    deadline = time.monotonic() + 60
    while True:  # the platform actors start in the background of the replica's start
        try:
            ray.get(ray.get_actor("runnerhost-delivery", namespace=namespace).ready.remote(), timeout=30)
            break
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield ServeApp(url=url, settings=settings, admin=serve_app.admin, ingest=serve_app.ingest, read=serve_app.read)
    serve.delete(PLATFORM_APP)
