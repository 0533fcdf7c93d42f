"""The harness runner against the REAL Claude Code and Codex CLIs (opt-in: ``RH_CONTRACT=1``).

Each CLI is installed from npm (see conftest) and driven exactly as production drives it —
``HarnessRunner`` builds the command line, the environment and the MCP config — against a
local fake of its model API over HTTP: ``FakeAnthropic`` (Messages API, SSE) for Claude
Code through ``ANTHROPIC_BASE_URL``, ``FakeOpenAI``'s Responses API for Codex through a
``CODEX_HOME`` model provider. What is checked is what the fakes in
``tests/fixtures/harness`` claim about the real CLIs:

* two turns, the second resuming the first's native session (the model sees turn 1);
* a third turn resuming the ORIGINAL id again (whatever id the resumed turn reported);
* the native session deleted from the CLI's store: the turn recovers in a fresh session,
  says ``session.resume_failed``, and the next turn resumes the new id;
* Claude only: the MCP gateway round trip — the model asks for ``mcp__runnerhost__history_page``,
  Claude Code calls our real gateway (``serve.gateway``) with the run's capability token,
  and the tool result reaches the model;
* cancel: closing the run while the model call hangs kills the CLI's process group.

What the CLIs did is written to the contract report (see conftest).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from protocol.context import RunContext
from protocol.errors import ErrorCode, RunnerHostError
from protocol.results import ResultValidator, RunResult
from runners.harness import HarnessRunner
from tests.fakes.anthropic_server import AReply, FakeAnthropic, last_text, tool_results
from tests.fakes.memory_api import MemoryHost, MemoryRunnerAPI
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes._server import ThreadedServer

pytestmark = [pytest.mark.contract, pytest.mark.timeout(300)]

API_KEY = "sk-contract-0123456789"
TOKEN = "cap_contract_6f1d2a9b8c7e4f30a1b2c3d4"
_counter = 0


# -- the MCP gateway (our real serve.gateway code) over a stand-in host --------------------

class MemoryGatewayHost:
    """What ``serve.gateway`` calls: ``gateway_call(token, method, kwargs)``, token-checked,
    answered by a :class:`MemoryRunnerAPI` over a transcript the test wrote."""

    def __init__(self, api: MemoryRunnerAPI, token: str) -> None:
        self.api, self.token, self.calls = api, token, []

    async def gateway_call(self, token: str, method: str, kwargs: dict[str, Any]) -> Any:
        self.calls.append((method, kwargs))
        if token != self.token:
            raise RunnerHostError(ErrorCode.UNAUTHORIZED, "invalid or expired capability token")
        result = await getattr(self.api, method)(**kwargs)
        return result.model_dump(mode="json") if hasattr(result, "model_dump") else result


class GatewayServer(ThreadedServer):
    name = "mcp-gateway"
    lifespan = "on"

    def __init__(self, host: MemoryGatewayHost) -> None:
        super().__init__()
        self.host = host

    def _app(self) -> Any:
        import contextlib

        from starlette.applications import Starlette
        from starlette.routing import Mount

        from serve.gateway import create_gateway, gateway_asgi

        mcp = create_gateway(lambda: self.host)
        asgi = gateway_asgi(mcp, bind_host="127.0.0.1", max_body_bytes=1 << 20)

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with mcp.session_manager.run():
                yield

        return Starlette(routes=[Mount("/mcp", app=asgi)], lifespan=lifespan)

    @property
    def url(self) -> str:
        return f"{self.origin}/mcp"


# -- helpers --------------------------------------------------------------------------------

def ctx_for(kind: str, command: str, text: str, ws: Path, *, state: dict | None = None,
            metadata: dict | None = None, env_allow: list[str]) -> RunContext:
    global _counter
    _counter += 1
    return RunContext.model_validate({
        "run_id": f"contract-{kind}-{_counter}",
        "trigger": {"type": "event", "source": "api"},
        "event": {"event_id": f"ev-{_counter}", "event_type": "message.received", "source": "api"},
        "conversation": {"conversation_id": "conv-contract"},
        "input": {"text": text},
        "context": {"conversation_id": "conv-contract", "available_apis": {"state": True, "history_page": True}},
        "state": {"conversation": state or {}},
        "runtime": {"metadata": {"binding_id": f"contract-{kind}", **(metadata or {})}},
        "config": {"kind": kind, "command": command, "workspace_root": str(ws), "timeout_s": 120,
                   "env_allow": env_allow, "kill_grace_s": 1.0, "include_partial_messages": True},
    })


async def drive(ctx: RunContext, api=None) -> list[RunResult]:
    api = api or MemoryRunnerAPI(MemoryHost(), ctx)
    frames = [f async for f in HarnessRunner().run(ctx, api)]
    validator = ResultValidator(ctx.run_id)
    for f in frames:
        assert validator.check(f).accepted, (f.type, f.data)
    assert frames and frames[-1].is_terminal
    return frames


def completed(frames) -> str:
    return next((f.data["message"]["content"] for f in frames if f.type == "message.completed"), "")


def session_ids(frames) -> list[str]:
    return [f.data["value"] for f in frames if f.type == "state.updated" and f.data["key"] == "external.session_id"]


def actions(frames) -> list[dict]:
    return [f.data for f in frames if f.type == "action.requested"]


def alive_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def processes_in(workspace: Path) -> set[int]:
    """Pids of the running processes whose working directory is inside ``workspace``."""
    root = os.path.realpath(workspace)
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (cwd == root or cwd.startswith(root + os.sep)) and state not in ("Z", "X"):
            out.add(int(pid))
    return out


async def cancel_while_hanging(ctx: RunContext, ws: Path, hanging) -> None:
    """Start the run, wait until the model call hangs, cancel the consuming task: every process
    of the harness (its whole group) must be gone."""
    frames: list[RunResult] = []

    async def consume():
        async for frame in HarnessRunner().run(ctx, MemoryRunnerAPI(MemoryHost(), ctx)):
            frames.append(frame)

    task = asyncio.create_task(consume())
    assert await wait_for(hanging, 60), "the CLI never reached the model"
    running = processes_in(ws)
    assert running, "no harness process is running"
    groups = {os.getpgid(p) for p in running}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_for(lambda: not processes_in(ws) and not any(alive_group(g) for g in groups), 10)


async def wait_for(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


# -- Claude Code ----------------------------------------------------------------------------

@pytest.fixture
def claude_env(tmp_path, monkeypatch):
    home = tmp_path / "claude-home"
    home.mkdir()
    env = {"HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"), "ANTHROPIC_API_KEY": API_KEY,
           "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return home


def claude_responder(fake: FakeAnthropic):
    def respond(body: dict[str, Any]) -> AReply:
        # Claude Code 2.1.x may end the list with a role "system" message (agent types).
        last = next(m for m in reversed(body["messages"]) if m.get("role") == "user")
        done = tool_results(last)
        if done:
            text = "".join(c.get("text", "") for r in done for c in (r.get("content") or [])
                           if isinstance(c, dict)) if isinstance(done[0].get("content"), list) \
                else str(done[0].get("content"))
            return AReply(text=f"TOOL RESULT: {text[:400]}")
        # Claude Code adds text blocks of its own (system reminders, agent lists) around the
        # prompt; the test's prompts all start with "Q:".
        blocks = [b.get("text", "") for b in last.get("content") or [] if isinstance(b, dict)] \
            if isinstance(last.get("content"), list) else [str(last.get("content"))]
        prompt = next((b for b in reversed(blocks) if b.startswith("Q:")), last_text(last))
        if "[[mcp]]" in prompt:
            return FakeAnthropic.tool_use("mcp__runnerhost__history_page", {"limit": 5})
        if "[[hang]]" in prompt:
            return AReply(text="too late", delay_s=60)
        return AReply(text=f"echo: {prompt.strip()[:80]}")
    return respond


async def test_claude_code(real_clis, claude_env, tmp_path, monkeypatch, contract_report, caplog):
    report = contract_report.setdefault("claude", {"version": real_clis.claude_version})
    ws = tmp_path / "ws"
    allow = ["CLAUDE_CONFIG_DIR", "ANTHROPIC_*", "DISABLE_TELEMETRY", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
             "DISABLE_AUTOUPDATER"]
    with FakeAnthropic(api_key=API_KEY) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        fake.responder = claude_responder(fake)
        t0 = time.monotonic()

        # 1. a new session
        one = await drive(ctx_for("claude", real_clis.claude, "Q: remember the word kiwi", ws, env_allow=allow))
        assert one[-1].type == "run.completed", one[-1].data
        assert completed(one) == "echo: Q: remember the word kiwi"
        [sid] = session_ids(one)
        report["turn_seconds"] = round(time.monotonic() - t0, 2)
        report["first_request_paths"] = sorted(set(fake.request_paths))

        # 2. resume it: the model sees turn 1
        with caplog.at_level("INFO", logger="runners.harness.assembly"):
            two = await drive(ctx_for("claude", real_clis.claude, "Q: what was the word?", ws,
                                      state={"external.session_id": sid}, env_allow=allow))
        assert two[-1].type == "run.completed", two[-1].data
        assert "Q: remember the word kiwi" in json.dumps(fake.messages_requests()[-1]["messages"])
        assert session_ids(two) == []
        tags = [r.getMessage() for r in caplog.records if "tagged this resume" in r.getMessage()]
        report["resume_reports_per_invocation_id"] = bool(tags)

        # 3. the original id resumes again, with both earlier turns
        three = await drive(ctx_for("claude", real_clis.claude, "Q: and the turn before?", ws,
                                    state={"external.session_id": sid}, env_allow=allow))
        assert three[-1].type == "run.completed", three[-1].data
        sent = json.dumps(fake.messages_requests()[-1]["messages"])
        assert "Q: remember the word kiwi" in sent and "Q: what was the word?" in sent
        stores = sorted(p.name for p in (claude_env / ".claude" / "projects").rglob("*.jsonl"))
        report["session_files_after_three_turns"] = stores
        assert f"{sid}.jsonl" in stores

        # 4. the session file is gone: recover in the same turn and say so
        for path in (claude_env / ".claude" / "projects").rglob(f"{sid}.jsonl"):
            path.unlink()
        four = await drive(ctx_for("claude", real_clis.claude, "Q: are you there?", ws,
                                   state={"external.session_id": sid}, env_allow=allow))
        assert four[-1].type == "run.completed", four[-1].data
        [new] = session_ids(four)
        [action] = actions(four)
        assert four[-2].type == "action.requested"
        assert action["action"] == "session.resume_failed" and action["payload"]["previous_session_id"] == sid
        assert action["payload"]["new_session_id"] == new != sid
        report["lost_session_reason"] = action["payload"]["reason"]
        assert f"No conversation found with session ID: {sid}" in action["payload"]["reason"]
        five = await drive(ctx_for("claude", real_clis.claude, "Q: still there?", ws,
                                   state={"external.session_id": new}, env_allow=allow))
        assert five[-1].type == "run.completed" and session_ids(five) == [] and actions(five) == []
        assert "Q: are you there?" in json.dumps(fake.messages_requests()[-1]["messages"])

        # 5. the MCP gateway round trip, with the run's capability token
        memory = MemoryHost(runner_id="plugin:builtin/harness/default")
        memory.add_item("conv-contract", "user", "the blue door is open")
        ctx = ctx_for("claude", real_clis.claude, "Q: look back [[mcp]]", ws, env_allow=allow,
                      metadata={"gateway_url": "", "capability_token": TOKEN})
        api = MemoryRunnerAPI(memory, ctx)
        gateway_host = MemoryGatewayHost(api, TOKEN)
        with GatewayServer(gateway_host) as gateway:
            ctx.runtime.metadata["gateway_url"] = gateway.url
            six = await drive(ctx, api)
        assert six[-1].type == "run.completed", six[-1].data
        assert [m for m, _ in gateway_host.calls] == ["history_page"]
        assert "the blue door is open" in completed(six)  # the tool result reached the model
        started = [f.data for f in six if f.type == "tool.call.started"]
        report["mcp_tool_name"] = started[0]["tool_name"] if started else None
        assert started and started[0]["tool_name"] == "mcp__runnerhost__history_page"
        assert TOKEN not in json.dumps([f.model_dump(mode="json") for f in six])

        # 6. cancel while the model call hangs: the CLI's process group dies
        await cancel_while_hanging(
            ctx_for("claude", real_clis.claude, "Q: slow [[hang]]", ws, env_allow=allow), ws,
            lambda: any("[[hang]]" in json.dumps(b["messages"]) for b in fake.messages_requests()))
        report["total_seconds"] = round(time.monotonic() - t0, 2)


# -- Codex ------------------------------------------------------------------------------------

@pytest.fixture
def codex_env(tmp_path, monkeypatch):
    # Codex refuses helper binaries under a temp dir for CODEX_HOME only with a warning; fine.
    home = tmp_path / "codex-home"
    (home / ".codex").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CODEX_HOME", str(home / ".codex"))
    monkeypatch.setenv("RH_FAKE_OPENAI_KEY", API_KEY)
    return home


def write_codex_config(codex_home: Path, base_url: str) -> None:
    (codex_home / "config.toml").write_text(
        'model = "fake-model"\nmodel_provider = "fake"\n\n[model_providers.fake]\nname = "fake"\n'
        f'base_url = "{base_url}"\nwire_api = "responses"\nenv_key = "RH_FAKE_OPENAI_KEY"\n')


def codex_responder(body: dict[str, Any]) -> Reply:
    texts = [c.get("text", "") for item in body.get("input") or [] if isinstance(item, dict)
             and item.get("role") == "user" for c in item.get("content") or [] if isinstance(c, dict)]
    prompt = next((t for t in reversed(texts) if not t.lstrip().startswith("<")), "")
    if "[[hang]]" in prompt:
        return Reply(content="too late", delay_s=60)
    return Reply(content=f"echo: {prompt.strip()[:80]}")


async def test_codex(real_clis, codex_env, tmp_path, contract_report):
    report = contract_report.setdefault("codex", {"version": real_clis.codex_version})
    ws = tmp_path / "ws"
    allow = ["CODEX_HOME", "RH_FAKE_OPENAI_KEY"]
    with FakeOpenAI(api_key=API_KEY) as fake:
        write_codex_config(codex_env / ".codex", fake.base_url)
        fake.responder = codex_responder
        t0 = time.monotonic()

        one = await drive(ctx_for("codex", real_clis.codex, "Q: remember the word kiwi", ws, env_allow=allow))
        assert one[-1].type == "run.completed", one[-1].data
        assert completed(one) == "echo: Q: remember the word kiwi"
        [tid] = session_ids(one)
        report["turn_seconds"] = round(time.monotonic() - t0, 2)

        two = await drive(ctx_for("codex", real_clis.codex, "Q: what was the word?", ws,
                                  state={"external.session_id": tid}, env_allow=allow))
        assert two[-1].type == "run.completed", two[-1].data
        assert "Q: remember the word kiwi" in json.dumps(fake.requests[-1]["input"])
        assert session_ids(two) == []

        three = await drive(ctx_for("codex", real_clis.codex, "Q: and before?", ws,
                                    state={"external.session_id": tid}, env_allow=allow))
        assert three[-1].type == "run.completed"
        sent = json.dumps(fake.requests[-1]["input"])
        assert "Q: remember the word kiwi" in sent and "Q: what was the word?" in sent
        rollouts = sorted((codex_env / ".codex" / "sessions").rglob("rollout-*.jsonl"))
        report["rollouts_after_three_turns"] = [p.name for p in rollouts]
        assert len(rollouts) == 1 and tid in rollouts[0].name

        rollouts[0].unlink()
        four = await drive(ctx_for("codex", real_clis.codex, "Q: are you there?", ws,
                                   state={"external.session_id": tid}, env_allow=allow))
        assert four[-1].type == "run.completed", four[-1].data
        [new] = session_ids(four)
        [action] = actions(four)
        assert action["payload"]["previous_session_id"] == tid and action["payload"]["new_session_id"] == new
        report["lost_session_reason"] = action["payload"]["reason"]
        assert re.search(rf"no rollout found for thread id {tid}", action["payload"]["reason"])
        five = await drive(ctx_for("codex", real_clis.codex, "Q: still there?", ws,
                                   state={"external.session_id": new}, env_allow=allow))
        assert five[-1].type == "run.completed" and session_ids(five) == [] and actions(five) == []
        assert "Q: are you there?" in json.dumps(fake.requests[-1]["input"])

        await cancel_while_hanging(
            ctx_for("codex", real_clis.codex, "Q: slow [[hang]]", ws, env_allow=allow), ws,
            lambda: any("[[hang]]" in json.dumps(b.get("input")) for b in fake.requests))
        report["total_seconds"] = round(time.monotonic() - t0, 2)
