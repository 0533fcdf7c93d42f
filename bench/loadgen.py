"""The one HTTP load client of the bench, run as its own process (``python -m bench.loadgen SPEC_JSON``).

Modes (``spec["mode"]``):

* ``load`` — priming (untimed: one request, then a burst of ``concurrency``, so
  lazily grown pools come up), then a closed loop: ``concurrency`` coroutines on one ``httpx.AsyncClient``
  (that many keep-alive connections) POST ``path`` back to back for
  ``warmup_s + duration_s``; the warmup is discarded. The response is read line
  by line (NDJSON); a ``run.failed`` frame or a non-200 counts as an error. The
  no-op deployment and the real ingress are driven by exactly this code.
* ``ttff`` — sequential requests on an idle server: time to the first frame and
  to the terminal frame.
* ``steer`` — ``lanes`` concurrent lanes of ``trials`` each: message 1 to the
  steer agent; once its first delta arrives, message 2 into the same
  conversation; latency = message 2 sent → ``steered: <text 2>`` delta in
  message 1's stream (then message 1's run is cancelled, ending the trial).

Prints one JSON document on stdout as its last line (``load`` prints
``{"marker": "window_start" | "window_end"}`` lines before it, at the window's
edges). The client is a separate process from the Ray workers, but on the same
2-core machine: its CPU use competes with the server's.
"""
from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import httpx

from .stats import Sample, summarize_ms, window_summary

FAILED = '"type":"run.failed"'
HEADERS = {"content-type": "application/json", "accept": "application/x-ndjson"}


def event_body(agent_id: str, conversation_id: str, text: str) -> bytes:
    return json.dumps({"agent_id": agent_id, "event": {
        "event_type": "message.received", "conversation_id": conversation_id,
        "actor": {"actor_type": "user", "actor_id": "bench"}, "input": {"text": text}}},
        separators=(",", ":")).encode()


def _client(base_url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(60.0), headers=HEADERS)


def _marker(name: str) -> None:
    sys.stdout.write(json.dumps({"marker": name}) + "\n")
    sys.stdout.flush()


async def _request(client: httpx.AsyncClient, path: str, body: bytes) -> Sample:
    start = time.perf_counter()
    ttff = None
    frames = 0
    ok = True
    try:
        async with client.stream("POST", path, content=body) as response:
            if response.status_code != 200:
                await response.aread()
                ok = False
            else:
                async for line in response.aiter_lines():
                    if not line:
                        continue
                    if ttff is None:
                        ttff = time.perf_counter() - start
                    frames += 1
                    if FAILED in line:
                        ok = False
    except httpx.HTTPError:
        ok = False
    return Sample(start=start, end=time.perf_counter(), ok=ok, ttff=ttff, frames=frames)


async def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    concurrency = int(spec.get("concurrency", 32))
    warmup, duration = float(spec.get("warmup_s", 5)), float(spec.get("duration_s", 20))
    conversations = int(spec.get("conversations", 200))
    agent_id = spec.get("agent_id", "echo1")
    path = spec["path"]
    samples: list[Sample] = []
    counter = 0
    async with _client(spec["url"], concurrency) as client:
        # prime, untimed: one request (the runner's worker pool is created lazily on the first run; a
        # cold burst would race it up to workers_max), then one burst of `concurrency` requests so the
        # RunActor pool has grown to what this load needs (~0.4 s per actor on a quiet machine)
        first = await _request(client, path, event_body(agent_id, "bench-prime", "hello"))
        primed = [first, *await asyncio.gather(*(_request(client, path, event_body(agent_id, f"bench-prime-{i}", "hello"))
                                        for i in range(concurrency)))]
        begin = time.perf_counter()
        t0, t1 = begin + warmup, begin + warmup + duration

        async def worker() -> None:
            nonlocal counter
            while time.perf_counter() < t1:
                counter += 1
                body = event_body(agent_id, f"bench-conv-{counter % conversations}", "hello")
                samples.append(await _request(client, path, body))

        async def markers() -> None:  # the harness snapshots CPU (and starts profilers) on these lines
            await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
            _marker("window_start")
            await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
            _marker("window_end")

        await asyncio.gather(markers(), *(worker() for _ in range(concurrency)))
    summary = window_summary(samples, t0, t1)
    summary.update(concurrency=concurrency, warmup_s=warmup, duration_s=duration,
                   conversations=conversations, total_requests=len(samples),
                   warmup_requests=sum(1 for s in samples if s.end < t0),
                   prime_s=round(max(p.end for p in primed) - min(p.start for p in primed), 2),
                   prime_errors=sum(1 for p in primed if not p.ok))
    return summary


