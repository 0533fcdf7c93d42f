"""Generic signed webhook out: every delivery is one JSON POST, signed with HMAC-SHA256.

Headers: ``X-RunnerHost-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`` and
``X-RunnerHost-Delivery: <run>:<target>:<part>`` (stable across retries, so a receiver can
drop a repeat). A 2xx is success; 429 / 5xx / network errors are retryable (``Retry-After``
honoured by the delivery engine); other statuses are final. A webhook cannot edit: results go
out complete.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from .base import OutboundAdapter, PlatformError
from .credentials import Secret

PLATFORM = "webhook"
SIGNATURE_HEADER = "X-RunnerHost-Signature"
DELIVERY_HEADER = "X-RunnerHost-Delivery"


def sign(secret: Secret | str, body: bytes) -> str:
    key = secret.reveal() if isinstance(secret, Secret) else secret
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: Secret | str, body: bytes, signature: str) -> bool:
    """What a receiver does (and the tests and docs follow)."""
    return hmac.compare_digest(sign(secret, body), signature or "")


def retry_after_of(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class WebhookAdapter(OutboundAdapter):
    platform = PLATFORM
    supports_files = True
    max_message_size = 1 << 20

    def __init__(self, url: str, secret: Secret, *, timeout_s: float = 20.0) -> None:
        self._url = url
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def post(self, payload: dict[str, Any], delivery_id: str) -> str:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        try:
            response = await self._client.post(self._url, content=body, headers={
                "Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, body),
                DELIVERY_HEADER: delivery_id})
        except httpx.HTTPError as exc:
            raise PlatformError(f"webhook: {type(exc).__name__}", retryable=True) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise PlatformError(f"webhook answered {response.status_code}", retryable=True,
                                retry_after=retry_after_of(response), status=response.status_code)
        if response.status_code >= 300:
            raise PlatformError(f"webhook answered {response.status_code}", retryable=False,
                                status=response.status_code)
        return delivery_id

    async def send_text(self, address: dict[str, Any], text: str) -> str:
        return await self.post({"type": "message", **address, "text": text},
                               address.get("delivery_id") or "message")

    async def send_file(self, address: dict[str, Any], name: str, data: bytes, mime_type: str | None) -> str:
        import base64
        return await self.post({"type": "file", **address, "name": name, "mime_type": mime_type,
                                "content_base64": base64.b64encode(data).decode()},
                               address.get("delivery_id") or "file")

    async def close(self) -> None:
        await self._client.aclose()
