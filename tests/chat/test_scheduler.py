"""Schedules without Ray: once per tick with racing schedulers, across a restart, and a missed
stretch of downtime fires once."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from actors.core.cron import latest_tick, next_tick
from actors.core.scheduler import Scheduler
from protocol.errors import ErrorCode, RunnerHostError
from protocol.schedules import ScheduleSet

T0 = 1_800_000_000 - (1_800_000_000 % 60)  # a whole minute


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Host:
    """The submit side: records events like Host.submit_background would admit them."""

    def __init__(self, fail_with: RunnerHostError | None = None) -> None:
        self.events = []
        self.fail_with = fail_with

    async def submit(self, event, agent_id):
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        self.events.append((agent_id, event))
        return {"run_id": f"run_{event.event_id}", "type": "run.started"}


def mine(fired: list[dict], agent: str) -> list[dict]:
    """The database is shared by the suite: other tests' schedules may be due too."""
    return [f for f in fired if f["event_id"].startswith(f"sched-{agent}-")]


async def put(storage, agent_id: str, cron: str = "* * * * *") -> None:
    spec = ScheduleSet.model_validate({"schedules": [{"schedule_id": "tick", "cron": cron, "text": "wake up"}]})
    await storage.write("schedule_replace", agent_id=agent_id, schedules=[s.model_dump() for s in spec.schedules])


def test_cron_validation_and_arithmetic():
    with pytest.raises(ValueError):
        ScheduleSet.model_validate({"schedules": [{"schedule_id": "x", "cron": "61 * * * *"}]})
    with pytest.raises(ValueError):
        ScheduleSet.model_validate({"schedules": [{"schedule_id": "x", "cron": "* * * * * *"}]})
    with pytest.raises(ValueError):
        ScheduleSet.model_validate({"schedules": [{"schedule_id": "x", "cron": "* * * * *"},
                                                  {"schedule_id": "x", "cron": "*/5 * * * *"}]})
    assert next_tick("*/5 * * * *", T0 + 1) == T0 + 300 - (T0 % 300) or next_tick("*/5 * * * *", T0 + 1) > T0
    assert latest_tick("* * * * *", T0) == T0 and latest_tick("* * * * *", T0 + 59) == T0


async def test_two_schedulers_racing_fire_each_tick_once(storage):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    clock = Clock(T0 - 30)
    await storage.write("schedule_replace", agent_id=agent, schedules=[{"schedule_id": "tick", "cron": "* * * * *"}])
    from store.engine import Database  # noqa: F401  (the storage fixture is a real database)
    # schedule_replace used the wall clock for next_fire_at; align the test clock with real time
    [record] = await storage.read("schedule_list", agent_id=agent)
    clock.now = record["next_fire_at"] - 1
    host = Host()
    a = Scheduler(storage, host.submit, owner="a", clock=clock)
    b = Scheduler(storage, host.submit, owner="b", clock=clock)
    assert mine(await a.run_once(), agent) == [] and mine(await b.run_once(), agent) == []  # not due yet
    for minute in range(3):
        clock.now = record["next_fire_at"] + 60 * minute + 1
        fired = await asyncio.gather(a.run_once(), b.run_once(), a.run_once(), b.run_once())
        assert sum(len(mine(f, agent)) for f in fired) == 1
    host.events = [(a_, e) for a_, e in host.events if a_ == agent]
    ticks = [e.data["tick"] for _, e in host.events]
    assert ticks == [record["next_fire_at"] + 60 * m for m in range(3)]
    _, event = host.events[0]
    assert (event.event_type, event.source, event.conversation_id, event.delivery.reply_target) == (
        "schedule.triggered", "scheduler", None, None)
    assert event.input.text is None and event.data["schedule_id"] == "tick"
    assert event.event_id == f"sched-{agent}-tick-{ticks[0]}"


async def test_restart_does_not_refire_and_downtime_fires_once(storage):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    await put(storage, agent)
    [record] = await storage.read("schedule_list", agent_id=agent)
    first = record["next_fire_at"]
    clock = Clock(first + 5)
    host = Host()
    assert len(mine(await Scheduler(storage, host.submit, owner="a", clock=clock).run_once(), agent)) == 1
    restarted = Scheduler(storage, host.submit, owner="a2", clock=clock)  # same minute, new process
    assert mine(await restarted.run_once(), agent) == []
    clock.now = first + 10 * 60 + 5  # down for ten minutes
    fired = mine(await restarted.run_once(), agent)
    events = [e for a_, e in host.events if a_ == agent]
    assert len(fired) == 1 and len(events) == 2
    assert events[1].data["tick"] == first + 600  # the latest tick, once
    assert events[1].input.text == "wake up"
    assert mine(await restarted.run_once(), agent) == []


async def test_a_tick_whose_submit_failed_is_retried_once(storage):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    await put(storage, agent)
    [record] = await storage.read("schedule_list", agent_id=agent)
    clock = Clock(record["next_fire_at"] + 1)
    host = Host(fail_with=RunnerHostError(ErrorCode.RUNTIME_ERROR, "host busy", retryable=True))
    a = Scheduler(storage, host.submit, owner="a", clock=clock, lease_s=30)
    b = Scheduler(storage, host.submit, owner="b", clock=clock, lease_s=30)
    [first] = mine(await a.run_once(), agent)
    assert first["retry"] is True and host.events == []
    await asyncio.gather(a.run_once(), b.run_once())  # released claim: exactly one of them re-fires it
    events = [e for a_, e in host.events if a_ == agent]
    assert len(events) == 1
    assert mine(await a.run_once(), agent) == [] and mine(await b.run_once(), agent) == []
    assert len([e for a_, e in host.events if a_ == agent]) == 1


async def test_a_claim_of_a_dead_owner_is_taken_over_after_the_lease(storage):
    agent = f"agent-{uuid.uuid4().hex[:8]}"
    await put(storage, agent)
    [record] = await storage.read("schedule_list", agent_id=agent)
    tick = record["next_fire_at"]
    # the dead owner claimed the tick (and moved the schedule on) but never submitted
    assert await storage.write("schedule_claim_tick", agent_id=agent, schedule_id="tick", tick=tick,
                               next_fire_at=tick + 60, owner="dead", lease_s=0.5)
    host = Host()
    import time
    survivor = Scheduler(storage, host.submit, owner="alive", clock=time.time, lease_s=0.5)
    assert mine(await survivor.run_once(), agent) == []  # lease not over: the owner may still be at it
    await asyncio.sleep(0.6)
    fired = mine(await survivor.run_once(), agent)
    assert [f["event_id"] for f in fired] == [f"sched-{agent}-tick-{tick}"]
    assert [e.data["tick"] for a_, e in host.events if a_ == agent] == [tick]
