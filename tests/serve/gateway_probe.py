"""Test-only runner for the harness gateway tests.

It plays an external harness: it publishes the run's capability token and
gateway URL (from ``ctx.runtime.metadata``) in its first delta, then holds the
run open for ``hold_s`` seconds so the test can call the MCP gateway while the
run is live, and again after it has ended.

Registered through ``HostConfig.extra_runners`` as
``tests.serve.gateway_probe:GatewayProbeRunner``; Ray workers import it because
the session's runtime env puts the repo root on ``PYTHONPATH`` (``tests`` is a
namespace package there).
"""
from __future__ import annotations

import asyncio
import json

from protocol.manifest import Capabilities, Permissions, RunnerManifest
from protocol.results import RunResult
from protocol.runner import Runner

GATEWAY_PROBE_ID = "plugin:test/gateway/default"


class GatewayProbeRunner(Runner):
    manifest = RunnerManifest(
        id=GATEWAY_PROBE_ID, label="gateway probe", version="1.0.0",
        capabilities=Capabilities(streaming=True),
        permissions=Permissions(history=["page", "search"], harness_gateway=True),
    )

    async def run(self, ctx, api):
        meta = ctx.runtime.metadata or {}
        yield RunResult.delta(ctx.run_id, json.dumps({"capability_token": meta.get("capability_token"),
                                                      "gateway_url": meta.get("gateway_url")}))
        await asyncio.sleep(float((ctx.config or {}).get("hold_s", 60)))
        yield RunResult.completed_message(ctx.run_id, "probe done")
        yield RunResult.done(ctx.run_id)
