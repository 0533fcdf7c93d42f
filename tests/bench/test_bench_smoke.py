"""Smoke test of the bench's pure helpers: percentiles, window summaries, result assembly, the figure.

No Ray, no Postgres, no HTTP: the full bench is ``make bench``.
"""
from __future__ import annotations

import json

import pytest

from bench.__main__ import parse_args
from bench.loadgen import event_body
from bench.report import assemble_results, evaluate_targets, render_tables, write_json, write_plot
from bench.stats import Sample, percentile, ratio, summarize_ms, window_summary


def test_percentile_interpolates_between_ranks():
    assert percentile([], 50) is None
    assert percentile([7], 99) == 7
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 3, 2, 1], 0) == 1
    assert percentile(range(1, 101), 100) == 100
    assert percentile(range(1, 101), 99) == pytest.approx(99.01)
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_summaries_are_in_milliseconds():
    s = summarize_ms([0.010, 0.020, 0.030])
    assert s["n"] == 3 and s["p50"] == 20.0 and s["max"] == 30.0
    assert summarize_ms([])["p99"] is None
    assert ratio(50, 200) == 0.25 and ratio(None, 3) is None and ratio(3, 0) is None


def test_window_discards_warmup_and_counts_errors():
    samples = [Sample(0.0, 0.5, True, 0.1, 4),        # warmup: ignored
               Sample(0.9, 1.1, True, 0.05, 4),       # completes in window: counted; started before
               Sample(1.2, 1.4, True, 0.02, 4),
               Sample(1.5, 1.9, False, None, 1),      # an error inside the window
               Sample(2.5, 3.5, True, 0.1, 4)]        # ends after the window
    w = window_summary(samples, 1.0, 3.0)
    assert w["completed"] == 2 and w["errors"] == 1
    assert w["requests_per_s"] == 1.0 and w["frames_per_s"] == 4.0
    assert w["latency_ms"]["n"] == 2  # started in the window, successful (the last ends later but started in)
    with pytest.raises(ValueError):
        window_summary(samples, 2.0, 2.0)


def _sections():
    load = lambda rps, p99: {"requests_per_s": rps, "frames_per_s": rps * 4, "completed": 100, "errors": 0,
                             "latency_ms": {"p50": p99 / 2, "p99": p99, "n": 100},
                             "ttff_ms": {"p50": 10.0, "p99": 20.0, "n": 100}}
    return {
        "noop": load(300.0, 80.0),
        "e2e": load(120.0, 300.0),
        "ttff": {"ttff_ms": {"p50": 30.0, "p99": 60.0, "n": 40}, "latency_ms": {"p50": 40.0}},
        "steering": {"latency_ms": {"p50": 70.0, "p99": 120.0, "n": 40}, "failures": 0},
        "writes": {"storage": {"rows_per_s": 8000.0, "rows": 1000, "avg_batch_ops": 100.0},
                   "raw": {"rows_per_s": 10000.0, "rows": 1000, "rows_per_txn": 256},
                   "rows_per_call": 1, "concurrency": 256},
        "workers": [{"workers": n, "workers_alive": n, "load": load(100.0 + n, 200.0)} for n in (1, 2, 4)],
    }


def test_assembly_headlines_and_verdicts():
    results = assemble_results(_sections(), {"command": "python -m bench", "git_commit": "abc", "machine": {"cores": 2}})
    assert results["e2e_vs_noop"] == 0.4
    assert results["write_vs_raw"] == 0.8
    assert results["e2e_p99_ms"] == 300.0 and results["noop_requests_per_s"] == 300.0
    assert results["ttff_ms"]["p99"] == 60.0 and results["steering_latency_ms"]["p50"] == 70.0
    assert [w["workers"] for w in results["workers_scaling"]] == [1, 2, 4]
    verdicts = {t["name"]: t["status"] for t in results["targets"]}
    assert verdicts == {"e2e_vs_noop": "MISS", "write_vs_raw": "PASS", "e2e_p99_ms": "MISS"}
    json.dumps(results)  # serializable
    assert len(render_tables(results)) >= 2


def test_missing_sections_are_skipped():
    results = assemble_results({"writes": _sections()["writes"]}, {})
    verdicts = {t["name"]: t["status"] for t in evaluate_targets(results)}
    assert verdicts == {"e2e_vs_noop": "SKIP", "write_vs_raw": "PASS", "e2e_p99_ms": "SKIP"}
    assert results["workers_scaling"] is None and results["ttff_ms"] is None


def test_writers_produce_json_and_png(tmp_path):
    results = assemble_results(_sections(), {"date": "2026-01-01T00:00:00+00:00", "machine": {"cores": 2}})
    out = write_json(results, tmp_path / "results.json")
    assert json.loads(out.read_text())["e2e_vs_noop"] == 0.4
    png = write_plot(results, tmp_path / "results.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = write_plot(assemble_results({}, {}), tmp_path / "empty.png")  # nothing measured still draws
    assert empty.stat().st_size > 0


def test_cli_and_client_helpers():
    args = parse_args(["--quick", "--only", "e2e,writes"])
    assert args.quick and args.only == ("e2e", "writes")
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])
    body = json.loads(event_body("echo1", "c1", "hi"))
    assert body["agent_id"] == "echo1" and body["event"]["conversation_id"] == "c1"
