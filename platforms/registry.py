"""Build the outbound adapter of one configured connection (credentials read from the env)."""
from __future__ import annotations

from protocol.errors import invalid_argument

from .base import OutboundAdapter
from .config import ConnectionConfig, DeliveryTuning
from .credentials import read_secret


def build_adapter(name: str, config: ConnectionConfig, tuning: DeliveryTuning | None = None) -> OutboundAdapter:
    """Telegram, Slack, Discord and webhook adapters talk HTTP and can live anywhere; a OneBot
    connection sends over the socket its bridge opened, so its adapter lives in the OneBot
    connection actor (:mod:`actors.onebot_actor`)."""
    tuning = tuning or DeliveryTuning()
    if config.platform == "telegram":
        from .telegram import TelegramAdapter
        return TelegramAdapter(read_secret(config.token_env, what="the bot token", connection=name),
                               api_base=config.api_base, timeout_s=tuning.request_timeout_s)
    if config.platform == "slack":
        from .slack import SlackAdapter
        return SlackAdapter(read_secret(config.token_env, what="the bot token", connection=name),
                            api_base=config.api_base, timeout_s=tuning.request_timeout_s)
    if config.platform == "discord":
        from .discord import DiscordAdapter
        return DiscordAdapter(read_secret(config.token_env, what="the bot token", connection=name),
                              api_base=config.api_base, max_rate_limit_s=tuning.max_retry_after_s)
    if config.platform == "webhook":
        from .webhook import WebhookAdapter
        if not config.url:
            raise invalid_argument(f"webhook connection {name!r} needs a url", connection=name)
        return WebhookAdapter(config.url, read_secret(config.secret_env, what="the signing secret", connection=name),
                              timeout_s=tuning.request_timeout_s)
    raise invalid_argument(f"connection {name!r}: {config.platform} sends through its connection actor",
                           connection=name)
