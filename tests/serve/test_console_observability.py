"""Acceptance tests of the run path's metrics and traces over the real Serve app: the scraped run
counts equal the ledger's, and ``ctx.runtime.trace_id`` continues the inbound ``traceparent``.
The building blocks themselves are tested in ``tests/console``."""
from __future__ import annotations

import asyncio
import json
import uuid


from tests.console.prom import scrape, wait_for
from tests.serve.test_http_runs import event, ndjson_frames, wait_status

async def test_scraped_run_metrics_equal_the_ledger_after_a_known_mix(client, serve_app, conv):
    tag = uuid.uuid4().hex[:6]
    agents = {f"mx-ok-{tag}": {"runner_id": "plugin:builtin/echo/default"},
              f"mx-slow-{tag}": {"runner_id": "plugin:builtin/echo/default", "timeout_s": 0.5,
                                 "runner_config": {"delay_s": 2, "chunks": 3}},
              f"mx-cancel-{tag}": {"runner_id": "plugin:builtin/echo/default",
                                   "runner_config": {"delay_s": 1, "chunks": 30}}}
    for agent_id, config in agents.items():
        assert (await client.put(f"/v1/agents/{agent_id}", json=config)).status_code == 200
    runs = []
    for agent_id, n in ((f"mx-ok-{tag}", 3), (f"mx-slow-{tag}", 2)):
        for i in range(n):
            async with client.stream("POST", "/v1/events", json={"agent_id": agent_id,
                                                                 "event": event(f"{conv}-{i}", "a b c")}) as r:
                runs.append((await ndjson_frames(r))[0]["run_id"])
    started = (await client.post("/v1/events", params={"wait": "false"},
                                 json={"agent_id": f"mx-cancel-{tag}", "event": event(conv, "x y z")})).json()
    await wait_status(client, started["run_id"], "running")  # cancelled mid-run, not before it started
    assert (await client.post(f"/v1/runs/{started['run_id']}/cancel")).status_code == 202
    await wait_status(client, started["run_id"], "cancelled")

    expected: dict[tuple[str, str, str], float] = {}
    for agent_id in agents:
        page = (await client.get("/v1/runs", params={"agent_id": agent_id, "limit": 100})).json()
        for run in page["items"]:
            key = (agent_id, run["status"], run["status_reason"] or "none")
            expected[key] = expected.get(key, 0) + 1
    assert sum(expected.values()) == 6 and {s for _, s, _ in expected} == {"completed", "timeout", "cancelled"}

    def check():
        finished = {k: v for k, v in scrape("ray_runnerhost_runs_finished_total", ("agent", "status", "code")).items()
                    if k[0] in agents}
        return finished == expected, {"scraped": finished, "ledger": expected}

    await asyncio.to_thread(wait_for, check, 20)


async def test_ctx_runtime_trace_id_continues_the_inbound_traceparent(client, conv):
    trace = uuid.uuid4().hex
    agent = f"ctx-{uuid.uuid4().hex[:6]}"
    assert (await client.put(f"/v1/agents/{agent}", json={"runner_id": "plugin:builtin/echo/default",
                                                          "runner_config": {"mode": "context"}})).status_code == 200
    async with client.stream("POST", "/v1/events", json={"agent_id": agent, "event": event(conv, "ctx")},
                             headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}) as r:
        frames = await ndjson_frames(r)
    ctx = json.loads(next(f for f in frames if f["type"] == "message.completed")["data"]["message"]["content"])
    assert ctx["runtime"]["trace_id"] == trace
