"""API-key authentication for the HTTP API.

Keys are compared as SHA-256 digests (constant time); the plain key is never
stored, logged or echoed. Scopes:

* ``ingest`` — ``POST /v1/events``, ``GET /v1/runs/{id}/stream``, ``POST /v1/runs/{id}/cancel``
* ``read``   — the ``GET`` read endpoints (runs, ledger, transcripts, events, runners, agents)
* ``admin``  — everything, including ``PUT /v1/agents/{id}``

With no key configured the server only binds loopback and accepts loopback
clients without a key (the CLI says so loudly at start).
"""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from protocol.errors import unauthorized

from .config import ApiKey, is_loopback

bearer_scheme = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                           description="`Authorization: Bearer <API key>`")


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: tuple[str, ...]


LOOPBACK = Principal("loopback (no API keys configured)", ("admin",))


class Authenticator:
    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = list(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def authenticate(self, request: Request, credentials: HTTPAuthorizationCredentials | None,
                     scope: str) -> Principal:
        if not self.enabled:
            client = request.client.host if request.client else None
            if is_loopback(client):
                return LOOPBACK
            raise unauthorized("no API keys are configured: only loopback clients are accepted")
        if credentials is None or not credentials.credentials:
            raise unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        presented = credentials.credentials
        for key in self.keys:
            if key.matches(presented):
                if not key.allows(scope):
                    raise unauthorized(f"this API key lacks the {scope!r} scope", required_scope=scope)
                return Principal(key.name, tuple(key.scopes))
        raise unauthorized("invalid API key")


def require(scope: str):
    """A route dependency admitting callers whose key carries ``scope`` (or ``admin``)."""

    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> Principal:
        auth: Authenticator = request.app.state.auth
        return auth.authenticate(request, credentials, scope)

    dependency.__name__ = f"require_{scope}"
    return Depends(dependency)
