"""Scrub secrets out of text before it reaches logs, errors or results.

Two layers: exact known secrets (the run's gateway capability token, values the
agent config passes through ``env``) are replaced everywhere; the generic
credential shapes of :func:`protocol.redact.redact` (``Bearer …``, ``sk-…``,
``KEY=value`` for secret-looking names) are replaced in diagnostics (stderr
tails, error messages) only, so that assistant content about code is left alone.
"""
from __future__ import annotations

from typing import Any, Iterable

from protocol.redact import MASK, redact as protocol_redact

_MIN_SECRET = 6


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
        return protocol_redact(self.scrub(text), self.secrets)

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