async def run_ttff(spec: dict[str, Any]) -> dict[str, Any]:
    count, warmup = int(spec.get("count", 40)), int(spec.get("warmup", 5))
    agent_id, path = spec.get("agent_id", "echo1"), spec["path"]
    samples: list[Sample] = []
    async with _client(spec["url"], 1) as client:
        for i in range(warmup + count):
            s = await _request(client, path, event_body(agent_id, f"bench-ttff-{i % 50}", "hello"))
            if i >= warmup:
                samples.append(s)
            await asyncio.sleep(0.02)
    ok = [s for s in samples if s.ok]
    return {"n": len(samples), "errors": len(samples) - len(ok),
            "ttff_ms": summarize_ms([s.ttff for s in ok if s.ttff is not None]),
            "latency_ms": summarize_ms([s.latency for s in ok])}


async def _steer_trial(client: httpx.AsyncClient, path: str, agent_id: str, lane: int, trial: int,
                       words: int) -> dict[str, Any]:
    tag = f"{lane}-{trial}-{random.randrange(1 << 30):x}"
    conversation = f"bench-steer-{tag}"
    marker = f"m2-{tag}"
    text1 = " ".join(f"w{i}" for i in range(words))
    result: dict[str, Any] = {"ok": False}
    sent2: float | None = None
    second: asyncio.Task | None = None

    async def send_second() -> dict[str, Any]:
        nonlocal sent2
        await asyncio.sleep(random.uniform(0.0, 0.1))
        sent2 = time.perf_counter()
        r = await client.post(path, content=event_body(agent_id, conversation, marker))
        post_s = time.perf_counter() - sent2
        first = json.loads(r.text.splitlines()[0]) if r.status_code == 200 and r.text else {}
        return {"status": r.status_code, "type": first.get("type"), "post_s": post_s}

    async with client.stream("POST", path, content=event_body(agent_id, conversation, text1)) as response:
        if response.status_code != 200:
            await response.aread()
            return {"ok": False, "error": f"HTTP {response.status_code}"}
        async for line in response.aiter_lines():
            if not line:
                continue
            frame = json.loads(line)
            kind = frame.get("type")
            if kind == "message.delta":
                content = ((frame.get("data") or {}).get("chunk") or {}).get("content") or ""
                if second is None:
                    second = asyncio.create_task(send_second())
                elif sent2 is not None and "latency_s" not in result and f"steered: {marker}" in content:
                    result["latency_s"] = time.perf_counter() - sent2
                    # seen: cancel the rest of message 1's run (40 × 50 ms) so trials stay short and
                    # finished runs do not pile up as background load
                    run_id = frame.get("run_id")
                    if run_id:
                        cancel = await client.post(f"/v1/runs/{run_id}/cancel", json={"reason": "bench"})
                        result["cancel_status"] = cancel.status_code
            if kind in ("run.completed", "run.failed"):
                result["terminal"] = kind
                break
    if second is not None:
        result.update(await second)
    result["ok"] = "latency_s" in result and result.get("type") == "event.steered"
    return result


async def run_steer(spec: dict[str, Any]) -> dict[str, Any]:
    lanes, trials = int(spec.get("lanes", 8)), int(spec.get("trials", 5))
    agent_id, path, words = spec.get("agent_id", "steer"), spec["path"], int(spec.get("words", 60))
    async with _client(spec["url"], lanes * 2) as client:
        await _steer_trial(client, path, agent_id, -1, 0, words)  # warmup

        async def lane(i: int) -> list[dict[str, Any]]:
            return [await _steer_trial(client, path, agent_id, i, t, words) for t in range(trials)]

        results = [r for rs in await asyncio.gather(*(lane(i) for i in range(lanes))) for r in rs]
    ok = [r for r in results if r["ok"]]
    return {"n": len(results), "failures": len(results) - len(ok), "lanes": lanes, "trials": trials,
            "latency_ms": summarize_ms([r["latency_s"] for r in ok]),
            "steer_post_ms": summarize_ms([r["post_s"] for r in ok if "post_s" in r]),
            "failure_examples": [r for r in results if not r["ok"]][:3]}


MODES = {"load": run_load, "ttff": run_ttff, "steer": run_steer}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    out = asyncio.run(MODES[spec["mode"]](spec))
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
