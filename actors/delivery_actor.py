"""DeliveryActor: the cluster's one delivery engine (a thin shell over
:class:`actors.core.delivery.DeliveryService`), named ``runnerhost-delivery``.

It restarts on death and retries the call it was serving (``max_task_retries=-1``); the engine
resumes from the ``delivery`` table and the run ledger, so a restart never posts twice. Adapters
are built on first use from the ``[platforms]`` config; credentials come from this process's
environment. OneBot connections send through their connection actor.
"""
from __future__ import annotations

from typing import Any

import ray

from platforms.base import InteractionAnswer, OutboundAdapter
from platforms.config import PlatformsSettings
from protocol.delivery import DeliveryPlan

from . import tracing
from .core.delivery import DeliveryService
from .core.interactions import InteractionService
from .core.storage_port import ActorStorage
from .retry import reply

DELIVERY_NAME = "runnerhost-delivery"


@ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=1000, num_cpus=0, enable_task_events=False)
class DeliveryActor:
    def __init__(self, platforms: dict[str, Any], storage: Any, namespace: str | None,
                 otlp_endpoint: str | None = None) -> None:
        tracing.configure(otlp_endpoint)  # delivery spans join each run's trace (DeliveryPlan.trace)
        self._settings = PlatformsSettings.model_validate(platforms)
        self._namespace = namespace
        self._adapters: dict[str, OutboundAdapter] = {}
        store = ActorStorage(storage)
        self._service = DeliveryService(store, self._adapter, self._settings.delivery,
                                        interactions=InteractionService(store).request)

    def _adapter(self, connection: str) -> OutboundAdapter:
        adapter = self._adapters.get(connection)
        if adapter is None:
            config = self._settings.connections[connection]
            if config.platform == "onebot":
                from .onebot_actor import OneBotRemoteSender
                adapter = OneBotRemoteSender(connection, self._namespace)
            else:
                from platforms.registry import build_adapter
                adapter = build_adapter(connection, config, self._settings.delivery)
            self._adapters[connection] = adapter
        return adapter

    async def ready(self) -> bool:
        return True

    async def on_frames(self, plan: dict[str, Any], frames: list[dict[str, Any]]) -> dict[str, Any]:
        return await reply(self._service.on_frames(DeliveryPlan.model_validate(plan), frames))

    async def on_terminal(self, plan: dict[str, Any], frame: dict[str, Any]) -> dict[str, Any]:
        return await reply(self._service.on_terminal(DeliveryPlan.model_validate(plan), frame))

    async def send_message(self, plan: dict[str, Any], text: str, key: str,
                           address: dict[str, Any] | None = None, ordinal: int | None = None) -> dict[str, Any]:
        """A runner's explicit message (``message_send``), posted once per message number."""
        return await reply(self._service.send_message(DeliveryPlan.model_validate(plan), text, key=key,
                                                      address=address, ordinal=ordinal))

    async def acknowledge(self, connection: str, answer: dict[str, Any], text: str) -> dict[str, Any]:
        """Tell the platform a tapped button was handled (Telegram's answerCallbackQuery)."""
        return await reply(self._adapter(connection).acknowledge(InteractionAnswer(**answer), text))


def get_or_create_delivery(platforms: PlatformsSettings, storage: Any, namespace: str | None,
                           otlp_endpoint: str | None = None) -> Any:
    from .placement import control_plane_options
    return DeliveryActor.options(name=DELIVERY_NAME, namespace=namespace, lifetime="detached", get_if_exists=True,
                                 **control_plane_options()).remote(platforms.model_dump(mode="json"), storage,
                                                                   namespace, otlp_endpoint)
