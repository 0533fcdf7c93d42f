"""What one bench run measures and for how long (``--quick`` shrinks every count and duration)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Sections, in the order a run measures them (``--only`` picks a subset).
#: peer: LangGraph vs RunnerHost (SQLite, Postgres) at C = 4 and 32, plus the no-op Serve floor;
#: openloop: p50/p99 at 50 % and 80 % of each deployment's max closed-loop rate;
#: writes: StorageActor write("run_events") vs raw asyncpg, same statement and batch size;
#: sweep: 1/2/4 runner workers × C = 4/8/16/32, cold and warm, pool size sampled;
#: capacity: concurrent 60-second runs with runs_per_actor 1 (ceiling) and 32 (≥ 1,000).
SECTIONS = ("peer", "openloop", "writes", "sweep", "capacity")


@dataclass
class Plan:
    sections: tuple[str, ...] = SECTIONS
    reps: int = 3                         # repetitions of the headline measurements (spread: median, min, max)
    conversations: int = 200              # round robin; LangGraph threads created up front
    peer_concurrency: tuple[int, ...] = (4, 32)
    headline_concurrency: int = 32
    warmup_s: float = 2.0
    duration_s: float = 8.0
    noop: bool = True                     # the no-op Serve floor, once per run
    # open loop: fractions of the deployment's max closed-loop rate (C = headline_concurrency)
    open_fractions: tuple[float, ...] = (0.5, 0.8)
    open_warmup_s: float = 2.0
    open_duration_s: float = 8.0
    arrivals: str = "poisson"
    # writes
    write_frames_per_call: tuple[int, ...] = (1, 4, 8, 64)
    write_headline_frames: int = 4        # a 1-chunk echo run writes 4 frames
    write_concurrency: int = 256
    write_max_s: float = 4.0              # per actor variant: no new call starts after this
    write_max_rows: int = 60_000
    write_runs: int = 400                 # runs (agent_run rows) per variant
    # sweeps
    sweep_workers: tuple[int, ...] = (1, 2, 4)
    sweep_concurrency: tuple[int, ...] = (4, 8, 16, 32)
    sweep_cold_s: float = 6.0
    sweep_warmup_s: float = 1.5
    sweep_warm_s: float = 5.0
    health_interval_s: float = 0.5
    # capacity (issue 10)
    hold_s: float = 60.0                  # each capacity run waits this long, then answers
    cap1_goal: int = 150                  # runs_per_actor 1: the goal …
    cap1_max: int = 400                   # … and where the search for the ceiling stops at the latest
    cap1_step: int = 25
    cap1_budget_s: float = 300.0          # ramp time budget (each new RunActor is a process: ~1–2 s apiece here)
    cap1_max_creating: int = 4
    cap32_runs: int = 1000
    cap32_runs_per_actor: int = 32
    cap32_rate: float = 30.0              # ?wait=false arrivals per second (open loop; 1,000 in ~33 s < hold_s)
    mem_reserve_fraction: float = 0.15    # stop adding runs before less than this share of RAM is free …
    mem_reserve_min_gb: float = 4.0       # … or less than this (whichever is more)
    node_run_slots: int = 512             # runnerhost_run_slot the bench's Ray node declares
    profile_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def quick(cls, sections: tuple[str, ...] = SECTIONS) -> "Plan":
        """Every code path, tiny counts: a smoke run (numbers are noise)."""
        return cls(sections=sections, reps=1, conversations=20, warmup_s=1.0, duration_s=2.0, noop=False,
                   open_warmup_s=0.5, open_duration_s=2.0, write_frames_per_call=(1, 4), write_max_s=1.5,
                   write_max_rows=4_000, write_runs=50, write_concurrency=64, sweep_workers=(1,),
                   sweep_concurrency=(4, 8), sweep_cold_s=4.0, sweep_warmup_s=1.0, sweep_warm_s=2.0,
                   hold_s=6.0, cap1_goal=8, cap1_max=12, cap1_step=4, cap1_budget_s=40.0, cap32_runs=64,
                   cap32_rate=20.0, notes=["quick"])

    @property
    def quick_run(self) -> bool:
        return "quick" in self.notes

    def as_config(self) -> dict[str, Any]:
        out = asdict(self)
        out["profile_dir"] = str(self.profile_dir) if self.profile_dir else None
        out.pop("notes", None)
        return out
