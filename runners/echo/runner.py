"""Echo runner.

Config: ``mode`` — ``echo`` streams ``echo: <text>`` as word deltas, then one
``message.completed``; ``context`` replies with the exact RunContext JSON it
received. ``chunks`` caps the number of deltas (the rest of the words go into
the last one), ``delay_s`` sleeps before each delta (to make a run last),
``steering`` pulls steering after each delta and echoes each steered input as
``steered: <text>``, ``state_key`` increments a conversation-scope counter via
``state.updated``.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from protocol.context import RunContext
from protocol.manifest import Capabilities, ConfigField, Permissions, RunnerManifest
from protocol.results import RunResult
from protocol.runner import Runner, RunnerAPI


def split_chunks(text: str, chunks: int) -> list[str]:
    """Split into at most ``chunks`` pieces on word boundaries; joined they equal ``text``."""
    words = text.split(" ")
    if chunks <= 1 or len(words) <= 1:
        return [text]
    pieces = [w + " " for w in words[:-1]] + [words[-1]]
    if len(pieces) > chunks:
        pieces = pieces[: chunks - 1] + ["".join(pieces[chunks - 1:])]
    return pieces


class EchoRunner(Runner):
    manifest = RunnerManifest(
        id="plugin:builtin/echo/default",
        label="Echo",
        description="Deterministic echo runner for tests, demos and benchmarks.",
        version="1.0.0",
        capabilities=Capabilities(streaming=True, steering=True),
        permissions=Permissions(history=["page", "search"], state=["read", "write"], steering=["pull"]),
        execution="in_actor",
        config_schema=[
            ConfigField(name="mode", type="select", default="echo",
                        options=[{"name": "echo"}, {"name": "context"}]),
            ConfigField(name="chunks", type="integer", default=0),
            ConfigField(name="delay_s", type="number", default=0.0),
            ConfigField(name="steering", type="boolean", default=False),
            ConfigField(name="state_key", type="string", default=None),
        ],
    )

    async def run(self, ctx: RunContext, api: RunnerAPI) -> AsyncIterator[RunResult]:
        cfg: dict[str, Any] = ctx.config or {}
        run_id = ctx.run_id
        if cfg.get("mode", "echo") == "context":
            text = json.dumps(ctx.to_wire(), sort_keys=True)
            yield RunResult.delta(run_id, text)
            yield RunResult.completed_message(run_id, text)
            yield RunResult.done(run_id)
            return

        reply = f"echo: {ctx.input.text or ''}"
        chunks = int(cfg.get("chunks") or 0) or len(reply.split(" "))
        delay = float(cfg.get("delay_s") or 0.0)
        steer = bool(cfg.get("steering"))
        full = []
        for piece in split_chunks(reply, chunks):
            if delay:
                await asyncio.sleep(delay)
            full.append(piece)
            yield RunResult.delta(run_id, piece)
            if steer:
                pulled = await api.steering_pull("all")
                for item in pulled.items:
                    steered = f"steered: {item.input.text or ''}"
                    full.append("\n" + steered)
                    yield RunResult.delta(run_id, "\n" + steered)
        if cfg.get("state_key"):
            key = str(cfg["state_key"])
            current = ctx.state.conversation.get(key)
            count = (current if isinstance(current, int) else 0) + 1
            yield RunResult.state(run_id, "conversation", key, count)
        yield RunResult.completed_message(run_id, "".join(full))
        yield RunResult.done(run_id)
