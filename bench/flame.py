"""Summaries of ``py-spy record --format raw`` files (collapsed stacks): where a process spends its samples.

    python -m bench.flame /tmp/prof/postgres-c32-r1-RunActor-123.txt [--top 20] [--idle]
    python -m bench.flame --markdown [--results bench/out/results.json --server postgres] /tmp/prof/postgres-c32-r1-*.txt

Prints the hottest frames by *inclusive* share (the frame is anywhere on the
stack) and by *self* share (the frame is the leaf). Idle stacks (the event loop
waiting in ``select``/``epoll``, threads parked in ``wait``) are dropped unless
``--idle``, so the shares are of the process's busy samples.

``--markdown`` prints one table for the README's "where the milliseconds go": per profiled
process, the share of its busy samples by layer (our packages, Ray, asyncio, the database
drivers, serialization, HTTP); with ``--results`` the shares are turned into CPU ms per run
using that run's measured CPU per process (``peer.servers.<server>.<C>.by_process_ms``).
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


#: Layers a leaf frame is charged to, first match wins (by the frame's file path).
#: Our packages match only at the start of the (package-relative) path: ``/ray/serve/…`` is Ray's.
OURS: tuple[tuple[str, str], ...] = (
    ("RunnerHost actors", "/actors/"), ("RunnerHost store", "/store/"), ("RunnerHost serve", "/serve/"),
    ("RunnerHost protocol", "/protocol/"), ("runners", "/runners/"), ("platforms", "/platforms/"))
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Ray Serve", ("/ray/serve/",)),
    ("Ray core", ("/ray/",)),
    ("SQLAlchemy", ("/sqlalchemy/",)),
    ("asyncpg / aiosqlite", ("/asyncpg/", "/aiosqlite/", "sqlite3")),
    ("pydantic", ("/pydantic/", "/pydantic_core/")),
    ("HTTP (uvicorn, starlette, fastapi, h11, httpx)", ("/uvicorn/", "/starlette/", "/fastapi/", "/h11/",
                                                         "/httptools/", "/httpx/", "/httpcore/", "/anyio/")),
    ("LangGraph", ("/langgraph", "/langchain", "/langsmith")),
    ("serialization (json, pickle, msgpack)", ("json", "pickle", "msgpack", "orjson")),
    ("asyncio", ("/asyncio/",)),
    ("logging", ("/logging/", "structlog")),
)


def layer_of(frame: str) -> str:
    m = _LINE.search(frame)
    path = m.group(1) if m else frame
    path = path if path.startswith("/") else "/" + path  # py-spy shortens paths to the package
    if path.endswith("/threading.py"):
        return "native code under a Python thread (Ray's core worker)"
    for name, prefix in OURS:
        if path.startswith(prefix):
            return name
    for name, needles in LAYERS:
        if any(n in path for n in needles):
            return name
    return "other Python / native"


def layer_shares(stacks: list[tuple[list[str], int]], include_idle: bool = False) -> dict[str, float]:
    """Share (%) of busy samples by the layer of their leaf frame."""
    busy = [(s, n) for s, n in stacks if s and (include_idle or not is_idle(s))]
    total = sum(n for _, n in busy) or 1
    shares: Counter[str] = Counter()
    for stack, n in busy:
        shares[layer_of(stack[-1])] += n
    return {k: round(100 * v / total, 1) for k, v in shares.most_common()}


def process_of(path: Path) -> str:
    """``<tag>-<process>-<pid>.txt`` → ``<process>`` (bench tags end in ``-r<rep>``)."""
    parts = path.stem.split("-")
    starts = [i + 1 for i, p in enumerate(parts[:-1]) if re.fullmatch(r"r\d+", p)]
    body = parts[starts[0]:-1] if starts else parts[1:-1]
    return "-".join(body) or path.stem


def _norm(label: str) -> str:
    return re.sub(r"[^a-z0-9]", "", label.lower())


def markdown_table(files: list[Path], ms_by_process: dict[str, float] | None = None) -> str:
    """One row per profiled process: its CPU ms per run (when known) and the busy share per layer
    (as ms per run when the process's CPU is known)."""
    rows: list[tuple[str, float | None, dict[str, float]]] = []
    layers: list[str] = []
    for path in files:
        shares = layer_shares(parse(path.read_text().splitlines()))
        process = process_of(path)
        ms = None
        for label, value in (ms_by_process or {}).items():
            if _norm(label).startswith(_norm(process)) or _norm(process).startswith(_norm(label)):
                ms = value
                break
        rows.append((process, ms, shares))
        layers += [k for k in shares if k not in layers]
    header = ["process", "CPU ms/run", *layers]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for process, ms, shares in rows:
        cells = []
        for layer in layers:
            share = shares.get(layer)
            if share is None:
                cells.append("")
            elif ms is not None:
                cells.append(f"{ms * share / 100:.2f}")
            else:
                cells.append(f"{share:.0f}%")
        out.append("| " + " | ".join([process, "—" if ms is None else f"{ms:.2f}", *cells]) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flame", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--idle", action="store_true", help="keep idle stacks")
    parser.add_argument("--markdown", action="store_true", help="one Markdown table: busy share by layer")
    parser.add_argument("--results", type=Path, default=None, help="results.json of the profiled run")
    parser.add_argument("--server", default="postgres", help="langgraph | sqlite | postgres (with --results)")
    parser.add_argument("--concurrency", default="32", help="client count of the profiled windows (with --results)")
    args = parser.parse_args(argv)
    if args.markdown:
        ms = None
        if args.results:
            import json
            doc = json.loads(args.results.read_text())
            ms = (((doc.get("peer") or {}).get("servers") or {}).get(args.server) or {}).get(
                args.concurrency, {}).get("by_process_ms")
        print(markdown_table(args.files, ms))
        return
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
