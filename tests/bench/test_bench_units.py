"""The bench's parts without Ray: statistics, the terminal-frame rule (pure and over real HTTP),
the open-loop arrival process and scheduler, the PSS reader against a real process, and the
report — every headline and verdict computed from the section data, none typed in.

The whole bench is ``make bench``; ``tests/bench/test_bench_harness.py`` runs a quick one.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from bench import arrivals, procs
from bench.__main__ import is_partial, parse_args
from bench.flame import layer_shares, markdown_table, parse, process_of
from bench.loadgen import NdjsonJudge, SseJudge, Target, cold_start_summary, run_closed, run_open, run_submit
from bench.render import README_BEGIN, README_END, markdown, update_readme, write_plot
from bench.report import assemble_results, evaluate_targets, write_json
from bench.sections.writes import call_frames, plan_calls, raw_statement
from bench.stats import Sample, percentile, spread, summarize_ms, window_summary

from tests.bench.fake_servers import FakeTargets


# -- statistics -----------------------------------------------------------------------------------
def test_percentile_interpolates_between_ranks():
    assert percentile([], 50) is None
    assert percentile([7], 99) == 7
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(range(1, 101), 99) == pytest.approx(99.01)
    with pytest.raises(ValueError):
        percentile([1], 101)
    s = summarize_ms([0.010, 0.020, 0.030])
    assert s["n"] == 3 and s["p50"] == 20.0 and s["max"] == 30.0


def test_window_counts_only_proper_completions_and_errors_by_kind():
    samples = [Sample(0.0, 0.5),                                   # warmup: ignored
               Sample(0.9, 1.1, frames=4),                         # ends in the window: counted
               Sample(1.2, 1.4, frames=4),
               Sample(1.5, 1.9, error="no_terminal", frames=2),    # ended without a terminal frame
               Sample(1.6, 2.0, error="run_failed", frames=4),
               Sample(2.5, 3.5, frames=4)]                         # ends after the window
    w = window_summary(samples, 1.0, 3.0)
    assert w["completed"] == 2 and w["errors"] == 2
    assert w["error_kinds"] == {"no_terminal": 1, "run_failed": 1}
    assert w["requests_per_s"] == 1.0 and w["frames_per_s"] == 4.0
    assert w["latency_ms"]["n"] == 2  # proper ones that started inside the window


def test_a_cold_window_is_split_at_its_first_answer():
    samples = [Sample(0.0, 3.0), Sample(0.0, 3.5), Sample(0.1, 4.0, error="no_terminal"), Sample(3.0, 5.0)]
    out = cold_start_summary(samples, 0.0, 6.0)
    assert out == {"first_completion_s": 3.0, "steady_requests_per_s": round(2 / 3.0, 2)}
    assert cold_start_summary([Sample(0.0, 9.0)], 0.0, 6.0)["first_completion_s"] is None


def test_spread_is_median_min_max_of_what_was_measured():
    s = spread([3.0, None, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert spread([None, None]) is None


# -- the terminal-frame rule ---------------------------------------------------------------------------
def _ndjson(*types: str) -> NdjsonJudge:
    judge = NdjsonJudge()
    for i, kind in enumerate(types):
        judge.feed(json.dumps({"run_id": "r", "type": kind, "sequence": i, "data": {}}))
    return judge


def test_ndjson_stream_counts_only_when_its_last_frame_is_run_completed():
    assert _ndjson("run.started", "message.delta", "message.completed", "run.completed").verdict(200) is None
    assert _ndjson("run.started", "message.delta", "run.failed").verdict(200) == "run_failed"
    assert _ndjson("run.started", "message.delta").verdict(200) == "no_terminal"
    assert _ndjson().verdict(200) == "no_terminal"
    # a terminal frame that is not the last one does not end the stream properly
    assert _ndjson("run.started", "run.completed", "message.delta").verdict(200) == "no_terminal"
    cut = _ndjson("run.started")
    cut.feed('{"run_id": "r", "type": "run.comp')
    assert cut.verdict(200) == "no_terminal"
    assert _ndjson("run.started", "run.completed").verdict(200, transport_error=True) == "transport"
    assert _ndjson().verdict(503) == "http_503"


def test_sse_stream_counts_only_with_the_echo_reply_as_final_state():
    def judge(*events: tuple[str, dict]) -> SseJudge:
        j = SseJudge("echo: hi")
        for name, data in events:
            j.feed(f"event: {name}")
            j.feed(f"data: {json.dumps(data)}")
            j.feed("")
        return j
    human = {"type": "human", "content": "hi"}
    ok = {"messages": [human, {"type": "ai", "content": "echo: hi"}]}
    assert judge(("metadata", {}), ("values", {"messages": [human]}), ("values", ok)).verdict(200) is None
    assert judge(("values", {"messages": [human]})).verdict(200) == "no_terminal"
    assert judge(("values", ok), ("error", {"error": "x"})).verdict(200) == "run_failed"
    wrong = {"messages": [human, {"type": "ai", "content": "echo: someone else"}]}
    assert judge(("values", wrong)).verdict(200) == "no_terminal"
    assert judge(("values", ok)).verdict(200, transport_error=True) == "transport"
    assert judge().verdict(409) == "http_409"


@pytest.fixture(scope="module")
def fake():
    with FakeTargets() as server:
        yield server


@pytest.mark.parametrize("behaviour, expected", [
    ("ok", None), ("failed", "run_failed"), ("noterm", "no_terminal"), ("badline", "no_terminal"),
    ("cut", "transport"), ("http500", "http_500")])
async def test_the_client_applies_the_rule_to_real_http_streams(fake, behaviour, expected):
    import httpx
    target = Target({"target": "runnerhost", "path": f"/{behaviour}/v1/events", "conversations": 3})
    async with httpx.AsyncClient(base_url=fake.url, timeout=10) as client:
        sample = await target.send(client)
    assert sample.error == expected
    assert sample.ok is (expected is None)


async def test_closed_loop_against_a_langgraph_like_server_counts_errors(fake):
    base = {"target": "langgraph", "url": fake.url, "concurrency": 2, "warmup_s": 0.2, "duration_s": 0.6,
            "conversations": 4}
    fake.langgraph_mode = "ok"
    good = await run_closed(base)
    assert good["completed"] > 0 and good["errors"] == 0
    for mode, kind in (("error", "run_failed"), ("wrong", "no_terminal"), ("novalues", "no_terminal")):
        fake.langgraph_mode = mode
        bad = await run_closed(base)
        assert bad["completed"] == 0 and bad["errors"] > 0 and set(bad["error_kinds"]) == {kind}, (mode, bad)
    fake.langgraph_mode = "ok"


# -- the open loop -------------------------------------------------------------------------------------
def test_poisson_arrivals_have_the_rate_and_the_burstiness_of_a_poisson_process():
    rate, duration = 50.0, 400.0
    times = arrivals.poisson_offsets(rate, duration, seed=7)
    gaps = [b - a for a, b in zip(times, times[1:])]
    n_expected = rate * duration
    assert abs(len(times) - n_expected) < 4 * n_expected ** 0.5        # count ~ Poisson(rate × duration)
    assert statistics.mean(gaps) == pytest.approx(1 / rate, rel=0.05)
    assert statistics.pstdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, abs=0.05)  # exponential: CV 1
    assert all(0 <= t < duration for t in times) and times == sorted(times)
    assert arrivals.poisson_offsets(rate, 5, seed=1) == arrivals.poisson_offsets(rate, 5, seed=1)
    assert arrivals.poisson_offsets(rate, 5, seed=1) != arrivals.poisson_offsets(rate, 5, seed=2)


def test_fixed_arrivals_are_evenly_spaced():
    times = arrivals.fixed_offsets(4.0, 2.0)
    assert times == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    with pytest.raises(ValueError):
        arrivals.offsets("poisson", 0, 1)
    with pytest.raises(ValueError):
        arrivals.offsets("bursty", 1, 1)


async def test_open_loop_sends_on_schedule_and_times_from_the_schedule(fake):
    fake.arrivals.clear()
    spec = {"target": "runnerhost", "url": fake.url, "path": "/slow/v1/events", "rate": 20.0, "arrivals": "fixed",
            "warmup_s": 0.2, "duration_s": 1.0, "conversations": 5}
    out = await run_open(spec)
    sent = sorted(fake.arrivals)
    assert len(sent) == out["scheduled"] == 24            # 1.2 s × 20/s, each sent whatever was in flight
    gaps = [b - a for a, b in zip(sent, sent[1:])]
    assert statistics.median(gaps) == pytest.approx(0.05, abs=0.015)
    assert out["arrivals"] == 20 and out["completed"] == 20 and out["errors"] == 0
    assert out["latency_ms"]["p50"] >= 50                 # the server's 50 ms, counted from the due time
    assert out["peak_in_flight"] >= 1


async def test_open_loop_submissions_are_timed_from_their_scheduled_arrival(fake):
    fake.arrivals.clear()
    spec = {"url": fake.url, "path": "/accept/v1/events", "agent_id": "a", "count": 15, "rate": 30.0,
            "arrivals": "fixed", "prefix": "t"}
    out = await run_submit(spec)
    sent = sorted(fake.arrivals)
    assert len(sent) == out["submitted"] == out["accepted"] == 15 and out["refused"] == 0
    assert statistics.median([b - a for a, b in zip(sent, sent[1:])]) == pytest.approx(1 / 30, abs=0.012)
    assert out["first_frames"] == {"run.started": 15} and out["rate"] == 30.0
    assert out["answer_ms"]["p50"] >= 30                  # the server's 30 ms, counted from the due time
    refused = await run_submit({**spec, "path": "/http500/v1/events", "count": 3})
    assert refused["accepted"] == 0 and refused["refused"] == 3 and refused["statuses"] == {"500": 3}


# -- memory ----------------------------------------------------------------------------------------------
def _child(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_pss_reader_sees_what_a_real_process_holds():
    hold = "import sys, time\n{}\nprint('ready', flush=True)\ntime.sleep(60)"
    base = _child(hold.format("b = None"))
    big = _child(hold.format("b = bytearray(b'\\x01') * (96 * 1024 * 1024)"))  # every page written
    try:
        base_mem, big_mem = procs.memory_kb(base.pid), procs.memory_kb(big.pid)
        assert base_mem is not None and big_mem is not None
        grown_mb = (big_mem["pss"] - base_mem["pss"]) / 1024
        assert 86 <= grown_mb <= 110, grown_mb
        assert big_mem["pss"] <= big_mem["rss"]  # shared pages count in part only
        total, count = procs.pss_total([base.pid, big.pid])
        assert count == 2 and total == (base_mem["pss"] + big_mem["pss"]) * 1024
    finally:
        for p in (base, big):
            p.kill()
            p.wait()
    assert procs.memory_kb(big.pid) is None and procs.pss_bytes(big.pid) is None
    assert procs.mem_available_bytes() and procs.mem_total_bytes() >= procs.mem_available_bytes()


def test_process_tree_and_cpu_of_a_real_child():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t < 20: pass"])
    try:
        assert busy.pid in procs.descendants(__import__("os").getpid())
        assert procs.tree(busy.pid) == [busy.pid]
        before = procs.snapshot([busy.pid])
        deadline = time.monotonic() + 15  # a busy shared machine may lend it little CPU: wait, don't time it
        while procs.cpu_spent(before, procs.snapshot([busy.pid])) < 0.1:
            assert time.monotonic() < deadline, "the busy child never got 0.1 s of CPU"
            time.sleep(0.1)
        assert procs.cpu_spent(before, procs.snapshot([busy.pid]), [12345678]) == 0  # only the pids asked for
    finally:
        busy.kill()
        busy.wait()
    assert procs.tree(busy.pid) == [] and procs.cpu_seconds(busy.pid) is None


# -- the report: computed from the data -----------------------------------------------------------------
def _closed(rps: float, cpu_ms: float, errors: int = 0, p99: float = 100.0) -> dict:
    return {"requests_per_s": rps, "completed": int(rps * 10), "errors": errors,
            "latency_ms": {"p50": p99 / 2, "p99": p99},
            "cpu": {"server_ms_per_request": cpu_ms, "client_ms_per_request": 2.0, "foreign_cores_busy": 0.1,
                    "ms_per_request_by_process": {"RunActor": cpu_ms / 2, "StorageActor": cpu_ms / 2}}}


def _open(fraction: float, p99: float) -> dict:
    return {"offered_rate": 10 * fraction, "completed_per_s": 10 * fraction, "arrivals": 100, "errors": 0,
            "latency_ms": {"p50": p99 / 3, "p99": p99}, "send_lag_ms": {"p99": 1.0}}


def _sections(lg: list[float], sq: list[float], pg: list[float], cpu: list[float], p99_80: float = 200.0,
              sweep_rps: tuple[float, ...] = (20, 22, 23, 23), pool_peak: int = 8) -> dict:
    reps = []
    for i, (l, s, p, c) in enumerate(zip(lg, sq, pg, cpu)):
        rep = {"rep": i + 1, "langgraph": {"4": _closed(l / 10, 6.0), "32": _closed(l, 6.5)}}
        for name, rps in (("sqlite", s), ("postgres", p)):
            rep[name] = {"closed": {"4": _closed(rps / 2, c + 5), "32": _closed(rps, c)}, "max_rate": rps,
                         "open": {"0.5": _open(0.5, p99_80 / 2), "0.8": _open(0.8, p99_80)}}
        reps.append(rep)
    sweep_points = [{"workers": 1, "concurrency": c, **{phase: {
        "requests_per_s": r, "steady_requests_per_s": r, "latency_ms": {"p50": 10, "p99": 20}, "errors": 0,
        "pool_series": [{"size": 8, "created": 8}, {"size": pool_peak, "created": pool_peak}]}
        for phase in ("cold", "warm")}} for c, r in zip((4, 8, 16, 32), sweep_rps)]
    writes = {"headline_frames_per_call": 4, "variants": [
        {"frames_per_call": 4, "rep": r, "vs_raw": v, "actor": {"rows_per_s": v * 1000, "rows_per_commit": 400,
                                                                 "readback_matches": True, "calls_per_s": 100},
         "raw": {"rows_per_s": 1000}} for r, v in enumerate((0.6, 0.8, 0.75), 1)]}
    capacity = {"one_per_actor": {"goal": 150, "peak_running": 160, "refused": 0, "accepted": 300,
                                  "stop_reason": "memory reserve", "all_completed": True,
                                  "pss_per_run_actor_mb": 70.0, "projected_ceiling": 190, "reserve_gb": 6.0},
                "many_per_actor": {"runs": 1000, "runs_per_actor": 32, "run_actors": 32, "peak_running": 1000,
                                   "submit": {"refused": 0, "accepted": 1000, "answer_ms": {"p99": 400.0}},
                                   "runnerhost_pss_gb": 4.2, "pss_per_run_actor_mb": 120.0, "all_completed": True}}
    return {"compare": {"reps": reps, "noop": None}, "writes": writes,
            "sweep": {"points": sweep_points, "run_actors_min": 8}, "capacity": capacity}


def test_headlines_are_medians_of_the_repetitions():
    r = assemble_results(_sections(lg=[100, 150, 120], sq=[60, 70, 30], pg=[50, 90, 40], cpu=[18, 25, 21]),
                         {"config": {"headline_concurrency": 32}})
    assert r["cpu_per_run_ms"] == {"sqlite": 21.0, "postgres": 21.0}
    # the ratio is taken within each repetition, then the median: 60/100, 70/150, 30/120
    assert r["langgraph_ratio"]["sqlite"] == pytest.approx(statistics.median([0.6, 70 / 150, 0.25]), abs=1e-4)
    assert r["langgraph_ratio"]["postgres"] == pytest.approx(statistics.median([0.5, 0.6, 40 / 120]), abs=1e-4)
    assert r["spread"]["langgraph_ratio"]["sqlite"]["min"] == 0.25
    assert r["runs_per_s"]["langgraph"] == 120 and r["langgraph_cpu_per_run_ms"] == 6.5
    assert r["write_vs_raw"] == 0.75 and r["open_loop_p99_ms"]["postgres"]["0.8"] == 200.0
    verdicts = {t["name"]: t["status"] for t in r["targets"]}
    assert verdicts["cpu_per_run_ms.sqlite"] == "MISS" and verdicts["langgraph_ratio.postgres"] == "PASS"
    assert verdicts["langgraph_ratio.sqlite"] == "MISS" and verdicts["errors"] == "PASS"  # median 0.467
    assert verdicts["open_loop_p99_80.sqlite"] == "PASS" and verdicts["write_vs_raw"] == "PASS"
    assert verdicts["capacity1_held"] == "PASS" and verdicts["capacity32_pss_gb"] == "PASS"
    json.dumps(r)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(1, 500), st.floats(1, 500), st.floats(1, 500), st.floats(1, 200)),
                min_size=1, max_size=5))
def test_any_data_gives_the_formula_not_a_constant(reps):
    lg, sq, pg, cpu = (list(x) for x in zip(*reps))
    r = assemble_results(_sections(lg, sq, pg, cpu), {})
    assert r["langgraph_ratio"]["sqlite"] == pytest.approx(
        statistics.median(round(s / l, 4) for s, l in zip(sq, lg)), abs=1e-3)
    assert r["cpu_per_run_ms"]["postgres"] == pytest.approx(statistics.median(cpu), abs=1e-3)
    status = {t["name"]: t["status"] for t in r["targets"]}["cpu_per_run_ms.postgres"]
    assert status == ("PASS" if r["cpu_per_run_ms"]["postgres"] <= 20 else "MISS")


def test_verdicts_follow_the_data_across_every_threshold():
    worse = _sections(lg=[100], sq=[30], pg=[30], cpu=[30], p99_80=400, sweep_rps=(20, 30, 9, 25), pool_peak=40)
    worse["compare"]["reps"][0]["sqlite"]["closed"]["32"]["errors"] = 3
    r = assemble_results(worse, {})
    verdicts = {t["name"]: t["status"] for t in r["targets"]}
    for name in ("cpu_per_run_ms.sqlite", "langgraph_ratio.sqlite", "errors", "open_loop_p99_80.postgres",
                 "sweep_no_collapse", "sweep_pool_growth"):
        assert verdicts[name] == "MISS", name
    assert r["sweep"]["worst_share_of_best_below"] == 0.3  # 9 runs/s after 30 at fewer clients
    assert r["sweep"]["worst_pool_overshoot"] == 40 - 8    # 40 RunActors for 4 clients (minimum 8)


def test_missing_sections_are_skipped_not_invented():
    r = assemble_results({}, {})
    assert r["cpu_per_run_ms"] == {"sqlite": None, "postgres": None}
    assert {t["status"] for t in evaluate_targets(r)} == {"SKIP"}


def test_readme_block_and_figure_come_from_the_results(tmp_path):
    r = assemble_results(_sections(lg=[123.4], sq=[61.7], pg=[55.5], cpu=[17.25]),
                         {"date": "2026-01-01T00:00:00+00:00", "git_commit": "abcdef1234567", "command": "x"})
    md = markdown(r)
    assert "123.4" in md and "17.2" in md and "abcdef1234" in md and "PASS" in md
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nold numbers\n{README_END}\n\nrest\n")
    assert update_readme(readme, r)
    text = readme.read_text()
    assert "old numbers" not in text and "123.4" in text and text.endswith("rest\n")
    assert write_json(r, tmp_path / "results.json").exists()
    png = write_plot(r, tmp_path / "results.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_plot(assemble_results({}, {}), tmp_path / "empty.png").stat().st_size > 0


# -- writes, CLI, flame --------------------------------------------------------------------------------------
def test_write_calls_are_echo_runs_and_the_raw_side_uses_the_ledgers_statement():
    frames = call_frames(4, 0)
    assert [f["type"] for f in frames] == ["run.started", "message.delta", "message.completed", "run.completed"]
    calls = plan_calls(["a", "b"], 16, 4)
    assert len(calls) == 4 and [f["sequence"] for f in calls[2][1]] == [4, 5, 6, 7]
    sql, order = raw_statement()
    assert "unnest(" in sql and "ON CONFLICT (run_id, sequence) DO NOTHING" in sql and "$5" in sql
    assert order == ["run_ids", "sequences", "types", "datas", "stamps"]


def test_cli():
    args = parse_args(["--quick", "--only", "writes,peer"])
    assert args.quick and args.only == ("peer", "writes") and is_partial(args)
    assert not is_partial(parse_args([]))
    assert is_partial(parse_args(["--reps", "1"]))
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])


def test_flame_summarizes_layers(tmp_path: Path):
    f = tmp_path / "postgres-c32-r1-RunActor-42.txt"
    f.write_text("main (x.py:1);execute (actors/run_actor.py:10);dumps (json/encoder.py:5) 30\n"
                 "main (x.py:1);call (ray/_raylet.py:3) 40\n"
                 "main (x.py:1);route (ray/serve/_private/router.py:9) 10\n"
                 "main (x.py:1);submit (serve/app.py:9) 10\n"
                 "main (x.py:1);run (actors/core/driver.py:9) 10\n"
                 "main (x.py:1);select (selectors.py:1) 500\n")
    shares = layer_shares(parse(f.read_text().splitlines()))
    assert shares == {"Ray core": 40.0, "serialization (json, pickle, msgpack)": 30.0, "Ray Serve": 10.0,
                      "RunnerHost serve": 10.0, "RunnerHost actors": 10.0}
    assert process_of(f) == "RunActor"
    table = markdown_table([f], {"RunActor": 9.0})
    assert "| RunActor | 9.00 | 3.60 | 2.70 |" in table  # Ray core 40 %, serialization 30 % of 9 ms
