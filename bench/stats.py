"""Pure statistics of the bench (no Ray, no I/O): percentiles, load-window summaries, spreads."""
from __future__ import annotations

import math
import statistics
from collections import Counter
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
    lo, hi = math.floor(rank), math.ceil(rank)
    if lo == hi:
        return data[lo]
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


def _r(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(v, digits)


def summarize_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50/p90/p99/mean/max of durations given in seconds, reported in milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    return {"n": len(ms), "p50": _r(percentile(ms, 50)), "p90": _r(percentile(ms, 90)),
            "p99": _r(percentile(ms, 99)), "mean": _r(sum(ms) / len(ms)) if ms else None,
            "max": _r(max(ms)) if ms else None}


@dataclass(frozen=True)
class Sample:
    """One request of the load client, on the client's monotonic clock (s).

    ``start`` is when the request was *due*: the send time in a closed loop, the scheduled
    arrival in an open loop (so a client that falls behind its schedule shows as latency, not
    as a quietly lower rate). ``error`` is None for a request that completed properly, else its
    kind (``http_503``, ``run_failed``, ``no_terminal``, ``transport``, …)."""

    start: float
    end: float
    error: str | None = None
    ttff: float | None = None   # seconds from start to the first response line
    frames: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency(self) -> float:
        return self.end - self.start


def window_summary(samples: Sequence[Sample], t0: float, t1: float) -> dict[str, object]:
    """Throughput and latency of the measurement window ``[t0, t1]`` (warmup before ``t0`` discarded).

    Throughput counts requests that completed properly *inside* the window; errors count the
    failed ones that ended inside it; latency percentiles use the proper requests that *started*
    inside it (whenever they ended)."""
    if t1 <= t0:
        raise ValueError("empty window")
    span = t1 - t0
    done = [s for s in samples if t0 <= s.end <= t1]
    ok_done = [s for s in done if s.ok]
    started = [s for s in samples if s.ok and t0 <= s.start <= t1]
    errors = Counter(s.error for s in done if not s.ok)
    return {
        "window_s": round(span, 3),
        "completed": len(ok_done),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "requests_per_s": round(len(ok_done) / span, 2),
        "frames_per_s": round(sum(s.frames for s in ok_done) / span, 2),
        "latency_ms": summarize_ms([s.latency for s in started]),
        "ttff_ms": summarize_ms([s.ttff for s in started if s.ttff is not None]),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


def spread(values: Iterable[float | None], digits: int = 4) -> dict[str, object] | None:
    """Median, min and max of repeated measurements (``None`` entries — a repetition that did
    not measure — are left out; ``None`` when nothing was measured)."""
    data = [float(v) for v in values if v is not None]
    if not data:
        return None
    return {"median": round(statistics.median(data), digits), "min": round(min(data), digits),
            "max": round(max(data), digits), "n": len(data), "values": [round(v, digits) for v in data]}
