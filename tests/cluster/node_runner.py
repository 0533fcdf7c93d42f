"""A test runner that says which Ray node executed it (for the multi-node scenarios).

Config: ``steps`` deltas, ``delay_s`` before each. The first delta is
``node:<node_id> `` — the node of the runner worker that executed the run. ``gate``: a file
path; after that first delta the run holds (its slot busy) until the file exists — the test
opens the gate once it has seen what it wanted, instead of guessing a duration.
"""
from __future__ import annotations

import asyncio
import os
import time

import ray

from protocol.manifest import Capabilities, RunnerManifest
from protocol.results import RunResult
from protocol.runner import Runner

NODE_RUNNER = "plugin:test/node/default"


class NodeRunner(Runner):
    manifest = RunnerManifest(id=NODE_RUNNER, label="node", capabilities=Capabilities(streaming=True))

    async def run(self, ctx, api):
        cfg = ctx.config or {}
        node = ray.get_runtime_context().get_node_id()
        parts = [f"node:{node} "]
        yield RunResult.delta(ctx.run_id, parts[0])
        if cfg.get("gate"):
            deadline = time.monotonic() + float(cfg.get("gate_timeout_s", 180))
            while not os.path.exists(cfg["gate"]):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gate {cfg['gate']} never opened")
                await asyncio.sleep(0.05)
        for i in range(int(cfg.get("steps", 0))):
            await asyncio.sleep(float(cfg.get("delay_s", 0.0)))
            parts.append(f"{i} ")
            yield RunResult.delta(ctx.run_id, parts[-1])
        yield RunResult.completed_message(ctx.run_id, "".join(parts))
        yield RunResult.done(ctx.run_id)


RUNNERS = {NODE_RUNNER: "tests.cluster.node_runner:NodeRunner"}
