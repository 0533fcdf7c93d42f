"""Runs over real HTTP against the Serve app: NDJSON, SSE, background + join, cancel, reject."""
from __future__ import annotations

import json
from typing import Any

import httpx

from tests.waiting import wait_until

TERMINAL = {"run.completed", "run.failed"}


def event(conv: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"event_type": "message.received", "conversation_id": conv, "input": {"text": text}, **extra}


async def ndjson_frames(response: httpx.Response) -> list[dict[str, Any]]:
    frames = []
    async for line in response.aiter_lines():
        if line.strip():
            frames.append(json.loads(line))
    return frames


async def sse_frames(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    out, name, data = [], None, []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if data:
                out.append((name, json.loads("\n".join(data))))
            name, data = None, []
        elif line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data.append(line[len("data: "):])
    return out


def check_run_frames(frames: list[dict[str, Any]], terminal: str = "run.completed") -> str:
    assert frames, "no frames"
    run_id = frames[0]["run_id"]
    assert frames[0]["type"] == "run.started"
    assert all(f["run_id"] == run_id for f in frames)
    kinds = [f["type"] for f in frames]
    assert sum(k in TERMINAL for k in kinds) == 1 and kinds[-1] == terminal, kinds
    sequences = [f["sequence"] for f in frames]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences), sequences
    return run_id


async def wait_status(client: httpx.AsyncClient, run_id: str, want: str, timeout: float = 20) -> dict:
    """The run's ledger row once its status is ``want``; fails (showing the last row) if it never is."""
    last: dict = {}

    async def reached() -> dict | None:
        nonlocal last
        last = (await client.get(f"/v1/runs/{run_id}")).json()
        return last if last.get("status") == want else None
    return await wait_until(reached, timeout=timeout, interval=0.1,
                            what=lambda: f"run {run_id} to be {want}: last {last}")


