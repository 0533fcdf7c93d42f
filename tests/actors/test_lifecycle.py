"""SPEC §9/§11: deadlines, cancellation, crashes and empty output all end as recorded facts."""
from __future__ import annotations

import pytest

from tests.actors.conftest import probe_agent
from tests.actors.helpers import collect, message, run_to_end, until_delta, wait_until

pytestmark = pytest.mark.ray


async def test_deadline_fails_the_run_as_timeout_and_closes_the_generator(host, conv, tmp_path):
    marker = tmp_path / "closed"
    await host.warm_runner("plugin:test/probe/default")
    await host.put_agent("probe-timeout", probe_agent(sleep_s=30, marker=str(marker), timeout_s=1.5))
    frames = await run_to_end(host, message(conv), "probe-timeout")
    assert frames[-1]["type"] == "run.failed"
    assert frames[-1]["data"]["code"] == "runner.timeout" and frames[-1]["data"]["retryable"] is True
    run = await host.read("run_get", run_id=frames[0]["run_id"])
    assert run["status"] == "timeout"

    async def closed():
        return marker.exists()
    await wait_until(closed, timeout=10, what="the runner's finally to run (its generator closed)")


async def test_cancel_ends_a_long_run_as_cancelled(host, conv, tmp_path):
    marker = tmp_path / "closed"
    await host.put_agent("probe-cancel", probe_agent(sleep_s=30, marker=str(marker)))
    stream = await host.submit(message(conv), "probe-cancel")
    live = await until_delta(stream)  # the probe streamed "probing ", then sleeps 30 s: it is mid-run
    first = live[0]
    assert (await host.cancel(first["run_id"], "user pressed stop"))["cancel_requested"] is True
    frames = live + await collect(stream)
    assert frames[-1]["type"] == "run.failed" and frames[-1]["data"]["code"] == "run.cancelled"
    assert frames[-1]["data"]["error"] == "user pressed stop"
    run = await host.read("run_get", run_id=first["run_id"])
    assert run["status"] == "cancelled"

    async def closed():
        return marker.exists()
    await wait_until(closed, timeout=10, what="the cancelled runner's finally to run")
    # cancelling a finished run is a conflict, an unknown one is not_found
    from protocol.errors import ErrorCode, RunnerHostError
    with pytest.raises(RunnerHostError) as err:
        await host.cancel(first["run_id"])
    assert err.value.code is ErrorCode.CONFLICT
    with pytest.raises(RunnerHostError) as err:
        await host.cancel("run_does_not_exist")
    assert err.value.code is ErrorCode.NOT_FOUND


async def test_runner_that_says_nothing_is_a_controlled_failure(host, conv):
    await host.put_agent("silent", probe_agent(runner="plugin:test/silent/default"))
    frames = await run_to_end(host, message(conv), "silent")
    assert [f["type"] for f in frames] == ["run.started", "run.failed"]
    assert frames[-1]["data"]["code"] == "runner.empty_output"
    assert (await host.read("run_get", run_id=frames[0]["run_id"]))["status"] == "failed"


async def test_runner_exception_is_recorded_without_leaking_secrets(host, conv):
    await host.put_agent("crash", probe_agent(runner="plugin:test/crash/default"))
    frames = await run_to_end(host, message(conv), "crash")
    assert frames[-1]["type"] == "run.failed" and frames[-1]["data"]["code"] == "runner.error"
    assert "sk-abcdefghijklmnop1234" not in frames[-1]["data"]["error"]
    assert "RuntimeError" in frames[-1]["data"]["error"]
    # the partial answer is kept, flagged partial, in the transcript
    page = await host.read("history_page", conversation_id=conv, limit=10)
    assistant = [i for i in page["items"] if i["role"] == "assistant"]
    assert assistant and assistant[0]["metadata"].get("partial") is True


async def test_background_run_can_be_joined_and_replayed(host, conv):
    first = await host.submit_background(message(conv, "a b c d e f"), "slow")
    assert first["type"] == "run.started"
    joined = await collect(host.join(first["run_id"]))  # while it runs: from its first frame on
    assert joined[0] == first and joined[-1]["type"] == "run.completed"
    assert [f["sequence"] for f in joined] == list(range(len(joined)))
    replay = await collect(host.join(first["run_id"]))  # finished: replayed from the ledger
    assert [f["type"] for f in replay][0] == "run.started" and replay[-1]["type"] == "run.completed"
    assert [f["sequence"] for f in replay] == list(range(len(replay)))
