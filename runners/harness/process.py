"""The harness subprocess: its own process group, capped streams, deadline, kill.

:class:`HarnessProcess` starts ``argv`` with ``start_new_session=True`` (the
child leads a new session *and* process group, so every descendant it spawns can
be signalled at once), stdin closed, stdout read in chunks and split into lines
(total cap and per-line cap), stderr drained concurrently into a bounded tail.

Every exit path ends in :meth:`HarnessProcess.close`: SIGTERM to the group, a
grace period for the leader to exit, then SIGKILL to the group (stragglers
included) — also when the caller is cancelled or its generator is closed.

:func:`build_env` builds the child's environment from an allowlist; the host's
own ``RUNNERHOST_*`` variables never pass, even when allowlisted.
"""
from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import signal
import time
from dataclasses import dataclass
from typing import AsyncIterator, Iterable, Mapping
from protocol.logs import get_logger

log = get_logger(__name__)

BASE_ENV = ("PATH", "HOME", "LANG", "TERM", "TMPDIR")
BASE_ENV_PREFIXES = ("LC_",)
#: Never inherited from the host process, whatever the allowlist says.
DENY_ENV_PREFIXES = ("RUNNERHOST_",)
READ_CHUNK = 64 * 1024


class HarnessStartError(Exception):
    """The executable could not be started (missing, not executable, bad cwd)."""


class HarnessTimeout(Exception):
    """The run's deadline passed while the harness was still running."""


class OutputTooLarge(Exception):
    """The harness wrote more stdout than the configured cap."""


