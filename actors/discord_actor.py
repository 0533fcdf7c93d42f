"""DiscordConnectionActor: one Discord bot's Gateway connection as a long-lived named actor
(``runnerhost-discord-<connection>``), a thin shell over :class:`platforms.discord.DiscordGateway`.

hikari keeps the websocket (heartbeats; RESUME after a drop, so no event is lost to a blip);
each dispatch is parsed here and handed to the ingress's intake. Button taps on rendered
interactions are acknowledged at once (Discord wants an answer within 3 s) and then answered.
If the actor dies, Ray restarts it and it IDENTIFYs anew.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ray

from platforms import discord
from platforms.config import ConnectionConfig
from platforms.credentials import read_secret
from protocol.logs import get_logger

from .core.intake import log_refusal

log = get_logger(__name__)


def discord_actor_name(connection: str) -> str:
    return f"runnerhost-discord-{connection}"


@ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=1000, num_cpus=0, enable_task_events=False)
class DiscordConnectionActor:
    def __init__(self, connection: str, config: dict[str, Any], intake: Any) -> None:
        self._connection = connection
        self._config = ConnectionConfig.model_validate(config)
        self._intake = intake
        token = read_secret(self._config.token_env, what="the bot token", connection=connection)
        self._gateway = discord.DiscordGateway(token, on_dispatch=self._on_dispatch, api_base=self._config.api_base,
                                               intents=self._config.intents)
        self._rest = discord.DiscordAdapter(token, api_base=self._config.api_base)
        self._started = False

    async def start(self) -> bool:
        """Connect (idempotent); returns once the Gateway session is READY."""
        if not self._started:
            self._started = True
            await self._gateway.start()
        return True

    async def alive(self) -> bool:
        return self._gateway.is_alive

    async def _on_dispatch(self, name: str, data: dict[str, Any]) -> None:
        inbound = discord.parse(name, data, connection=self._connection,
                                bot_id=self._config.bot_id or self._connection)
        if inbound.answer is not None:
            try:
                await self._rest.acknowledge(inbound.answer, "")
            except Exception as exc:  # the answer still counts; Discord only shows "failed"
                log.warning("discord %s: acknowledging a button failed: %s", self._connection, type(exc).__name__)
            log_refusal(self._connection, await self._intake.platform_answer.remote(
                self._connection, dataclasses.asdict(inbound.answer), "INTERACTION_CREATE"))
        elif inbound.events:
            log_refusal(self._connection, await self._intake.platform_inbound.remote(
                self._connection, self._config.agent_id, inbound))

    async def close(self) -> None:
        await self._gateway.close()
        await self._rest.close()


def get_or_create_discord(connection: str, config: ConnectionConfig, intake: Any, namespace: str | None) -> Any:
    from .placement import control_plane_options
    return DiscordConnectionActor.options(
        name=discord_actor_name(connection), namespace=namespace, lifetime="detached", get_if_exists=True,
        **control_plane_options()).remote(connection, config.model_dump(mode="json"), intake)
