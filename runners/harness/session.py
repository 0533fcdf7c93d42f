"""Session identity and the per-session workspace.

:class:`SessionKey` names one external-harness session: (runner, binding,
conversation, thread). Its :meth:`~SessionKey.digest` is a sha256 over a
length-prefixed encoding — no separator ambiguity (``("a:b", "c")`` and
``("a", "b:c")`` differ) and ``None`` distinct from ``""`` — so it is safe as a
directory name and as a Ray actor name (ConversationSessionActor).

:func:`prepare_workspace` resolves ``<workspace_root>/<digest>`` and the
configured working directory inside it, refusing anything whose real path
leaves the session directory (``..``, absolute paths elsewhere, symlinks).
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from protocol.sessions import SessionKey

__all__ = ["SessionKey", "WorkspaceDenied", "prepare_workspace", "session_dir_for", "cleanup_session",
           "remove_session_dir", "session_dirs"]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")  # SessionKey.digest(): the name of every session directory


class WorkspaceDenied(Exception):
    """The configured workspace/cwd would leave the session root."""


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def session_dir_for(workspace_root: str | os.PathLike[str], key: SessionKey) -> Path:
    return Path(workspace_root) / key.digest()


def prepare_workspace(workspace_root: str | os.PathLike[str], key: SessionKey,
                      cwd: str | None = None) -> tuple[Path, Path]:
    """Create (0700) and validate the session dir and the working dir inside it.

    Returns ``(session_dir, cwd)`` as real paths. ``cwd`` (config) is relative
    to the session dir; an absolute ``cwd`` is accepted only if its real path is
    inside the session dir. Raises :class:`WorkspaceDenied` otherwise, or when
    the session dir itself is a symlink / not a directory.
    """
    root = os.path.realpath(os.fspath(workspace_root))
    os.makedirs(root, mode=0o700, exist_ok=True)
    session = os.path.join(root, key.digest())
    try:
        os.mkdir(session, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(session)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise WorkspaceDenied("the session directory is not a plain directory")
    real_session = os.path.realpath(session)
    if not _inside(real_session, root):
        raise WorkspaceDenied("the session directory escapes the workspace root")

    if not cwd:
        return Path(real_session), Path(real_session)
    candidate = cwd if os.path.isabs(cwd) else os.path.join(real_session, cwd)
    # Check the lexical form first (so "../x" is refused even if it doesn't exist),
    # then the real path of every existing prefix (symlinks).
    lexical = os.path.normpath(candidate)
    if not _inside(lexical, real_session):
        raise WorkspaceDenied("the configured cwd escapes the session directory")
    real = os.path.realpath(lexical)
    if not _inside(real, real_session):
        raise WorkspaceDenied("the configured cwd resolves (through a symlink) outside the session directory")
    os.makedirs(real, mode=0o700, exist_ok=True)
    # Re-check after creation (a racing symlink swap would show here).
    real_after = os.path.realpath(lexical)
    if not _inside(real_after, real_session) or not os.path.isdir(real_after):
        raise WorkspaceDenied("the configured cwd is not a directory inside the session directory")
    return Path(real_session), Path(real_after)


def cleanup_session(workspace_root: str | os.PathLike[str], key: SessionKey) -> bool:
    """Delete a session's directory (for ``agent_runtime_session`` → ``cleaned``).

    Returns False when there was nothing to delete. A symlink planted in place of
    the session dir is unlinked, never followed. The harness's own native session
    store (e.g. ``~/.claude/projects``) is not touched.
    """
    return remove_session_dir(workspace_root, key.digest())


def session_dirs(workspace_root: str | os.PathLike[str]) -> list[tuple[str, float]]:
    """``(digest, mtime)`` of every session directory under the root (other entries are ignored)."""
    root = os.fspath(workspace_root)
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    return [(e.name, e.stat(follow_symlinks=False).st_mtime) for e in entries if _DIGEST.fullmatch(e.name)]


def remove_session_dir(workspace_root: str | os.PathLike[str], digest: str) -> bool:
    """:func:`cleanup_session` by the session key's digest (what the directory is named)."""
    import shutil

    if not _DIGEST.fullmatch(digest):
        raise WorkspaceDenied("not a session directory name")
    root = os.path.realpath(os.fspath(workspace_root))
    session = os.path.join(root, digest)
    if not os.path.lexists(session):
        return False
    if os.path.islink(session) or not os.path.isdir(session):
        os.unlink(session)
        return True
    if not _inside(os.path.realpath(session), root):
        raise WorkspaceDenied("the session directory escapes the workspace root")
    shutil.rmtree(session)  # rmtree does not follow symlinks inside the tree
    return True
