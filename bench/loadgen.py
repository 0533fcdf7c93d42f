"""The one HTTP load client of the bench, run as its own process (``python -m bench.loadgen SPEC_JSON``).

Targets (``spec["target"]``), driven by exactly the same loop:

* ``runnerhost`` — ``POST {path}`` (``/v1/events``) with a 1-chunk echo event, NDJSON back;
* ``langgraph`` — LangGraph's Agent Server: ``threads`` threads created up front (untimed),
  then ``POST /threads/{id}/runs/stream`` (SSE) of the peer's echo graph;
* ``noop`` — the no-op Serve deployment (one JSON line back).

A request counts as completed only when its stream *ended properly*:

* RunnerHost: HTTP 200 and the last frame is ``run.completed``; a last frame ``run.failed`` is
  a ``run_failed`` error, a stream that ends on anything else (or on a broken line) is
  ``no_terminal``, a broken connection is ``transport``;
* LangGraph (its SSE stream has no terminal event): HTTP 200, the response ends cleanly, no
  ``error`` event, and the final ``values`` event's last message is the assistant's
  ``echo: <text>`` for this request's text;
* no-op: HTTP 200 and a body that parses as the no-op's terminal frame.

Modes (``spec["mode"]``):

* ``closed`` — ``concurrency`` coroutines send back to back for ``warmup_s + duration_s``
  (priming first, untimed, unless ``prime`` is false: a cold server meets its first request
  in the window); optional ``/v1/health`` sampling during the window;
* ``open`` — arrivals at ``rate`` per second (Poisson or fixed, :mod:`bench.arrivals`), each
  sent at its scheduled time whatever is still in flight; latency counts from the scheduled
  time, so a client that falls behind shows up as latency;
* ``submit`` — ``count`` ``?wait=false`` submissions through ``concurrency`` connections
  (status, first frame type and answer time of each);
* ``hold`` — keep a rising number of long ``?wait=false`` runs active (counted in the ledger
  by status), one step more each time every accepted run is running, until a goal cap, the
  memory reserve or the time budget stops it; then drain.

Prints one JSON document on stdout as its last line (``{"marker": "window_start" |
"window_end"}`` lines before it, at the measured window's edges). The client is a separate
process from the servers but on the same machine: its CPU competes with theirs (reported).
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, Callable

import httpx

from . import procs
from .arrivals import offsets
from .stats import Sample, percentile, summarize_ms, window_summary

NDJSON_HEADERS = {"content-type": "application/json", "accept": "application/x-ndjson"}
LG_ASSISTANT = "echo"


# -- what "ended properly" means, per target (pure) ---------------------------------------------
class NdjsonJudge:
    """RunnerHost's NDJSON stream: completed only when the last frame is ``run.completed``."""

    def __init__(self) -> None:
        self.frames = 0
        self.last = ""

    def feed(self, line: str) -> None:
        if line.strip():
            self.frames += 1
            self.last = line

    def verdict(self, status: int, transport_error: bool = False) -> str | None:
        if status != 200:
            return f"http_{status}"
        if transport_error:
            return "transport"
        try:
            kind = json.loads(self.last).get("type") if self.last else None
        except (ValueError, AttributeError):
            kind = None
        if kind == "run.completed":
            return None
        if kind == "run.failed":
            return "run_failed"
        return "no_terminal"


class SseJudge:
    """LangGraph's SSE stream: completed when it ends cleanly with the echo reply as the final
    state's last message (and no ``error`` event)."""

    def __init__(self, expected_reply: str) -> None:
        self.expected = expected_reply
        self.frames = 0
        self.event = ""
        self.last_values: str | None = None
        self.errored = False

    def feed(self, line: str) -> None:
        if line.startswith("event:"):
            self.event = line[6:].strip()
            self.frames += 1
            if self.event == "error":
                self.errored = True
        elif line.startswith("data:") and self.event == "values":
            self.last_values = line[5:].strip()

    def verdict(self, status: int, transport_error: bool = False) -> str | None:
        if status != 200:
            return f"http_{status}"
        if transport_error:
            return "transport"
        if self.errored:
            return "run_failed"
        if self.last_values is None:
            return "no_terminal"
        try:
            messages = json.loads(self.last_values).get("messages") or []
            last = messages[-1]
        except (ValueError, AttributeError, IndexError, TypeError):
            return "no_terminal"
        if last.get("type") == "ai" and last.get("content") == self.expected:
            return None
        return "no_terminal"


