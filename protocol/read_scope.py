"""Which rows a read may return (SPEC §3: every read is scoped).

A :class:`ReadScope` travels with every runner-facing read down to the store,
which turns it into SQL filters (pages, lists) and into an ownership check
(reads by id). A row is inside the scope when

* it is of no *other* bot or workspace than the scope's (a row without a bot
  or workspace is not another tenant's), and
* it is of the scope's conversation, or of any conversation when the scope
  carries the cross-conversation grant, or of the scope's own run.

There is no implicit "everything": a scope names a conversation or a run, or
is the host's own (:meth:`ReadScope.host`) — the admin HTTP API and recovery,
never a runner.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class ReadScope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    conversation_id: str | None = None
    any_conversation: bool = False
    run_id: str | None = None
    bot_id: str | None = None
    workspace_id: str | None = None
    unrestricted: bool = False

    @model_validator(mode="after")
    def _bounded(self) -> "ReadScope":
        if not self.unrestricted and not (self.conversation_id or self.any_conversation or self.run_id):
            raise ValueError("a read scope names a conversation or a run (or is the host's own)")
        return self

    @classmethod
    def host(cls) -> "ReadScope":
        """The host's own reads (admin HTTP API, recovery): no filter, said out loud."""
        return cls(unrestricted=True)

    @classmethod
    def admin(cls, conversation_id: str | None = None) -> "ReadScope":
        """What the operator's API (a ``read``/``admin`` key) sees: one conversation when it names
        one, else the host's own view."""
        return cls.of_conversation(conversation_id) if conversation_id else cls.host()

    @classmethod
    def of_conversation(cls, conversation_id: str, *, bot_id: str | None = None,
                        workspace_id: str | None = None) -> "ReadScope":
        return cls(conversation_id=conversation_id, bot_id=bot_id, workspace_id=workspace_id)

    @classmethod
    def of_run(cls, run_id: str, *, bot_id: str | None = None, workspace_id: str | None = None) -> "ReadScope":
        return cls(run_id=run_id, bot_id=bot_id, workspace_id=workspace_id)

    @classmethod
    def parse(cls, value: "ReadScope | dict[str, Any]") -> "ReadScope":
        """A scope from its wire form (reads cross Ray as plain JSON)."""
        return value if isinstance(value, ReadScope) else cls.model_validate(value)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_defaults=True)

    def admits(self, *, conversation_id: str | None = None, run_id: str | None = None,
               bot_id: str | None = None, workspace_id: str | None = None) -> bool:
        """Whether a row with these owner columns is inside the scope (see the module doc)."""
        if self.unrestricted:
            return True
        if self.bot_id is not None and bot_id is not None and bot_id != self.bot_id:
            return False
        if self.workspace_id is not None and workspace_id is not None and workspace_id != self.workspace_id:
            return False
        return ((self.conversation_id is not None and conversation_id == self.conversation_id)
                or (self.any_conversation and conversation_id is not None)
                or (self.run_id is not None and run_id == self.run_id))
