"""Test-only runners that exercise the runner API from inside a real runner worker.

Registered through ``HostConfig.extra_runners``; Ray workers import this module
through the session's ``PYTHONPATH`` runtime env.
"""
from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from protocol.errors import RunnerHostError
from protocol.manifest import Capabilities, Permissions, RunnerManifest
from protocol.results import RunResult
from protocol.runner import Runner

_STALE: dict[str, Any] = {}


async def _outcome(coro) -> dict[str, Any]:
    try:
        value = await coro
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        return {"ok": True, "value": value}
    except RunnerHostError as exc:
        return {"ok": False, "code": exc.code.value}


async def _wait_for_file(path: Path, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not path.exists():
        if loop.time() > deadline:
            raise RuntimeError(f"gate {path.name} never opened")
        await asyncio.sleep(0.02)


class ProbeRunner(Runner):
    """Config ``calls``: [[method, kwargs], …] made after ``sleep_s``; replies with the outcomes as JSON.

    ``keep_api: true`` stashes the API client; ``use_stale: true`` makes the
    calls through the client stashed by an earlier run instead of its own.
    ``marker``: a file written when the generator is closed (finally).
    ``gate``: a file the runner waits for (after its first delta, before the calls), so a test acts
    while the run is provably live and then lets it go on; never there within ``gate_timeout_s``
    (default 60): the run fails.
    ``artifact``: ``{"artifact_id", "text"}`` — an inline ``artifact.created`` before the calls.
    """

    manifest = RunnerManifest(
        id="plugin:test/probe/default", label="probe",
        capabilities=Capabilities(streaming=True, steering=True),
        permissions=Permissions(models=["invoke"], tools=["call", "detail"], knowledge_bases=["retrieve"],
                                history=["page", "search"], events=["get", "page"],
                                state=["read", "write"], steering=["pull"], storage=["plugin"],
                                artifacts=["metadata", "read"],
                                run_ledger=["get", "list", "events_page", "cancel"]),
    )

    async def run(self, ctx, api):
        cfg = ctx.config
        marker = cfg.get("marker")
        try:
            if cfg.get("keep_api"):
                _STALE["api"] = api
            target = _STALE.get("api") if cfg.get("use_stale") else api
            yield RunResult.delta(ctx.run_id, "probing ")
            if cfg.get("artifact"):
                art = cfg["artifact"]
                yield {"run_id": ctx.run_id, "type": "artifact.created", "data": {
                    "artifact_type": "file", "artifact_id": art["artifact_id"],
                    "content_base64": base64.b64encode(art["text"].encode()).decode()}}
            if cfg.get("gate"):
                await _wait_for_file(Path(cfg["gate"]), float(cfg.get("gate_timeout_s", 60)))
            if cfg.get("sleep_s"):
                await asyncio.sleep(float(cfg["sleep_s"]))
            outcomes = []
            for method, kwargs in cfg.get("calls", []):
                outcomes.append(await _outcome(getattr(target, method)(**kwargs)))
            text = json.dumps(outcomes)
            yield RunResult.completed_message(ctx.run_id, text)
            yield RunResult.done(ctx.run_id)
        finally:
            if marker:
                Path(marker).write_text("closed")


class NoPermissionRunner(ProbeRunner):
    """Same behaviour, but its manifest asks for nothing: every API call must be refused."""

    manifest = RunnerManifest(id="plugin:test/noperm/default", label="noperm")


class SilentRunner(Runner):
    """Ends without any message and without run.failed → host must record runner.empty_output."""

    manifest = RunnerManifest(id="plugin:test/silent/default", label="silent")

    async def run(self, ctx, api):
        yield {"run_id": ctx.run_id, "type": "no.such.type", "data": {}}
        yield {"run_id": ctx.run_id, "type": "state.updated", "data": {"scope": "galaxy"}}


class CrashingRunner(Runner):
    """Raises an exception whose message carries a secret (config ``secret`` or a fixed key)."""

    manifest = RunnerManifest(id="plugin:test/crash/default", label="crash")

    async def run(self, ctx, api):
        yield RunResult.delta(ctx.run_id, "about to fail ")
        raise RuntimeError(f"boom with {ctx.config.get('secret', 'sk-abcdefghijklmnop1234')} inside")


PROBE_RUNNERS = {
    "plugin:test/probe/default": "tests.actors.probe_runners:ProbeRunner",
    "plugin:test/noperm/default": "tests.actors.probe_runners:NoPermissionRunner",
    "plugin:test/silent/default": "tests.actors.probe_runners:SilentRunner",
    "plugin:test/crash/default": "tests.actors.probe_runners:CrashingRunner",
}
