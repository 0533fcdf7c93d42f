"""``python -m bench`` (``make bench``): the performance harness of RunnerHost.

    python -m bench                        # the full run (~25–30 min on 2 quiet cores)
    python -m bench --quick                # every section with tiny counts: a smoke run (noise)
    python -m bench --only peer,writes     # a subset of: peer, openloop, writes, sweep, capacity
    python -m bench --only peer --profile /tmp/prof   # + py-spy per hot process; then:
    python -m bench.flame --markdown /tmp/prof/postgres-c32-r1-*.txt

A full run writes ``bench/results.json`` and ``bench/results.png`` and regenerates the README's
Performance block; ``--quick``, ``--only`` and ``--profile`` runs write ``bench/out/`` instead
(``--out DIR`` anywhere) and touch no tracked file. Every run prints its tables with PASS / MISS
per target (computed from the data of that run).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .plan import SECTIONS, Plan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny counts and durations (a smoke run)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="directory of results.json / results.png")
    parser.add_argument("--reps", type=int, default=None, help="repetitions of the headline numbers (default 3)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy record (raw collapsed stacks) the hot processes of each headline window "
                             "into DIR (perturbs the numbers: not for the committed run)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds of each closed-loop window")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be ≥ 1")
    args.only = tuple(s for s in SECTIONS if s in only)
    return args


def plan_for(args: argparse.Namespace) -> Plan:
    plan = Plan.quick(args.only) if args.quick else Plan(sections=args.only)
    if args.reps:
        plan.reps = args.reps
    if args.duration:
        plan.duration_s = args.duration
    if args.profile:
        plan.profile_dir = args.profile.resolve()
        plan.notes.append("profiled")
    return plan


def is_partial(args: argparse.Namespace) -> bool:
    """Anything but the full default run: it must not overwrite the committed results."""
    return (args.quick or bool(args.profile) or set(args.only) != set(SECTIONS)
            or args.reps is not None or args.duration is not None)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    from .harness import BENCH_DIR, REPO, run
    partial = is_partial(args)
    command = "python -m bench" + (" " + shlex.join(raw) if raw else "")
    run(plan_for(args), command=command, out_dir=args.out or (BENCH_DIR / "out" if partial else BENCH_DIR),
        readme=None if partial else REPO / "README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
