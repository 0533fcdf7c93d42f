"""HTTP surface of platform connections, delivery, interactions and schedules (SPEC §13).

Routes (auth in brackets):

* ``POST /v1/platforms/telegram/{connection}/webhook`` [Telegram secret token header]
* ``POST /v1/platforms/slack/{connection}/events`` and ``…/interactivity`` [Slack signature]
* ``GET /v1/runs/{run_id}/deliveries`` [read]
* ``GET /v1/interactions?status=&conversation_id=&run_id=&limit=`` [read], ``GET /v1/interactions/{id}`` [read]
* ``POST /v1/interactions/{id}/submit`` [ingest] → 202 ``{interaction, event_id, run_id}``
* ``GET|PUT /v1/agents/{id}/schedules`` [read | admin]

Webhook routes never take an API key: the platform's own signature or secret is the proof,
and a forged one is 401 before anything is parsed or started. Each ingress replica has one
:class:`PlatformsHub` (per Host), which also starts the cluster's platform actors (delivery,
Discord / OneBot connections, scheduler) by name, so every replica shares them.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from actors.core.intake import PlatformIntake
from actors.core.storage_port import ActorStorage
from actors.retry import unwrap
from platforms import slack, telegram
from platforms.base import InteractionAnswer as PlatformAnswer
from platforms.config import ConnectionConfig, PlatformsSettings
from platforms.credentials import read_secret
from protocol.agents import AgentConfig
from protocol.delivery import DeliveryRecord
from protocol.errors import (
    ErrorBody,
    RunnerHostError,
    invalid_argument,
    not_found,
    unauthorized,
)
from protocol.events import EventEnvelope
from protocol.interactions import InteractionAnswer, InteractionRecord
from protocol.logs import get_logger
from protocol.schedules import ScheduleRecord, ScheduleSet

from .auth import require
from .models import CONFLICT, ERROR_RESPONSES, ID_PATTERN, NOT_FOUND

log = get_logger("runnerhost.platforms")

Connection = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
RunId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
AgentId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
InteractionId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^ia_[0-9a-f]{1,61}$")]
UNAUTHORIZED = {401: {"model": ErrorBody, "description": "forged or missing platform signature / secret"}}


class PlatformsHub:
    """Per-Host platform state of one ingress replica: intake, the delivery actor, relays."""

    _hubs: "weakref.WeakKeyDictionary[Any, PlatformsHub]" = weakref.WeakKeyDictionary()

    def __init__(self, host: Any, settings: PlatformsSettings, namespace: str | None) -> None:
        self.host = host
        self.settings = settings
        self.namespace = namespace
        self.storage = ActorStorage(host.storage)
        self.intake = PlatformIntake(self.storage, self.submit)

    @classmethod
    def of(cls, host: Any, settings: Any) -> "PlatformsHub":
        hub = cls._hubs.get(host)
        if hub is None:
            hub = cls._hubs[host] = cls(host, settings.platforms, settings.host.namespace)
        return hub

    # -- actors -----------------------------------------------------------------------------
    @property
    def delivery(self) -> Any:
        return self.host.delivery()

    async def start_actors(self, intake_handle: Any) -> None:
        """Connection actors (Discord Gateway, OneBot listener) and the scheduler; idempotent."""
        from actors.discord_actor import get_or_create_discord
        from actors.onebot_actor import get_or_create_onebot
        from actors.scheduler_actor import get_or_create_scheduler
        starts = []
        for name, config in self.settings.connections.items():
            if config.platform == "discord":
                starts.append(get_or_create_discord(name, config, intake_handle, self.namespace).start.remote())
            elif config.platform == "onebot":
                starts.append(get_or_create_onebot(name, config, intake_handle, self.namespace).start.remote())
        get_or_create_scheduler(self.host.storage, intake_handle, self.settings.scheduler_interval_s,
                                self.namespace, enabled=self.settings.scheduler_enabled)
        if self.settings.connections:
            starts.append(self.delivery.ready.remote())  # warm: the first reply should not wait for a process
        for start in starts:
            try:
                await start
            except Exception as exc:  # one bad connection must not stop the others (or the ingress)
                log.error("platform connection failed to start: %s", exc)

    # -- runs ---------------------------------------------------------------------------------
    async def submit(self, event: EventEnvelope, agent_id: str | None) -> dict[str, Any]:
        """Start the event's run in the background; the host delivers its results (its agent's
        delivery policy names where)."""
        return await self.host.submit_background(event, agent_id)

    async def _policy(self, agent_id: str) -> AgentConfig | None:
        for agent in await self.host.agents():
            if agent["agent_id"] == agent_id:
                return AgentConfig.model_validate(agent["config"])
        return None

    async def answer(self, connection: str | None, answer: PlatformAnswer, source_event_type: str) -> dict[str, Any]:
        result = await self.intake.answer(answer.interaction_id, answer, source_event_type=source_event_type)
        if connection and answer.ack:
            try:
                unwrap(await self.delivery.acknowledge.remote(connection, dataclasses.asdict(answer), "Thanks!"))
            except RunnerHostError as exc:  # the answer counts even if the platform's spinner stays
                log.warning("acknowledging an answer on %s failed: %s", connection, exc.message)
        return result

    def connection(self, name: str, platform: str) -> ConnectionConfig:
        config = self.settings.connections.get(name)
        if config is None or config.platform != platform:
            raise not_found(f"no {platform} connection {name!r}", connection=name)
        return config


def _hub(request: Request) -> PlatformsHub:
    return PlatformsHub.of(request.app.state.host, request.app.state.settings)


def _refused(what: str) -> JSONResponse:
    return JSONResponse(unauthorized(f"invalid {what}").to_dict(), status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})


def create_router() -> APIRouter:
    router = APIRouter()

    # -- inbound webhooks (authenticated by the platform's secret, not by API key) -----------------
    @router.post("/v1/platforms/telegram/{connection}/webhook", tags=["platforms"],
                 responses={**ERROR_RESPONSES, **UNAUTHORIZED, **NOT_FOUND},
                 summary="Telegram webhook (X-Telegram-Bot-Api-Secret-Token checked)")
    async def telegram_webhook(request: Request, connection: Connection):
        hub = _hub(request)
        config = hub.connection(connection, "telegram")
        secret = read_secret(config.secret_env, what="the webhook secret token", connection=connection)
        if not telegram.verify(request.headers, secret):
            return _refused("secret token")
        try:
            data = await request.json()
            inbound = telegram.parse(data, connection=connection, bot_id=config.bot_id or connection)
        except (ValueError, KeyError, TypeError):
            raise invalid_argument("not a Telegram update") from None
        if inbound.answer is not None:
            result = await hub.answer(connection, inbound.answer, "callback_query")
            return {"ok": True, "run_id": result["run_id"]}
        runs = await hub.intake.accept(connection, config.agent_id, inbound)
        return {"ok": True, "runs": runs}

    async def _slack(request: Request, connection: str) -> tuple[PlatformsHub, ConnectionConfig, Any]:
        hub = _hub(request)
        config = hub.connection(connection, "slack")
        body = await request.body()
        secret = read_secret(config.secret_env, what="the signing secret", connection=connection)
        if not slack.verify(request.headers, body, secret):
            return hub, config, None
        try:
            inbound = slack.parse(body, request.headers.get("content-type", ""), connection=connection,
                                  bot_id=config.bot_id or connection)
        except ValueError:
            raise invalid_argument("not a Slack request") from None
        return hub, config, inbound

    @router.post("/v1/platforms/slack/{connection}/events", tags=["platforms"],
                 responses={**ERROR_RESPONSES, **UNAUTHORIZED, **NOT_FOUND},
                 summary="Slack Events API (signing secret checked; retries de-duplicated by event_id)")
    async def slack_events(request: Request, connection: Connection):
        hub, config, inbound = await _slack(request, connection)
        if inbound is None:
            return _refused("Slack signature")
        if inbound.reply is not None:
            return inbound.reply
        runs = await hub.intake.accept(connection, config.agent_id, inbound)
        return {"ok": True, "runs": runs}

    @router.post("/v1/platforms/slack/{connection}/interactivity", tags=["platforms"],
                 responses={**ERROR_RESPONSES, **UNAUTHORIZED, **NOT_FOUND},
                 summary="Slack interactivity (Block Kit button taps on interactions)")
    async def slack_interactivity(request: Request, connection: Connection):
        hub, _, inbound = await _slack(request, connection)
        if inbound is None:
            return _refused("Slack signature")
        if inbound.answer is None:
            return {"ok": True}
        result = await hub.answer(connection, inbound.answer, "block_actions")
        return {"ok": True, "run_id": result["run_id"]}

    # -- deliveries -------------------------------------------------------------------------------
    @router.get("/v1/runs/{run_id}/deliveries", tags=["runs"], response_model=list[DeliveryRecord],
                dependencies=[require("read")], responses={**ERROR_RESPONSES, **NOT_FOUND},
                summary="What the run's results became on each platform: one row per message part")
    async def run_deliveries(request: Request, run_id: RunId):
        hub = _hub(request)
        await hub.storage.read("run_get", run_id=run_id)  # 404 for an unknown run
        return await hub.storage.read("delivery_list", run_id=run_id)

    # -- interactions ---------------------------------------------------------------------------------
    @router.get("/v1/interactions", tags=["interactions"], response_model=list[InteractionRecord],
                dependencies=[require("read")], responses=ERROR_RESPONSES,
                summary="Interactions, newest first (status pending / answered / expired)")
    async def list_interactions(
            request: Request,
            status: Annotated[str | None, Query(pattern="^(pending|answered|expired)$")] = None,
            conversation_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
            run_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
            limit: Annotated[int, Query(ge=1, le=100)] = 50):
        return await _hub(request).storage.read("interaction_list", status=status, conversation_id=conversation_id,
                                                run_id=run_id, limit=limit)

    @router.get("/v1/interactions/{interaction_id}", tags=["interactions"], response_model=InteractionRecord,
                dependencies=[require("read")], responses={**ERROR_RESPONSES, **NOT_FOUND}, summary="One interaction")
    async def get_interaction(request: Request, interaction_id: InteractionId):
        return await _hub(request).storage.read("interaction_get", id=interaction_id)

    @router.post("/v1/interactions/{interaction_id}/submit", tags=["interactions"], status_code=202,
                 dependencies=[require("ingest")], responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT},
                 summary="Answer an interaction; starts the interaction.submitted run on its conversation")
    async def submit_interaction(request: Request, interaction_id: InteractionId, body: InteractionAnswer):
        answer = PlatformAnswer(interaction_id=interaction_id, action_id=body.action_id, values=dict(body.values),
                                actor_id=body.actor_id, actor_name=body.actor_name)
        result = await _hub(request).answer(None, answer, "http.submit")
        return JSONResponse(result, status_code=202)

    # -- schedules ---------------------------------------------------------------------------------------
    async def _known_agent(hub: PlatformsHub, agent_id: str) -> None:
        if await hub._policy(agent_id) is None:
            raise not_found(f"unknown agent {agent_id!r}", agent_id=agent_id)

    @router.get("/v1/agents/{agent_id}/schedules", tags=["schedules"], response_model=list[ScheduleRecord],
                dependencies=[require("read")], responses={**ERROR_RESPONSES, **NOT_FOUND},
                summary="The agent's cron schedules")
    async def get_schedules(request: Request, agent_id: AgentId):
        hub = _hub(request)
        await _known_agent(hub, agent_id)
        return await hub.storage.read("schedule_list", agent_id=agent_id)

    @router.put("/v1/agents/{agent_id}/schedules", tags=["schedules"], response_model=list[ScheduleRecord],
                dependencies=[require("admin")], responses={**ERROR_RESPONSES, **NOT_FOUND},
                summary="Replace the agent's cron schedules (each tick: one schedule.triggered event)")
    async def put_schedules(request: Request, agent_id: AgentId, body: ScheduleSet):
        hub = _hub(request)
        config = await hub._policy(agent_id)
        if config is None:
            raise not_found(f"unknown agent {agent_id!r}", agent_id=agent_id)
        if body.schedules and not config.handles("schedule.triggered"):
            raise invalid_argument("the agent does not handle schedule.triggered events; add it to its event_types",
                                   agent_id=agent_id)
        return await hub.storage.write("schedule_replace", agent_id=agent_id,
                                       schedules=[s.model_dump(mode="json") for s in body.schedules])

    return router
