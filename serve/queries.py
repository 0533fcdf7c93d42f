"""Read side of the HTTP API: run ledger, transcript and event log pages.

A thin public face over the host's storage reads, so the routes never reach
into a private name. Bad cursors surface as ``invalid_argument`` (400),
unknown runs as ``not_found`` (404) — straight from the storage layer. The
routes read with the ``read`` scope of an API key: a conversation's pages
are scoped to it, the rest is the host's own view (said out loud).
"""
from __future__ import annotations

from typing import Any, Sequence

from protocol.read_scope import ReadScope

_HOST = ReadScope.host().wire()


def _conversation(conversation_id: str | None) -> dict[str, Any]:
    return ReadScope.of_conversation(conversation_id).wire() if conversation_id else _HOST


class Queries:
    def __init__(self, host: Any) -> None:
        self._host = host

    async def _read(self, kind: str, **kwargs: Any) -> Any:
        return await self._host.read(kind, **kwargs)

    async def runs(self, *, conversation_id: str | None = None, statuses: Sequence[str] | None = None,
                   before_cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
        return await self._read("run_list", scope=_conversation(conversation_id),
                                statuses=list(statuses) if statuses else None,
                                before_cursor=before_cursor, limit=limit)

    async def run(self, run_id: str) -> dict[str, Any]:
        return await self._read("run_get", run_id=run_id, scope=_HOST)

    async def run_events(self, run_id: str, *, after_cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
        return await self._read("run_events_page", run_id=run_id, scope=_HOST, after_cursor=after_cursor,
                                limit=limit)

    async def transcript(self, conversation_id: str, *, before_cursor: str | None = None,
                         after_cursor: str | None = None, limit: int = 50,
                         direction: str = "backward") -> dict[str, Any]:
        return await self._read("history_page", conversation_id=conversation_id, before_cursor=before_cursor,
                                after_cursor=after_cursor, limit=limit, direction=direction)

    async def events(self, conversation_id: str, *, event_types: Sequence[str] | None = None,
                     before_cursor: str | None = None, after_cursor: str | None = None,
                     limit: int = 50) -> dict[str, Any]:
        return await self._read("event_page", scope=_conversation(conversation_id),
                                event_types=list(event_types) if event_types else None,
                                before_cursor=before_cursor, after_cursor=after_cursor, limit=limit)
