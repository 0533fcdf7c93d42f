"""Arrival schedules of the open-loop client (pure; no I/O).

An open loop sends each request at its scheduled time whether or not earlier ones have
answered, so latency is measured against a rate the server must keep up with — unlike a
closed loop, where latency is concurrency ÷ throughput by construction (Little's law).

* ``poisson``: independent arrivals at ``rate`` per second — exponential gaps (coefficient
  of variation 1), the usual model of many independent clients;
* ``fixed``: one arrival every ``1/rate`` seconds (no burstiness; a lower bound on queueing).
"""
from __future__ import annotations

import random

KINDS = ("poisson", "fixed")


def poisson_offsets(rate: float, duration: float, seed: int | None = None) -> list[float]:
    """Arrival times in ``[0, duration)`` of a Poisson process of ``rate`` per second."""
    _check(rate, duration)
    rng = random.Random(seed)
    out: list[float] = []
    t = rng.expovariate(rate)
    while t < duration:
        out.append(t)
        t += rng.expovariate(rate)
    return out


def fixed_offsets(rate: float, duration: float) -> list[float]:
    """One arrival every ``1/rate`` seconds in ``[0, duration)``, the first at 0."""
    _check(rate, duration)
    gap = 1.0 / rate
    return [i * gap for i in range(int(duration * rate - 1e-9) + 1) if i * gap < duration]


def offsets(kind: str, rate: float, duration: float, seed: int | None = None) -> list[float]:
    if kind == "poisson":
        return poisson_offsets(rate, duration, seed)
    if kind == "fixed":
        return fixed_offsets(rate, duration)
    raise ValueError(f"unknown arrival process {kind!r}; choose from {', '.join(KINDS)}")


def _check(rate: float, duration: float) -> None:
    if not rate > 0 or not duration > 0:
        raise ValueError("rate and duration must be > 0")
