"""The scheduler's logic: due cron ticks → one ``schedule.triggered`` event each.

:meth:`Scheduler.run_once` reads the schedules whose ``next_fire_at`` has come, and for each one
claims its *latest* due tick — ``(schedule, tick)`` unique in ``intake_claim`` — moving
``next_fire_at`` past now in the same transaction. Only the claimant submits, so any number of
schedulers (replicas, a restarted one) fire a tick once; ticks missed during downtime coalesce
into that one latest tick. A claim whose submit did not finish (its owner died) is taken over
after ``lease_s`` (:meth:`Scheduler.retry_unfinished`).

The events are conversation-less: no conversation, thread or reply target; the actor is the
system scheduler; ``data`` carries the schedule id, the tick and the schedule's own data.
"""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from protocol.errors import RunnerHostError
from protocol.events import (
    EventActor,
    EventDelivery,
    EventEnvelope,
    EventInput,
    EventSubject,
)
from protocol.logs import get_logger

from .cron import latest_tick, next_tick
from .storage_port import StoragePort

log = get_logger(__name__)

Submit = Callable[[EventEnvelope, str], Awaitable[dict[str, Any]]]


def schedule_event(agent_id: str, schedule: dict[str, Any], tick: float) -> EventEnvelope:
    return EventEnvelope(
        event_id=f"sched-{agent_id}-{schedule['schedule_id']}-{int(tick)}", event_type="schedule.triggered",
        event_time=int(tick), source="scheduler", source_event_type="cron",
        actor=EventActor(actor_type="system", actor_id="scheduler"),
        subject=EventSubject(subject_type="schedule", subject_id=schedule["schedule_id"],
                             data={"cron": schedule["cron"]}),
        input=EventInput(text=schedule.get("text")),
        delivery=EventDelivery(surface="scheduler", supports_streaming=False),
        data={**(schedule.get("data") or {}), "schedule_id": schedule["schedule_id"], "tick": int(tick),
              "agent_id": agent_id})


class Scheduler:
    def __init__(self, storage: StoragePort, submit: Submit, *, owner: str, lease_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._storage = storage
        self._submit = submit
        self.owner = owner
        self._lease = lease_s
        self._clock = clock

    async def run_once(self) -> list[dict[str, Any]]:
        """Fire every due schedule whose tick this scheduler wins (and re-fire abandoned claims)."""
        now = self._clock()
        fired = await self.retry_unfinished()
        for schedule in await self._storage.read("schedule_due", at=now):
            tick = latest_tick(schedule["cron"], now)
            claimed = await self._storage.write(
                "schedule_claim_tick", agent_id=schedule["agent_id"], schedule_id=schedule["schedule_id"],
                tick=tick, next_fire_at=next_tick(schedule["cron"], now), owner=self.owner, lease_s=self._lease)
            if claimed:
                fired.append(await self._fire(schedule, tick))
        return fired

    async def _fire(self, schedule: dict[str, Any], tick: float) -> dict[str, Any]:
        agent_id = schedule["agent_id"]
        scope, key = f"schedule:{agent_id}/{schedule['schedule_id']}", str(int(tick))
        event = schedule_event(agent_id, schedule, tick)
        try:
            first = await self._submit(event, agent_id)
        except RunnerHostError as exc:
            if exc.retryable:  # the host is busy or restarting: let the next round (anyone) retry
                await self._storage.write("intake_release", scope=scope, key=key, owner=self.owner)
                log.warning("schedule %s/%s tick %d: %s; will retry", agent_id, schedule["schedule_id"], tick,
                            exc.message)
                return {"event_id": event.event_id, "error": exc.code.value, "retry": True}
            outcome = {"event_id": event.event_id, "error": exc.code.value, "message": exc.message}
        else:
            outcome = {"event_id": event.event_id, "run_id": first.get("run_id")}
        await self._storage.write("intake_finish", scope=scope, key=key, owner=self.owner, result=outcome)
        return outcome

    async def retry_unfinished(self) -> list[dict[str, Any]]:
        """Re-fire claimed ticks whose submit never finished (released, or the owner died)."""
        fired = []
        stale = await self._storage.read("intake_unfinished", prefix="schedule:", older_than=self._clock() - self._lease)
        for claim in stale:
            agent_id, schedule_id = claim["scope"][len("schedule:"):].split("/", 1)
            specs = {s["schedule_id"]: s for s in await self._storage.read("schedule_list", agent_id=agent_id)}
            if schedule_id not in specs:
                continue
            if await self._storage.write("intake_claim", scope=claim["scope"], key=claim["key"], owner=self.owner,
                                         lease_s=self._lease):
                fired.append(await self._fire(specs[schedule_id], float(claim["key"])))
        return fired
