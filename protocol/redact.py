"""Secret scrubbing for anything that may reach logs, transcripts or errors."""
from __future__ import annotations

import os
import re

_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|token|secret|password)\s*[=:]\s*)[^\s,;'\"]{4,}"),
]
_SECRET_ENV = re.compile(r"(?i)(KEY|TOKEN|SECRET|PASSWORD)")


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Mask bearer tokens, key-like strings, and the values of secret-named env vars."""
    for value in extra_secrets:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    for name, value in os.environ.items():
        if value and len(value) >= 8 and _SECRET_ENV.search(name):
            text = text.replace(value, "***")
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text
