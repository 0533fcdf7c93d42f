"""Result batching on the streaming hops, without Ray: the executor (worker → RunActor) and the
HTTP relay (ingress → proxy) send what is ready together as one object, and never hold the first
result of a burst back."""
from __future__ import annotations

import asyncio

from actors.core.runner_exec import RunnerExecutor
from protocol.context import RunContext
from protocol.results import RunResult
from serve.streaming import relay


class BurstThenPause:
    """Three results at once, a pause, then the terminal result."""

    id = "test:burst"

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.closed = False

    async def run(self, ctx, api):
        try:
            for word in ("a ", "b ", "c"):
                yield RunResult.delta(ctx.run_id, word)
            await asyncio.sleep(self.pause)
            yield RunResult.done(ctx.run_id)
        finally:
            self.closed = True


def context(run_id: str) -> RunContext:
    return RunContext.model_validate({
        "run_id": run_id, "trigger": {"type": "event", "source": "api"},
        "event": {"event_id": f"ev-{run_id}", "event_type": "message.received", "source": "api"},
        "input": {"text": "hi"},
    })


async def test_a_burst_of_results_crosses_as_one_batch_and_the_rest_follows():
    runner = BurstThenPause(pause=0.05)
    batches = [b async for b in RunnerExecutor(runner, runner.id).execute(context("r1"), api=None)]
    assert [[r["type"] for r in b] for b in batches] == [
        ["message.delta"] * 3, ["run.completed"]]
    assert [r["data"]["chunk"]["content"] for r in batches[0]] == ["a ", "b ", "c"]
    assert runner.closed


async def test_the_first_result_is_not_held_back_for_company():
    runner = BurstThenPause(pause=5.0)
    gen = RunnerExecutor(runner, runner.id).execute(context("r2"), api=None)
    first = await asyncio.wait_for(gen.__anext__(), 1.0)  # long before the terminal result
    assert len(first) == 3
    await gen.aclose()


async def test_relay_sends_ready_frames_as_one_chunk_and_ends_a_broken_source_with_a_terminal():
    async def source():
        for n in range(3):
            yield {"run_id": "r", "type": "message.delta", "data": {}, "sequence": n}
        await asyncio.sleep(0.02)
        yield {"run_id": "r", "type": "message.delta", "data": {}, "sequence": 3}
        raise RuntimeError("lost the host")

    batches = [b async for b in relay(source(), linger=0)]
    assert [[f["sequence"] for f in b] for b in batches] == [[0, 1, 2], [3, None]]
    assert batches[-1][-1]["type"] == "run.failed"
    assert batches[-1][-1]["data"]["code"] == "host.stream_error"


def _frame(n: int, kind: str = "message.delta") -> dict:
    return {"run_id": "r", "type": kind, "data": {}, "sequence": n}


async def test_a_short_runs_stream_leaves_as_one_chunk():
    async def source():
        yield _frame(0, "run.started")
        for n in (1, 2):
            await asyncio.sleep(0.005)
            yield _frame(n)
        yield _frame(3, "run.completed")

    batches = [b async for b in relay(source(), linger=0.5)]
    assert [[f["sequence"] for f in b] for b in batches] == [[0, 1, 2, 3]]


async def test_only_the_opening_frame_lingers_and_never_for_long():
    gaps = {1: 0.3, 2: 0.0, 3: 0.3}  # seconds before each frame

    async def source():
        yield _frame(0, "run.started")
        for n in (1, 2, 3):
            if gaps[n]:
                await asyncio.sleep(gaps[n])
            yield _frame(n, "run.completed" if n == 3 else "message.delta")

    loop = asyncio.get_running_loop()
    began, seen = loop.time(), []
    async for batch in relay(source(), linger=0.05):
        seen.append(([f["sequence"] for f in batch], loop.time() - began))
    assert [s for s, _ in seen] == [[0], [1, 2], [3]]
    opened, middle = seen[0][1], seen[1][1]
    assert 0.05 <= opened < 0.3            # held for the linger, not until the next frame
    assert middle < 0.3 + 0.05 + 0.1       # later frames are not held back
