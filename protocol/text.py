"""The one rule for text that reaches a database text or JSON column (SPEC §11).

Postgres cannot store a NUL character in ``text`` or ``jsonb``, and no column
can hold a lone surrogate (it is not UTF-8). Both backends follow the same rule:

* **inbound** text (events, cancel reasons, agent configs, documents) with such
  characters is refused where it enters — ``400 invalid_argument`` naming the
  field — so nothing is answered 200 and then fails on the way to the database;
* **runner output** cannot be refused that way (the run is already answering),
  so :func:`make_storable` replaces each such character with U+FFFD where results
  enter the host: the stream the client sees and the facts on record agree.
"""
from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored (``None`` when it can)."""
    if "\x00" in text:
        return "contains a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode text (lone surrogate)"
    return None


def find_unstorable(value: Any, path: str = "") -> tuple[str, str] | None:
    """The first ``(path, reason)`` of a string (value or key) in ``value`` that cannot be stored;
    pydantic models are walked as their dumps."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, str):
        reason = unstorable(value)
        return (path or "value", reason) if reason else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (reason := unstorable(key)):
                return where, reason
            if found := find_unstorable(item, where):
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if found := find_unstorable(item, f"{path}[{index}]"):
                return found
    return None


def reject_unstorable(data: Any) -> Any:
    """For a pydantic ``model_validator(mode="before")``: refuse raw input holding unstorable text."""
    if (found := find_unstorable(data)) is not None:
        where, reason = found
        raise ValueError(f"{where} {reason}")
    return data


def make_storable(value: Any) -> tuple[Any, int]:
    """``value`` with every unstorable character (in values and keys) replaced by U+FFFD, and how
    many strings changed. JSON-shaped data only (dicts, lists, scalars)."""
    if isinstance(value, str):
        if unstorable(value) is None:
            return value, 0
        return _replace_surrogates(value.replace("\x00", REPLACEMENT)), 1
    if isinstance(value, dict):
        changed, out = 0, {}
        for key, item in value.items():
            new_key, a = make_storable(key) if isinstance(key, str) else (key, 0)
            new_item, b = make_storable(item)
            out[new_key] = new_item
            changed += a + b
        return (out, changed) if changed else (value, 0)
    if isinstance(value, list):
        items = [make_storable(item) for item in value]
        changed = sum(n for _, n in items)
        return ([item for item, _ in items], changed) if changed else (value, 0)
    return value, 0


def _replace_surrogates(text: str) -> str:
    return "".join(REPLACEMENT if "\ud800" <= ch <= "\udfff" else ch for ch in text)