async def test_echo_over_ndjson_then_ledger_and_transcript(client: httpx.AsyncClient, conv: str):
    async with client.stream("POST", "/v1/events",
                             json={"agent_id": "echo", "event": event(conv, "hello over ndjson")}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        frames = await ndjson_frames(r)
    run_id = check_run_frames(frames)
    deltas = "".join(f["data"]["chunk"]["content"] for f in frames if f["type"] == "message.delta")
    assert deltas == "echo: hello over ndjson"
    completed = [f for f in frames if f["type"] == "message.completed"]
    assert len(completed) == 1 and completed[0]["data"]["message"]["content"] == "echo: hello over ndjson"

    run = await wait_status(client, run_id, "completed")
    assert run["status"] == "completed" and run["agent_id"] == "echo" and run["conversation_id"] == conv

    ledger = (await client.get(f"/v1/runs/{run_id}/events", params={"limit": 100})).json()
    assert [e["type"] for e in ledger["items"]] == [f["type"] for f in frames]
    assert [e["sequence"] for e in ledger["items"]] == [f["sequence"] for f in frames]

    page = (await client.get(f"/v1/conversations/{conv}/transcript")).json()
    assert [(i["role"], i["content"]) for i in page["items"]] == [
        ("user", "hello over ndjson"), ("assistant", "echo: hello over ndjson")]

    runs = (await client.get("/v1/runs", params={"conversation_id": conv, "status": "completed"})).json()
    assert [r["run_id"] for r in runs["items"]] == [run_id]
    events = (await client.get(f"/v1/conversations/{conv}/events")).json()
    assert any(e["event_type"] == "message.received" for e in events["items"])


async def test_echo_over_sse(client: httpx.AsyncClient, conv: str):
    body = {"agent_id": "echo", "event": event(conv, "hello over sse")}
    async with client.stream("POST", "/v1/events", json=body, headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = await sse_frames(r)
    assert all(name == frame["type"] for name, frame in events)
    run_id = check_run_frames([frame for _, frame in events])
    run = await wait_status(client, run_id, "completed")
    assert run["status"] == "completed"


async def test_background_run_then_join(client: httpx.AsyncClient, conv: str):
    r = await client.post("/v1/events", params={"wait": "false"},
                          json={"agent_id": "slow", "event": event(conv, "one two three four five six")})
    assert r.status_code == 202, r.text
    accepted = r.json()
    run_id = accepted["run_id"]
    assert accepted["type"] == "run.started"
    async with client.stream("GET", f"/v1/runs/{run_id}/stream") as s:
        assert s.status_code == 200
        frames = await ndjson_frames(s)
    kinds = [f["type"] for f in frames]
    assert kinds[-1] == "run.completed" and sum(k in TERMINAL for k in kinds) == 1, kinds
    assert kinds[0] == "run.started" and "message.delta" in kinds  # a joiner gets the whole stream
    assert [f["sequence"] for f in frames] == list(range(len(frames)))
    assert all(f["run_id"] == run_id for f in frames)
    # joining a finished run replays its ledger up to the terminal frame
    async with client.stream("GET", f"/v1/runs/{run_id}/stream",
                             headers={"Accept": "text/event-stream"}) as s:
        replay = [f for _, f in await sse_frames(s)]
    assert replay[0]["type"] == "run.started" and replay[-1]["type"] == "run.completed"


async def test_cancel_over_http(client: httpx.AsyncClient, conv: str):
    r = await client.post("/v1/events", params={"wait": "false"},
                          json={"agent_id": "long", "event": event(conv, "a b c")})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    c = await client.post(f"/v1/runs/{run_id}/cancel", json={"reason": "test says stop"})
    assert c.status_code == 202, c.text
    assert c.json() == {"run_id": run_id, "cancel_requested": True}
    run = await wait_status(client, run_id, "cancelled")
    assert run["status"] == "cancelled", run
    frames = (await client.get(f"/v1/runs/{run_id}/events", params={"limit": 100})).json()["items"]
    assert frames[-1]["type"] == "run.failed" and frames[-1]["data"]["code"] == "run.cancelled"
    again = await client.post(f"/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "conflict"


async def test_reject_strategy_is_409(client: httpx.AsyncClient, conv: str):
    first = await client.post("/v1/events", params={"wait": "false"},
                              json={"agent_id": "reject", "event": event(conv, "x y z")})
    assert first.status_code == 202
    second = await client.post("/v1/events", json={"agent_id": "reject", "event": event(conv, "again")})
    assert second.status_code == 409
    body = second.json()
    assert body["code"] == "conflict" and set(body) == {"code", "message", "retryable", "details"}
    assert body["details"]["active_run_ids"] == [first.json()["run_id"]]
    await client.post(f"/v1/runs/{first.json()['run_id']}/cancel")


async def test_put_agent_takes_effect_for_next_event(client: httpx.AsyncClient, conv: str):
    agent = {"runner_id": "plugin:builtin/echo/default", "runner_config": {"chunks": 1}}
    r = await client.put("/v1/agents/http-made", json=agent)
    assert r.status_code == 200, r.text
    assert r.json()["agent_id"] == "http-made" and r.json()["version"] >= 1
    listed = {a["agent_id"] for a in (await client.get("/v1/agents")).json()}
    assert {"echo", "http-made"} <= listed
    async with client.stream("POST", "/v1/events",
                             json={"agent_id": "http-made", "event": event(conv, "one shot reply")}) as s:
        frames = await ndjson_frames(s)
    deltas = [f for f in frames if f["type"] == "message.delta"]
    assert len(deltas) == 1 and frames[-1]["type"] == "run.completed"
    runners = (await client.get("/v1/runners")).json()
    assert "plugin:builtin/echo/default" in {d["id"] for d in runners}


async def test_client_disconnect_does_not_cut_the_run_short(client: httpx.AsyncClient, conv: str):
    async with client.stream("POST", "/v1/events",
                             json={"agent_id": "slow", "event": event(conv, "keep going without me")}) as r:
        async for line in r.aiter_lines():
            run_id = json.loads(line)["run_id"]
            break  # hang up after the first frame
    run = await wait_status(client, run_id, "completed")
    frames = (await client.get(f"/v1/runs/{run_id}/events", params={"limit": 100})).json()["items"]
    assert run["status"] == "completed", (run, frames)
    page = (await client.get(f"/v1/conversations/{conv}/transcript")).json()
    assert page["items"][-1]["content"] == "echo: keep going without me"


async def test_a_re_sent_event_id_joins_its_run_and_another_body_under_it_is_409(client: httpx.AsyncClient,
                                                                                 conv: str):
    sent = event(conv, "only once please", event_id=f"evt-idem-{conv}")
    async with client.stream("POST", "/v1/events", json={"agent_id": "slow", "event": sent}) as first:
        assert first.status_code == 200 and "X-RunnerHost-Duplicate" not in first.headers
        original = await ndjson_frames(first)
    async with client.stream("POST", "/v1/events", json={"agent_id": "slow", "event": sent}) as again:
        assert again.status_code == 200 and again.headers["X-RunnerHost-Duplicate"] == "true"
        replay = await ndjson_frames(again)
    assert replay[0]["type"] == "run.duplicate" and replay[0]["run_id"] == original[0]["run_id"]
    assert replay[1:] == original  # the same run, from its first frame: no second run
    r = await client.post("/v1/events", params={"wait": "false"}, json={"agent_id": "slow", "event": sent})
    assert r.status_code == 202 and r.json() == {"run_id": original[0]["run_id"], "type": "run.duplicate"}
    changed = {**sent, "input": {"text": "something else"}}
    r = await client.post("/v1/events", json={"agent_id": "slow", "event": changed})
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    runs = (await client.get("/v1/runs", params={"conversation_id": conv})).json()
    assert [run["event_id"] for run in runs["items"]] == [sent["event_id"]]
    transcript = (await client.get(f"/v1/conversations/{conv}/transcript")).json()
    assert [i["role"] for i in transcript["items"]] == ["user", "assistant"]  # one user message, one reply
