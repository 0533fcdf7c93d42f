"""Pure statistics helpers of the bench (no Ray, no I/O): percentiles and load-window summaries."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    ``None`` for no values. ``percentile([1, 2, 3, 4], 50) == 2.5``.
    """
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    data = sorted(float(v) for v in values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    rank = (len(data) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return data[lo]
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


def summarize_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/mean/max of durations given in seconds, reported in milliseconds."""
    ms = [s * 1000.0 for s in seconds]

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {
        "n": len(ms),
        "p50": r(percentile(ms, 50)),
        "p90": r(percentile(ms, 90)),
        "p99": r(percentile(ms, 99)),
        "mean": r(sum(ms) / len(ms)) if ms else None,
        "max": r(max(ms)) if ms else None,
    }


@dataclass(frozen=True)
class Sample:
    """One request of the load client: start/end on the client's monotonic clock (s)."""

    start: float
    end: float
    ok: bool
    ttff: float | None = None   # seconds from send to the first response line
    frames: int = 0

    @property
    def latency(self) -> float:
        return self.end - self.start


def window_summary(samples: Sequence[Sample], t0: float, t1: float) -> dict[str, object]:
    """Throughput and latency of the measurement window ``[t0, t1]`` (warmup before ``t0`` discarded).

    Throughput counts successful requests *completed* inside the window; latency
    percentiles use successful requests that *started* inside it (and completed).
    """
    if t1 <= t0:
        raise ValueError("empty window")
    span = t1 - t0
    done = [s for s in samples if t0 <= s.end <= t1]
    ok_done = [s for s in done if s.ok]
    started = [s for s in samples if s.ok and t0 <= s.start <= t1]
    ttffs = [s.ttff for s in started if s.ttff is not None]
    frames = sum(s.frames for s in ok_done)
    return {
        "window_s": round(span, 3),
        "completed": len(ok_done),
        "errors": len(done) - len(ok_done),
        "requests_per_s": round(len(ok_done) / span, 2),
        "frames_per_s": round(frames / span, 2),
        "latency_ms": summarize_ms([s.latency for s in started]),
        "ttff_ms": summarize_ms(ttffs),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)
