"""Command lines for each harness kind, and the gateway (MCP) wiring.

Claude Code::

    <command> -p --output-format stream-json --verbose [--include-partial-messages]
              [--model M] [--resume <id>] [--mcp-config <file> --allowedTools mcp__<name>]
              <args…> -- <prompt>

Codex::

    <command> exec --json [--skip-git-repo-check] [--model M]
              [-c mcp_servers.<name>.url="<url>"
               -c mcp_servers.<name>.bearer_token_env_var="RUNNERHOST_MCP_TOKEN"]
              <args…> [resume <id>] -- <prompt>

The prompt always comes after ``--`` so a message starting with ``-`` can never
be read as an option (with ``prompt_via: stdin`` it is written to stdin instead,
``-p`` without a prompt for Claude, ``-`` for Codex).

Gateway choice for Codex: ``codex exec`` has no ``--mcp-config``; its only per-run
config channel is ``-c key=value`` overrides. Putting the bearer token in argv
would expose it in ``/proc/<pid>/cmdline`` (world-readable), so the override
names an environment variable (``bearer_token_env_var``) and the token travels
only in the child's environment. Nothing is written to disk for Codex. Claude
gets a 0600 JSON file inside the session directory, removed when the run ends.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

CODEX_TOKEN_ENV = "RUNNERHOST_MCP_TOKEN"
GATEWAY_DIR = ".runnerhost"


@dataclass
class Gateway:
    url: str
    token: str
    server_name: str = "runnerhost"


@dataclass
class Invocation:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)   # extra child env (never logged)
    stdin: bytes | None = None
    files: list[Path] = field(default_factory=list)      # to remove when the run ends


def write_claude_mcp_config(session_dir: Path, run_id: str, gw: Gateway) -> Path:
    """Write ``<session>/.runnerhost/mcp-<h>.json`` (0600, created exclusively)."""
    gw_dir = session_dir / GATEWAY_DIR
    gw_dir.mkdir(mode=0o700, exist_ok=True)
    if gw_dir.is_symlink() or not gw_dir.is_dir():
        raise OSError("gateway directory is not a plain directory")
    path = gw_dir / f"mcp-{hashlib.sha256(run_id.encode()).hexdigest()[:16]}.json"
    config = {"mcpServers": {gw.server_name: {
        "type": "http", "url": gw.url, "headers": {"Authorization": f"Bearer {gw.token}"},
    }}}
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh)
    return path


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def build_invocation(kind: str, command: list[str], prompt: str, *, session_dir: Path, run_id: str,
                     resume: str | None = None, model: str | None = None,
                     args: list[str] | None = None, gateway: Gateway | None = None,
                     include_partial_messages: bool = True, skip_git_repo_check: bool = True,
                     allow_gateway_tools: bool = True, prompt_via: str = "argv") -> Invocation:
    inv = Invocation(argv=list(command))
    if prompt_via == "stdin":
        inv.stdin = prompt.encode("utf-8")
    if kind == "claude":
        inv.argv += ["-p", "--output-format", "stream-json", "--verbose"]
        if include_partial_messages:
            inv.argv.append("--include-partial-messages")
        if model:
            inv.argv += ["--model", model]
        if resume:
            inv.argv += ["--resume", resume]
        if gateway is not None:
            path = write_claude_mcp_config(session_dir, run_id, gateway)
            inv.files.append(path)
            inv.argv += ["--mcp-config", str(path)]
            if allow_gateway_tools:
                inv.argv += ["--allowedTools", f"mcp__{gateway.server_name}"]
        inv.argv += list(args or [])
        if prompt_via != "stdin":
            inv.argv += ["--", prompt]
        return inv
    if kind == "codex":
        inv.argv += ["exec", "--json"]
        if skip_git_repo_check:
            inv.argv.append("--skip-git-repo-check")
        if model:
            inv.argv += ["--model", model]
        if gateway is not None:
            base = f"mcp_servers.{gateway.server_name}"
            inv.argv += ["-c", f"{base}.url={_toml_str(gateway.url)}",
                         "-c", f"{base}.bearer_token_env_var={_toml_str(CODEX_TOKEN_ENV)}"]
            inv.env[CODEX_TOKEN_ENV] = gateway.token
        inv.argv += list(args or [])
        if resume:
            inv.argv += ["resume", resume]
        inv.argv += ["--", "-"] if prompt_via == "stdin" else ["--", prompt]
        return inv
    raise ValueError(f"unknown harness kind {kind!r}")
