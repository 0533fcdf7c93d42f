"""Opaque cursors: url-safe base64 of a small JSON object with a kind tag.

The kind tag stops a transcript cursor from being replayed against the event
log (or any other pager); any decoding failure is ``invalid_argument``.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .errors import invalid_argument

MAX_CURSOR_LEN = 512


def encode_cursor(kind: str, **fields: Any) -> str:
    raw = json.dumps({"k": kind, **fields}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str) -> dict[str, Any]:
    """Decode ``cursor`` issued for ``kind``; raise ``invalid_argument`` otherwise."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR_LEN:
        raise invalid_argument("malformed cursor", kind=kind)
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise invalid_argument("malformed cursor", kind=kind) from None
    if not isinstance(data, dict) or data.get("k") != kind:
        raise invalid_argument(f"cursor was not issued for {kind}", kind=kind)
    data.pop("k")
    return data


def cursor_int(data: dict[str, Any], field: str, kind: str) -> int:
    value = data.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid_argument("malformed cursor", kind=kind)
    return value
