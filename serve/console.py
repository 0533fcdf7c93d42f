"""The operator console: the web UI at ``/ui`` and the read endpoints it needs.

The UI is a static bundle checked into ``serve/ui/`` (plain HTML/CSS/JS, no build step, no CDN):
it holds no data. Every datum comes from the JSON API with the same API keys as any client —
the page asks for a key once and keeps it in ``sessionStorage``. With no key configured the
loopback-only rule of :mod:`serve.auth` applies to the page and the API alike.

Routes (scope in brackets):

* ``GET /ui``, ``GET /ui/{asset}`` — the bundle (no key; loopback-only without keys)
* ``GET /v1/console/whoami`` [read] — who the key is (the UI's login check)
* ``GET /v1/stats/runs?agent_id=&conversation_id=&since=&until=`` [read] — runs by status
* ``GET /v1/runs/{id}/artifacts`` [read], ``GET /v1/runs/{id}/artifacts/{artifact_id}`` [read] (download)
* ``GET /v1/runs/{id}/steering`` [read] — the steering audit: queued → injected / dropped
* ``GET /v1/conversations/{id}/search?q=`` [read], ``GET /v1/conversations/{id}/state`` [read]
* ``GET /v1/health`` [read] — pools, storage batches, workers, nodes
"""
from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, Field

from protocol.errors import not_found, unauthorized
from protocol.pages import ArtifactMetadata, HistorySearchResult, StateEntry

from .auth import Principal, require
from .config import is_loopback
from .models import ERROR_RESPONSES, ID_PATTERN, NOT_FOUND, RunStatusFilter
from .queries import Queries

UI_DIR = Path(__file__).resolve().parent / "ui"
#: Bytes per storage read while streaming an artifact download.
DOWNLOAD_CHUNK = 1 << 20
_ASSET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\.(html|js|css|svg|png|ico)$")
_MEDIA = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
          "css": "text/css; charset=utf-8", "svg": "image/svg+xml", "png": "image/png", "ico": "image/x-icon"}
_UI_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

RunId = Annotated[str, PathParam(min_length=1, max_length=128, pattern=ID_PATTERN)]
ArtifactId = Annotated[str, PathParam(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
ConversationId = Annotated[str, PathParam(min_length=1, max_length=256)]
Epoch = Annotated[float | None, Query(ge=0, le=1e11, description="epoch seconds")]


class WhoAmI(BaseModel):
    name: str
    scopes: list[str]
    auth: str


class RunCounts(BaseModel):
    """Runs matching the filters by status (every status present, zero included)."""

    counts: dict[str, int]
    total: int


class SteeringAuditItem(BaseModel):
    """One steered event: claimed into the run (queued), then injected by a pull or dropped at its end."""

    event_id: str
    status: str = Field(description="queued | injected | dropped")
    text: str | None = None
    claimed_at: float | None = None
    resolved_at: float | None = None


class SteeringAudit(BaseModel):
    items: list[SteeringAuditItem]


class StateScope(BaseModel):
    scope: str
    scope_key: str
    agent_id: str | None = None
    runner_id: str | None = None
    detail: str | None = Field(default=None, description="actor id, subject id or thread id of the scope")
    items: list[StateEntry]
    has_more: bool = False


class ConversationState(BaseModel):
    scopes: list[StateScope]


router = APIRouter()


def _queries(request: Request) -> Queries:
    return request.app.state.queries


# -- the UI bundle ------------------------------------------------------------------------------
def _ui_allowed(request: Request) -> None:
    """Without API keys only loopback clients get the console (as for the API)."""
    if not request.app.state.auth.enabled:
        client = request.client.host if request.client else None
        if not is_loopback(client):
            raise unauthorized("no API keys are configured: only loopback clients are accepted")


@router.get("/ui", include_in_schema=False)
async def ui_root(request: Request):
    _ui_allowed(request)
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/", include_in_schema=False)
async def ui_index(request: Request):
    _ui_allowed(request)
    return FileResponse(UI_DIR / "index.html", media_type=_MEDIA["html"], headers=_UI_HEADERS)


@router.get("/ui/{asset}", include_in_schema=False)
async def ui_asset(request: Request, asset: str):
    _ui_allowed(request)
    match = _ASSET.match(asset)
    path = UI_DIR / asset
    if match is None or not path.is_file():
        raise not_found(f"no console asset {asset[:64]!r}")
    return FileResponse(path, media_type=_MEDIA[match.group(1)], headers=_UI_HEADERS)


# -- reads ----------------------------------------------------------------------------------------
@router.get("/v1/console/whoami", tags=["console"], response_model=WhoAmI, responses=ERROR_RESPONSES,
            summary="The caller's key name and scopes (the console's login check)")
async def whoami(request: Request, principal: Annotated[Principal, require("read")]):
    return WhoAmI(name=principal.name, scopes=list(principal.scopes),
                  auth="api_keys" if request.app.state.auth.enabled else "loopback_only")


@router.get("/v1/stats/runs", tags=["runs"], response_model=RunCounts, dependencies=[require("read")],
            responses=ERROR_RESPONSES, summary="How many runs match the filters, by status")
async def run_counts(request: Request,
                     agent_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
                     conversation_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
                     since: Epoch = None, until: Epoch = None):
    groups = await _queries(request).run_counts(agent_id=agent_id, conversation_id=conversation_id,
                                                since=since, until=until)
    counts = {s.value: 0 for s in RunStatusFilter}
    for group in groups:
        counts[group["status"]] = group["count"]
    return RunCounts(counts=counts, total=sum(counts.values()))


@router.get("/v1/runs/{run_id}/artifacts", tags=["runs"], response_model=list[ArtifactMetadata],
            dependencies=[require("read")], responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="The run's artifacts (metadata)")
async def run_artifacts(request: Request, run_id: RunId):
    return await _queries(request).run_artifacts(run_id)


@router.get("/v1/runs/{run_id}/artifacts/{artifact_id}", tags=["runs"], dependencies=[require("read")],
            responses={200: {"description": "the artifact's bytes (as an attachment)",
                             "content": {"application/octet-stream": {}}}, **ERROR_RESPONSES, **NOT_FOUND},
            response_class=StreamingResponse, summary="Download one of the run's artifacts")
async def download_artifact(request: Request, run_id: RunId, artifact_id: ArtifactId):
    queries = _queries(request)
    first = await queries.run_artifact_range(run_id, artifact_id, 0, DOWNLOAD_CHUNK)  # 404 before any byte
    meta = next((a for a in await queries.run_artifacts(run_id) if a["artifact_id"] == artifact_id), None)
    name = _safe_filename((meta or {}).get("name") or artifact_id)

    async def body() -> AsyncIterator[bytes]:
        chunk = first
        while True:
            yield base64.b64decode(chunk["content_base64"])
            if chunk["eof"] or not chunk["length"]:
                return
            chunk = await queries.run_artifact_range(run_id, artifact_id, chunk["offset"] + chunk["length"],
                                                     DOWNLOAD_CHUNK)

    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(first["total_size"]),
               "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox",
               "Cache-Control": "no-store"}
    # never rendered as a page of the console's origin: stored bytes are untrusted
    return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)


