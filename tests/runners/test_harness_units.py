"""Harness runner, pure layers: parsers on genuine fixtures, assembly, SessionKey,
redaction, env allowlist, workspace confinement, gateway file."""
from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from langbot_plugin.api.entities.builtin.runner.result import RunnerResult

from protocol.results import ResultValidator
from runners.harness import ClaudeParser, CodexParser, ResultAssembler, SessionKey, make_parser
from runners.harness.commands import Gateway, build_invocation, write_claude_mcp_config
from runners.harness.events import (
    FinalResult,
    Reasoning,
    SessionStarted,
    TextDelta,
    TextMessage,
    ToolUseResult,
    ToolUseStarted,
    Usage,
)
from runners.harness.process import build_env
from runners.harness.redact import MASK, Redactor
from runners.harness.session import WorkspaceDenied, cleanup_session, prepare_workspace

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "harness"


def lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def validate(frames, run_id="run-1"):
    v = ResultValidator(run_id)
    for f in frames:
        c = v.check(f)
        assert c.accepted, (f.type, c.verdict, c.reason)
        RunnerResult.model_validate(f.model_dump(mode="json"))
    return v


def assemble(parser, raw_lines, *, resumed=None, exit_code=0):
    asm = ResultAssembler("run-1", resumed_session_id=resumed)
    frames = []
    for line in raw_lines:
        for ev in parser.parse_line(line):
            frames += asm.feed(ev)
    frames += asm.finish(exit_code)
    return frames


def deltas_text(frames):
    return "".join(f.data["chunk"]["content"] for f in frames if f.type == "message.delta")


# -- Claude ------------------------------------------------------------------------

def test_claude_parser_on_genuine_stream():
    p = ClaudeParser()
    events = p.parse_lines(lines("claude_stream.jsonl"))
    sid = "8f6b3c1e-2f4a-4f0b-9a57-1c2d3e4f5a6b"
    assert events[0] == SessionStarted(sid)
    assert p.session_id == sid and p.init["mcp_servers"] == [{"name": "runnerhost", "status": "connected"}]
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta("I'll check ", block_start=True), TextDelta("the README."),
        TextDelta("The project is ", block_start=True), TextDelta("a tiny demo."),
    ]
    assert [e for e in events if isinstance(e, TextMessage)] == [
        TextMessage("I'll check the README.", streamed=True), TextMessage("The project is a tiny demo.", streamed=True),
    ]
    starts = [e for e in events if isinstance(e, ToolUseStarted)]
    assert [(s.tool_call_id, s.tool_name) for s in starts] == [
        ("toolu_01Read", "Read"), ("toolu_01Mcp", "mcp__runnerhost__history_page"), ("toolu_01Bash", "Bash")]
    assert starts[0].parameters == {"file_path": "/srv/ws/3f2a/README.md"}
    results = [e for e in events if isinstance(e, ToolUseResult)]
    assert results[0].tool_name == "Read" and "A tiny demo project." in results[0].result["content"]
    assert results[1].result == {"content": '{"items": [], "has_more": false}'}
    assert results[2].result is None and "No such file" in results[2].error
    assert Reasoning("(sub-agent) scanning files") in events  # nested text is not the reply
    usage = [e for e in events if isinstance(e, Usage)][0]
    assert usage.usage["output_tokens"] == 201 and usage.total_cost_usd == pytest.approx(0.0412335)
    assert events[-1] == FinalResult(is_error=False, text="The project is a tiny demo.", subtype="success")
    assert p.bad_lines == 0 and p.unknown_events == 0


