"""Secret scrubbing for anything that may reach logs, transcripts or errors.

The one list of credential shapes in the project; the harness runner layers
exact known secrets on top (:class:`runners.harness.redact.Redactor`).
"""
from __future__ import annotations

import os
import re

MASK = "***"

#: (pattern, keep) — ``keep`` names the group left in place before the mask (a header word, a
#: variable name with its separator) so a scrubbed message still says what was there.
_PATTERNS: list[tuple[re.Pattern[str], str | None]] = [
    (re.compile(r"(?i)(?P<keep>\b(?:bearer|token|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"), "keep"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), None),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{16,}"), None),
    (re.compile(r"(?i)(?P<keep>\b[A-Z0-9_-]*(?:SECRET|TOKEN|PASSWORD|PASSWD|API[_-]?KEY|CREDENTIAL)"
                r"[A-Z0-9_]*\s*[=:]\s*)[^\s,;'\"]{4,}"), "keep"),
]
_SECRET_ENV = re.compile(r"(?i)(KEY|TOKEN|SECRET|PASSWORD)")


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Mask bearer tokens, key-like strings, ``NAME=value`` for secret-looking names, the given
    secrets and the values of secret-named environment variables."""
    for value in extra_secrets:
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    for name, value in os.environ.items():
        if value and len(value) >= 8 and _SECRET_ENV.search(name):
            text = text.replace(value, MASK)
    for pattern, keep in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(keep) if keep else "") + MASK, text)
    return text
