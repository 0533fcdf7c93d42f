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


class Queries:
    def __init__(self, host: Any) -> None:
        self._host = host

    async def _read(self, kind: str, **kwargs: Any) -> Any:
        return await self._host.read(kind, **kwargs)

    async def runs(self, *, conversation_id: str | None = None, statuses: Sequence[str] | None = None,
                   before_cursor: str | None = None, limit: int = 50, agent_id: str | None = None,
                   since: float | None = None, until: float | None = None) -> dict[str, Any]:
        return await self._read("run_list_filtered", conversation_id=conversation_id,
                                statuses=list(statuses) if statuses else None, agent_id=agent_id,
                                created_after=since, created_before=until,
                                before_cursor=before_cursor, limit=limit)

    # -- console reads (serve/console.py) -------------------------------------------------
    async def run_counts(self, *, conversation_id: str | None = None, agent_id: str | None = None,
                         since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        return await self._read("run_counts", by=["status"], conversation_id=conversation_id, agent_id=agent_id,
                                created_after=since, created_before=until)

    async def run_artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return await self._read("run_artifacts", run_id=run_id)

    async def run_artifact_range(self, run_id: str, artifact_id: str, offset: int, length: int) -> dict[str, Any]:
        return await self._read("run_artifact_range", run_id=run_id, artifact_id=artifact_id, offset=offset,
                                length=length)

    async def run_steering(self, run_id: str) -> list[dict[str, Any]]:
        return await self._read("run_steering", run_id=run_id)

    async def transcript_search(self, conversation_id: str, query: str, *, top_k: int = 20) -> dict[str, Any]:
        return await self._read("history_search", conversation_id=conversation_id, query=query, top_k=top_k)

    async def conversation_state(self, conversation_id: str) -> list[dict[str, Any]]:
        return await self._read("conversation_state", conversation_id=conversation_id)

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
        return await self._read("event_page", scope=ReadScope.admin(conversation_id).wire(),
                                event_types=list(event_types) if event_types else None,
                                before_cursor=before_cursor, after_cursor=after_cursor, limit=limit)
