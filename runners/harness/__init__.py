"""``plugin:builtin/harness/default`` — Claude Code and Codex as external harnesses.

Layers (each usable on its own):

* :mod:`.parsers` — native lines → internal :mod:`.events` (``ClaudeParser``, ``CodexParser``);
* :mod:`.assembly` — internal events → protocol result frames (``ResultAssembler``);
* :mod:`.process` — the subprocess: process group, caps, deadline, kill (``HarnessProcess``);
* :mod:`.session` — ``SessionKey`` and the confined per-session workspace;
* :mod:`.runner` — ``HarnessRunner`` tying them together.
"""
from .assembly import ResultAssembler
from .parsers import make_parser
from .parsers.claude import ClaudeParser
from .parsers.codex import CodexParser
from .runner import HarnessConfig, HarnessRunner
from .session import SessionKey, WorkspaceDenied, cleanup_session, prepare_workspace, session_dir_for

__all__ = [
    "ClaudeParser", "CodexParser", "HarnessConfig", "HarnessRunner", "ResultAssembler",
    "SessionKey", "WorkspaceDenied", "cleanup_session", "make_parser", "prepare_workspace",
    "session_dir_for",
]
