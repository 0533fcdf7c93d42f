"""The run flow without Ray (RunDriver + Registry + StorageService + RunSlots on a real database):
every lifecycle edge and every early exit, each ending in recorded facts and nothing leaked."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from actors.core.driver import RunDriver
from protocol.agents import AgentConfig, MultitaskStrategy, ResourcePolicy
from protocol.errors import ErrorCode, RunnerHostError
from protocol.events import EventEnvelope
from tests.actors.inprocess import InProcessPorts, collect, make_driver
from tests.waiting import wait_until

ECHO = "plugin:builtin/echo/default"


def echo(strategy: MultitaskStrategy = MultitaskStrategy.PARALLEL, **config) -> AgentConfig:
    return AgentConfig(runner_id=ECHO, runner_config=config, multitask_strategy=strategy,
                       resource_policy=ResourcePolicy(run_ledger=["get", "events_page"]))


AGENTS = {
    "echo": echo(),
    "slow": echo(delay_s=0.15, chunks=3),
    "enqueue": echo(MultitaskStrategy.ENQUEUE, delay_s=0.1, chunks=2),
    "reject": echo(MultitaskStrategy.REJECT, delay_s=0.3, chunks=3),
    "steer": echo(MultitaskStrategy.STEER, delay_s=0.2, chunks=4, steering=True),
}


def message(conv: str | None = None, text: str = "hello there", event_id: str | None = None) -> EventEnvelope:
    fields = {"event_type": "message.received", "conversation_id": conv or f"c-{uuid.uuid4().hex[:8]}",
              "input": {"text": text}, "actor": {"actor_id": "u1"}}
    if event_id:
        fields["event_id"] = event_id
    return EventEnvelope.model_validate(fields)


@pytest.fixture
async def env(db):
    ports = InProcessPorts(db, AGENTS, host_id=f"host_{uuid.uuid4().hex[:8]}")
    driver = make_driver(ports)
    await driver.slots.warm()
    yield ports, driver
    await driver.close()


async def settled(ports: InProcessPorts, driver: RunDriver) -> None:
    """Nothing leaked: no lease, no lane, no run left in the driver."""
    await wait_until(
        lambda: not driver.runs and driver.slots.leased() == 0 and not ports.registry_logic.index.entries(),
        timeout=2, interval=0.01,
        what=lambda: (f"nothing leaked: runs={list(driver.runs)} leased={driver.slots.leased()} "
                      f"lanes={[e.run_id for e in ports.registry_logic.index.entries()]}"))


async def ledger(ports: InProcessPorts, run_id: str) -> tuple[dict, list[dict]]:
    run = await ports.read("run_get", run_id=run_id)
    page = await ports.read("run_events_page", run_id=run_id, limit=100)
    return run, page["items"]


def types(frames: list[dict]) -> list[str]:
    return [f["type"] for f in frames]


async def test_a_run_streams_and_ends_in_final_facts_with_nothing_leaked(env):
    ports, driver = env
    event = message()
    frames = await collect(await driver.submit(event, "echo"))
    assert types(frames)[0] == "run.started" and types(frames)[-1] == "run.completed"
    run, events = await ledger(ports, frames[0]["run_id"])
    assert run["status"] == "completed"
    assert [e["sequence"] for e in events] == list(range(len(frames)))  # the ledger is the stream
    transcript = await ports.read("history_page", conversation_id=event.conversation_id, limit=10)
    assert [i["role"] for i in transcript["items"]] == ["user", "assistant"]
    assert ports.writes.count("run_accept") == 1 and "start_run" not in ports.writes  # started at accept
    await settled(ports, driver)


async def test_nothing_is_accepted_when_the_accept_write_fails_and_nothing_leaks(env):
    ports, driver = env
    ports.faults.failing_writes["run_accept"] = 1
    event = message()
    with pytest.raises(RunnerHostError) as error:
        await driver.submit(event, "echo")
    assert error.value.retryable and "write:run_accept" in ports.faults.fired
    assert await ports.read("event_submission", event_id=event.event_id) is None
    await settled(ports, driver)
    # the client's retry of the same event is then accepted normally
    frames = await collect(await driver.submit(event, "echo"))
    assert types(frames)[-1] == "run.completed"


async def test_a_re_sent_event_joins_its_run_and_a_different_body_is_a_conflict(env):
    ports, driver = env
    event = message(text="one two three")
    first = await driver.submit(event, "slow")
    again = await collect(await driver.submit(event, "slow"))  # while the first is live
    original = await collect(first)
    assert again[0]["type"] == "run.duplicate" and again[0]["run_id"] == original[0]["run_id"]
    assert again[1:] == original  # the whole stream, from its first frame
    replay = await collect(await driver.submit(event, "slow"))  # after it finished
    assert replay[0]["type"] == "run.duplicate" and replay[1:] == original
    changed = event.model_copy(update={"input": event.input.model_copy(update={"text": "something else"})})
    with pytest.raises(RunnerHostError) as error:
        await driver.submit(changed, "slow")
    assert error.value.code is ErrorCode.CONFLICT
    runs = await ports.read("run_list", scope={"conversation_id": event.conversation_id}, limit=10)
    assert len(runs["items"]) == 1  # one event, one run
    await settled(ports, driver)


async def test_a_re_sent_event_the_registry_no_longer_knows_is_caught_by_the_accept(env, db):
    ports, driver = env
    event = message()
    original = await collect(await driver.submit(event, "echo"))
    fresh = InProcessPorts(db, AGENTS, host_id=ports.host_id)  # e.g. the registry restarted
    other = make_driver(fresh)
    await other.slots.warm()
    replay = await collect(await other.submit(event, "echo"))
    assert replay[0]["type"] == "run.duplicate" and replay[1:] == original
    assert "run_accept" in fresh.writes and "start_run" not in fresh.writes
    await settled(fresh, other)
    await other.close()


async def test_beyond_capacity_runs_queue_fifo_hold_no_slot_and_all_complete(db):
    ports = InProcessPorts(db, AGENTS)
    driver = make_driver(ports, run_actors=1, max_size=1)
    await driver.slots.warm()
    streams = [await driver.submit(message(), "slow") for _ in range(4)]
    assert driver.slots.waiting == 3 and driver.slots.size == 1
    results = await asyncio.gather(*(collect(s) for s in streams))
    assert types(results[0])[0] == "run.started"
    assert [r[0]["data"]["position"] for r in results[1:]] == [1, 2, 3]
    assert all(types(r)[:2] == ["run.queued", "run.started"] for r in results[1:])
    assert all(types(r)[-1] == "run.completed" for r in results)
    started_at = []
    for r in results:
        run, _ = await ledger(ports, r[0]["run_id"])
        started_at.append(run["started_at"])
    assert started_at == sorted(started_at)  # FIFO
    assert ports.pool.peak_size == 1
    await settled(ports, driver)
    await driver.close()


async def test_a_queued_run_cancelled_here_or_elsewhere_never_starts(db):
    ports = InProcessPorts(db, AGENTS)
    driver = make_driver(ports, run_actors=1, max_size=1)
    await driver.slots.warm()
    busy = await driver.submit(message(), "slow")
    here = await driver.submit(message(), "slow")
    elsewhere = await driver.submit(message(), "slow")
    here_id = (await here.__anext__())["run_id"]
    elsewhere_id = (await elsewhere.__anext__())["run_id"]
    assert await driver.cancel(here_id, "user gave up") == {"run_id": here_id, "cancel_requested": True}
    await ports.write("request_cancel", run_id=elsewhere_id, reason="cancelled on another host")
    here_frames = await collect(here)
    assert types(here_frames) == ["run.failed"] and here_frames[0]["data"]["code"] == "run.cancelled"
    elsewhere_frames = await collect(elsewhere)  # honoured when its turn comes, before anything runs
    assert types(elsewhere_frames) == ["run.failed"] and elsewhere_frames[0]["data"]["code"] == "run.cancelled"
    await collect(busy)
    for run_id in (here_id, elsewhere_id):
        run, events = await ledger(ports, run_id)
        assert run["status"] == "cancelled" and run["started_at"] is None
        assert [e["type"] for e in events] == ["run.queued", "run.failed"]
    await settled(ports, driver)
    await driver.close()


async def test_a_run_actor_dead_before_the_run_began_is_replaced(env):
    ports, driver = env
    ports.faults.die_before_start = 1
    frames = await collect(await driver.submit(message(), "echo"))
    assert "die_before_start" in ports.faults.fired
    assert types(frames)[-1] == "run.completed"
    assert len(ports.dead) == 1 and ports.dead[0] not in driver.slots.members()
    await settled(ports, driver)


async def test_a_run_actor_dead_after_the_hand_over_is_not_run_again(env):
    """Its runner may have started (and acted) before any frame came back: the run fails
    retryably instead of executing a second time on another RunActor."""
    ports, driver = env
    ports.faults.die_on_hand_over = 1
    frames = await collect(await driver.submit(message(), "echo"))
    assert "die_on_hand_over" in ports.faults.fired
    assert types(frames)[-1] == "run.failed"
    assert frames[-1]["data"]["code"] == "host.run_actor_died" and frames[-1]["data"]["retryable"]
    assert [m for m in driver.slots.members() if frames[0]["run_id"] in m.runs] == []  # never re-run
    run, _ = await ledger(ports, frames[0]["run_id"])
    assert run["status"] == "failed"
    await settled(ports, driver)


async def test_a_run_actor_dead_mid_run_is_a_recorded_retryable_failure(env):
    ports, driver = env
    ports.faults.die_after_first_batch = 1
    frames = await collect(await driver.submit(message(), "slow"))
    assert "die_after_first_batch" in ports.faults.fired
    assert types(frames)[-1] == "run.failed"
    terminal = frames[-1]
    assert terminal["data"]["code"] == "host.run_actor_died" and terminal["data"]["retryable"]
    run, events = await ledger(ports, frames[0]["run_id"])
    assert run["status"] == "failed" and events[-1]["type"] == "run.failed"
    assert [e["sequence"] for e in events] == sorted({e["sequence"] for e in events})
    await settled(ports, driver)


async def test_an_executor_gone_before_the_run_is_retried_elsewhere(env):
    ports, driver = env
    ports.faults.executor_gone = 1
    frames = await collect(await driver.submit(message(), "echo"))
    assert ports.faults.fired == ["executor_gone"] and types(frames)[-1] == "run.completed"
    await settled(ports, driver)


async def test_final_facts_that_cannot_be_recorded_are_not_reported_as_success(env):
    ports, driver = env
    ports.faults.failing_writes["finish_run"] = 1
    frames = await collect(await driver.submit(message(), "echo"))
    assert "write:finish_run" in ports.faults.fired
    assert frames[-1]["type"] == "run.failed" and frames[-1]["data"]["retryable"]
    run, _ = await ledger(ports, frames[0]["run_id"])
    assert run["status"] == "running"  # open until a sweep finalizes it
    out = await ports.write("reap_orphans", host_id="another-host", dead_after_s=0.0, grace_s=-10_000,
                            ray_address=None, ray_session=None)
    assert frames[0]["run_id"] in [run_id for run_id, _ in out["finalized"]]
    run, events = await ledger(ports, frames[0]["run_id"])
    assert run["status"] == "failed" and events[-1]["data"]["code"] == "host.lost"
    await settled(ports, driver)


async def test_enqueue_waits_for_the_conversation_lane(env):
    ports, driver = env
    conv = f"c-{uuid.uuid4().hex[:8]}"
    first = await driver.submit(message(conv), "enqueue")
    second = await driver.submit(message(conv), "enqueue")
    a, b = await asyncio.gather(collect(first), collect(second))
    assert b[0]["type"] == "run.queued" and b[0]["data"]["behind"] == [a[0]["run_id"]]
    run_a, _ = await ledger(ports, a[0]["run_id"])
    run_b, _ = await ledger(ports, b[0]["run_id"])
    assert run_b["started_at"] >= run_a["finished_at"]
    await settled(ports, driver)


async def test_reject_refuses_and_a_re_sent_rejected_duplicate_replays(env):
    ports, driver = env
    conv = f"c-{uuid.uuid4().hex[:8]}"
    event = message(conv)
    first = await driver.submit(event, "reject")
    with pytest.raises(RunnerHostError) as error:
        await driver.submit(message(conv), "reject")
    assert error.value.code is ErrorCode.CONFLICT
    original = await collect(first)
    ports.registry_logic.index._recent.clear()  # the registry forgot it: the event log remembers
    holder = await driver.submit(message(conv), "reject")  # the conversation is busy again
    replay = await collect(await driver.submit(event, "reject"))
    assert replay[0]["type"] == "run.duplicate" and replay[1:] == original
    await collect(holder)
    await settled(ports, driver)


async def test_steered_input_is_claimed_once_even_when_re_sent(env):
    ports, driver = env
    conv = f"c-{uuid.uuid4().hex[:8]}"
    first = await driver.submit(message(conv, "one two three four"), "steer")
    await first.__anext__()
    while not (await first.__anext__())["type"] == "message.delta":
        pass
    steer = message(conv, "look here")
    claimed = await collect(await driver.submit(steer, "steer"))
    again = await collect(await driver.submit(steer, "steer"))
    assert types(claimed) == ["event.steered"] and types(again) == ["event.steered"]
    assert again[0]["data"].get("duplicate") is True
    rest = await collect(first)
    text = "".join(f["data"]["chunk"]["content"] for f in rest if f["type"] == "message.delta")
    assert text.count("steered: look here") == 1
    await settled(ports, driver)


async def test_closing_the_host_ends_its_runs_on_record(db):
    ports = InProcessPorts(db, AGENTS)
    driver = make_driver(ports, run_actors=1, max_size=1)
    await driver.slots.warm()
    running = await driver.submit(message(), "slow")
    queued = await driver.submit(message(), "slow")
    first_running, first_queued = await running.__anext__(), await queued.__anext__()
    await driver.close(grace_s=5)
    for first in (first_running, first_queued):
        run, events = await ledger(ports, first["run_id"])
        assert run["status"] == "failed" and events[-1]["data"]["code"] == "host.stopped"
    with pytest.raises(RunnerHostError):
        await driver.submit(message(), "echo")
    await settled(ports, driver)


async def test_runs_of_a_gone_host_are_finalized_queued_ones_included(env):
    ports, _ = env
    gone_host = f"host_gone_{uuid.uuid4().hex[:6]}"
    await ports.write("host_heartbeat", host_id=gone_host)
    ids = []
    for status in ("running", "created"):  # what a SIGKILLed host leaves behind
        event = message()
        run_id = f"run_{uuid.uuid4().hex}"
        await ports.write("run_accept", run_id=run_id, event=event, agent_id="slow", binding_id="slow@1",
                          runner_id=ECHO, deadline_at=None, scope_keys={}, status=status, owner_host=gone_host,
                          frames=[{"run_id": run_id, "type": "run.started" if status == "running" else "run.queued",
                                   "data": {}, "sequence": 0}])
        ids.append(run_id)
    alive = await ports.write("reap_orphans", host_id=ports.host_id, dead_after_s=60, grace_s=30)
    assert not set(ids) & {run_id for run_id, _ in alive["finalized"]}  # fresh heartbeat: it may be working
    out = await ports.write("reap_orphans", host_id=ports.host_id, dead_after_s=0.0, grace_s=30)
    assert gone_host in out["gone_hosts"] and set(ids) <= {run_id for run_id, _ in out["finalized"]}
    for run_id in ids:
        run, events = await ledger(ports, run_id)
        assert run["status"] == "failed" and events[-1]["data"] == {
            "code": "host.lost", "error": "the host driving this run was lost", "retryable": True}
        assert [e["sequence"] for e in events] == [0, 1]


async def test_a_full_queue_is_refused_before_anything_is_accepted(db):
    ports = InProcessPorts(db, AGENTS)
    driver = make_driver(ports, run_actors=1, max_size=1)
    driver.slots.max_waiting = 1
    await driver.slots.warm()
    running = await driver.submit(message(), "slow")
    queued = await driver.submit(message(), "slow")
    refused = message()
    with pytest.raises(RunnerHostError) as error:
        await driver.submit(refused, "slow")
    assert error.value.code is ErrorCode.RATE_LIMITED and error.value.retryable  # → 429 + Retry-After
    assert await ports.read("event_submission", event_id=refused.event_id) is None  # nothing on record
    await asyncio.gather(collect(running), collect(queued))
    await settled(ports, driver)
    await driver.close()


async def test_a_failed_steering_accept_leaks_nothing(env):
    ports, driver = env
    conv = f"c-{uuid.uuid4().hex[:8]}"
    first = await driver.submit(message(conv, "one two three four"), "steer")
    await first.__anext__()
    ports.faults.failing_writes["event_accept"] = 1
    with pytest.raises(RunnerHostError):
        await driver.submit(message(conv, "steer me"), "steer")
    assert "write:event_accept" in ports.faults.fired
    await collect(first)
    await settled(ports, driver)
