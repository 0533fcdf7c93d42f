"""HarnessRunner end to end against fake harness executables (real subprocesses).

``tests/fixtures/harness/fake_claude`` and ``fake_codex`` speak the genuine
stream-json / JSONL formats; ``[[flags]]`` in the prompt make them misbehave.
Every frame the runner yields is checked by protocol.results.ResultValidator and
by the LangBot ``RunnerResult`` judge.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from langbot_plugin.api.entities.builtin.runner.result import RunnerResult

from protocol.context import RunContext
from protocol.pages import SteeringItem, SteeringPullResult
from protocol.results import ResultValidator, RunResult
from protocol.runner import RunnerAPI
from runners.harness import HarnessRunner, SessionKey

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "harness"
FAKES = {"claude": str(FIXTURES / "fake_claude"), "codex": str(FIXTURES / "fake_codex")}
RUNNER_ID = "plugin:builtin/harness/default"
TOKEN = "cap_tok_6f1d2a9b8c7e4f30a1b2c3d4e5f60718"
KINDS = pytest.mark.parametrize("kind", ["claude", "codex"])

pytestmark = pytest.mark.timeout(60)


# -- the in-test runner API ----------------------------------------------------------------

def _unused(name: str):
    def method(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(f"FakeAPI.{name} is not used by the harness tests")
    method.__name__ = name
    return method


class _FakeAPIBase(RunnerAPI):
    def __init__(self, run_id: str, steered: list[str] | None = None) -> None:
        self.run_id = run_id
        self.steered = list(steered or [])
        self.pulls = 0

    async def steering_pull(self, mode="all", limit=None) -> SteeringPullResult:
        self.pulls += 1
        items = [SteeringItem(claimed_run_id=self.run_id, runner_id=RUNNER_ID,
                              event={"event_id": f"ev-s{i}", "event_type": "message.received", "source": "api"},
                              input={"text": text})
                 for i, text in enumerate(self.steered)]
        self.steered = []
        return SteeringPullResult(items=items)


FakeAPI = type("FakeAPI", (_FakeAPIBase,), {
    name: _unused(name) for name in RunnerAPI.__abstractmethods__ if name != "steering_pull"})


# -- helpers --------------------------------------------------------------------------------

_counter = 0


def make_ctx(kind: str, text: str, ws: Path, *, config: dict | None = None, state: dict | None = None,
             metadata: dict | None = None, deadline_at: float | None = None, steering: bool = False,
             conversation_id: str = "conv-1") -> RunContext:
    global _counter
    _counter += 1
    # The fakes are executables (shebang + chmod +x); most tests start them through the
    # current interpreter to skip the `/usr/bin/env python3` shim cost. The resume test
    # uses the plain path form of `command`.
    cfg = {"kind": kind, "command": [sys.executable, FAKES[kind]], "workspace_root": str(ws), "timeout_s": 20,
           "env_allow": ["FAKE_HARNESS_HOME"]}  # the fakes' native session store (see native_store)
    cfg.update(config or {})
    return RunContext.model_validate({
        "run_id": f"run-{_counter}",
        "trigger": {"type": "event", "source": "api"},
        "event": {"event_id": f"ev-{_counter}", "event_type": "message.received", "source": "api"},
        "conversation": {"conversation_id": conversation_id, "thread_id": None},
        "input": {"text": text},
        "context": {"conversation_id": conversation_id,
                    "available_apis": {"steering_pull": steering, "state": True}},
        "state": {"conversation": state or {}},
        "runtime": {"deadline_at": deadline_at, "metadata": {"binding_id": "agent-h@1", **(metadata or {})}},
        "config": cfg,
    })


async def collect(ctx: RunContext, api: RunnerAPI | None = None) -> list[RunResult]:
    api = api or FakeAPI(ctx.run_id)
    frames = [f async for f in HarnessRunner().run(ctx, api)]
    check_frames(ctx.run_id, frames)
    return frames


def check_frames(run_id: str, frames: list[RunResult], terminal: bool = True) -> None:
    validator = ResultValidator(run_id)
    for f in frames:
        verdict = validator.check(f)
        assert verdict.accepted, (f.type, f.data, verdict.reason)
        RunnerResult.model_validate(f.model_dump(mode="json"))
    if terminal:
        assert frames and frames[-1].is_terminal
        assert sum(1 for f in frames if f.is_terminal) == 1
        assert sum(1 for f in frames if f.type == "message.completed") <= 1


def terminal(frames):
    return frames[-1].type, frames[-1].data


def completed_text(frames) -> str:
    return next(f.data["message"]["content"] for f in frames if f.type == "message.completed")


def session_updates(frames):
    return [f.data for f in frames if f.type == "state.updated"]


def find_child(text: str) -> tuple[int, int]:
    m = re.search(r"CHILD_PID=(\d+) PGID=(\d+)", text)
    assert m, text
    return int(m.group(1)), int(m.group(2))


def alive(pid: int) -> bool:
    """Running (not a zombie awaiting its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def assert_group_gone(pgid: int, child: int, timeout: float = 8.0) -> None:
    """Every process of the group is dead; killpg(pgid, 0) ends with ProcessLookupError
    once the (possibly slow) init reaper has collected the orphaned grandchild."""
    assert not alive(pgid) or await _wait(lambda: not alive(pgid), 3.0)
    assert await _wait(lambda: not alive(child), 3.0), "grandchild still running"
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"process group {pgid} still exists"
        await asyncio.sleep(0.05)


async def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


@pytest.fixture(autouse=True)
def native_store(tmp_path, monkeypatch):
    """Where the fakes keep their native sessions (their stand-in for ~/.claude, ~/.codex)."""
    home = tmp_path / "native-home"
    monkeypatch.setenv("FAKE_HARNESS_HOME", str(home))
    return home


def native_files(home: Path, kind: str) -> list[Path]:
    return sorted((home / kind).rglob("*.jsonl"))


# -- happy path and resume ------------------------------------------------------------------

@KINDS
async def test_two_turns_resume_the_same_external_session(kind, ws):
    ctx1 = make_ctx(kind, "hello there", ws, config={"command": FAKES[kind]})  # the executable itself
    frames1 = await collect(ctx1)
    assert terminal(frames1)[0] == "run.completed"
    assert completed_text(frames1) == "echo: hello there"
    assert "".join(f.data["chunk"]["content"] for f in frames1 if f.type == "message.delta") == "echo: hello there"
    updates = session_updates(frames1)
    assert len(updates) == 1 and updates[0]["scope"] == "conversation" and updates[0]["key"] == "external.session_id"
    sid = updates[0]["value"]
    assert re.fullmatch(r"[0-9a-f-]{36}", sid)
    assert frames1[0].type == "state.updated"  # reported as soon as the harness announces it
    assert frames1[-1].usage is not None and frames1[-1].usage.total_tokens > 0

    # The host persists the state.updated and hands it back in ctx.state next turn.
    ctx2 = make_ctx(kind, "again [[argv]]", ws, state={"external.session_id": sid},
                    config={"command": FAKES[kind]})
    frames2 = await collect(ctx2)
    assert terminal(frames2)[0] == "run.completed"
    argv = json.loads(completed_text(frames2).removeprefix("ARGV:"))
    if kind == "claude":
        assert argv[argv.index("--resume") + 1] == sid
        assert argv[:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    else:
        assert argv[:2] == ["exec", "--json"] and argv[argv.index("resume") + 1] == sid
    assert argv[-2:] == ["--", "again [[argv]]"]
    assert session_updates(frames2) == []  # same native session: nothing new to store

    # both turns ran in the same per-session directory
    key = SessionKey(RUNNER_ID, "agent-h@1", "conv-1", None)
    assert (ws / key.digest()).is_dir()


def resume_actions(frames):
    return [f.data for f in frames if f.type == "action.requested"]


def reply_json(frames, prefix: str):
    return json.loads(completed_text(frames).removeprefix(prefix))


@KINDS
async def test_a_deleted_native_session_is_recovered_and_the_client_is_told(kind, ws, native_store, caplog):
    first = await collect(make_ctx(kind, "remember the word kiwi", ws))
    [old] = [u["value"] for u in session_updates(first)]
    [stored] = native_files(native_store, kind)
    assert old in stored.name
    stored.unlink()  # the native store lost the session (cleaned home, another node, expiry)

    with caplog.at_level(logging.WARNING, logger="runnerhost.runners.harness"):
        frames = await collect(make_ctx(kind, "what was the word? [[history]]", ws,
                                        state={"external.session_id": old}))
    assert terminal(frames)[0] == "run.completed"
    assert reply_json(frames, "HISTORY:") == []  # a fresh native session: the memory is gone ...
    [update] = session_updates(frames)
    new = update["value"]
    assert new != old and update == {"scope": "conversation", "key": "external.session_id", "value": new}
    # ... and the client and the record are told, right before the terminal frame
    assert frames[-2].type == "action.requested"
    assert resume_actions(frames) == [{
        "action": "session.resume_failed", "target": {"kind": "harness_session"},
        "payload": {"resumed": False, "reason": resume_actions(frames)[0]["payload"]["reason"],
                    "previous_session_id": old, "new_session_id": new}}]
    reason = resume_actions(frames)[0]["payload"]["reason"]
    assert (f"No conversation found with session ID: {old}" if kind == "claude"
            else f"no rollout found for thread id {old}") in reason
    assert any("could not resume" in r.getMessage() for r in caplog.records)

    # later turns resume the new id, with the memory of the recovered turn
    later = await collect(make_ctx(kind, "and now? [[history]]", ws, state={"external.session_id": new}))
    assert terminal(later)[0] == "run.completed"
    assert reply_json(later, "HISTORY:") == ["what was the word? [[history]]"]
    assert session_updates(later) == [] and resume_actions(later) == []


@KINDS
async def test_a_lost_session_without_fallback_fails_as_the_cli_said(kind, ws):
    missing = "3f0d6a8e-1111-4222-8333-944455556666"
    frames = await collect(make_ctx(kind, "hello", ws, state={"external.session_id": missing},
                                    config={"resume_fallback": False}))
    rtype, data = terminal(frames)
    assert rtype == "run.failed" and missing in data["error"]
    assert data["code"] == ("harness.error_during_execution" if kind == "claude" else "harness.exit_nonzero")
    assert resume_actions(frames) == [] and session_updates(frames) == []


async def test_a_stale_id_that_is_not_a_session_id_is_recovered(ws):
    """Claude Code refuses a --resume value that is no UUID with another message (and a random
    session_id in the result line); that is a lost session too."""
    frames = await collect(make_ctx("claude", "hi [[argv]]", ws, state={"external.session_id": "sess-from-v1"}))
    assert terminal(frames)[0] == "run.completed"
    assert "--resume" not in reply_json(frames, "ARGV:")
    [action] = resume_actions(frames)
    assert action["payload"]["previous_session_id"] == "sess-from-v1"
    assert "requires a valid session ID" in action["payload"]["reason"]


async def test_claude_resume_keeps_the_original_id_not_the_per_invocation_tag(ws, native_store):
    """Some Claude Code 2.1.x builds report a new session_id on every line of a --resume invocation
    that names no session on disk (upstream #8069 / #58760; 2.1.197 here does not); only the
    original id resumes. The runner never stores the tag."""
    first = await collect(make_ctx("claude", "one", ws))
    [sid] = [u["value"] for u in session_updates(first)]
    second = await collect(make_ctx("claude", "two [[resume-tag]]", ws, state={"external.session_id": sid}))
    assert terminal(second)[0] == "run.completed" and session_updates(second) == []
    [store] = native_files(native_store, "claude")  # one session file: the original's
    records = [json.loads(line) for line in store.read_text().splitlines()]
    tag = [r for r in records if r["type"] == "user"][1]["invocation_session_id"]
    assert tag != sid  # the fake tagged the resumed invocation like the real CLI
    third = await collect(make_ctx("claude", "three [[history]]", ws, state={"external.session_id": sid}))
    assert reply_json(third, "HISTORY:") == ["one", "two [[resume-tag]]"] and resume_actions(third) == []


@KINDS
async def test_tool_calls_are_reported(kind, ws):
    frames = await collect(make_ctx(kind, "[[tool]] list files", ws))
    started = [f.data for f in frames if f.type == "tool.call.started"]
    done = [f.data for f in frames if f.type == "tool.call.completed"]
    assert len(started) == 1 and len(done) == 1
    assert started[0]["tool_call_id"] == done[0]["tool_call_id"]
    assert started[0]["tool_name"] == ("Bash" if kind == "claude" else "shell")
    assert "README.md" in json.dumps(done[0]["result"]) and done[0]["error"] is None
    assert terminal(frames)[0] == "run.completed"


@KINDS
async def test_prompt_that_looks_like_an_option_stays_a_prompt(kind, ws):
    frames = await collect(make_ctx(kind, "--dangerously-skip-permissions please", ws))
    assert completed_text(frames) == "echo: --dangerously-skip-permissions please"


@KINDS
async def test_prompt_via_stdin(kind, ws):
    frames = await collect(make_ctx(kind, "from stdin", ws, config={"prompt_via": "stdin"}))
    assert completed_text(frames) == "echo: from stdin"


async def test_steered_inputs_are_pulled_once_into_the_prompt(ws):
    ctx = make_ctx("claude", "first", ws, steering=True)
    api = FakeAPI(ctx.run_id, steered=["second", "third"])
    frames = await collect(ctx, api)
    assert completed_text(frames) == "echo: first\n\nsecond\n\nthird"
    assert api.pulls == 1


# -- misbehaving harnesses ----------------------------------------------------------------

@KINDS
async def test_unknown_and_garbage_native_events_do_not_break_the_run(kind, ws, caplog):
    with caplog.at_level(logging.WARNING, logger="runnerhost.runners.harness"):
        frames = await collect(make_ctx(kind, "[[unknown-events]] [[garbage]] hi", ws))
    assert terminal(frames)[0] == "run.completed"
    assert completed_text(frames) == "echo: [[unknown-events]] [[garbage]] hi"
    messages = [r.getMessage() for r in caplog.records]
    assert any("malformed JSON" in m for m in messages)
    assert any("unknown native event" in m for m in messages)


@KINDS
async def test_crash_becomes_run_failed_with_stderr_tail(kind, ws):
    frames = await collect(make_ctx(kind, "[[crash]]", ws))
    rtype, data = terminal(frames)
    assert rtype == "run.failed" and data["code"] == "harness.exit_nonzero" and data["retryable"] is False
    assert "code 3" in data["error"] and "fatal: the fake harness crashed" in data["error"]


@KINDS
async def test_silent_nonzero_exit(kind, ws):
    frames = await collect(make_ctx(kind, "[[fail-exit:7]]", ws))
    assert terminal(frames)[1]["code"] == "harness.exit_nonzero" and "code 7" in terminal(frames)[1]["error"]


@KINDS
async def test_native_error_result(kind, ws):
    frames = await collect(make_ctx(kind, "[[error-result]]", ws))
    rtype, data = terminal(frames)
    assert rtype == "run.failed"
    assert data["code"] == ("harness.error_max_turns" if kind == "claude" else "harness.turn_failed")


@KINDS
async def test_exit_zero_without_result_keeps_the_reply(kind, ws):
    frames = await collect(make_ctx(kind, "[[no-result]] bye", ws))
    assert terminal(frames)[0] == "run.completed" and completed_text(frames) == "echo: [[no-result]] bye"


async def test_missing_executable_and_bad_config(ws, tmp_path):
    frames = await collect(make_ctx("claude", "hi", ws, config={"command": str(tmp_path / "nope")}))
    assert terminal(frames)[1]["code"] == "harness.start_failed"
    frames = await collect(make_ctx("claude", "hi", ws, config={"timeout_s": -1}))
    assert terminal(frames)[1]["code"] == "harness.config_invalid"
    frames = await collect(make_ctx("claude", "hi", ws, config={"no_such_key": 1}))
    assert terminal(frames)[1]["code"] == "harness.config_invalid"
    frames = await collect(make_ctx("claude", "   ", ws))
    assert terminal(frames)[1]["code"] == "harness.empty_input"


@KINDS
async def test_output_caps(kind, ws, caplog):
    with caplog.at_level(logging.WARNING, logger="runnerhost.runners.harness"):
        frames = await collect(make_ctx(kind, "[[big-line]] hi", ws, config={"max_line_bytes": 16 * 1024}))
    assert terminal(frames)[0] == "run.completed" and completed_text(frames) == "echo: [[big-line]] hi"
    assert any("line cap" in r.getMessage() for r in caplog.records)
    frames = await collect(make_ctx(kind, "[[big-line]] hi", ws, config={"max_stdout_bytes": 32 * 1024}))
    assert terminal(frames)[1]["code"] == "harness.output_too_large"


# -- timeouts and cancellation kill the whole process group -------------------------------------

async def test_timeout_kills_the_process_group_including_the_grandchild(ws):
    ctx = make_ctx("claude", "[[spawn-child]] [[sleep:30]]", ws, config={"timeout_s": 1.0, "kill_grace_s": 0.5})
    t0 = time.monotonic()
    frames = await collect(ctx)
    assert time.monotonic() - t0 < 5
    rtype, data = terminal(frames)
    assert rtype == "run.failed" and data["code"] == "runner.timeout" and data["retryable"] is True
    child, pgid = find_child(completed_text(frames))  # partial text is kept as the message
    await assert_group_gone(pgid, child)


async def test_deadline_at_bounds_the_run_and_sigterm_ignoring_harness_is_killed(ws):
    ctx = make_ctx("codex", "[[spawn-child]] [[ignore-term]] [[sleep:30]]", ws,
                   deadline_at=time.time() + 1.0, config={"kill_grace_s": 0.3})
    frames = await collect(ctx)
    assert terminal(frames)[1]["code"] == "runner.timeout"
    child, pgid = find_child(completed_text(frames))
    await assert_group_gone(pgid, child)


async def test_deadline_already_passed(ws):
    frames = await collect(make_ctx("claude", "hi", ws, deadline_at=time.time() - 1))
    assert terminal(frames)[1]["code"] == "runner.timeout"


@KINDS
async def test_closing_the_generator_mid_stream_kills_the_group(kind, ws):
    ctx = make_ctx(kind, "[[spawn-child]] [[sleep:30]]", ws, config={"kill_grace_s": 0.5})
    gen = HarnessRunner().run(ctx, FakeAPI(ctx.run_id))
    seen = []
    text = ""
    async for frame in gen:
        seen.append(frame)
        if frame.type == "message.delta":
            text += frame.data["chunk"]["content"]
        if re.search(r"CHILD_PID=\d+ PGID=\d+$", text):  # the pid report is complete
            break
    check_frames(ctx.run_id, seen, terminal=False)
    child, pgid = find_child(text)
    assert alive(child)
    t0 = time.monotonic()
    await gen.aclose()
    assert time.monotonic() - t0 < 3
    await assert_group_gone(pgid, child)


async def test_task_cancellation_kills_the_group(ws):
    ctx = make_ctx("claude", "[[spawn-child]] [[sleep:30]]", ws, config={"kill_grace_s": 0.5})
    got_child: asyncio.Future = asyncio.get_running_loop().create_future()

    async def consume():
        text = ""
        async for frame in HarnessRunner().run(ctx, FakeAPI(ctx.run_id)):
            if frame.type == "message.delta":
                text += frame.data["chunk"]["content"]
                m = re.search(r"CHILD_PID=(\d+) PGID=(\d+)$", text)
                if m and not got_child.done():
                    got_child.set_result((int(m.group(1)), int(m.group(2))))

    task = asyncio.create_task(consume())
    child, pgid = await asyncio.wait_for(got_child, 10)
    assert alive(child)  # reported after it was spawned: the group has a live grandchild to kill
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_group_gone(pgid, child)


@KINDS
async def test_descendant_holding_stdout_does_not_hang_a_finished_run(kind, ws):
    t0 = time.monotonic()
    frames = await collect(make_ctx(kind, "[[spawn-child-stdout]] [[no-result]] done", ws))
    assert time.monotonic() - t0 < 5
    assert terminal(frames)[0] == "run.completed"


# -- environment and workspace ---------------------------------------------------------------

@KINDS
async def test_env_allowlist(kind, ws, monkeypatch):
    monkeypatch.setenv("RUNNERHOST_SECRET", "host-secret-value-123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-0123456789abcdef")
    monkeypatch.setenv("ALLOWED_ONE", "yes")
    monkeypatch.setenv("LC_HARNESS_TEST", "lc")
    cfg = {"env_allow": ["ALLOWED_*", "RUNNERHOST_SECRET"],
           "env": {"EXPLICIT": "x1", "HARNESS_API_KEY": "sk-configured-abcdef012345"}}
    frames = await collect(make_ctx(kind, "[[print-env]]", ws, config=cfg))
    env = json.loads(completed_text(frames).removeprefix("ENV:"))
    assert "RUNNERHOST_SECRET" not in env and "OPENAI_API_KEY" not in env
    assert env["ALLOWED_ONE"] == "yes" and env["LC_HARNESS_TEST"] == "lc" and env["EXPLICIT"] == "x1"
    assert os.environ["PATH"] in env["PATH"]  # (a pyenv shim around the fake may prepend to it)
    # explicit config secrets reach the child but are scrubbed from everything we yield
    assert env["HARNESS_API_KEY"] == "***"
    dump = json.dumps([f.model_dump(mode="json") for f in frames])
    assert "host-secret-value-123" not in dump and "sk-parent-0123456789abcdef" not in dump
    assert "sk-configured-abcdef012345" not in dump
    # nothing else of the parent's environment got through
    allowed = {"PATH", "HOME", "LANG", "TERM", "TMPDIR", "ALLOWED_ONE"}
    leaked = [k for k, v in os.environ.items()
              if k not in allowed and not k.startswith(("LC_", "PYENV_")) and env.get(k) == v]
    assert leaked == []


async def test_workspace_confinement_escape_and_symlink(ws, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    for cwd in ("../escape", "../../outside", str(outside), "/etc"):
        frames = await collect(make_ctx("claude", "hi", ws, config={"cwd": cwd}))
        assert terminal(frames)[1]["code"] == "harness.workspace_denied", cwd
    session = ws / SessionKey(RUNNER_ID, "agent-h@1", "conv-1", None).digest()
    os.symlink(outside, session / "link-out")
    frames = await collect(make_ctx("claude", "hi", ws, config={"cwd": "link-out"}))
    assert terminal(frames)[1]["code"] == "harness.workspace_denied"
    frames = await collect(make_ctx("claude", "hi", ws, config={"cwd": "link-out/sub"}))
    assert terminal(frames)[1]["code"] == "harness.workspace_denied"
    assert not (outside / "sub").exists()
    # a session dir swapped for a symlink leading out is refused too
    other = SessionKey(RUNNER_ID, "agent-h@1", "conv-2", None).digest()
    os.symlink(outside, ws / other)
    frames = await collect(make_ctx("claude", "hi", ws, conversation_id="conv-2"))
    assert terminal(frames)[1]["code"] == "harness.workspace_denied"
    # a cwd inside the session works and is where the harness runs
    frames = await collect(make_ctx("codex", "[[print-env]]", ws, config={"cwd": "repo/src"}))
    assert terminal(frames)[0] == "run.completed"
    assert (session / "repo" / "src").is_dir()


# -- the gateway: MCP config and the capability token -----------------------------------------

async def test_claude_gets_mcp_config_file_and_token_never_leaks(ws, caplog):
    meta = {"gateway_url": "http://127.0.0.1:8799/mcp", "capability_token": TOKEN}
    ctx = make_ctx("claude", "[[read-mcp-config]]", ws, metadata=meta)
    with caplog.at_level(logging.DEBUG):
        frames = await collect(ctx)
    assert terminal(frames)[0] == "run.completed"
    report = json.loads(completed_text(frames).removeprefix("MCP:"))
    assert report["url"] == "http://127.0.0.1:8799/mcp" and report["type"] == "http"
    assert report["auth_sha256"] == hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()
    assert report["mode"] == "0o600"
    assert report["allowed_tools"] == ["mcp__runnerhost"]
    session = ws / SessionKey(RUNNER_ID, "agent-h@1", "conv-1", None).digest()
    assert Path(report["path"]).parent.parent == session  # inside the session dir
    assert not Path(report["path"]).exists()  # removed at the end of the run
    assert TOKEN not in json.dumps([f.model_dump(mode="json") for f in frames])
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


async def test_mcp_config_file_content_during_the_run(ws):
    """Read the file itself while the harness is still running."""
    meta = {"gateway_url": "https://gw.example/mcp", "capability_token": TOKEN}
    ctx = make_ctx("claude", "[[read-mcp-config]] [[sleep:0.2]]", ws, metadata=meta)
    gen = HarnessRunner().run(ctx, FakeAPI(ctx.run_id))
    session = ws / SessionKey(RUNNER_ID, "agent-h@1", "conv-1", None).digest()
    try:
        first = await gen.__anext__()  # state.updated: the harness is up and has read its config
        assert first.type == "state.updated"
        files = list((session / ".runnerhost").glob("mcp-*.json"))
        assert len(files) == 1
        content = json.loads(files[0].read_text())
        assert content == {"mcpServers": {"runnerhost": {
            "type": "http", "url": "https://gw.example/mcp", "headers": {"Authorization": f"Bearer {TOKEN}"}}}}
        assert oct(files[0].stat().st_mode & 0o777) == "0o600"
    finally:
        await gen.aclose()
    assert not list((session / ".runnerhost").glob("mcp-*.json"))


async def test_codex_gets_config_overrides_and_token_only_in_env(ws, caplog):
    meta = {"gateway_url": "http://127.0.0.1:8799/mcp", "capability_token": TOKEN}
    with caplog.at_level(logging.DEBUG):
        frames = await collect(make_ctx("codex", "[[read-mcp-config]]", ws, metadata=meta))
    report = json.loads(completed_text(frames).removeprefix("MCP:"))
    server = report["servers"]["runnerhost"]
    assert server["url"] == "http://127.0.0.1:8799/mcp"
    assert server["bearer_token_env_var"] == "RUNNERHOST_MCP_TOKEN"
    assert server["token_sha256"] == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert not any(TOKEN in a for a in report["argv"])
    assert TOKEN not in json.dumps([f.model_dump(mode="json") for f in frames])
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


@KINDS
async def test_token_echoed_by_a_crashing_harness_is_redacted(kind, ws):
    meta = {"gateway_url": "http://127.0.0.1:8799/mcp", "capability_token": TOKEN}
    frames = await collect(make_ctx(kind, "[[leak-token]]", ws, metadata=meta))
    rtype, data = terminal(frames)
    assert rtype == "run.failed" and data["code"] == "harness.exit_nonzero"
    assert TOKEN not in json.dumps([f.model_dump(mode="json") for f in frames])
    assert "***" in data["error"]


async def test_no_gateway_without_token(ws):
    frames = await collect(make_ctx("claude", "[[argv]]", ws, metadata={"gateway_url": "http://x/mcp"}))
    argv = json.loads(completed_text(frames).removeprefix("ARGV:"))
    assert "--mcp-config" not in argv


def test_manifest():
    m = HarnessRunner.manifest
    assert m.id == RUNNER_ID
    assert m.capabilities.streaming and m.capabilities.interrupt and not m.capabilities.steering
    p = m.permissions
    assert p.harness_gateway and p.history == ["page", "search"] and p.state == ["read", "write"]
    assert p.steering == ["pull"] and p.tools == ["call"] and p.knowledge_bases == ["retrieve"]
    from runners import BUILTIN_RUNNERS
    assert BUILTIN_RUNNERS[RUNNER_ID] == "runners.harness:HarnessRunner"


# -- the fakes parse argv as strictly as the real CLIs (our command lines depend on it) -----------

def run_fake(kind: str, *argv: str, cwd: Path, home: Path) -> tuple[int, str, str]:
    import subprocess
    proc = subprocess.run([sys.executable, FAKES[kind], *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=20, env={**os.environ, "FAKE_HARNESS_HOME": str(home)})
    return proc.returncode, proc.stdout, proc.stderr


def test_fake_claude_parses_like_commander(tmp_path, native_store):
    base = ["-p", "--output-format", "stream-json", "--verbose"]
    code, out, err = run_fake("claude", *base, "--bogus", "--", "hi", cwd=tmp_path, home=native_store)
    assert code == 1 and out == "" and "unknown option '--bogus'" in err
    # a variadic option eats a prompt that is not behind `--` (why the runner always writes `--`)
    code, out, _ = run_fake("claude", *base, "--allowedTools", "mcp__x", "hi there", cwd=tmp_path,
                            home=native_store)
    assert code == 0 and '"result": "echo: ' in out and "hi there" not in out.split('"result"')[1][:40]
    code, out, _ = run_fake("claude", *base, "--allowedTools", "mcp__x", "--", "hi there", cwd=tmp_path,
                            home=native_store)
    assert code == 0 and '"result": "echo: hi there"' in out
    code, _, err = run_fake("claude", *base, "--model", cwd=tmp_path, home=native_store)
    assert code == 1 and "argument missing" in err


def test_fake_codex_parses_like_clap(tmp_path, native_store):
    base = ["exec", "--json", "--skip-git-repo-check"]
    code, out, err = run_fake("codex", *base, "--bogus", "--", "hi", cwd=tmp_path, home=native_store)
    assert code == 2 and out == "" and "unexpected argument '--bogus'" in err
    code, _, err = run_fake("codex", *base, "--", "hi", "extra", cwd=tmp_path, home=native_store)
    assert code == 2 and "unexpected argument 'extra'" in err
    code, out, _ = run_fake("codex", *base, "--", "--looks-like-an-option", cwd=tmp_path, home=native_store)
    assert code == 0 and "echo: --looks-like-an-option" in out
    tid = json.loads(out.splitlines()[0])["thread_id"]
    # exec options are global: accepted after `resume` too
    code, out, _ = run_fake("codex", "exec", "resume", tid, "--json", "--skip-git-repo-check", "--", "again",
                            cwd=tmp_path, home=native_store)
    assert code == 0 and json.loads(out.splitlines()[0]) == {"type": "thread.started", "thread_id": tid}
