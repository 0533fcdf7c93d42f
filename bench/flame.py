"""Summaries of ``py-spy record --format raw`` files (collapsed stacks): where a process spends its samples.

    python -m bench.flame /tmp/prof/e2e-StorageActor-123.txt [--top 20] [--idle]

Prints the hottest frames by *inclusive* share (the frame is anywhere on the
stack) and by *self* share (the frame is the leaf). Idle stacks (the event loop
waiting in ``select``/``epoll``, threads parked in ``wait``) are dropped unless
``--idle``, so the shares are of the process's busy samples.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

IDLE = re.compile(r"\b(select|epoll|poll|_wait_for_tstate_lock|wait \(threading|acquire|sleep|"
                  r"_worker \(concurrent|main_loop|run_task_loop|get_objects)\b")
_LINE = re.compile(r" \(([^()]*):(\d+)\)$")


def parse(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        stacks.append((stack.split(";"), n))
    return stacks


def frame_name(frame: str, keep_line: bool = False) -> str:
    """``fn (path/to/file.py:12)`` → ``fn (file.py:12)`` (or without the line number)."""
    m = _LINE.search(frame)
    if not m:
        return frame.strip()
    fn = frame[: m.start()].strip()
    file = m.group(1).rsplit("/", 2)
    short = "/".join(file[-2:])
    return f"{fn} ({short}:{m.group(2)})" if keep_line else f"{fn} ({short})"


def is_idle(stack: list[str]) -> bool:
    return bool(stack) and bool(IDLE.search(stack[-1]))


def summarize(stacks: list[tuple[list[str], int]], *, top: int = 15,
              include_idle: bool = False) -> dict[str, object]:
    total = sum(n for _, n in stacks)
    busy = [(s, n) for s, n in stacks if include_idle or not is_idle(s)]
    busy_total = sum(n for _, n in busy) or 1
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for stack, n in busy:
        names = [frame_name(f) for f in stack]
        for name in set(names):
            inclusive[name] += n
        if names:
            leaf[frame_name(stack[-1], keep_line=True)] += n
    return {
        "samples": total,
        "busy_samples": sum(n for _, n in busy),
        "inclusive": [(name, round(100 * n / busy_total, 1)) for name, n in inclusive.most_common(top)],
        "self": [(name, round(100 * n / busy_total, 1)) for name, n in leaf.most_common(top)],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flame", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--idle", action="store_true", help="keep idle stacks")
    args = parser.parse_args(argv)
    for path in args.files:
        summary = summarize(parse(path.read_text().splitlines()), top=args.top, include_idle=args.idle)
        print(f"== {path.name}: {summary['busy_samples']} busy of {summary['samples']} samples")
        print("  inclusive %:")
        for name, pct in summary["inclusive"]:
            print(f"    {pct:5.1f}  {name}")
        print("  self %:")
        for name, pct in summary["self"][: max(5, args.top // 2)]:
            print(f"    {pct:5.1f}  {name}")


if __name__ == "__main__":
    main()
