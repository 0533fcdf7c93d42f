"""End to end on real Ray + Serve + Postgres, every platform against its fake over real sockets:
an inbound message becomes one event and one run, and its reply is delivered exactly once.

Run under the shared lock: ``flock /tmp/rh-ray.lock pytest tests/serve/test_platforms_e2e.py``. It lives
beside the ``serve_app`` fixture because a session has one Serve HTTP proxy: the platform app is a
second application on it (own namespace, database and route prefix). The host plans each run's
delivery (``RunDriver``) and hands its frames to the delivery actor, which records every part.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid

import httpx
import pytest
import ray
from websockets.exceptions import InvalidStatus

from tests.fakes.platforms.tokens import (DISCORD_TOKEN, ONEBOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_TOKEN, TELEGRAM_SECRET,
                                          TELEGRAM_TOKEN, WEBHOOK_SECRET)
from tests.fakes.platforms.discord import message_create
from tests.fakes.platforms.onebot import FakeOneBotBridge, private_message
from tests.fakes.platforms.slack import message_event, signed_headers
from tests.fakes.platforms.telegram import callback_update, text_update
from tests.waiting import wait_until

pytestmark = pytest.mark.ray
_ids = itertools.count(int(time.time()) % 100000 * 100)
TG = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}


# -- the fake platforms ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_telegram():
    from tests.fakes.platforms.telegram import FakeTelegram
    with FakeTelegram(TELEGRAM_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_slack():
    from tests.fakes.platforms.slack import FakeSlack
    with FakeSlack(SLACK_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_discord():
    from tests.fakes.platforms.discord import FakeDiscord
    with FakeDiscord(DISCORD_TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def webhook_receiver():
    from tests.fakes.platforms.webhook_receiver import WebhookReceiver
    with WebhookReceiver(WEBHOOK_SECRET) as fake:
        yield fake


# -- a Serve app with platform connections ------------------------------------------------------
ENV = {"RH_TEST_TG_TOKEN": TELEGRAM_TOKEN, "RH_TEST_TG_SECRET": TELEGRAM_SECRET,
       "RH_TEST_SLACK_TOKEN": SLACK_TOKEN, "RH_TEST_SLACK_SECRET": SLACK_SIGNING_SECRET,
       "RH_TEST_DISCORD_TOKEN": DISCORD_TOKEN, "RH_TEST_ONEBOT_TOKEN": ONEBOT_TOKEN,
       "RH_TEST_HOOK_SECRET": WEBHOOK_SECRET}
PLATFORM_APP = "runnerhost-platforms"
PREFIX = "/p"


@pytest.fixture(scope="module")
async def platforms_pg_url():
    from tests.conftest import pg_database
    async with pg_database() as url:
        yield url


@pytest.fixture(scope="module")
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
    from tests.chat.reply_runners import REPLY_PROBE_ID, SDK_REPLY_ID
    from tests.serve.conftest import ADMIN_KEY, INGEST_KEY, READ_KEY, ECHO, ServeApp, wait_healthy, worker_env

    reply = DeliveryPolicy(edit_interval_s=0.2, enable_interactions=True, webhooks=["hook"])
    agents = {
        "chat": AgentConfig(runner_id=ECHO, runner_config={"delay_s": 0.4, "chunks": 6}, delivery_policy=reply),
        "ask": AgentConfig(runner_id="plugin:test/ask/default", delivery_policy=reply,
                           event_types=["message.received", "interaction.submitted"]),
        "clock": AgentConfig(runner_id=ECHO, event_types=["schedule.triggered"],
                             delivery_policy=DeliveryPolicy(webhooks=["hook"])),
        # explicit messages (message_send): a pooled runner whose results the host also delivers, and
        # a LangBot SDK event processor in its RunActor whose results the host does not deliver
        "replier": AgentConfig(runner_id=REPLY_PROBE_ID, delivery_policy=DeliveryPolicy(edit_interval_s=0.2)),
        "sdkreply": AgentConfig(runner_id=SDK_REPLY_ID, execution="in_actor",
                                delivery_policy=DeliveryPolicy(reply=False)),
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
        "tgreply": ConnectionConfig(platform="telegram", agent_id="replier", token_env="RH_TEST_TG_TOKEN",
                                    secret_env="RH_TEST_TG_SECRET", api_base=fake_telegram.base_url),
        "tgsdk": ConnectionConfig(platform="telegram", agent_id="sdkreply", token_env="RH_TEST_TG_TOKEN",
                                  secret_env="RH_TEST_TG_SECRET", api_base=fake_telegram.base_url),
    }
    namespace = f"rh-plat-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        server=ServerSettings(host="127.0.0.1", port=int(serve_app.url.rsplit(":", 1)[1])),
        storage=StorageSettings(data_dir=str(tmp_path_factory.mktemp("plat-data")), database_url=platforms_pg_url),
        host=HostSettings(namespace=namespace,
                          extra_runners={"plugin:test/ask/default": "tests.chat.ask_runner:AskRunner",
                                         REPLY_PROBE_ID: "tests.chat.reply_runners:ReplyProbeRunner",
                                         SDK_REPLY_ID: "tests.chat.reply_runners:EventProcessorRunner"}),
        pools=PoolConfig(run_actors_min=1, run_actors_max=8, workers_min=1, workers_max=1),
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


@pytest.fixture
async def api(platform_app):
    async with httpx.AsyncClient(base_url=platform_app.url, headers=platform_app.admin, timeout=60) as client:
        yield client


async def eventually(check, timeout: float = 60.0, every: float = 0.2):
    return await wait_until(check, timeout=timeout, interval=every, what=getattr(check, "__name__", "the check"))


async def runs_of(api, conversation_id: str) -> list[dict]:
    response = await api.get("/v1/runs", params={"conversation_id": conversation_id})
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def finished_run(api, conversation_id: str, count: int = 1) -> list[dict]:
    async def done():
        runs = await runs_of(api, conversation_id)
        return runs if len(runs) >= count and all(r["status"] in ("completed", "failed") for r in runs) else None
    return await eventually(done)


async def deliveries(api, run_id: str, settled: bool = True) -> list[dict]:
    async def get():
        response = await api.get(f"/v1/runs/{run_id}/deliveries")
        assert response.status_code == 200, response.text
        rows = response.json()
        if settled and (not rows or any(r["status"] in ("pending", "sending", "streaming") for r in rows)):
            return None
        return rows
    return await eventually(get)


# -- Telegram --------------------------------------------------------------------------------------
async def test_telegram_forged_secret_is_401_and_starts_nothing(api):
    chat = next(_ids)
    for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "forged"}):
        response = await api.post("/v1/platforms/telegram/tg/webhook", json=text_update(next(_ids), chat, "hi"),
                                   headers={**headers, "Authorization": ""})
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert await runs_of(api, f"telegram:tg:{chat}") == []
    # a genuine update to the same chat, sent after them, runs: the chat's only run is its own
    genuine = await api.post("/v1/platforms/telegram/tg/webhook", json=text_update(next(_ids), chat, "hi"), headers=TG)
    assert genuine.status_code == 200, genuine.text
    [started] = genuine.json()["runs"]
    [run] = await finished_run(api, f"telegram:tg:{chat}")
    assert run["run_id"] == started["run_id"]


async def test_telegram_reply_streams_by_edits_once_despite_429_and_a_delivery_actor_kill(api, platform_app,
                                                                                         fake_telegram):
    chat = next(_ids)
    fake_telegram.fail_next("sendMessage", 429, retry_after=1, chat_id=chat)
    update = text_update(next(_ids), chat, "one two three four five")
    response = await api.post("/v1/platforms/telegram/tg/webhook", json=update, headers=TG)
    assert response.status_code == 200, response.text
    [started] = response.json()["runs"]
    # the platform retries its webhook (a slow answer, a restart): no second run
    again = await api.post("/v1/platforms/telegram/tg/webhook", json=update, headers=TG)
    assert again.status_code == 200 and again.json()["runs"] == []
    await eventually(lambda: fake_telegram.messages(chat))  # streaming has begun
    ray.kill(ray.get_actor("runnerhost-delivery", namespace=platform_app.settings.host.namespace), no_restart=False)
    # the kill hit mid-run: the ledger still had the run live after it (statuses only move forward)
    at_kill = await api.get(f"/v1/runs/{started['run_id']}")
    assert at_kill.status_code == 200, at_kill.text
    assert at_kill.json()["status"] not in ("completed", "failed", "cancelled", "timeout"), at_kill.json()
    [run] = await finished_run(api, f"telegram:tg:{chat}")
    assert run["run_id"] == started["run_id"] and run["status"] == "completed"
    rows = await deliveries(api, run["run_id"])
    shown = fake_telegram.messages(chat)
    assert [m["text"] for m in shown] == ["echo: one two three four five"]
    assert shown[0]["edits"] >= 1, [(m, p.get("text")) for m, p in fake_telegram.calls if p.get("chat_id") == chat]
    telegram_rows = [r for r in rows if r["platform"] == "telegram"]
    assert [(r["part"], r["status"], r["platform_message_id"]) for r in telegram_rows] == [
        (0, "delivered", str(shown[0]["message_id"]))]
    # the 429 hit: the fake answered it to this chat's first post, the post was made again, and
    # the row counts every attempt (the refused one included)
    served = [(method, status) for method, status, params in fake_telegram.failures_served
              if str(params.get("chat_id")) == str(chat)]
    assert served == [("sendMessage", 429)], served
    posts = [p for m, p in fake_telegram.calls if m == "sendMessage" and str(p.get("chat_id")) == str(chat)]
    assert len(posts) == 2, posts  # the refused post and the one that shows
    assert telegram_rows[0]["attempts"] >= 2, telegram_rows


# -- Slack ------------------------------------------------------------------------------------------
async def test_slack_signature_url_verification_and_retry_dedupe(api, fake_slack):
    body = json.dumps({"type": "url_verification", "challenge": "chal-1", "token": "x"}).encode()
    forged = await api.post("/v1/platforms/slack/sl/events", content=body,
                            headers={**signed_headers("wrong-secret", body), "Authorization": ""})
    assert forged.status_code == 401
    ok = await api.post("/v1/platforms/slack/sl/events", content=body, headers=signed_headers(SLACK_SIGNING_SECRET, body))
    assert ok.status_code == 200 and ok.json() == {"challenge": "chal-1"}

    channel = f"C{next(_ids)}"
    event_id = f"Ev{uuid.uuid4().hex[:10]}"
    body = json.dumps(message_event(event_id, channel, "hi slack", ts="1700.1", thread_ts="1699.9")).encode()
    first = await api.post("/v1/platforms/slack/sl/events", content=body, headers=signed_headers(SLACK_SIGNING_SECRET, body))
    assert first.status_code == 200 and len(first.json()["runs"]) == 1
    retry = await api.post("/v1/platforms/slack/sl/events", content=body,
                           headers={**signed_headers(SLACK_SIGNING_SECRET, body), "X-Slack-Retry-Num": "1",
                                    "X-Slack-Retry-Reason": "http_timeout"})
    assert retry.status_code == 200 and retry.json()["runs"] == []
    [run] = await finished_run(api, f"slack:T1:{channel}")
    assert run["thread_id"] == "1699.9"
    await deliveries(api, run["run_id"])
    [shown] = fake_slack.messages(channel)
    assert shown["text"] == "echo: hi slack" and shown["thread_ts"] == "1699.9"


async def test_slack_forged_message_is_401_and_starts_nothing(api, fake_slack):
    """A message event_callback with a bad signature (wrong secret, or a good signature over other
    bytes) is refused and starts nothing: no run, no EventLog row, and its event_id is not spent,
    so the genuine delivery of the same event still runs once."""
    channel = f"C{next(_ids)}"
    conversation = f"slack:T1:{channel}"
    event_id = f"Ev{uuid.uuid4().hex[:10]}"
    body = json.dumps(message_event(event_id, channel, "forged hi", ts="1700.2")).encode()
    other = json.dumps(message_event(event_id, channel, "something else", ts="1700.2")).encode()
    for headers in (signed_headers("wrong-secret", body), signed_headers(SLACK_SIGNING_SECRET, other), {}):
        forged = await api.post("/v1/platforms/slack/sl/events", content=body,
                                headers={"Content-Type": "application/json", **headers, "Authorization": ""})
        assert forged.status_code == 401 and forged.json()["code"] == "unauthorized", forged.text
        assert "runs" not in forged.json()
    assert await runs_of(api, conversation) == []
    logged = await api.get(f"/v1/conversations/{conversation}/events")
    assert logged.status_code == 200 and logged.json()["items"] == [], logged.text
    # the same event, signed for real: it is accepted once (the forgeries claimed nothing), which
    # also shows the checks above looked where a run would have been
    genuine = await api.post("/v1/platforms/slack/sl/events", content=body,
                             headers=signed_headers(SLACK_SIGNING_SECRET, body))
    assert genuine.status_code == 200 and len(genuine.json()["runs"]) == 1, genuine.text
    [run] = await finished_run(api, conversation)
    logged = await api.get(f"/v1/conversations/{conversation}/events")
    assert [e["event_type"] for e in logged.json()["items"]] == ["message.received"]
    assert run["status"] == "completed"


# -- Discord ------------------------------------------------------------------------------------------
async def test_discord_gateway_message_runs_and_replies(api, platform_app, fake_discord):
    actor = ray.get_actor("runnerhost-discord-dc", namespace=platform_app.settings.host.namespace)
    await eventually(lambda: fake_discord.connected)
    assert await actor.alive.remote()
    channel = str(next(_ids))
    await asyncio.to_thread(fake_discord.dispatch, "MESSAGE_CREATE", message_create(str(next(_ids)), channel, "hi dc"))
    [run] = await finished_run(api, f"discord:700:{channel}")
    await deliveries(api, run["run_id"])
    [shown] = fake_discord.messages(channel)
    assert shown["content"] == "echo: hi dc"


# -- OneBot v11 ----------------------------------------------------------------------------------------
async def test_onebot_bridge_message_runs_and_replies(api, platform_app):
    actor = ray.get_actor("runnerhost-onebot-qq", namespace=platform_app.settings.host.namespace)
    port = await actor.start.remote()
    url = f"ws://127.0.0.1:{port}/"
    # a forged token is refused at the handshake (HTTP 401, no WebSocket), so the bridge is never
    # known and nothing it would post can start a run
    forged_id = 20003
    for token in ("forged", None):
        with pytest.raises(InvalidStatus) as refused:
            await FakeOneBotBridge(url, self_id=forged_id, access_token=token).connect()
        assert refused.value.response.status_code == 401
    bridge = FakeOneBotBridge(url, self_id=20002, access_token=ONEBOT_TOKEN)
    await bridge.connect()
    try:
        async def linked():
            return await actor.bridges.remote()
        assert await eventually(linked) == ["20002"]  # the genuine bridge only
        user = next(_ids)
        await bridge.post(private_message(next(_ids), user, "hi qq"))
        [run] = await finished_run(api, f"onebot:20002:private:{user}")
        rows = await deliveries(api, run["run_id"])
        assert [s["message"][0]["data"]["text"] for s in bridge.sent if s.get("user_id") == user] == ["echo: hi qq"]
        assert [r["status"] for r in rows if r["platform"] == "onebot"] == ["delivered"]
        assert await runs_of(api, f"onebot:{forged_id}:private:{user}") == []
    finally:
        await bridge.close()


# -- explicit messages (message_send: LangBot's reply / send_message / reply_stream) ------------------
async def test_runners_post_into_their_own_chat_once_through_the_host(api, platform_app, fake_telegram):
    from actors.core.delivery import ACTION_PART_BASE
    from tests.chat.reply_runners import FOREIGN_CHAT
    # a pooled runner: one keyed message sent twice (a retried call), another chat tried
    chat = next(_ids)
    response = await api.post("/v1/platforms/telegram/tgreply/webhook", json=text_update(next(_ids), chat, "hi"),
                              headers=TG)
    assert response.status_code == 200, response.text
    [run] = await finished_run(api, f"telegram:tgreply:{chat}")
    assert run["status"] == "completed"
    rows = await deliveries(api, run["run_id"])
    texts = [m["text"] for m in fake_telegram.messages(chat)]
    assert len(texts) == 2 and texts[0] == "progress: 50%"  # posted once, though asked twice
    seen = json.loads(texts[1])  # the run's result, which the host delivers itself
    assert seen["automatic_reply"] is True and seen["message_send"] is True and seen["foreign"] == "unauthorized"
    assert seen["first"] == seen["again"] == [str(fake_telegram.messages(chat)[0]["message_id"])]
    explicit = [r for r in rows if r["part"] == ACTION_PART_BASE]
    assert [(r["status"], r["attempts"], r["platform_message_id"]) for r in explicit] == [
        ("delivered", 1, seen["first"][0])]
    assert fake_telegram.messages(FOREIGN_CHAT) == []

    # a LangBot SDK event processor (reply = false): only what it says explicitly reaches the chat
    chat = next(_ids)
    response = await api.post("/v1/platforms/telegram/tgsdk/webhook", json=text_update(next(_ids), chat, "hi"),
                              headers=TG)
    assert response.status_code == 200, response.text
    [run] = await finished_run(api, f"telegram:tgsdk:{chat}")
    assert run["status"] == "completed"  # no message results, yet it answered
    rows = await deliveries(api, run["run_id"])
    texts = [m["text"] for m in fake_telegram.messages(chat)]
    assert texts[:3] == ["sdk: hello", "sdk: chain[Image]", "sdk: streamed"] and len(texts) == 4
    assert json.loads(texts[3]) == {"automatic_reply": False, "not_sent": ["Image"], "foreign": "unauthorized",
                                    "stream": "delivered"}
    assert [r["status"] for r in rows] == ["delivered"] * 4 and fake_telegram.messages(FOREIGN_CHAT) == []

    # the same runner called over HTTP has no chat: a clear error, nothing posted
    event = {"event_type": "message.received", "conversation_id": f"http-{uuid.uuid4().hex[:8]}",
             "input": {"text": "hi"}, "actor": {"actor_id": "u1"}}
    async with api.stream("POST", "/v1/events", json={"agent_id": "replier", "event": event}) as streamed:
        assert streamed.status_code == 200
        frames = [json.loads(line) async for line in streamed.aiter_lines() if line.strip()]
    assert frames[-1]["type"] == "run.completed"
    [answer] = [f for f in frames if f["type"] == "message.completed"]
    seen = json.loads(answer["data"]["message"]["content"])
    assert (seen["automatic_reply"], seen["message_send"], seen["error"], seen["reason"]) == (
        False, False, "invalid_argument", "no_delivery_target")


# -- interactions -----------------------------------------------------------------------------------------
async def test_interaction_round_trip_over_http_and_telegram_buttons(api, platform_app, fake_telegram):
    chat = next(_ids)
    conversation = f"telegram:tgask:{chat}"
    response = await api.post("/v1/platforms/telegram/tgask/webhook", json=text_update(next(_ids), chat, "deploy?"),
                              headers=TG)
    assert response.status_code == 200
    [asking] = await finished_run(api, conversation)
    await deliveries(api, asking["run_id"])
    text, prompt = fake_telegram.messages(chat)
    assert text["text"] == "Let me ask." and prompt["text"] == "Ship it?"
    buttons = [row[0] for row in prompt["reply_markup"]["inline_keyboard"]]

    pending = (await api.get("/v1/interactions", params={"status": "pending", "conversation_id": conversation},
                             headers=platform_app.read)).json()
    assert [(p["run_id"], p["status"], p["request"]["title"]) for p in pending] == [(asking["run_id"], "pending",
                                                                                    "Ship it?")]
    interaction_id = pending[0]["interaction_id"]
    bad = await api.post(f"/v1/interactions/{interaction_id}/submit", json={"values": {"answer": "maybe"}},
                         headers=platform_app.ingest)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_argument"
    foreign = await api.post(f"/v1/interactions/{interaction_id}/submit",
                             json={"values": {"answer": "yes"}, "actor_id": "someone-else"}, headers=platform_app.ingest)
    assert foreign.status_code == 401
    answered = await api.post(f"/v1/interactions/{interaction_id}/submit", json={"values": {"answer": "yes"}},
                              headers=platform_app.ingest)
    assert answered.status_code == 202, answered.text
    resumed_id = answered.json()["run_id"]
    runs = await finished_run(api, conversation, count=2)
    assert resumed_id in {r["run_id"] for r in runs}
    await deliveries(api, resumed_id)
    assert fake_telegram.messages(chat)[-1]["text"] == "you chose yes (interaction.submitted)"
    again = await api.post(f"/v1/interactions/{interaction_id}/submit", json={"values": {"answer": "no"}},
                           headers=platform_app.ingest)
    assert again.status_code == 409 and again.json()["details"]["status"] == "answered"
    # a tap on the (now answered) Telegram button starts nothing either
    tap = await api.post("/v1/platforms/telegram/tgask/webhook",
                         json=callback_update(next(_ids), chat, buttons[1]["callback_data"]), headers=TG)
    assert tap.status_code == 409
    assert len(await runs_of(api, conversation)) == 2

    # the same over Telegram buttons, in a fresh conversation
    chat2 = next(_ids)
    await api.post("/v1/platforms/telegram/tgask/webhook", json=text_update(next(_ids), chat2, "again?"), headers=TG)
    [asking2] = await finished_run(api, f"telegram:tgask:{chat2}")
    await deliveries(api, asking2["run_id"])
    prompt2 = fake_telegram.messages(chat2)[1]
    no = prompt2["reply_markup"]["inline_keyboard"][1][0]["callback_data"]
    tap = await api.post("/v1/platforms/telegram/tgask/webhook", json=callback_update(next(_ids), chat2, no), headers=TG)
    assert tap.status_code == 200, tap.text
    runs = await finished_run(api, f"telegram:tgask:{chat2}", count=2)
    await deliveries(api, tap.json()["run_id"])
    assert fake_telegram.messages(chat2)[-1]["text"] == "you chose no (interaction.submitted)"
    assert len(runs) == 2


async def test_expired_interaction_is_refused_over_http(api, platform_app):
    """The ask agent (behind the tgask connection) now asks with a 3-second expiry."""
    agent = {"runner_id": "plugin:test/ask/default", "event_types": ["message.received", "interaction.submitted"],
             "runner_config": {"expires_at": int(time.time()) + 3},
             "delivery_policy": {"enable_interactions": True, "edit_interval_s": 0.2}}
    assert (await api.put("/v1/agents/ask", json=agent)).status_code == 200
    chat = next(_ids)
    conversation = f"telegram:tgask:{chat}"
    response = await api.post("/v1/platforms/telegram/tgask/webhook", json=text_update(next(_ids), chat, "ask me"),
                              headers=TG)
    assert response.status_code == 200, response.text
    await finished_run(api, conversation)

    async def stored():
        rows = (await api.get("/v1/interactions", params={"conversation_id": conversation})).json()
        return rows or None
    [record] = await eventually(stored)

    async def expired():  # expiry is the ledger's clock passing expires_at, seen on every read
        rows = (await api.get("/v1/interactions", params={"status": "expired", "conversation_id": conversation})).json()
        return rows or None
    await eventually(expired, timeout=max(0.0, record["expires_at"] - time.time()) + 30)
    late = await api.post(f"/v1/interactions/{record['interaction_id']}/submit", json={"values": {"answer": "yes"}})
    assert late.status_code == 409 and late.json()["details"]["status"] == "expired"
    listed = (await api.get("/v1/interactions", params={"status": "expired", "conversation_id": conversation})).json()
    assert [r["interaction_id"] for r in listed] == [record["interaction_id"]]
    missing = await api.post("/v1/interactions/ia_0000/submit", json={"values": {}})
    assert missing.status_code == 404


# -- schedules ----------------------------------------------------------------------------------------------
async def test_schedule_fires_once_per_tick_across_racing_rounds_and_a_restart(api, platform_app,
                                                                               platforms_pg_url, webhook_receiver):
    # yearly, so no new tick can come due while the test runs: every fire below is the same tick
    body = {"schedules": [{"schedule_id": "nightly", "cron": "0 0 1 1 *", "text": "tick"}]}
    assert (await api.put("/v1/agents/clock/schedules", json=body, headers=platform_app.ingest)).status_code == 401
    assert (await api.put("/v1/agents/chat/schedules", json=body)).status_code == 400  # chat ignores schedules
    assert (await api.put("/v1/agents/nobody/schedules", json=body)).status_code == 404
    put = await api.put("/v1/agents/clock/schedules", json=body)
    assert put.status_code == 200, put.text
    [record] = (await api.get("/v1/agents/clock/schedules", headers=platform_app.read)).json()
    assert record["cron"] == "0 0 1 1 *" and record["next_fire_at"] > time.time()
    # make the schedule due now, as after a long downtime: the latest past tick (this New Year) fires once
    import asyncpg
    dsn = platforms_pg_url.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(dsn)
    try:
        from actors.core.cron import latest_tick
        tick = int(latest_tick("0 0 1 1 *", time.time()))
        await connection.execute("UPDATE schedule SET next_fire_at = $1 WHERE agent_id = 'clock'", float(tick - 86400))
    finally:
        await connection.close()
    namespace = platform_app.settings.host.namespace
    scheduler = ray.get_actor("runnerhost-scheduler", namespace=namespace)
    rounds = await asyncio.gather(*(scheduler.run_once.remote() for _ in range(4)))
    fired = [f for r in rounds for f in r["ok"]]
    assert [f["event_id"] for f in fired] == [f"sched-clock-nightly-{tick}"]
    ray.kill(scheduler, no_restart=False)  # a restart inside the same minute fires nothing again

    async def restarted():
        try:
            return await ray.get_actor("runnerhost-scheduler", namespace=namespace).run_once.remote()
        except ray.exceptions.RayActorError:
            return None
    after = await eventually(restarted)
    assert after["ok"] == []

    async def delivered():
        hits = [r for r in webhook_receiver.received if r["body"].get("run_id") == fired[0]["run_id"]]
        return hits or None
    [hit] = await eventually(delivered)
    assert hit["body"]["text"] == "echo: tick"
    run = (await api.get(f"/v1/runs/{fired[0]['run_id']}")).json()
    assert run["conversation_id"] is None and run["agent_id"] == "clock"
