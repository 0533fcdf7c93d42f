"""State scope keys (SPEC §7): who a state value belongs to, as one 64-hex key.

A scope key is the SHA-256 of a JSON array of its parts, so no choice of part
values can collide by shifting a separator (``("a", "bc") != ("ab", "c")``) and
``None`` stays distinct from ``""``. Which parts enter depends on the scope:

============  ==================================================
conversation  conversation_id (required), thread_id (optional)
actor         actor_type, actor_id (both required)
subject       subject_type, subject_id (both required)
runner        none beyond the common parts
============  ==================================================

Every scope includes runner_id, binding identity (both required), bot_id and
workspace_id. The host derives a run's keys; the store only ever sees keys.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable

from .agents import STATE_SCOPES
from .errors import invalid_argument

_KEY_VERSION = "rh.state.v1"
_SCOPE_PARTS: dict[str, tuple[tuple[str, bool], ...]] = {  # (part, required)
    "conversation": (("conversation_id", True), ("thread_id", False)),
    "actor": (("actor_type", True), ("actor_id", True)),
    "subject": (("subject_type", True), ("subject_id", True)),
    "runner": (),
}
assert tuple(_SCOPE_PARTS) == STATE_SCOPES


def scope_key(scope: str, runner_id: str, binding_identity: str, bot_id: str | None,
              workspace_id: str | None, conversation_id: str | None = None,
              thread_id: str | None = None, actor_type: str | None = None,
              actor_id: str | None = None, subject_type: str | None = None,
              subject_id: str | None = None) -> str:
    """The 64-hex scope key of ``scope``; parts of other scopes are ignored.

    Unknown scope or a missing required part → ``invalid_argument``.
    """
    if scope not in _SCOPE_PARTS:
        raise invalid_argument(f"unknown state scope {scope!r}", allowed=list(STATE_SCOPES))
    given = {"conversation_id": conversation_id, "thread_id": thread_id,
             "actor_type": actor_type, "actor_id": actor_id,
             "subject_type": subject_type, "subject_id": subject_id}
    parts: list[str | None] = [_KEY_VERSION, scope, _required(runner_id, "runner_id"),
                               _required(binding_identity, "binding_identity"), bot_id, workspace_id]
    for name, required in _SCOPE_PARTS[scope]:
        value = given[name]
        if required and not value:
            raise invalid_argument(f"state scope {scope!r} needs {name}", scope=scope, part=name)
        parts.append(value)
    if not all(p is None or isinstance(p, str) for p in parts):
        raise invalid_argument("scope key parts must be strings")
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ScopeKeyBuilder:
    """The scope-key parts of one run; ``key(scope)`` derives each scope's key."""

    runner_id: str
    binding_identity: str
    bot_id: str | None = None
    workspace_id: str | None = None
    conversation_id: str | None = None
    thread_id: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    subject_type: str | None = None
    subject_id: str | None = None

    def key(self, scope: str) -> str:
        return scope_key(scope, self.runner_id, self.binding_identity, self.bot_id,
                         self.workspace_id, self.conversation_id, self.thread_id,
                         self.actor_type, self.actor_id, self.subject_type, self.subject_id)

    def keys(self, scopes: Iterable[str]) -> dict[str, str]:
        """``{scope: key}`` for ``scopes`` (e.g. a state policy's ``state_scopes``)."""
        return {scope: self.key(scope) for scope in scopes}




def _required(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid_argument(f"{name} must be a non-empty string", field=name)
    return value
