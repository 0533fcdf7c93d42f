"""``python -m bench`` (``make bench``): the performance harness of RunnerHost.

    python -m bench                      # the full run (~5 min on 2 cores)
    python -m bench --quick              # tiny counts (< 90 s), a smoke run
    python -m bench --only e2e,writes    # a subset: e2e (with the no-op baseline), ttff, steering,
                                         # writes, workers

A full run writes ``bench/results.json`` and ``bench/results.png``; ``--quick`` / ``--only``
runs write ``bench/out/`` instead (``--out DIR`` anywhere) — both print
prints a table with PASS / MISS per target.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .report import SECTIONS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny counts and durations (< 90 s)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="directory of results.json / results.png")
    parser.add_argument("--concurrency", type=int, default=None, help="load client connections (default 32)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy record (raw collapsed stacks) the hot-path processes during each "
                             "measured load window into DIR (perturbs the numbers: not for the committed run)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds of the e2e/no-op load")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    args.only = only
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .harness import BENCH_DIR, Plan, run
    plan = Plan.quick(args.only) if args.quick else Plan(sections=args.only)
    if args.quick:
        plan.notes.append("quick")
    if args.concurrency:
        plan.concurrency = args.concurrency
    if args.profile:
        plan.profile_dir = args.profile.resolve()
        plan.notes.append("profiled")
    if args.duration:
        plan.duration_s = args.duration
    command = "python -m bench" + (" " + shlex.join(sys.argv[1:] if argv is None else argv)
                                   if (sys.argv[1:] if argv is None else argv) else "")
    partial = args.quick or bool(args.profile) or set(args.only) != set(SECTIONS)
    # only a full run writes the committed bench/results.*; partial runs go to bench/out/ (git-ignored)
    run(plan, command=command, out_dir=args.out or (BENCH_DIR / "out" if partial else BENCH_DIR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
