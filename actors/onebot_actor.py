"""OneBotConnectionActor: one OneBot v11 connection — the reverse-WebSocket server its bridge
connects to — as a named actor (``runnerhost-onebot-<connection>``).

Why an actor with its own listener rather than a route on the Serve app: the bridge keeps one
long-lived socket that carries both directions, events in *and* our ``send_msg`` actions out.
Serve routes are per request and load-balanced over replicas, so the delivery side could not
address the replica that holds a given bridge's socket; an actor owns the socket, is found by
name from anywhere in the cluster, and is restarted (the bridge reconnects by itself).
Inbound events go to the ingress's intake (``intake.platform_inbound``), outbound calls come
from the delivery actor through :class:`OneBotRemoteSender`.
"""
from __future__ import annotations

from typing import Any

import ray

from platforms import onebot
from platforms.base import OutboundAdapter, PlatformError
from platforms.config import ConnectionConfig
from platforms.credentials import read_secret
from protocol.logs import get_logger

from .core.intake import log_refusal

log = get_logger(__name__)


def onebot_actor_name(connection: str) -> str:
    return f"runnerhost-onebot-{connection}"


@ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=1000, num_cpus=0, enable_task_events=False)
class OneBotConnectionActor:
    def __init__(self, connection: str, config: dict[str, Any], intake: Any) -> None:
        self._connection = connection
        self._config = ConnectionConfig.model_validate(config)
        self._intake = intake
        token = read_secret(self._config.token_env, what="the access token", connection=connection) \
            if self._config.token_env else None
        self._server = onebot.OneBotServer(connection=connection, access_token=token, on_event=self._on_event,
                                           host=self._config.listen_host, port=self._config.listen_port)
        self._adapter = onebot.OneBotAdapter(self._server)
        self._started = False

    async def start(self) -> int:
        """Listen (idempotent); returns the bound port."""
        if not self._started:
            await self._server.start()
            self._started = True
        return self._server.port

    async def bridges(self) -> list[str]:
        return sorted(self._server.links)

    async def _on_event(self, self_id: str, frame: dict[str, Any]) -> None:
        inbound = onebot.parse(frame, connection=self._connection, bot_id=self._config.bot_id or self_id)
        if inbound.events:
            log_refusal(self._connection, await self._intake.platform_inbound.remote(
                self._connection, self._config.agent_id, inbound))

    async def call(self, method: str, address: dict[str, Any], *args: Any) -> dict[str, Any]:
        try:
            return {"ok": await getattr(self._adapter, method)(address, *args)}
        except PlatformError as exc:
            return {"error": {"message": exc.message, "retryable": exc.retryable, "retry_after": exc.retry_after,
                              "status": exc.status}}


class OneBotRemoteSender(OutboundAdapter):
    """The delivery side's adapter for a OneBot connection: calls its connection actor."""

    platform = "onebot"
    supports_files = True
    max_message_size = onebot.MAX_MESSAGE

    def __init__(self, connection: str, namespace: str | None) -> None:
        self._connection = connection
        self._namespace = namespace

    async def _call(self, method: str, address: dict[str, Any], *args: Any) -> str:
        try:
            actor = ray.get_actor(onebot_actor_name(self._connection), namespace=self._namespace)
            result = await actor.call.remote(method, address, *args)
        except (ValueError, ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            raise PlatformError("onebot connection actor unavailable", retryable=True) from None
        if "error" in result:
            error = result["error"]
            raise PlatformError(error["message"], retryable=error["retryable"], retry_after=error["retry_after"],
                                status=error["status"])
        return result["ok"]

    async def send_text(self, address: dict[str, Any], text: str) -> str:
        return await self._call("send_text", address, text)

    async def send_file(self, address: dict[str, Any], name: str, data: bytes, mime_type: str | None) -> str:
        return await self._call("send_file", address, name, data, mime_type)


def get_or_create_onebot(connection: str, config: ConnectionConfig, intake: Any, namespace: str | None) -> Any:
    from .placement import control_plane_options
    return OneBotConnectionActor.options(
        name=onebot_actor_name(connection), namespace=namespace, lifetime="detached", get_if_exists=True,
        **control_plane_options()).remote(connection, config.model_dump(mode="json"), intake)