def build_env(allow: Iterable[str] = (), explicit: Mapping[str, str] | None = None,
              parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment.

    From ``parent`` (default ``os.environ``) only ``PATH HOME LANG TERM TMPDIR
    LC_*`` and the names in ``allow`` (exact names or ``fnmatch`` patterns such
    as ``ANTHROPIC_*``) pass; ``RUNNERHOST_*`` never does. ``explicit`` values
    (agent config ``env``) are set last and always win.
    """
    parent = os.environ if parent is None else parent
    patterns = [a for a in allow if a]
    env: dict[str, str] = {}
    for name, value in parent.items():
        if name.startswith(DENY_ENV_PREFIXES):
            continue
        if (name in BASE_ENV or name.startswith(BASE_ENV_PREFIXES)
                or any(fnmatch.fnmatchcase(name, p) for p in patterns)):
            env[name] = value
    for name, value in (explicit or {}).items():
        env[str(name)] = str(value)
    return env


@dataclass
class ProcessLimits:
    max_stdout_bytes: int = 64 * 1024 * 1024
    max_line_bytes: int = 8 * 1024 * 1024
    stderr_tail_bytes: int = 8 * 1024
    kill_grace_s: float = 2.0
    #: After the leader exits, how long to keep draining stdout a descendant holds open.
    exit_drain_s: float = 0.5


class HarnessProcess:
    def __init__(self, argv: list[str], *, cwd: str, env: dict[str, str],
                 limits: ProcessLimits | None = None, timeout_s: float | None = None,
                 stdin_data: bytes | None = None) -> None:
        if not argv:
            raise HarnessStartError("empty command")
        self.argv = list(argv)
        self.cwd = cwd
        self.env = env
        self.limits = limits or ProcessLimits()
        self.timeout_s = timeout_s
        self.stdin_data = stdin_data
        self.deadline: float | None = None      # monotonic; the hard (timeout) deadline
        self.soft_deadline: float | None = None  # monotonic; "stop waiting, it's done"
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self.pgid: int | None = None
        self.stdout_bytes = 0
        self.dropped_lines = 0
        self._stderr = bytearray()
        self.stderr_bytes = 0
        self._exit_task: asyncio.Future | None = None
        self._stderr_task: asyncio.Task | None = None
        self._stdin_task: asyncio.Task | None = None
        self._read_task: asyncio.Future | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        if self.timeout_s is not None:
            self.deadline = time.monotonic() + max(0.0, self.timeout_s)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, env=self.env,
                stdin=asyncio.subprocess.PIPE if self.stdin_data is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError, OSError) as exc:
            raise HarnessStartError(f"cannot start {os.path.basename(self.argv[0])!r}: "
                                    f"{exc.strerror or type(exc).__name__}") from None
        self.pid = self.pgid = self.proc.pid
        log.debug("harness started pid=%s cmd=%s", self.pid, os.path.basename(self.argv[0]))
        self._exit_task = asyncio.ensure_future(self._watch_exit())
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())
        if self.stdin_data is not None:
            self._stdin_task = asyncio.ensure_future(self._feed_stdin())

    async def _watch_exit(self) -> int:
        """The leader's exit code, as soon as it exits.

        ``Process.wait()`` alone is not enough: on Python 3.11 it resolves only once
        every pipe is closed, which a descendant holding stdout can delay forever.
        ``returncode`` is set by the child watcher at exit, so poll it as well.
        """
        assert self.proc is not None
        waiter = asyncio.ensure_future(self.proc.wait())
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=0.05)
                if done:
                    return waiter.result()
                if self.proc.returncode is not None:
                    return self.proc.returncode
        finally:
            if not waiter.done():
                waiter.cancel()

    async def _feed_stdin(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(self.stdin_data or b"")
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            try:
                self.proc.stdin.close()
            except Exception:
                pass

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        cap = max(0, self.limits.stderr_tail_bytes)
        while True:
            chunk = await self.proc.stderr.read(READ_CHUNK)
            if not chunk:
                return
            self.stderr_bytes += len(chunk)
            self._stderr += chunk
            if len(self._stderr) > cap:
                del self._stderr[: len(self._stderr) - cap]

    def stderr_tail(self) -> str:
        text = bytes(self._stderr).decode("utf-8", errors="replace")
        if self.stderr_bytes > len(self._stderr):
            text = "…" + text
        return text

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def expect_exit(self, grace_s: float) -> None:
        """The harness reported its final result: give it ``grace_s`` to finish by itself."""
        soft = time.monotonic() + max(0.0, grace_s)
        self.soft_deadline = soft if self.soft_deadline is None else min(self.soft_deadline, soft)

    def _remaining(self) -> tuple[float | None, bool]:
        """Seconds until the nearest deadline, and whether that one is the hard deadline."""
        now = time.monotonic()
        hard = None if self.deadline is None else self.deadline - now
        soft = None if self.soft_deadline is None else self.soft_deadline - now
        if soft is not None and (hard is None or soft < hard):
            return max(0.0, soft), False
        return (None if hard is None else max(0.0, hard)), True

    # -- stdout ------------------------------------------------------------------
    async def lines(self) -> AsyncIterator[bytes]:
        """Yield stdout lines (without the newline) until EOF, a deadline or a cap.

        Raises :class:`HarnessTimeout` at the hard deadline and
        :class:`OutputTooLarge` past ``max_stdout_bytes``. Lines longer than
        ``max_line_bytes`` are dropped (logged), not fatal.
        """
        assert self.proc is not None and self.proc.stdout is not None and self._exit_task is not None
        limits = self.limits
        buf = bytearray()
        dropping = False
        exit_seen: float | None = None
        try:
            while True:
                if self._read_task is None:
                    self._read_task = asyncio.ensure_future(self.proc.stdout.read(READ_CHUNK))
                waiters = {self._read_task}
                timeout, hard = self._remaining()
                if self._exit_task.done():
                    exit_seen = exit_seen or time.monotonic()
                    drain_left = max(0.0, exit_seen + limits.exit_drain_s - time.monotonic())
                    if timeout is None or drain_left < timeout:
                        timeout, hard = drain_left, False
                else:
                    waiters.add(self._exit_task)
                done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if self._read_task in done:
                    chunk = self._read_task.result()
                    self._read_task = None
                    if not chunk:
                        break
                    self.stdout_bytes += len(chunk)
                    if self.stdout_bytes > limits.max_stdout_bytes:
                        raise OutputTooLarge(f"harness stdout exceeded {limits.max_stdout_bytes} bytes")
                    buf += chunk
                    while True:
                        nl = buf.find(b"\n")
                        if nl < 0:
                            break
                        line = bytes(buf[:nl])
                        del buf[: nl + 1]
                        if dropping:
                            dropping = False
                            continue
                        if len(line) > limits.max_line_bytes:
                            self._drop_line(len(line))
                            continue
                        yield line
                    if len(buf) > limits.max_line_bytes:
                        if not dropping:
                            self._drop_line(len(buf))
                        dropping = True
                        buf.clear()
                    continue
                if done:  # only the exit task finished: loop to switch to the drain timeout
                    continue
                if hard:
                    raise HarnessTimeout("harness deadline passed")
                if exit_seen is not None and (self.soft_deadline is None
                                              or time.monotonic() < self.soft_deadline):
                    log.debug("pid %s exited; a descendant keeps stdout open — stop reading", self.pid)
                break  # soft deadline / post-exit drain window over
            if buf and not dropping:
                yield bytes(buf)
        finally:
            if self._read_task is not None and not self._read_task.done():
                self._read_task.cancel()
            self._read_task = None

    def _drop_line(self, size: int) -> None:
        self.dropped_lines += 1
        log.warning("pid %s: dropped a stdout line over the %d-byte line cap (%d+ bytes)",
                    self.pid, self.limits.max_line_bytes, size)

    async def wait_exit(self) -> int | None:
        """Wait for the leader to exit within the deadlines. ``None``: still running at
        the soft deadline (the caller then closes it). Raises :class:`HarnessTimeout`."""
        assert self._exit_task is not None
        if not self._exit_task.done():
            timeout, hard = self._remaining()
            done, _ = await asyncio.wait({self._exit_task}, timeout=timeout)
            if not done:
                if hard:
                    raise HarnessTimeout("harness deadline passed")
                return None
        return self._exit_task.result()

    # -- killing -----------------------------------------------------------------
    def signal_group(self, sig: int) -> bool:
        if self.pgid is None:
            return False
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:  # pgid reused by someone else's process: not ours to touch
            log.warning("pgid %s: no permission to signal; not killing", self.pgid)
            return False

    async def close(self) -> None:
        """Stop everything: SIGTERM the group, grace, SIGKILL the group, reap. Idempotent."""
        if self._closed or self.proc is None:
            return
        self._closed = True
        try:
            if self._read_task is not None and not self._read_task.done():
                self._read_task.cancel()
            if self.signal_group(signal.SIGTERM):
                assert self._exit_task is not None
                if not self._exit_task.done():
                    await asyncio.wait({self._exit_task}, timeout=self.limits.kill_grace_s)
        finally:
            # Always, even when cancelled mid-close: nothing of the group survives.
            self.signal_group(signal.SIGKILL)
        try:
            if self._exit_task is not None and not self._exit_task.done():
                await asyncio.wait({self._exit_task}, timeout=5.0)
            # Let the transport see every pipe close (the group is dead, so they do).
            with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
                await asyncio.wait_for(self.proc.wait(), timeout=2.0)
            for task in (self._stderr_task, self._stdin_task):
                if task is not None and not task.done():
                    await asyncio.wait({task}, timeout=1.0)
                    if not task.done():
                        task.cancel()
        finally:
            for task in (self._stderr_task, self._stdin_task, self._exit_task):
                if task is not None and task.done() and not task.cancelled():
                    task.exception()  # mark retrieved
            if self._exit_task is not None and not self._exit_task.done():
                self._exit_task.cancel()
            transport = getattr(self.proc, "_transport", None)
            if transport is not None and self.proc.returncode is not None:
                transport.close()  # no-op when already finished; never leaks to GC

    async def __aenter__(self) -> "HarnessProcess":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
