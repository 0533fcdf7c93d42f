"""Identity of one external-harness session: (runner, binding, conversation, thread).

The digest is a sha256 over a length-prefixed encoding — no separator
ambiguity (``("a:b", "c")`` and ``("a", "b:c")`` differ) and ``None`` distinct
from ``""`` — so it is safe as a directory name and as a Ray actor name.
Shared by the harness runner (workspace dirs) and the actor layer
(ConversationSessionActor names).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class SessionKey:
    runner_id: str
    binding_id: str | None
    conversation_id: str | None
    thread_id: str | None = None

    _VERSION = b"runnerhost.session.v1"

    def encode(self) -> bytes:
        """Unambiguous byte encoding: a version tag, then per field a presence byte,
        an 8-byte big-endian length and the UTF-8 bytes."""
        out = bytearray(self._VERSION)
        for value in (self.runner_id, self.binding_id, self.conversation_id, self.thread_id):
            if value is None:
                out += b"\x00"
                continue
            raw = str(value).encode("utf-8")
            out += b"\x01" + len(raw).to_bytes(8, "big") + raw
        return bytes(out)

    def digest(self) -> str:
        """Stable lowercase hex sha256 of :meth:`encode` (64 chars)."""
        return hashlib.sha256(self.encode()).hexdigest()

    def actor_name(self, prefix: str = "harness-session") -> str:
        """A Ray-actor-safe name for this session."""
        return f"{prefix}-{self.digest()}"