def _safe_filename(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("._") or "artifact"
    return cleaned[:128]


@router.get("/v1/runs/{run_id}/steering", tags=["runs"], response_model=SteeringAudit,
            dependencies=[require("read")], responses={**ERROR_RESPONSES, **NOT_FOUND},
            summary="The run's steering audit: each steered event, queued → injected / dropped")
async def run_steering(request: Request, run_id: RunId):
    return SteeringAudit(items=steering_audit(await _queries(request).run_steering(run_id)))


def steering_audit(records: list[dict[str, Any]]) -> list[SteeringAuditItem]:
    """Fold the EventLog records of a run's steering into one line per steered event (oldest first)."""
    items: dict[str, SteeringAuditItem] = {}
    for record in records:
        steering = (record.get("metadata") or {}).get("steering") or {}
        if record["event_type"] in ("steering.injected", "steering.dropped"):
            source = record["event_id"].rsplit(":steering.", 1)[0]
            item = items.setdefault(source, SteeringAuditItem(event_id=source, status="queued"))
            item.status = record["event_type"].split(".", 1)[1]
            item.resolved_at = steering.get("at") or record.get("created_at")
        else:
            item = items.setdefault(record["event_id"], SteeringAuditItem(event_id=record["event_id"],
                                                                          status="queued"))
            item.text = record.get("input_summary")
            item.claimed_at = steering.get("claimed_at") or record.get("created_at")
            if item.status == "queued" and steering.get("status") in ("injected", "dropped"):
                item.status = steering["status"]
    return list(items.values())


@router.get("/v1/conversations/{conversation_id}/search", tags=["conversations"],
            response_model=HistorySearchResult, dependencies=[require("read")], responses=ERROR_RESPONSES,
            summary="Full-text search of the conversation transcript, best first")
async def transcript_search(request: Request, conversation_id: ConversationId,
                            q: Annotated[str, Query(min_length=1, max_length=512, description="search terms")],
                            top_k: Annotated[int, Query(ge=1, le=100)] = 20):
    return await _queries(request).transcript_search(conversation_id, q, top_k=top_k)


@router.get("/v1/conversations/{conversation_id}/state", tags=["conversations"], response_model=ConversationState,
            dependencies=[require("read")], responses=ERROR_RESPONSES,
            summary="Current state of every scope the conversation's runs could address")
async def conversation_state(request: Request, conversation_id: ConversationId):
    return ConversationState(scopes=await _queries(request).conversation_state(conversation_id))


@router.get("/v1/health", tags=["health"], dependencies=[require("read")], responses=ERROR_RESPONSES,
            summary="Pools, storage batches, workers and nodes (the host's view)")
async def health(request: Request) -> dict[str, Any]:
    return await request.app.state.host.health()
