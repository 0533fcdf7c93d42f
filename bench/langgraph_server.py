"""The peer: LangGraph's in-memory Agent Server (``langgraph dev``) serving the same echo graph.

``bench/lg_echo/`` holds the graph (one node answering ``echo: <text>``) and its
``langgraph.json``. The server runs from its own virtualenv — ``langgraph-api`` pins grpcio and
protobuf below what Ray Serve's ``grpcio-reflection`` (and schemathesis' ``jsonschema-rs``) need,
so it cannot share RunnerHost's — found at ``RUNNERHOST_BENCH_LANGGRAPH_PYTHON`` or
``<repo>/.venv-langgraph/bin/python`` (``make bench`` creates it from the ``bench`` extra).

Started as a subprocess on loopback, one process (``--no-reload``), 10 jobs per worker (its
default, as the issue measured), with its analytics, version check and tracing off. Its
in-memory runtime is not durable: it keeps runs and checkpoints in memory and pickles them to
``.langgraph_api/`` every 10 s — a crash loses what happened since.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from . import procs

BENCH_DIR = Path(__file__).resolve().parent
GRAPH_DIR = BENCH_DIR / "lg_echo"
PYTHON_ENV = "RUNNERHOST_BENCH_LANGGRAPH_PYTHON"
DEFAULT_VENV = BENCH_DIR.parent / ".venv-langgraph"
JOBS_PER_WORKER = 10
QUIET_ENV = {  # no analytics, no PyPI version check, no LangSmith tracing: nothing leaves the machine
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING_V2": "false",
}


class PeerUnavailable(RuntimeError):
    """The peer's virtualenv is missing or broken (the message says how to make it)."""


def peer_python() -> Path:
    """The interpreter of the peer's virtualenv (with ``langgraph`` next to it)."""
    configured = os.environ.get(PYTHON_ENV)
    python = Path(configured) if configured else DEFAULT_VENV / "bin" / "python"
    if not python.exists() or not python.with_name("langgraph").exists():
        raise PeerUnavailable(
            f"no LangGraph peer at {python}: create its virtualenv with `make peer-venv` (or "
            f"`python3 -m venv {DEFAULT_VENV} && {DEFAULT_VENV}/bin/pip install 'langgraph-cli[inmem]'`), "
            f"or point {PYTHON_ENV} at a python with langgraph-cli[inmem] installed")
    return python


def server_config(work_dir: Path) -> Path:
    """``bench/lg_echo/langgraph.json`` with its paths made absolute, written into ``work_dir``
    (the server resolves them against its working directory, where it also keeps its pickles)."""
    config = json.loads((GRAPH_DIR / "langgraph.json").read_text())
    config["dependencies"] = [str((GRAPH_DIR / d).resolve()) for d in config.get("dependencies", [])]
    graphs = {}
    for name, ref in config["graphs"].items():
        path, _, attr = ref.partition(":")
        graphs[name] = f"{(GRAPH_DIR / path).resolve()}:{attr}"
    config["graphs"] = graphs
    out = work_dir / "langgraph.json"
    out.write_text(json.dumps(config, indent=2))
    return out


class LangGraphServer:
    def __init__(self, port: int, jobs_per_worker: int = JOBS_PER_WORKER) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.jobs_per_worker = jobs_per_worker
        self.proc: subprocess.Popen | None = None
        self.work_dir = Path(tempfile.mkdtemp(prefix="rh-bench-langgraph-"))
        self.command: list[str] = []
        self.version: str | None = None

    def start(self, timeout: float = 120.0) -> None:
        python = peer_python()
        config = server_config(self.work_dir)
        self.command = [str(python.with_name("langgraph")), "dev", "--config", str(config), "--host", "127.0.0.1",
                        "--port", str(self.port), "--no-browser", "--no-reload",
                        "--n-jobs-per-worker", str(self.jobs_per_worker), "--server-log-level", "WARNING"]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_"))}
        env.update(QUIET_ENV)
        log = open(self.work_dir / "server.log", "wb")
        self.proc = subprocess.Popen(self.command, cwd=self.work_dir, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"langgraph dev exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                if httpx.get(self.url + "/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"langgraph dev did not answer /ok within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.5)
        try:
            self.version = httpx.get(self.url + "/info", timeout=5).json().get("version")
        except (httpx.HTTPError, ValueError):
            self.version = None

    def pids(self) -> list[int]:
        """The server's whole process tree (one process with ``--no-reload``)."""
        return procs.tree(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.work_dir / "server.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc = None
        shutil.rmtree(self.work_dir, ignore_errors=True)
