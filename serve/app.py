"""The FastAPI application of the Serve ingress (``create_app``).

Routes (scope in brackets; see :mod:`serve.auth`):

* ``POST /v1/events`` [ingest] — NDJSON stream (default), SSE with
  ``Accept: text/event-stream``, or ``?wait=false`` → 202 ``{run_id, type}``.
* ``GET /v1/runs`` [read], ``GET /v1/runs/{id}`` [read], ``GET /v1/runs/{id}/events`` [read],
  ``GET /v1/runs/{id}/stream`` [ingest], ``POST /v1/runs/{id}/cancel`` [ingest]
* ``GET /v1/conversations/{id}/transcript`` [read], ``GET /v1/conversations/{id}/events`` [read]
* ``GET /v1/runners`` [read], ``GET /v1/agents`` [read], ``GET /v1/agents/{id}`` [read],
  ``PUT /v1/agents/{id}`` [admin]
* ``GET /healthz`` (open), ``/docs`` + ``/openapi.json`` (open), ``/mcp`` (capability token)

Errors are the error model everywhere (:mod:`serve.errors`); validation errors are 400.
"""
from __future__ import annotations

import contextlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Annotated, Any, AsyncIterator

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.routing import Route

from actors import tracing
from protocol.agents import AgentConfig
from protocol.errors import ErrorBody, RunnerHostError, invalid_argument, not_found
from protocol.manifest import RunnerDescriptor
from protocol.pages import EventPage, HistoryPage, RunEventPage, RunPage, RunRecord

from .auth import Authenticator, require
from .config import Settings
from .console import router as console_router
from .errors import BodyLimitMiddleware, install_error_handlers
from .gateway import create_gateway, gateway_asgi
from .models import (
    CONFLICT,
    ERROR_RESPONSES,
    ID_PATTERN,
    NOT_FOUND,
    RATE_LIMITED,
    TOO_LARGE,
    AgentView,
    CancelAccepted,
    CancelRequest,
    Frame,
    Health,
    KnowledgeDocument,
    KnowledgeIngested,
    RunAccepted,
    RunStatusFilter,
    SubmitEventRequest,
)
from .platforms import create_router as create_platforms_router
from .queries import Queries
from .streaming import NDJSON, SSE, detached, stream_response

try:
    VERSION = _dist_version("runnerhost")
except PackageNotFoundError:  # pragma: no cover
    VERSION = "0.0.0"

RunId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
ConversationId = Annotated[str, Path(min_length=1, max_length=256)]
AgentId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
DocId = Annotated[str, Path(min_length=1, max_length=256, pattern=r"^[^#/\x00]+$")]
Limit = Annotated[int, Query(ge=1, le=100, description="page size (1..100)")]
Cursor = Annotated[str | None, Query(max_length=512, description="opaque cursor from a previous page")]

_STREAM_CONTENT = {
    NDJSON: {"schema": {"$ref": "#/components/schemas/Frame"}},
    SSE: {"schema": {"type": "string", "description": "event: <type>\\nid: <sequence>\\ndata: <frame JSON>"}},
}