def test_claude_fixture_assembles_to_valid_frames():
    frames = assemble(ClaudeParser(), lines("claude_stream.jsonl"))
    validate(frames)
    types = [f.type for f in frames]
    assert types[0] == "state.updated"
    assert frames[0].data == {"scope": "conversation", "key": "external.session_id",
                              "value": "8f6b3c1e-2f4a-4f0b-9a57-1c2d3e4f5a6b"}
    assert types.count("message.completed") == 1 and types[-1] == "run.completed"
    completed = next(f for f in frames if f.type == "message.completed").data["message"]["content"]
    assert completed == "I'll check the README.\n\nThe project is a tiny demo."
    assert deltas_text(frames) == completed
    assert types.count("tool.call.started") == 3 and types.count("tool.call.completed") == 3
    failed_tool = [f for f in frames if f.type == "tool.call.completed"][2]
    assert failed_tool.data["tool_name"] == "Bash" and failed_tool.data["error"]
    usage = frames[-1].usage.model_dump()
    assert usage["completion_tokens"] == 201 and usage["prompt_tokens"] == 23 + 5012 + 44136
    assert usage["total_cost_usd"] == pytest.approx(0.0412335)


def test_claude_without_partial_messages_streams_whole_blocks():
    raw = [json.dumps(x) for x in (
        {"type": "system", "subtype": "init", "session_id": "s1", "tools": [], "mcp_servers": []},
        {"type": "assistant", "session_id": "s1", "message": {"content": [{"type": "text", "text": "one"}]}},
        {"type": "assistant", "session_id": "s1", "message": {"content": [
            {"type": "tool_use", "id": "t1", "name": "Glob", "input": {"pattern": "*"}}]}},
        {"type": "user", "session_id": "s1", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "a.py"}]}},
        {"type": "assistant", "session_id": "s1", "message": {"content": [{"type": "text", "text": "two"}]}},
        {"type": "result", "subtype": "success", "is_error": False, "result": "two", "session_id": "s1"},
    )]
    frames = assemble(ClaudeParser(), raw)
    validate(frames)
    assert deltas_text(frames) == "one\n\ntwo"
    assert [f.data["message"]["content"] for f in frames if f.type == "message.completed"] == ["one\n\ntwo"]


def test_claude_error_result_fails_with_native_subtype():
    raw = [json.dumps({"type": "system", "subtype": "init", "session_id": "s1"}),
           json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True, "session_id": "s1",
                       "num_turns": 3, "usage": {"input_tokens": 1, "output_tokens": 2}})]
    frames = assemble(ClaudeParser(), raw, exit_code=1)
    validate(frames)
    assert frames[-1].type == "run.failed"
    assert frames[-1].data["code"] == "harness.error_max_turns" and not frames[-1].data["retryable"]


def test_claude_resumed_session_does_not_rewrite_state():
    raw = [json.dumps({"type": "system", "subtype": "init", "session_id": "same"}),
           json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "hi",
                       "session_id": "same"})]
    frames = assemble(ClaudeParser(), raw, resumed="same")
    validate(frames)
    assert [f.type for f in frames] == ["message.delta", "message.completed", "run.completed"]
    # Claude Code 2.1.x reports a per-invocation id under --resume; only the resumed id resumes
    # again, so the tag is remembered for the log, never stored.
    assembler = ResultAssembler("r1", resumed_session_id="other")
    parser = ClaudeParser()
    frames = [f for line in raw for e in parser.parse_line(line) for f in assembler.feed(e)]
    frames += assembler.finish(0)
    assert [f.type for f in frames] == ["message.delta", "message.completed", "run.completed"]
    assert assembler.invocation_ids == ["same"]


#: What Claude Code 2.1.197 printed for `claude -p --output-format stream-json --verbose --resume <id>`
#: when no session file exists for <id> (captured from the real CLI; exit code 1).
REAL_LOST_SESSION = (
    '{"type":"result","subtype":"error_during_execution","duration_ms":0,"duration_api_ms":0,"is_error":true,'
    '"num_turns":0,"stop_reason":null,"session_id":"3f0d6a8e-1111-4222-8333-944455556666","total_cost_usd":0,'
    '"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0,'
    '"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":"standard",'
    '"cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"inference_geo":"",'
    '"iterations":[],"speed":"standard"},"modelUsage":{},"permission_denials":[],'
    '"uuid":"95987b5a-5b99-48c6-8b14-662720f2b620",'
    '"errors":["No conversation found with session ID: 3f0d6a8e-1111-4222-8333-944455556666"]}')


