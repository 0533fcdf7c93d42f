"""The Ray Serve ingress deployment: one Host per replica, the FastAPI app around it.

``build_app(settings)`` returns the bound Serve application; run it with
``serve.run(build_app(settings), name="runnerhost", route_prefix="/")`` after
``serve.start(http_options={"host": ..., "port": ...})``.
"""
from __future__ import annotations

from typing import Any

from ray import serve

from .config import Settings

DEPLOYMENT_NAME = "runnerhost-ingress"
APP_NAME = "runnerhost"


@serve.deployment(name=DEPLOYMENT_NAME, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256,
                  health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress()
class RunnerHostIngress:
    """Creates the Host (storage actor, detached registry, warm RunActor pool) in its async constructor."""

    async def __init__(self, settings: dict[str, Any]) -> None:
        from actors.host import Host

        self.settings = Settings.model_validate(settings)
        self.host = await Host.start(self.settings.host_config())
        self._platforms = _start_platforms(self)

    def __serve_build_asgi_app__(self):
        from .app import create_app

        return create_app(self.settings, host=self.host)

    async def check_health(self) -> None:
        # Replica-local: one registry blip must not fail every replica at once (see Host.check_health).
        await self.host.check_health()

    # -- in-cluster intake of platform connection actors and the scheduler (serve/platforms.py) --
    async def platform_inbound(self, connection: str, agent_id: str | None, inbound: Any) -> dict[str, Any]:
        from actors.retry import reply

        from .platforms import PlatformsHub
        return await reply(PlatformsHub.of(self.host, self.settings).intake.accept(connection, agent_id, inbound))

    async def platform_answer(self, connection: str, answer: dict[str, Any], source_event_type: str) -> dict[str, Any]:
        from actors.retry import reply
        from platforms.base import InteractionAnswer

        from .platforms import PlatformsHub
        return await reply(PlatformsHub.of(self.host, self.settings).answer(
            connection, InteractionAnswer(**answer), source_event_type))

    async def submit_event(self, event: Any, agent_id: str | None) -> dict[str, Any]:
        from actors.retry import reply

        from .platforms import PlatformsHub
        return await reply(PlatformsHub.of(self.host, self.settings).submit(event, agent_id))


def _start_platforms(ingress: "RunnerHostIngress") -> Any:
    """Start (or find) the cluster's platform actors in the background, handing them this
    deployment's handle as their way in."""
    import asyncio

    from .platforms import PlatformsHub
    context = serve.get_replica_context()
    handle = serve.get_deployment_handle(context.deployment, app_name=context.app_name)
    return asyncio.ensure_future(PlatformsHub.of(ingress.host, ingress.settings).start_actors(handle))


def serve_logging(level: str = "INFO") -> Any:
    """Serve's logging for the proxies and the ingress replicas: no per-request access log line (at
    intake rates it costs a few % of the proxy's and the replica's CPU, and the run ledger and the
    metrics already record every request). Pass it to ``serve.start`` and ``serve.run``."""
    from ray.serve.schema import LoggingConfig

    return LoggingConfig(log_level=level, enable_access_log=False)


def build_app(settings: Settings, *, ray_actor_options: dict[str, Any] | None = None):
    """The bound Serve application for ``settings`` (replicas, concurrency and actor options applied).

    The settings are bound as the deployment's init args, which Serve checkpoints: they go through
    :meth:`Settings.deployable`, so a database password travels by environment reference only."""
    settings = settings.deployable()
    options: dict[str, Any] = {
        "num_replicas": settings.server.replicas,
        "max_ongoing_requests": settings.server.max_ongoing_requests,
    }
    if ray_actor_options:
        options["ray_actor_options"] = {"num_cpus": 0, **ray_actor_options}
    return RunnerHostIngress.options(**options).bind(settings.model_dump(mode="json"))
