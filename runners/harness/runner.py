"""``plugin:builtin/harness/default`` — Claude Code / Codex driven as a subprocess.

One run = one harness turn: the prompt (current input + steered inputs pulled
once before start) goes to ``claude -p`` / ``codex exec``; the native session id
is kept in conversation State (``external.session_id``) and passed back as
``--resume`` / ``resume <id>`` on the next turn. The harness runs in its own
process group inside a per-session directory, with an allowlisted environment,
capped output and the run's deadline; it reaches the host's runner API through
the MCP gateway when the host provides ``gateway_url`` + ``capability_token`` in
``ctx.runtime.metadata``.

If a stored session id cannot be resumed (Claude Code's ``error_during_execution``
"No conversation found with session ID", or a harness that fails before reporting
any session: native session lost, another node, cleaned workspace) the runner
starts a fresh native session once, records its id (``state.updated``, which the
session actor also writes to ``agent_runtime_session``) and yields
``action.requested`` ``session.resume_failed`` before the terminal frame
(``resume_fallback``). A resumed turn never replaces the stored id with the
per-invocation id Claude Code 2.1.x reports under ``--resume``.

Outcome codes (``run.failed.code``): ``harness.config_invalid``,
``harness.empty_input``, ``harness.workspace_denied``, ``harness.workspace_error``,
``harness.start_failed``, ``harness.exit_nonzero``, ``harness.error``,
``harness.<native subtype>`` (``error_max_turns``, ``error_during_execution``,
``turn_failed``), ``harness.no_result``, ``harness.output_too_large``,
``runner.empty_output``, ``runner.timeout`` (retryable).

Turn serialization per session is the ConversationSessionActor's job (SPEC §10);
this runner is stateless across runs.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from protocol.context import RunContext
from protocol.errors import RunnerHostError
from protocol.logs import get_logger
from protocol.manifest import Capabilities, ConfigField, Permissions, RunnerManifest
from protocol.results import RunResult
from protocol.runner import Runner, RunnerAPI

from .assembly import SESSION_STATE_KEY, ResultAssembler
from .commands import Gateway, build_invocation
from .parsers import make_parser
from .process import (
    HarnessProcess,
    HarnessStartError,
    HarnessTimeout,
    OutputTooLarge,
    ProcessLimits,
    build_env,
)
from .redact import Redactor
from .session import SessionKey, WorkspaceDenied, prepare_workspace

log = get_logger("runners.harness")

RUNNER_ID = "plugin:builtin/harness/default"
DEFAULT_COMMANDS = {"claude": ["claude"], "codex": ["codex"]}
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def default_workspace_root() -> str:
    return os.path.join(tempfile.gettempdir(), "runnerhost-harness")


class HarnessConfig(BaseModel):
    """``runner_config`` of the harness runner. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["claude", "codex"] = "claude"
    command: list[str] | str | None = None
    args: list[str] = Field(default_factory=list)
    model: str | None = None
    timeout_s: float = Field(default=600.0, gt=0)
    workspace_root: str | None = None
    cwd: str | None = None
    env_allow: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    prompt_via: Literal["argv", "stdin"] = "argv"
    include_partial_messages: bool = True
    skip_git_repo_check: bool = True
    allow_gateway_tools: bool = True
    mcp_server_name: str = Field(default="runnerhost", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    steering: bool = True
    resume_fallback: bool = True
    max_stdout_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_line_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    stderr_tail_bytes: int = Field(default=8 * 1024, ge=0)
    kill_grace_s: float = Field(default=2.0, ge=0)
    exit_grace_s: float = Field(default=10.0, ge=0)

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _ENV_NAME_RE.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
        return v

    def argv0(self) -> list[str]:
        if self.command is None:
            return list(DEFAULT_COMMANDS[self.kind])
        if isinstance(self.command, str):
            return [self.command]  # one path, never shell-split
        if not self.command:
            raise ValueError("command is empty")
        return list(self.command)

    def limits(self) -> ProcessLimits:
        return ProcessLimits(max_stdout_bytes=self.max_stdout_bytes, max_line_bytes=self.max_line_bytes,
                             stderr_tail_bytes=self.stderr_tail_bytes, kill_grace_s=self.kill_grace_s)


def session_key_for(ctx: RunContext, runner_id: str = RUNNER_ID) -> SessionKey:
    """The session of this run: runner, binding, conversation, thread.

    ``binding_id`` is read from ``ctx.runtime.metadata`` (then ``ctx.metadata``);
    RunContext has no first-class field for it.
    """
    binding_id = ctx.runtime.metadata.get("binding_id") or ctx.metadata.get("binding_id")
    conv = ctx.conversation
    conversation_id = (conv.conversation_id if conv else None) or ctx.context.conversation_id
    thread_id = (conv.thread_id if conv else None) or ctx.context.thread_id
    if conversation_id is None:
        # No conversation: a one-off session of its own (never shared).
        conversation_id = f"run:{ctx.run_id}"
    return SessionKey(runner_id, str(binding_id) if binding_id is not None else None,
                      str(conversation_id), str(thread_id) if thread_id is not None else None)


def input_text(ctx: RunContext) -> str:
    if ctx.input.text:
        return ctx.input.text
    return "\n".join(p.text for p in ctx.input.contents if p.type == "text" and p.text)


def resume_id(ctx: RunContext) -> str | None:
    value = ctx.state.conversation.get(SESSION_STATE_KEY)
    if value is None:
        return None
    if isinstance(value, str) and _SESSION_ID_RE.match(value):
        return value
    log.warning("run %s: ignoring a malformed %s in conversation state", ctx.run_id, SESSION_STATE_KEY)
    return None


def gateway_of(ctx: RunContext, name: str) -> Gateway | None:
    meta = ctx.runtime.metadata or {}
    url, token = meta.get("gateway_url"), meta.get("capability_token")
    if not url or not token:
        return None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        log.warning("run %s: gateway_url is not an http(s) URL; gateway disabled", ctx.run_id)
        return None
    return Gateway(url=url, token=str(token), server_name=name)


class HarnessRunner(Runner):
    manifest = RunnerManifest(
        id=RUNNER_ID,
        label="External harness (Claude Code / Codex)",
        description="Drives Claude Code or Codex as a subprocess per conversation session; "
                    "the harness reaches host resources through the MCP gateway.",
        version="1.0.0",
        capabilities=Capabilities(streaming=True, interrupt=True),
        execution="session",
        permissions=Permissions(
            harness_gateway=True, history=["page", "search"], state=["read", "write"],
            steering=["pull"], tools=["call"], knowledge_bases=["retrieve"],
        ),
        config_schema=[
            ConfigField(name="kind", type="select", default="claude", required=True,
                        options=[{"name": "claude"}, {"name": "codex"}]),
            ConfigField(name="command", type="array", default=None,
                        description={"en_US": "Executable (path string, or argv list); default `claude`/`codex`."}),
            ConfigField(name="args", type="array", default=[]),
            ConfigField(name="model", type="string", default=None),
            ConfigField(name="timeout_s", type="number", default=600.0),
            ConfigField(name="workspace_root", type="string", default=None),
            ConfigField(name="cwd", type="string", default=None),
            ConfigField(name="env_allow", type="array", default=[]),
            ConfigField(name="env", type="object", default={}, secret=True,
                        description={"en_US": "Explicit environment values (secrets: write-only through "
                                              "the API, scrubbed from output)."}),
            ConfigField(name="prompt_via", type="select", default="argv",
                        options=[{"name": "argv"}, {"name": "stdin"}]),
            ConfigField(name="include_partial_messages", type="boolean", default=True),
            ConfigField(name="skip_git_repo_check", type="boolean", default=True),
            ConfigField(name="allow_gateway_tools", type="boolean", default=True),
            ConfigField(name="mcp_server_name", type="string", default="runnerhost"),
            ConfigField(name="steering", type="boolean", default=True),
            ConfigField(name="resume_fallback", type="boolean", default=True),
            ConfigField(name="max_stdout_bytes", type="integer", default=64 * 1024 * 1024),
            ConfigField(name="max_line_bytes", type="integer", default=8 * 1024 * 1024),
            ConfigField(name="stderr_tail_bytes", type="integer", default=8 * 1024),
            ConfigField(name="kill_grace_s", type="number", default=2.0),
            ConfigField(name="exit_grace_s", type="number", default=10.0),
        ],
    )

    async def run(self, ctx: RunContext, api: RunnerAPI) -> AsyncIterator[RunResult]:
        run_id = ctx.run_id
        try:
            cfg = HarnessConfig.model_validate(ctx.config or {})
            command = cfg.argv0()
        except (ValidationError, ValueError) as exc:
            yield RunResult.failed(run_id, "harness.config_invalid", _config_error(exc))
            return

        redactor = Redactor(cfg.env.values())
        gateway = gateway_of(ctx, cfg.mcp_server_name)
        if gateway is not None:
            redactor.add(gateway.token)

        prompt = await self._prompt(ctx, api, cfg)
        if not prompt.strip():
            yield RunResult.failed(run_id, "harness.empty_input", "the event carries no text for the harness")
            return

        key = session_key_for(ctx, self.manifest.id)
        root = cfg.workspace_root or default_workspace_root()
        try:
            session_dir, cwd = prepare_workspace(root, key, cfg.cwd)
        except WorkspaceDenied as exc:
            yield RunResult.failed(run_id, "harness.workspace_denied", str(exc))
            return
        except OSError as exc:
            yield RunResult.failed(run_id, "harness.workspace_error",
                                   f"cannot prepare the session workspace: {exc.strerror or type(exc).__name__}")
            return

        resume = resume_id(ctx)
        timeout = cfg.timeout_s
        if ctx.runtime.deadline_at is not None:
            timeout = min(timeout, ctx.runtime.deadline_at - time.time())
        if timeout <= 0:
            yield RunResult.failed(run_id, "runner.timeout",
                                   "the run's deadline had passed before the harness started", retryable=True)
            return
        deadline = time.monotonic() + timeout

        # With a stored session id, a harness that cannot resume it (native session lost:
        # cleaned workspace or harness home, another node, expired) fails before doing anything;
        # then start a fresh native session once instead of failing every later turn of the
        # conversation too — and say so (session.resume_failed) before the turn's terminal frame.
        attempts = [resume, None] if (resume and cfg.resume_fallback) else [resume]
        lost: str | None = None  # why the stored session could not be resumed
        for i, attempt_resume in enumerate(attempts):
            last = i == len(attempts) - 1
            status = _Attempt()
            async with contextlib.aclosing(self._attempt(
                    ctx, cfg, command, prompt, key, session_dir, cwd, attempt_resume, gateway, redactor,
                    deadline, status)) as frames:
                async for frame in frames:
                    if not last and (why := _lost_session(frame, status)) is not None:
                        log.warning("run %s: the harness could not resume native session %s (%s); "
                                    "starting a new one", run_id, attempt_resume,
                                    redactor.scrub_diagnostic(why)[:200])
                        lost = why
                        break
                    if lost is not None and frame.is_terminal and status.assembler is not None:
                        yield status.assembler.resume_failed(lost, resume)
                    status.yielded = True
                    yield frame
                else:
                    return

    async def _attempt(self, ctx: RunContext, cfg: HarnessConfig, command: list[str], prompt: str,
                       key: SessionKey, session_dir: Path, cwd: Path, resume: str | None,
                       gateway: Gateway | None, redactor: Redactor,
                       deadline: float, status: "_Attempt") -> AsyncIterator[RunResult]:
        """One harness process, start to terminal frame."""
        run_id = ctx.run_id
        assembler = ResultAssembler(run_id, resumed_session_id=resume, redactor=redactor)
        status.assembler = assembler
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            for frame in assembler.fail("runner.timeout", "the run's deadline passed", retryable=True):
                yield frame
            return
        invocation = None
        proc: HarnessProcess | None = None
        frames: list[RunResult] = []
        try:
            try:
                invocation = build_invocation(
                    cfg.kind, command, prompt, session_dir=session_dir, run_id=run_id, resume=resume,
                    model=cfg.model, args=cfg.args, gateway=gateway,
                    include_partial_messages=cfg.include_partial_messages,
                    skip_git_repo_check=cfg.skip_git_repo_check,
                    allow_gateway_tools=cfg.allow_gateway_tools, prompt_via=cfg.prompt_via)
            except OSError as exc:
                yield RunResult.failed(run_id, "harness.workspace_error",
                                       f"cannot write the gateway config: {exc.strerror or type(exc).__name__}")
                return
            env = build_env(cfg.env_allow, {**cfg.env, **invocation.env})
            proc = HarnessProcess(invocation.argv, cwd=str(cwd), env=env, limits=cfg.limits(),
                                  timeout_s=timeout, stdin_data=invocation.stdin)
            log.info("run %s: starting %s harness (session %s, %s)", run_id, cfg.kind, key.digest()[:12],
                     f"resume {resume}" if resume else "new native session")
            try:
                await proc.start()
            except HarnessStartError as exc:
                yield RunResult.failed(run_id, "harness.start_failed", redactor.scrub_diagnostic(str(exc)))
                return

            parser = make_parser(cfg.kind)
            try:
                async with contextlib.aclosing(proc.lines()) as lines:
                    async for line in lines:
                        for event in parser.parse_line(line):
                            for frame in assembler.feed(event):
                                yield frame
                        if assembler.final is not None and proc.soft_deadline is None:
                            proc.expect_exit(cfg.exit_grace_s)
                code = await proc.wait_exit()
                await proc.close()
                frames = assembler.finish(code, redactor.scrub_diagnostic(proc.stderr_tail()))
            except HarnessTimeout:
                log.warning("run %s: harness timed out after %.1fs; killing process group %s",
                            run_id, timeout, proc.pgid)
                await proc.close()
                frames = assembler.fail("runner.timeout", f"harness did not finish within {timeout:.1f}s",
                                        retryable=True)
            except OutputTooLarge as exc:
                await proc.close()
                frames = assembler.fail("harness.output_too_large", str(exc))
            if parser.bad_lines or parser.unknown_events or proc.dropped_lines:
                log.info("run %s: %d malformed, %d unknown native events, %d over-long lines skipped",
                         run_id, parser.bad_lines, parser.unknown_events, proc.dropped_lines)
        finally:
            # Every path — success, failure, timeout, cancellation, generator close.
            if proc is not None:
                await proc.close()
            if invocation is not None:
                for path in invocation.files:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
        for frame in frames:
            yield frame

    async def _prompt(self, ctx: RunContext, api: RunnerAPI, cfg: HarnessConfig) -> str:
        parts = [input_text(ctx)]
        if cfg.steering and ctx.context.available_apis.steering_pull:
            try:
                pulled = await api.steering_pull("all")
            except (RunnerHostError, NotImplementedError) as exc:
                log.warning("run %s: steering pull failed: %s", ctx.run_id, getattr(exc, "code", exc))
            else:
                for item in pulled.items:
                    text = item.input.text or "\n".join(
                        p.text for p in item.input.contents if p.type == "text" and p.text)
                    if text:
                        parts.append(text)
        return "\n\n".join(p for p in parts if p)


_RESUME_FAILURE_CODES = frozenset({"harness.exit_nonzero", "harness.error"})


def _lost_session(frame: RunResult, status: "_Attempt") -> str | None:
    """Why this attempt's terminal ``frame`` means "the stored native session is gone", or None.

    Only a failure before anything reached the client qualifies: Claude Code's lost-session
    result (``FinalResult.session_missing``), or a harness that exited non-zero without
    reporting any session (Codex: ``no rollout found for thread id …`` on stderr).
    """
    if frame.type != "run.failed" or status.yielded or status.assembler is None:
        return None
    assembler = status.assembler
    if assembler.final is not None and assembler.final.session_missing:
        return assembler.final.error or "the native session was not found"
    if assembler.session_id is None and frame.data.get("code") in _RESUME_FAILURE_CODES:
        return str(frame.data.get("error") or "the harness failed before starting a session")
    return None


class _Attempt:
    """What the retry logic needs to know about one harness attempt."""

    def __init__(self) -> None:
        self.yielded = False
        self.assembler: ResultAssembler | None = None

    @property
    def session_id(self) -> str | None:
        return self.assembler.session_id if self.assembler is not None else None


def _config_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return f"invalid runner_config: {loc}: {first.get('msg')}" if loc else f"invalid runner_config: {first.get('msg')}"
    return f"invalid runner_config: {exc}"