def create_app(settings: Settings, *, host: Any = None) -> FastAPI:
    """The API app. With ``host=None`` the lifespan starts (and closes) a Host from ``settings``."""
    gateway = create_gateway(lambda: app.state.host)
    mcp_asgi = gateway_asgi(gateway, bind_host=settings.server.host, max_body_bytes=settings.server.max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = False
        if app.state.host is None:
            from actors.host import Host
            app.state.host = await Host.start(settings.host_config())
            owned = True
        app.state.queries = Queries(app.state.host)
        async with gateway.session_manager.run():
            try:
                yield
            finally:
                if owned:
                    await app.state.host.close()

    app = FastAPI(
        title="RunnerHost", version=VERSION, lifespan=lifespan,
        description=("Agent-runner host on Ray. Events in, one binding per event, streamed results out. "
                     "Every error uses the model `{code, message, retryable, details}`; request validation "
                     "failures are always **400 invalid_argument**."),
    )
    app.state.host = host
    app.state.queries = Queries(host) if host is not None else None
    app.state.settings = settings
    app.state.auth = Authenticator(settings.api_keys)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    app.add_middleware(ServedByMiddleware, host_id=lambda: getattr(app.state.host, "host_id", None))

    def H(request: Request) -> Any:
        return request.app.state.host

    def Q(request: Request) -> Queries:
        return request.app.state.queries

    # -- events -------------------------------------------------------------------------------
    @app.post(
        "/v1/events", tags=["events"], summary="Submit one event; stream its run's frames",
        status_code=200, dependencies=[require("ingest")],
        responses={200: {"description": "the run's frames, NDJSON (default) or SSE", "content": _STREAM_CONTENT},
                   202: {"model": RunAccepted, "description": "?wait=false: admitted, running in the background"},
                   **ERROR_RESPONSES, **NOT_FOUND, **CONFLICT, **TOO_LARGE, **RATE_LIMITED},
        response_class=JSONResponse,
    )
    async def submit_event(request: Request, body: SubmitEventRequest,
                           wait: Annotated[bool, Query(description="false → 202 {run_id} at once")] = True):
        host = H(request)
        # The host returns only once the event, its user transcript item and its run are committed
        # (or raises: 4xx/5xx, nothing accepted). The run itself outlives this request.
        stream = await detached(host.submit(body.event, body.agent_id, trace=tracing.from_headers(request.headers)))
        first = await detached(stream.__anext__())  # already published: it is part of the accept
        headers = {DUPLICATE_HEADER: "true"} if first["type"] == "run.duplicate" else None
        if not wait:
            await stream.aclose()  # the run is driven by its own task, not by this reader
            return JSONResponse(RunAccepted(run_id=first["run_id"], type=first["type"]).model_dump(),
                                status_code=202, headers=headers)
        return stream_response(request, _prepend(first, stream), headers=headers)

    # -- runs -----------------------------------------------------------------------------------
    @app.get("/v1/runs", tags=["runs"], response_model=RunPage, dependencies=[require("read")],
             responses=ERROR_RESPONSES, summary="List runs, newest first")
    async def list_runs(request: Request,
                        conversation_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
                        status: Annotated[list[RunStatusFilter] | None, Query(
                            description="repeatable status filter")] = None,
                        cursor: Cursor = None, limit: Limit = 50,
                        agent_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
                        since: Annotated[float | None, Query(ge=0, le=1e11, description="created at or after "
                                                             "(epoch seconds)")] = None,
                        until: Annotated[float | None, Query(ge=0, le=1e11, description="created before "
                                                             "(epoch seconds)")] = None):
        return await Q(request).runs(conversation_id=conversation_id,
                                     statuses=[s.value for s in status] if status else None,
                                     before_cursor=cursor, limit=limit, agent_id=agent_id, since=since, until=until)

    @app.get("/v1/runs/{run_id}", tags=["runs"], response_model=RunRecord, dependencies=[require("read")],
             responses={**ERROR_RESPONSES, **NOT_FOUND}, summary="One run's ledger record")
    async def get_run(request: Request, run_id: RunId):
        return await Q(request).run(run_id)

    @app.get("/v1/runs/{run_id}/events", tags=["runs"], response_model=RunEventPage,
             dependencies=[require("read")], responses={**ERROR_RESPONSES, **NOT_FOUND},
             summary="The run's recorded frames (ledger), oldest first")
    async def run_events(request: Request, run_id: RunId, cursor: Cursor = None, limit: Limit = 50):
        return await Q(request).run_events(run_id, after_cursor=cursor, limit=limit)

    @app.get("/v1/runs/{run_id}/stream", tags=["runs"], dependencies=[require("ingest")],
             responses={200: {"description": "the run's frames from its first (live, or replayed from the ledger), "
                                             "ending with the terminal frame", "content": _STREAM_CONTENT},
                        **ERROR_RESPONSES, **NOT_FOUND},
             response_class=JSONResponse, summary="Join a run's frame stream")
    async def join_run(request: Request, run_id: RunId):
        host = H(request)
        if run_id not in host.live:
            await Q(request).run(run_id)  # 404 before any byte is streamed
        return stream_response(request, host.join(run_id))

    @app.post("/v1/runs/{run_id}/cancel", tags=["runs"], status_code=202, response_model=CancelAccepted,
              dependencies=[require("ingest")], responses={**ERROR_RESPONSES, **NOT_FOUND, **CONFLICT},
              summary="Cancel an active run")
    async def cancel_run(request: Request, run_id: RunId, body: Annotated[CancelRequest | None, Body()] = None):
        result = await H(request).cancel(run_id, body.reason if body else None)
        return CancelAccepted(run_id=result["run_id"], cancel_requested=bool(result.get("cancel_requested")))

    # -- conversations ----------------------------------------------------------------------------
    @app.get("/v1/conversations/{conversation_id}/transcript", tags=["conversations"],
             response_model=HistoryPage, dependencies=[require("read")], responses=ERROR_RESPONSES,
             summary="A page of the conversation transcript (items ascending by seq)")
    async def transcript(request: Request, conversation_id: ConversationId,
                         before_cursor: Cursor = None, after_cursor: Cursor = None, limit: Limit = 50,
                         direction: Annotated[str, Query(pattern="^(backward|forward)$")] = "backward"):
        return await Q(request).transcript(conversation_id, before_cursor=before_cursor,
                                           after_cursor=after_cursor, limit=limit, direction=direction)

    @app.get("/v1/conversations/{conversation_id}/events", tags=["conversations"], response_model=EventPage,
             dependencies=[require("read")], responses=ERROR_RESPONSES,
             summary="A page of the conversation's event log, newest first")
    async def conversation_events(request: Request, conversation_id: ConversationId,
                                  event_type: Annotated[list[str] | None, Query(max_length=20)] = None,
                                  before_cursor: Cursor = None, after_cursor: Cursor = None, limit: Limit = 50):
        return await Q(request).events(conversation_id, event_types=event_type, before_cursor=before_cursor,
                                       after_cursor=after_cursor, limit=limit)

    # -- registry ------------------------------------------------------------------------------------
    @app.get("/v1/runners", tags=["registry"], response_model=list[RunnerDescriptor],
             dependencies=[require("read")], responses=ERROR_RESPONSES, summary="Discovered runners")
    async def runners(request: Request):
        return await H(request).runners()

    # Secret runner_config values (ConfigField.secret in the runner's schema) are write-only:
    # every response shows REDACTED, and a PUT that sends REDACTED back keeps the stored value.
    async def secret_fields(host: Any) -> dict[str, frozenset[str]]:
        return {r["id"]: RunnerDescriptor.model_validate(r).secret_fields() for r in await host.runners()}

    def shown(agent: dict[str, Any], secrets: dict[str, frozenset[str]]) -> AgentView:
        config = AgentConfig.model_validate(agent["config"])
        return AgentView(agent_id=agent["agent_id"], version=agent["version"],
                         config=config.redacted(secrets.get(config.runner_id)))

    @app.get("/v1/agents", tags=["registry"], response_model=list[AgentView], dependencies=[require("read")],
             responses=ERROR_RESPONSES, summary="Configured agents (secret values read as <redacted>)")
    async def agents(request: Request):
        host = H(request)
        secrets = await secret_fields(host)
        return [shown(a, secrets) for a in sorted(await host.agents(), key=lambda a: a["agent_id"])]

    @app.get("/v1/agents/{agent_id}", tags=["registry"], response_model=AgentView,
             dependencies=[require("read")], responses={**ERROR_RESPONSES, **NOT_FOUND},
             summary="One agent (secret values read as <redacted>)")
    async def get_agent(request: Request, agent_id: AgentId):
        host = H(request)
        for agent in await host.agents():
            if agent["agent_id"] == agent_id:
                return shown(agent, await secret_fields(host))
        raise not_found(f"unknown agent {agent_id!r}", agent_id=agent_id)

    @app.put("/v1/agents/{agent_id}", tags=["registry"], response_model=AgentView,
             dependencies=[require("admin")], responses={**ERROR_RESPONSES, **TOO_LARGE},
             summary="Create or replace an agent (validated, persisted, effective for the next event); "
                     "<redacted> keeps a stored secret value")
    async def put_agent(request: Request, agent_id: AgentId, config: AgentConfig):
        host = H(request)
        secrets = await secret_fields(host)
        if config.runner_id not in secrets:
            raise invalid_argument(f"unknown runner {config.runner_id!r}", runner_id=config.runner_id,
                                   known_runners=sorted(secrets))
        stored = next((AgentConfig.model_validate(a["config"]) for a in await host.agents()
                       if a["agent_id"] == agent_id), None)
        config = config.with_secrets_from(stored, secrets[config.runner_id])
        try:
            version = await host.put_agent(agent_id, config)
        except RunnerHostError as exc:
            if exc.code.value == "not_found":  # e.g. the registry lost the runner meanwhile
                raise invalid_argument(exc.message, **exc.details) from None
            raise
        return AgentView(agent_id=agent_id, version=version, config=config.redacted(secrets[config.runner_id]))

    # -- knowledge bases ---------------------------------------------------------------------------
    @app.get("/v1/knowledge", tags=["knowledge"], response_model=list[str], dependencies=[require("read")],
             responses=ERROR_RESPONSES, summary="Knowledge bases that hold documents")
    async def knowledge_bases(request: Request):
        return await H(request).knowledge_bases()

    @app.put("/v1/knowledge/{kb_id}/documents/{doc_id}", tags=["knowledge"], response_model=KnowledgeIngested,
             dependencies=[require("admin")], responses={**ERROR_RESPONSES, **TOO_LARGE},
             summary="Add or replace one document of a knowledge base (chunked and indexed for retrieval)")
    async def put_document(request: Request, kb_id: AgentId, doc_id: DocId, body: KnowledgeDocument):
        return await H(request).ingest_knowledge(kb_id, doc_id, body.content, title=body.title,
                                                 metadata=body.metadata)

    app.include_router(create_platforms_router())  # platforms, deliveries, interactions, schedules

    # -- health --------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"], response_model=Health, summary="Liveness (no auth)")
    async def healthz(request: Request):
        return Health(status="ok", version=VERSION,
                      auth="api_keys" if request.app.state.auth.enabled else "loopback_only")

    app.include_router(console_router)  # the operator console (/ui) and its read endpoints

    # -- MCP harness gateway ---------------------------------------------------------------------------
    app.router.routes.append(Route("/mcp", endpoint=mcp_asgi, methods=["GET", "POST", "DELETE"],
                                   include_in_schema=False))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        _validation_is_400(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


#: Set on the answer to a re-sent ``event_id``: the body is the existing run's, not a new one.
DUPLICATE_HEADER = "X-RunnerHost-Duplicate"
#: Set on every answer: the host (ingress replica) that served it — which replica to look at when
#: several serve behind one address (``[server] replicas``).
SERVED_BY_HEADER = "X-RunnerHost-Host"


class ServedByMiddleware:
    """Adds :data:`SERVED_BY_HEADER` to every HTTP response (streams included: it rides on the
    response start, so nothing is buffered)."""

    def __init__(self, app: Any, host_id: Any) -> None:
        self.app = app
        self._host_id = host_id

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_served_by(message: Any) -> None:
            if message["type"] == "http.response.start":
                host_id = self._host_id()
                if host_id:
                    message = {**message, "headers": [*message.get("headers", ()),
                                                      (SERVED_BY_HEADER.lower().encode(), host_id.encode())]}
            await send(message)
        await self.app(scope, receive, send_served_by)


async def _prepend(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    yield first
    async for frame in rest:
        yield frame


def _validation_is_400(schema: dict[str, Any]) -> None:
    """Our validation errors are 400 in the error model: drop FastAPI's 422 documentation."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.setdefault("ErrorBody", ErrorBody.model_json_schema())
    components.setdefault("Frame", Frame.model_json_schema())