def test_claude_lost_session_result_is_recognised():
    [started, _usage, final] = ClaudeParser().parse_line(REAL_LOST_SESSION)
    assert started == SessionStarted("3f0d6a8e-1111-4222-8333-944455556666")  # the stale id itself
    assert isinstance(final, FinalResult) and final.session_missing and final.is_error
    assert final.subtype == "error_during_execution" and "No conversation found" in final.error
    # any other error_during_execution is a real failure of a resumed turn, not a lost session
    other = json.loads(REAL_LOST_SESSION)
    other["errors"] = ["API Error: 529 overloaded"]
    final = ClaudeParser().parse_line(json.dumps(other))[-1]
    assert final.is_error and not final.session_missing


def test_resume_failed_action_validates_for_both_judges():
    assembler = ResultAssembler("r1")
    assembler.feed(SessionStarted("new-1"))
    frame = assembler.resume_failed("No conversation found with session ID: old-1", "old-1")
    validate([frame], run_id="r1")
    assert frame.data == {"action": "session.resume_failed", "target": {"kind": "harness_session"},
                          "payload": {"resumed": False, "reason": "No conversation found with session ID: old-1",
                                      "previous_session_id": "old-1", "new_session_id": "new-1"}}


# -- Codex -------------------------------------------------------------------------

