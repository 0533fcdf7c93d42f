"""The README quickstart, executed: `runnerhost serve` (own fresh Ray, SQLite default) → send → transcript → Ctrl-C."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "runnerhost"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RUNNERHOST_"))}
    env.update({"NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"})
    return env


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_readme_quickstart(tmp_path: Path):
    port = free_port()
    data_dir = tmp_path / "data"
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(BIN), "serve", "--port", str(port), "--data-dir", str(data_dir)],
                                cwd=REPO, env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"serve exited early:\n{log_path.read_text()}"
            try:  # healthy, and the banner (printed once serve.run returned) is out
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200 and "Try it" in log_path.read_text():
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"serve never became ready:\n{log_path.read_text()}"
            time.sleep(0.5)
        banner = log_path.read_text()
        assert "No API keys are configured" in banner and f"curl -N -X POST {url}/v1/events" in banner

        sent = run_cli("send", "hello", "--agent", "echo", "--conversation", "c1", "--url", url)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "echo: hello" in sent.stdout and "completed" in sent.stdout

        shown = run_cli("transcript", "c1", "--url", url)
        assert shown.returncode == 0, shown.stderr
        assert "echo: hello" in shown.stdout
        page = httpx.get(f"{url}/v1/conversations/c1/transcript").json()
        assert [(i["role"], i["content"]) for i in page["items"]] == [("user", "hello"), ("assistant", "echo: hello")]

        listed = run_cli("runs", "--url", url)
        assert listed.returncode == 0 and "completed" in listed.stdout
        run_id = httpx.get(f"{url}/v1/runs").json()["items"][0]["run_id"]
        ledger = run_cli("run", run_id, "--url", url)
        assert ledger.returncode == 0 and "run.completed" in ledger.stdout
        agents = run_cli("agents", "--url", url)
        assert agents.returncode == 0 and "plugin:builtin/echo/default" in agents.stdout
        doc = tmp_path / "vacation.md"
        doc.write_text("Employees receive thirty days of paid vacation per year.")
        ingested = run_cli("ingest", "handbook", str(doc), "--url", url)
        assert ingested.returncode == 0 and "1 document(s)" in ingested.stdout, ingested.stdout + ingested.stderr
        assert "handbook" in httpx.get(f"{url}/v1/knowledge").json()  # SQLite FTS5 on the embedded default
        missing = run_cli("send", "hi", "--agent", "nobody", "--url", url)
        assert missing.returncode == 1 and "not_found" in missing.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    output = log_path.read_text()
    assert code == 0, output
    assert "stopped." in output and "Traceback" not in output
    assert (data_dir / "runnerhost.db").is_file()
    with socket.socket() as s:  # the port was released
        s.bind(("127.0.0.1", port))
