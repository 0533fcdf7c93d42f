"""Each docs/platforms page, followed step by step against the fakes: its config block loads,
its URLs are real routes, its setup calls and verification snippets do what the page says."""
from __future__ import annotations

import json
import re
import shlex
import tomllib
import uuid
from pathlib import Path

import httpx

from platforms import onebot, slack, telegram
from platforms.credentials import read_secret
from platforms.onebot import OneBotServer
from serve.app import create_app
from serve.config import Settings
from tests.fakes.platforms.onebot import FakeOneBotBridge, private_message
from tests.fakes.platforms.slack import signed_headers
from tests.fakes.platforms.telegram import text_update
from tests.waiting import wait_until

DOCS = Path(__file__).resolve().parents[2] / "docs" / "platforms"


def blocks(page: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (DOCS / page).read_text(), re.S)


def settings_of(page: str) -> Settings:
    return Settings.model_validate({"platforms": {"connections": tomllib.loads(blocks(page, "toml")[0])["platforms"]
                                                  ["connections"]}})


def routes() -> set[str]:
    return set(create_app(Settings()).openapi()["paths"])


def documented_path(page: str) -> str:
    url = re.search(r"https://bot\.example\.com(/v1/platforms/[^\s`\"]+)", (DOCS / page).read_text()).group(1)
    return re.sub(r"/(telegram|slack)/(telegram|slack)/", r"/\1/{connection}/", url)


def test_every_platform_has_a_page():
    assert {p.stem for p in DOCS.glob("*.md")} >= {"README", "telegram", "slack", "discord", "onebot", "webhook"}


async def test_telegram_page(fake_telegram, monkeypatch):
    token, secret = fake_telegram.token, "s" + uuid.uuid4().hex
    # step 2: the credentials go into the environment under the page's names
    config = settings_of("telegram.md").platforms.connections["telegram"]
    monkeypatch.setenv(config.token_env, token)
    monkeypatch.setenv(config.secret_env, secret)
    # step 4: the documented setWebhook call, sent to the fake Bot API
    command = shlex.split(blocks("telegram.md", "bash")[1].replace("\\\n", " "))
    url = command[command.index("-sS") + 1].replace("https://api.telegram.org", fake_telegram.base_url)
    url = url.replace("${TELEGRAM_BOT_TOKEN}", token)
    form = dict(arg.split("=", 1) for arg in command if "=" in arg and not arg.startswith("http"))
    form = {k: v.replace("${TELEGRAM_WEBHOOK_SECRET}", secret) for k, v in form.items()}
    response = httpx.post(url, data=form)
    assert response.json()["ok"] is True
    assert fake_telegram.webhook["secret_token"] == secret
    assert documented_path("telegram.md") in routes()
    # step 5: what Telegram then sends is accepted, and a forged one is not
    stored = read_secret(config.secret_env, what="secret", connection="telegram")
    assert telegram.verify({"x-telegram-bot-api-secret-token": fake_telegram.webhook["secret_token"]}, stored)
    assert not telegram.verify({"x-telegram-bot-api-secret-token": "guess"}, stored)
    [event] = telegram.parse(text_update(1, 42, "hi"), connection="telegram", bot_id="telegram").events
    assert event.conversation_id == "telegram:telegram:42"


def test_slack_page(monkeypatch):
    config = settings_of("slack.md").platforms.connections["slack"]
    monkeypatch.setenv(config.secret_env, "signing-" + uuid.uuid4().hex)
    page = (DOCS / "slack.md").read_text()
    assert documented_path("slack.md") in routes()
    assert "/v1/platforms/slack/slack/interactivity" in page
    assert "/v1/platforms/slack/{connection}/interactivity" in routes()
    secret = read_secret(config.secret_env, what="signing secret", connection="slack")
    body = json.dumps({"type": "url_verification", "challenge": "abc"}).encode()
    headers = {k.lower(): v for k, v in signed_headers(secret.reveal(), body).items()}
    assert slack.verify(headers, body, secret)
    assert slack.parse(body, "application/json", connection="slack", bot_id="slack").reply == {"challenge": "abc"}


async def test_discord_page(fake_discord, monkeypatch):
    from platforms.discord import DiscordGateway
    config = settings_of("discord.md").platforms.connections["discord"]
    monkeypatch.setenv(config.token_env, fake_discord.token)
    seen = []

    async def on_dispatch(name, data):
        seen.append(name)

    gateway = DiscordGateway(read_secret(config.token_env, what="token", connection="discord"),
                             on_dispatch=on_dispatch, api_base=fake_discord.base_url, intents=config.intents)
    await gateway.start()  # step 4: connects and IDENTIFYs with the token from the environment
    try:
        assert gateway.is_alive and "READY" in seen
    finally:
        await gateway.close()


async def test_onebot_page(monkeypatch):
    config = settings_of("onebot.md").platforms.connections["qq"]
    token = "t" + uuid.uuid4().hex
    monkeypatch.setenv(config.token_env, token)
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 6700)
    events = []

    async def on_event(self_id, frame):
        events.extend(onebot.parse(frame, connection="qq", bot_id=self_id).events)

    server = OneBotServer(connection="qq", access_token=read_secret(config.token_env, what="t", connection="qq"),
                          on_event=on_event, host="127.0.0.1", port=0)  # the page's port, made free for the test
    await server.start()
    bridge = FakeOneBotBridge(f"ws://127.0.0.1:{server.port}/", self_id=3, access_token=token)  # step 3
    await bridge.connect()
    try:
        await bridge.post(private_message(1, 9, "hi"))
        await wait_until(lambda: events, timeout=5, what="the OneBot message to arrive as an event")
        assert [e.conversation_id for e in events] == ["onebot:3:private:9"]
    finally:
        await bridge.close()
        await server.close()


def test_webhook_page():
    from platforms.webhook import sign
    config = settings_of("webhook.md").platforms.connections["hook"]
    assert config.platform == "webhook" and config.secret_env == "RUNNERHOST_WEBHOOK_SECRET"
    policy = tomllib.loads(blocks("webhook.md", "toml")[0])["agents"]["echo"]["delivery_policy"]
    assert policy["webhooks"] == ["hook"]
    namespace: dict = {}
    exec(blocks("webhook.md", "python")[0], namespace)  # the receiver's check, as printed
    body = b'{"type":"message","text":"hi"}'
    assert namespace["verify"]("k", body, sign("k", body))
    assert not namespace["verify"]("k", body + b" ", sign("k", body))


def test_delivery_and_scheduler_knobs_come_from_the_environment():
    from serve.config import load_settings
    settings = load_settings(Path(__file__).resolve().parents[2] / "runnerhost.toml", env={
        "RUNNERHOST_DELIVERY_MAX_ATTEMPTS": "3", "RUNNERHOST_SCHEDULER_INTERVAL_S": "5"})
    assert (settings.platforms.delivery.max_attempts, settings.platforms.scheduler_interval_s) == (3, 5.0)