class NoopJudge(NdjsonJudge):
    """The no-op deployment answers one JSON line shaped like a terminal frame."""


# -- request bodies ----------------------------------------------------------------------------
def event_body(agent_id: str, conversation_id: str, text: str) -> bytes:
    return json.dumps({"agent_id": agent_id, "event": {
        "event_type": "message.received", "conversation_id": conversation_id,
        "actor": {"actor_type": "user", "actor_id": "bench"}, "input": {"text": text}}},
        separators=(",", ":")).encode()


def langgraph_body(text: str) -> bytes:
    # enqueue: a thread that still has a run (the round robin wrapped around a straggler) queues
    # the next one instead of rejecting it, as RunnerHost's parallel agent would run it
    return json.dumps({"assistant_id": LG_ASSISTANT, "stream_mode": "values", "multitask_strategy": "enqueue",
                       "input": {"messages": [{"role": "user", "content": text}]}},
                      separators=(",", ":")).encode()


class Target:
    """How one request to the target under test is sent and judged."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.kind = spec.get("target", "runnerhost")
        if self.kind not in ("runnerhost", "langgraph", "noop"):
            raise ValueError(f"unknown target {self.kind!r}")
        self.path = spec.get("path", "/v1/events")
        self.agent_id = spec.get("agent_id", "echo1")
        self.conversations = int(spec.get("conversations", 200))
        self.threads: list[str] = []
        self._counter = 0

    async def prepare(self, client: httpx.AsyncClient) -> None:
        """LangGraph: the conversations are threads, created up front (untimed)."""
        if self.kind != "langgraph":
            return
        sem = asyncio.Semaphore(8)

        async def create() -> str:
            async with sem:
                r = await client.post("/threads", json={})
                r.raise_for_status()
                return r.json()["thread_id"]
        self.threads = list(await asyncio.gather(*(create() for _ in range(self.conversations))))

    def next_request(self) -> tuple[str, bytes, Any]:
        """(path, body, judge) of the next request; conversations round robin."""
        self._counter += 1
        n = self._counter
        text = f"hello {n}"
        if self.kind == "langgraph":
            thread = self.threads[n % len(self.threads)]
            return f"/threads/{thread}/runs/stream", langgraph_body(text), SseJudge(f"echo: {text}")
        judge = NoopJudge() if self.kind == "noop" else NdjsonJudge()
        return self.path, event_body(self.agent_id, f"bench-conv-{n % self.conversations}", text), judge

    async def send(self, client: httpx.AsyncClient, start: float | None = None) -> Sample:
        """One request; ``start`` is when it was due (default: now)."""
        path, body, judge = self.next_request()
        start = time.perf_counter() if start is None else start
        ttff = None
        status = 0
        broken = False
        try:
            async with client.stream("POST", path, content=body) as response:
                status = response.status_code
                if status != 200:
                    await response.aread()
                else:
                    async for line in response.aiter_lines():
                        if ttff is None and line:
                            ttff = time.perf_counter() - start
                        judge.feed(line)
        except httpx.HTTPError:
            broken = True
        end = time.perf_counter()
        error = "transport" if broken and status == 0 else judge.verdict(status, broken)
        return Sample(start=start, end=end, error=error, ttff=ttff, frames=judge.frames)


def _client(base_url: str, connections: int, timeout: float = 60.0) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(timeout),
                             headers=NDJSON_HEADERS)


def _marker(name: str) -> None:
    sys.stdout.write(json.dumps({"marker": name}) + "\n")
    sys.stdout.flush()


# -- /v1/health sampling -----------------------------------------------------------------------
def pool_point(health: dict[str, Any]) -> dict[str, Any]:
    """The RunActor pool (and worker pools) out of one ``GET /v1/health`` answer."""
    pools = health.get("pools") or []
    run_pool = next((p for p in pools if p.get("name") == "run slots"), pools[0] if pools else {})
    keep = ("size", "leased", "creating", "queue_length", "created", "peak_size")
    return {**{k: run_pool.get(k) for k in keep},
            "workers": [{k: w.get(k) for k in ("size", "leased", "creating", "created")}
                        for w in health.get("workers") or []]}


async def sample_health(client: httpx.AsyncClient, path: str, interval: float, t0: Callable[[], float],
                        out: list[dict[str, Any]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            r = await client.get(path)
            if r.status_code == 200:
                out.append({"t": round(time.perf_counter() - t0(), 2), **pool_point(r.json())})
        except httpx.HTTPError:
            pass
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass


# -- closed loop -------------------------------------------------------------------------------
async def run_closed(spec: dict[str, Any]) -> dict[str, Any]:
    concurrency = int(spec.get("concurrency", 32))
    warmup, duration = float(spec.get("warmup_s", 3)), float(spec.get("duration_s", 10))
    prime = bool(spec.get("prime", True))
    target = Target(spec)
    samples: list[Sample] = []
    health: list[dict[str, Any]] = []
    primed: list[Sample] = []
    async with _client(spec["url"], concurrency + 1) as client:
        await target.prepare(client)
        if prime:  # untimed: one request (lazily created pools), then one burst of `concurrency`
            primed.append(await target.send(client))
            primed += await asyncio.gather(*(target.send(client) for _ in range(concurrency)))
        begin = time.perf_counter()
        t0, t1 = begin + warmup, begin + warmup + duration
        stop = asyncio.Event()
        sampler = None
        if spec.get("health_path"):
            sampler = asyncio.create_task(sample_health(client, spec["health_path"],
                                                        float(spec.get("health_interval_s", 0.5)),
                                                        lambda: t0, health, stop))

        async def worker() -> None:
            while time.perf_counter() < t1:
                samples.append(await target.send(client))

        async def markers() -> None:  # the harness snapshots CPU (and starts profilers) on these lines
            await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
            _marker("window_start")
            await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
            _marker("window_end")

        if warmup <= 0:
            _marker("window_start")
            await asyncio.gather(*(worker() for _ in range(concurrency)), _end_marker_at(t1))
        else:
            await asyncio.gather(markers(), *(worker() for _ in range(concurrency)))
        stop.set()
        if sampler is not None:
            await sampler
    summary = window_summary(samples, t0, t1)
    summary.update(target=target.kind, concurrency=concurrency, warmup_s=warmup, duration_s=duration,
                   conversations=target.conversations, total_requests=len(samples),
                   primed=len(primed), prime_errors=sum(1 for p in primed if not p.ok))
    if not prime:
        summary.update(cold_start_summary(samples, t0, t1))
    if health:
        summary["pool_series"] = health
    return summary


def cold_start_summary(samples: list[Sample], t0: float, t1: float) -> dict[str, Any]:
    """A cold window, split at its first proper completion: how long the server took to answer at
    all, and its throughput from then on (the part a collapse would show in)."""
    ends = sorted(s.end for s in samples if s.ok and t0 <= s.end <= t1)
    if not ends:
        return {"first_completion_s": None, "steady_requests_per_s": 0.0}
    first = ends[0]
    rest = len(ends) - 1
    return {"first_completion_s": round(first - t0, 3),
            "steady_requests_per_s": round(rest / (t1 - first), 2) if t1 - first > 0.5 else None}


async def _end_marker_at(t1: float) -> None:
    await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
    _marker("window_end")


# -- open loop ---------------------------------------------------------------------------------
def open_loop_summary(samples: list[Sample], lags: list[float], t0: float, t1: float,
                      rate: float) -> dict[str, Any]:
    """Latency and outcome of the arrivals *scheduled* in ``[t0, t1]`` (each waited for)."""
    due = [s for s in samples if t0 <= s.start <= t1]
    ok = [s for s in due if s.ok]
    errors: dict[str, int] = {}
    for s in due:
        if not s.ok:
            errors[s.error] = errors.get(s.error, 0) + 1
    span = t1 - t0
    return {"offered_rate": round(rate, 2), "arrivals": len(due), "arrivals_per_s": round(len(due) / span, 2),
            "completed": len(ok), "errors": len(due) - len(ok), "error_kinds": errors,
            "completed_per_s": round(len(ok) / span, 2), "latency_ms": summarize_ms([s.latency for s in ok]),
            "send_lag_ms": {"p50": _ms(percentile(lags, 50)), "p99": _ms(percentile(lags, 99)),
                            "max": _ms(max(lags) if lags else None)},
            "window_s": round(span, 3)}


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


async def run_open(spec: dict[str, Any]) -> dict[str, Any]:
    rate = float(spec["rate"])
    warmup, duration = float(spec.get("warmup_s", 2)), float(spec.get("duration_s", 10))
    schedule = offsets(spec.get("arrivals", "poisson"), rate, warmup + duration, spec.get("seed"))
    target = Target(spec)
    samples: list[Sample] = []
    lags: list[float] = []
    in_flight = peak_in_flight = 0
    async with _client(spec["url"], int(spec.get("max_connections", 512))) as client:
        await target.prepare(client)
        begin = time.perf_counter() + 0.05
        t0, t1 = begin + warmup, begin + warmup + duration

        async def one(due: float) -> None:
            nonlocal in_flight, peak_in_flight
            in_flight += 1
            peak_in_flight = max(peak_in_flight, in_flight)
            try:
                if due >= t0:
                    lags.append(time.perf_counter() - due)
                samples.append(await target.send(client, start=due))
            finally:
                in_flight -= 1

        async def markers() -> None:
            await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
            _marker("window_start")
            await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
            _marker("window_end")

        marker_task = asyncio.create_task(markers())
        tasks = []
        for offset in schedule:
            due = begin + offset
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await marker_task
        await asyncio.gather(*tasks)
    out = open_loop_summary(samples, lags, t0, t1, rate)
    out.update(target=target.kind, arrivals_process=spec.get("arrivals", "poisson"), warmup_s=warmup,
               duration_s=duration, peak_in_flight=peak_in_flight, scheduled=len(schedule))
    return out


# -- ?wait=false submissions -------------------------------------------------------------------
async def _submit_one(client: httpx.AsyncClient, path: str, agent_id: str, conversation: str,
                      text: str) -> tuple[int, str | None, float]:
    began = time.perf_counter()
    try:
        r = await client.post(path, params={"wait": "false"}, content=event_body(agent_id, conversation, text))
        kind = r.json().get("type") if r.status_code == 202 else None
        return r.status_code, kind, time.perf_counter() - began
    except (httpx.HTTPError, ValueError):
        return 0, None, time.perf_counter() - began


def submissions_summary(answers: list[tuple[int, str | None, float]]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for status, kind, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if kind:
            kinds[kind] = kinds.get(kind, 0) + 1
    return {"submitted": len(answers), "accepted": statuses.get("202", 0),
            "refused": len(answers) - statuses.get("202", 0), "statuses": statuses, "first_frames": kinds,
            "answer_ms": summarize_ms([lat for _, _, lat in answers])}


async def run_submit(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("rate"):
        return await run_submit_open(spec)
    count, concurrency = int(spec["count"]), int(spec.get("concurrency", 64))
    path, agent_id, prefix = spec.get("path", "/v1/events"), spec["agent_id"], spec.get("prefix", "cap")
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    answers: list[tuple[int, str | None, float]] = []
    async with _client(spec["url"], concurrency, timeout=30.0) as client:
        async def submitter() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                answers.append(await _submit_one(client, path, agent_id, f"{prefix}-conv-{i}", f"hold {i}"))
        began = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    out = submissions_summary(answers)
    out.update(concurrency=concurrency, submit_s=round(elapsed, 2))
    return out


async def run_submit_open(spec: dict[str, Any]) -> dict[str, Any]:
    """``count`` ``?wait=false`` submissions arriving at ``rate`` per second (open loop), each
    answer timed from its scheduled arrival: the intake's answer time at a stated load, where a
    closed loop would only show connections ÷ intake throughput."""
    count, rate = int(spec["count"]), float(spec["rate"])
    path, agent_id, prefix = spec.get("path", "/v1/events"), spec["agent_id"], spec.get("prefix", "cap")
    kind = spec.get("arrivals", "poisson")
    schedule = offsets(kind, rate, count / rate * 2 + 10, spec.get("seed"))[:count]
    answers: list[tuple[int, str | None, float]] = []
    lags: list[float] = []
    async with _client(spec["url"], int(spec.get("max_connections", 512)), timeout=30.0) as client:
        async def one(i: int, due: float) -> None:
            lags.append(time.perf_counter() - due)
            status, first, _ = await _submit_one(client, path, agent_id, f"{prefix}-conv-{i}", f"hold {i}")
            answers.append((status, first, time.perf_counter() - due))
        began = time.perf_counter() + 0.05
        tasks = []
        for i, offset in enumerate(schedule):
            delay = began + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, began + offset)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    out = submissions_summary(answers)
    out.update(rate=rate, arrivals_process=kind, submit_s=round(elapsed, 2),
               client_send_lag_ms=summarize_ms(lags))
    return out


# -- hold: as many long runs active at once as the pool and the memory allow --------------------
async def ledger_counts(conn: Any, agent_id: str) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM agent_run WHERE agent_id = $1 GROUP BY status",
                            agent_id)
    return {r["status"]: int(r["n"]) for r in rows}


async def run_hold(spec: dict[str, Any]) -> dict[str, Any]:
    import asyncpg
    step, cap = int(spec["step"]), int(spec["max_target"])
    budget, interval = float(spec["budget_s"]), float(spec.get("interval_s", 1.0))
    reserve = int(spec["reserve_bytes"])
    drain_s = float(spec.get("drain_timeout_s", 120))
    path, agent_id = spec.get("path", "/v1/events"), spec["agent_id"]
    conn = await asyncpg.connect(spec["dsn"])
    answers: list[tuple[int, str | None, float]] = []
    series: list[dict[str, Any]] = []
    target, submitted, refused = step, 0, 0
    stop_reason: str | None = None
    mem0 = procs.mem_available_bytes() or 0
    began = time.perf_counter()
    peak = {"running": 0, "at": None, "target": 0}
    try:
        async with _client(spec["url"], 64, timeout=30.0) as client:
            while True:
                counts = await ledger_counts(conn, agent_id)
                running, queued = counts.get("running", 0), counts.get("created", 0)
                finished = sum(v for k, v in counts.items() if k not in ("running", "created"))
                mem = procs.mem_available_bytes() or 0
                now = time.perf_counter() - began
                series.append({"t": round(now, 1), "wall": round(time.time(), 2), "target": target,
                               "running": running, "queued": queued, "finished": finished,
                               "mem_available_gb": round(mem / 2**30, 2)})
                if running > peak["running"]:
                    peak = {"running": running, "at": round(time.time(), 2), "target": target}
                if stop_reason is not None:
                    break
                caught_up = running >= target and queued == 0
                per_run = (mem0 - mem) / running if running else 0
                if caught_up and target >= cap:
                    stop_reason = f"goal cap {cap} reached"
                elif caught_up and mem - reserve < 1.5 * step * per_run:
                    stop_reason = "memory reserve: one more step would leave less than the reserve"
                elif mem < reserve:
                    stop_reason = "memory reserve reached"
                elif now > budget:
                    stop_reason = "time budget"
                elif caught_up:
                    target = min(cap, target + step)
                if stop_reason is None:  # keep `target` runs active: replace the finished ones
                    active = submitted - refused - finished
                    missing = max(0, target - active)
                    if missing:
                        batch = await asyncio.gather(*(_submit_one(
                            client, path, agent_id, f"hold-conv-{submitted + i}", f"hold {submitted + i}")
                            for i in range(missing)))
                        submitted += missing
                        refused += sum(1 for status, _, _ in batch if status != 202)
                        answers.extend(batch)
                await asyncio.sleep(interval)
        # drain: every accepted run must end, and end completed
        deadline = time.perf_counter() + drain_s
        while True:
            counts = await ledger_counts(conn, agent_id)
            if counts.get("running", 0) + counts.get("created", 0) == 0 or time.perf_counter() > deadline:
                break
            await asyncio.sleep(2)
    finally:
        await conn.close()
    out = submissions_summary(answers)
    out.update(peak_running=peak["running"], peak_at=peak["at"], peak_target=peak["target"],
               stop_reason=stop_reason, final_counts=counts, series=series,
               ramp_s=round(series[-1]["t"], 1) if series else None,
               mem_available_start_gb=round(mem0 / 2**30, 2), reserve_gb=round(reserve / 2**30, 2))
    return out


MODES = {"closed": run_closed, "open": run_open, "submit": run_submit, "hold": run_hold}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    out = asyncio.run(MODES[spec["mode"]](spec))
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
