"""Scrub secrets out of text before it reaches logs, errors or results.

Two layers (the second on top of :func:`protocol.redact.redact`): exact known secrets (the run's gateway capability token, values the
agent config passes through ``env``) are replaced everywhere; generic credential
shapes (``Bearer …``, ``sk-…``, ``KEY=value`` for secret-looking names) are
replaced in diagnostics (stderr tails, error messages) only, so that assistant
content about code is left alone.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from protocol.redact import redact as protocol_redact

MASK = "***"
_MIN_SECRET = 6

_PATTERNS = [
    re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{16,})"),
    re.compile(r"(?i)\b([A-Z0-9_]*(?:SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|CREDENTIAL)[A-Z0-9_]*)\s*[=:]\s*\S+"),
]


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        if isinstance(secret, str) and len(secret) >= _MIN_SECRET and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(self._secrets)

    def scrub(self, text: str) -> str:
        """Replace the known secrets (exact)."""
        for s in self._secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text

    def scrub_diagnostic(self, text: str) -> str:
        """Known secrets, the host's secret-named env values and generic credential
        shapes (for stderr/error text)."""
        text = protocol_redact(self.scrub(text), self.secrets)
        for pat in _PATTERNS:
            text = pat.sub(_mask_match, text)
        return text

    def scrub_obj(self, obj: Any) -> Any:
        """Recursively scrub every string of a JSON-like value."""
        if not self._secrets:
            return obj
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {self.scrub(k) if isinstance(k, str) else k: self.scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.scrub_obj(v) for v in obj]
        return obj


def _mask_match(m: re.Match[str]) -> str:
    text = m.group(0)
    for sep in ("=", ":"):
        if sep in text and not text.lower().startswith(("bearer", "token", "basic")):
            name = text.split(sep, 1)[0]
            return f"{name}{sep}{MASK}"
    head = text.split(None, 1)[0] if " " in text else ""
    return f"{head} {MASK}" if head and head.lower() in ("bearer", "token", "basic") else MASK