def test_codex_parser_on_genuine_jsonl():
    p = CodexParser()
    events = p.parse_lines(lines("codex_exec.jsonl"))
    assert events[0] == SessionStarted("0199a213-81c0-7800-8aa1-bbab2a035a53")
    starts = [e for e in events if isinstance(e, ToolUseStarted)]
    assert [(s.tool_call_id, s.tool_name) for s in starts] == [
        ("item_1", "shell"), ("item_3", "mcp__runnerhost__history_page"), ("item_4", "shell"),
        ("item_5", "file_change")]
    assert starts[0].parameters == {"command": "bash -lc ls"}
    assert starts[1].parameters == {"limit": 5}
    results = {e.tool_call_id: e for e in events if isinstance(e, ToolUseResult)}
    assert results["item_1"].result == {"output": "docs\nsdk\nexamples\n", "exit_code": 0}
    assert results["item_1"].error is None
    assert results["item_3"].result["content"][0]["text"] == '{"items": []}'
    assert results["item_4"].error and results["item_4"].result["exit_code"] == 1
    assert Reasoning("**Searching for README files**") in events
    assert TextMessage("Repo contains docs, sdk, and examples directories.") in events
    assert Usage({"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}) in events
    assert events[-1] == FinalResult(is_error=False, text=None, subtype="success")
    assert p.unknown_events == 0 and p.bad_lines == 0


def test_codex_fixture_assembles_to_valid_frames():
    frames = assemble(CodexParser(), lines("codex_exec.jsonl"))
    validate(frames)
    assert frames[0].type == "state.updated" and frames[0].data["value"] == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    completed = [f for f in frames if f.type == "message.completed"]
    assert len(completed) == 1
    assert completed[0].data["message"]["content"] == "Repo contains docs, sdk, and examples directories."
    assert frames[-1].type == "run.completed"
    assert frames[-1].usage.prompt_tokens == 24763 and frames[-1].usage.completion_tokens == 122


def test_codex_turn_failed_and_legacy_item_type():
    raw = [json.dumps(x) for x in (
        {"type": "thread.started", "thread_id": "t-1"},
        {"type": "item.completed", "item": {"id": "item_0", "item_type": "assistant_message", "text": "partial"}},
        {"type": "error", "message": "stream disconnected"},
        {"type": "turn.failed", "error": {"message": "stream disconnected before completion"}},
    )]
    frames = assemble(CodexParser(), raw, exit_code=1)
    validate(frames)
    assert [f.type for f in frames] == ["state.updated", "message.delta", "message.completed", "run.failed"]
    assert frames[-1].data["code"] == "harness.turn_failed"
    assert "stream disconnected" in frames[-1].data["error"]


@pytest.mark.parametrize("kind", ["claude", "codex"])
def test_parsers_survive_garbage_and_unknown_events(kind, caplog):
    p = make_parser(kind)
    junk = ["not json", "[1,2]", '{"type":', "", '"str"', "\x00\xff",
            json.dumps({"type": "from_the_future", "x": 1}),
            json.dumps({"type": "item.completed", "item": {"id": "i", "type": "hologram"}}),
            json.dumps({"type": "system", "subtype": "weird"}),
            json.dumps({"type": "assistant", "message": None}),
            json.dumps({"type": "item.started", "item": "nope"})]
    with caplog.at_level(logging.WARNING):
        events = p.parse_lines(junk)
    assert not [e for e in events if isinstance(e, (TextMessage, FinalResult))]
    assert p.bad_lines >= 4
    assert p.unknown_events >= 1
    assert any("malformed JSON" in r.getMessage() for r in caplog.records)
    assert any("unknown native event" in r.getMessage() for r in caplog.records)


# -- assembly edges ------------------------------------------------------------------

def test_assembly_exit_paths():
    asm = ResultAssembler("run-1")
    frames = asm.feed(TextMessage("hi")) + asm.finish(0)  # no final result, exit 0, some text
    validate(frames)
    assert [f.type for f in frames] == ["message.delta", "message.completed", "run.completed"]

    asm = ResultAssembler("run-1")
    frames = asm.finish(2, "boom")
    validate(frames)
    assert frames[-1].data["code"] == "harness.exit_nonzero" and "boom" in frames[-1].data["error"]

    asm = ResultAssembler("run-1")
    frames = asm.finish(-9)
    assert "signal 9" in frames[-1].data["error"]

    asm = ResultAssembler("run-1")
    frames = asm.feed(FinalResult(text="")) + asm.finish(0)
    validate(frames)
    assert frames[-1].data["code"] == "runner.empty_output"

    asm = ResultAssembler("run-1")
    frames = asm.feed(TextDelta("par", block_start=True)) + asm.fail("runner.timeout", "late", retryable=True)
    validate(frames)
    assert [f.type for f in frames] == ["message.delta", "message.completed", "run.failed"]
    assert frames[-1].data == {"code": "runner.timeout", "error": "late", "retryable": True}
    assert asm.fail("x", "y") == [] and asm.finish(0) == [] and asm.feed(TextMessage("late")) == []


def test_assembly_redacts_known_secrets_everywhere():
    red = Redactor(["tok-SECRET-123456"])
    asm = ResultAssembler("run-1", redactor=red)
    frames = (asm.feed(ToolUseStarted("c1", "shell", {"command": "echo tok-SECRET-123456"}))
              + asm.feed(ToolUseResult("c1", None, result={"output": "tok-SECRET-123456"}))
              + asm.feed(TextMessage("the token is tok-SECRET-123456"))
              + asm.fail("harness.exit_nonzero", "stderr: Bearer tok-SECRET-123456"))
    validate(frames)
    dump = json.dumps([f.model_dump(mode="json") for f in frames])
    assert "tok-SECRET-123456" not in dump and MASK in dump


# -- SessionKey, redaction, env, workspace -------------------------------------------------

def test_session_key_digest_is_stable_and_unambiguous():
    k = SessionKey("plugin:builtin/harness/default", "agent-1@3", "conv-1", "thread-9")
    assert k.digest() == SessionKey("plugin:builtin/harness/default", "agent-1@3", "conv-1", "thread-9").digest()
    assert len(k.digest()) == 64 and int(k.digest(), 16) >= 0
    # pinned: the actor layer names ConversationSessionActors with it
    assert k.digest() == PINNED_DIGEST
    assert SessionKey("r", "a:b", "c", None).digest() != SessionKey("r", "a", "b:c", None).digest()
    assert SessionKey("r", "b", "c", None).digest() != SessionKey("r", "b", "c", "").digest()
    assert SessionKey("r", None, "c", None).digest() != SessionKey("r", "", "c", None).digest()
    assert SessionKey("r", "b", "c", "t").actor_name().startswith("harness-session-")


#: sha256 of b"runnerhost.session.v1" + per field (0x01 + u64be length + utf-8 | 0x00 for None)
PINNED_DIGEST = "56e33c809cf9e7da469179e356ae9f9ff9939a4ff5ae91f9977afbcedf086ae3"


def test_redactor_diagnostics():
    red = Redactor(["abcdef123456"])
    out = red.scrub_diagnostic("key abcdef123456; Authorization: Bearer eyJhbGciOi.xyz; "
                               "OPENAI_API_KEY=sk-live-0123456789abcdef; ghp_0123456789abcdefghij")
    assert "abcdef123456" not in out and "eyJhbGciOi" not in out
    assert "sk-live" not in out and "ghp_0123" not in out
    assert "OPENAI_API_KEY=" + MASK in out
    assert red.scrub("short") == "short"


def test_build_env_allowlist():
    parent = {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "LC_ALL": "C", "TERM": "xterm",
              "TMPDIR": "/t", "OPENAI_API_KEY": "sk-x", "RUNNERHOST_SECRET": "s", "RUNNERHOST_DB": "pg",
              "ANTHROPIC_API_KEY": "a", "ANTHROPIC_MODEL": "m", "AWS_SECRET_ACCESS_KEY": "z"}
    env = build_env(["ANTHROPIC_*", "RUNNERHOST_SECRET"], {"EXTRA": "1"}, parent=parent)
    assert env == {"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "LC_ALL": "C", "TERM": "xterm",
                   "TMPDIR": "/t", "ANTHROPIC_API_KEY": "a", "ANTHROPIC_MODEL": "m", "EXTRA": "1"}


def test_workspace_confinement(tmp_path):
    root = tmp_path / "ws"
    key = SessionKey("r", "b", "c", "t")
    session, cwd = prepare_workspace(root, key)
    assert session == cwd and session.name == key.digest()
    assert stat.S_IMODE(os.stat(session).st_mode) == 0o700
    _, sub = prepare_workspace(root, key, "proj/src")
    assert sub == session / "proj" / "src" and sub.is_dir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (session / "inner").mkdir()
    os.symlink(session / "inner", session / "ok-link")
    assert prepare_workspace(root, key, "ok-link")[1] == session / "inner"  # stays inside: fine
    os.symlink(outside, session / "out-link")
    for bad in ("../x", "../../outside", str(outside), "out-link", "out-link/deeper", "/etc"):
        with pytest.raises(WorkspaceDenied):
            prepare_workspace(root, key, bad)
    # a planted symlink in place of a session dir is refused
    key2 = SessionKey("r", "b", "c2", None)
    os.symlink(outside, root / key2.digest())
    with pytest.raises(WorkspaceDenied):
        prepare_workspace(root, key2)
    # cleanup: removes the session tree, never what symlinks point at
    assert cleanup_session(root, key) is True and not session.exists()
    assert outside.is_dir() and (outside / "sub").exists() is False
    assert cleanup_session(root, key) is False
    assert cleanup_session(root, key2) is True and outside.is_dir()


def test_claude_mcp_config_file(tmp_path):
    gw = Gateway(url="http://127.0.0.1:8765/mcp", token="cap-token-abcdef0123456789")
    path = write_claude_mcp_config(tmp_path, "run-1", gw)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.parent.parent == tmp_path
    assert json.loads(path.read_text()) == {"mcpServers": {"runnerhost": {
        "type": "http", "url": "http://127.0.0.1:8765/mcp",
        "headers": {"Authorization": "Bearer cap-token-abcdef0123456789"}}}}
    inv = build_invocation("claude", ["claude"], "-- hi", session_dir=tmp_path, run_id="run-1", gateway=gw,
                           resume="abc")
    assert inv.argv[-2:] == ["--", "-- hi"] and "--mcp-config" in inv.argv and "--resume" in inv.argv
    assert not any(gw.token in a for a in inv.argv)
    inv = build_invocation("codex", ["codex"], "hi", session_dir=tmp_path, run_id="run-1", gateway=gw,
                           resume="t-1")
    assert inv.argv[:3] == ["codex", "exec", "--json"]
    assert inv.argv[-4:] == ["resume", "t-1", "--", "hi"]
    assert 'mcp_servers.runnerhost.url="http://127.0.0.1:8765/mcp"' in inv.argv
    assert not any(gw.token in a for a in inv.argv) and inv.env == {"RUNNERHOST_MCP_TOKEN": gw.token}
