"""Configuration of platform connections and of delivery / scheduling.

Credentials never live here: a connection names the environment variables that hold them
(``token_env``, ``secret_env``), read when the adapter is built (:mod:`platforms.secrets`).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ENV_NAME = r"^[A-Z_][A-Z0-9_]{0,127}$"
CONNECTION_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class ConnectionConfig(BaseModel):
    """One platform connection (a bot account, a webhook receiver, a OneBot bridge)."""

    model_config = ConfigDict(extra="forbid")

    platform: Literal["telegram", "slack", "discord", "onebot", "webhook"]
    #: The agent that answers this connection's events (else the bindings decide by bot_id/source).
    agent_id: str | None = Field(default=None, max_length=128)
    #: ``bot_id`` of the envelopes (defaults to the connection name).
    bot_id: str | None = Field(default=None, max_length=256)
    #: Env var of the bot token (Telegram, Slack ``xoxb-``, Discord) or OneBot access token.
    token_env: str | None = Field(default=None, pattern=ENV_NAME)
    #: Env var of the inbound secret: Telegram secret token, Slack signing secret, webhook HMAC key.
    secret_env: str | None = Field(default=None, pattern=ENV_NAME)
    #: API base URL override (a self-hosted Bot API server, a test fake); the platform's default when unset.
    api_base: str | None = Field(default=None, max_length=512)
    #: Generic webhook: the receiver's URL.
    url: str | None = Field(default=None, max_length=2048)
    #: OneBot v11 reverse WebSocket: where the connection actor listens for the bridge.
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=6700, ge=0, le=65535)
    #: Discord Gateway intents (a hikari ``Intents`` bit field); default: guilds, messages, DMs,
    #: message content (privileged) and guild members (privileged).
    intents: int | None = Field(default=None, ge=0)


class DeliveryTuning(BaseModel):
    """Retry and pacing of deliveries (env: ``RUNNERHOST_DELIVERY_*`` via the serve config)."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=6, ge=1, le=50)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    #: Longest Retry-After honoured before the attempt counts as failed.
    max_retry_after_s: float = Field(default=120.0, gt=0)
    request_timeout_s: float = Field(default=20.0, gt=0)


class PlatformsSettings(BaseModel):
    """``[platforms]`` of runnerhost.toml."""

    model_config = ConfigDict(extra="forbid")

    connections: dict[str, ConnectionConfig] = Field(default_factory=dict)
    delivery: DeliveryTuning = Field(default_factory=DeliveryTuning)
    #: Scheduler period; ticks are whole minutes, so anything ≤ 30 s fires on time.
    scheduler_interval_s: float = Field(default=10.0, gt=0)
    #: The scheduler runs at all (off in tests that drive it by hand).
    scheduler_enabled: bool = True

    def platforms(self) -> dict[str, str]:
        """Connection name → platform (what :func:`protocol.delivery.delivery_targets` needs)."""
        return {name: c.platform for name, c in self.connections.items()}
