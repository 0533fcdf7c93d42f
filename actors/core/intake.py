"""Platform intake: a parsed inbound payload → runs, each platform event at most once.

:meth:`PlatformIntake.accept` claims the platform's own delivery id (Slack's ``event_id``,
Telegram's ``update_id``, …) in ``intake_claim`` before submitting, so a platform retry — to any
replica, after any restart — starts nothing twice; a submit that failed retryably releases the
claim, so the platform's next retry goes through. :meth:`PlatformIntake.answer` turns a tapped
button or an HTTP answer into the ``interaction.submitted`` run.

``submit(event, agent_id) -> first frame`` is the host's ``submit_background``.
"""
from __future__ import annotations

import uuid
from typing import Any, Awaitable, Callable

from platforms.base import Inbound, InteractionAnswer
from protocol.errors import RunnerHostError
from protocol.events import EventEnvelope
from protocol.logs import get_logger

from .interactions import InteractionService
from .storage_port import StoragePort

log = get_logger(__name__)

Submit = Callable[[EventEnvelope, str | None], Awaitable[dict[str, Any]]]
#: How long a claimed platform event may stay unfinished before a retry may take it over.
INTAKE_LEASE_S = 120.0


class PlatformIntake:
    def __init__(self, storage: StoragePort, submit: Submit, *, owner: str | None = None) -> None:
        self._storage = storage
        self._submit = submit
        self._interactions = InteractionService(storage)
        self.owner = owner or f"intake-{uuid.uuid4().hex[:12]}"

    async def accept(self, connection: str, agent_id: str | None, inbound: Inbound) -> list[dict[str, Any]]:
        """Submit the inbound events; returns ``[{event_id, run_id}]`` ( ``[]`` for a repeat)."""
        if not inbound.events:
            return []
        scope, key = f"inbound:{connection}", inbound.dedupe_key
        if key is not None and not await self._storage.write("intake_claim", scope=scope, key=key, owner=self.owner,
                                                             lease_s=INTAKE_LEASE_S):
            log.info("%s: platform delivery %s already taken; ignored", connection, key)
            return []
        started = []
        try:
            for event in inbound.events:
                first = await self._submit(event, agent_id)
                started.append({"event_id": event.event_id, "run_id": first.get("run_id")})
        except RunnerHostError as exc:
            if key is not None and exc.retryable and not started:
                await self._storage.write("intake_release", scope=scope, key=key, owner=self.owner)
            raise
        if key is not None:
            await self._storage.write("intake_finish", scope=scope, key=key, owner=self.owner,
                                      result={"runs": started})
        return started

    async def answer(self, interaction_id: str, answer: InteractionAnswer, *,
                     source_event_type: str) -> dict[str, Any]:
        """Accept an interaction answer and start its run on the asking conversation."""
        record, event = await self._interactions.answer(interaction_id, answer, source_event_type=source_event_type)
        first = await self._submit(event, record.get("agent_id"))
        return {"interaction": record, "event_id": event.event_id, "run_id": first.get("run_id")}


def log_refusal(connection: str, outcome: dict[str, Any]) -> None:
    """Log an intake call's error envelope (connection actors have no caller to raise to)."""
    if "error" in outcome:
        log.warning("%s: inbound event refused: %s", connection, outcome["error"].get("message"))
