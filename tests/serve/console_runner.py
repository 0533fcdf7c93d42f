"""Test-only runner for the console tests: one run that leaves every kind of fact.

It calls a tool (``tool.call.started`` / ``completed`` with parameters and a result), writes a
conversation-scope state value, creates an inline artifact, streams two deltas and completes.
Registered through ``HostConfig.extra_runners`` as ``tests.serve.console_runner:ShowcaseRunner``.
"""
from __future__ import annotations

import base64

from protocol.manifest import Capabilities, ConfigField, Permissions, RunnerManifest
from protocol.results import RunResult
from protocol.runner import Runner

SHOWCASE_ID = "plugin:test/showcase/default"
REPORT = b"console artifact: line one\nline two\n"


class ShowcaseRunner(Runner):
    manifest = RunnerManifest(
        id=SHOWCASE_ID, label="console showcase", version="1.0.0",
        capabilities=Capabilities(streaming=True, tool_calling=True),
        permissions=Permissions(state=["read", "write"], artifacts=["metadata", "read"]),
        config_schema=[ConfigField(name="state_value", type="string", default="seen")],
    )

    async def run(self, ctx, api):
        rid = ctx.run_id
        yield RunResult(run_id=rid, type="tool.call.started",
                        data={"tool_call_id": "call_1", "tool_name": "lookup", "parameters": {"city": "Oslo"}})
        yield RunResult(run_id=rid, type="tool.call.completed",
                        data={"tool_call_id": "call_1", "tool_name": "lookup", "parameters": {"city": "Oslo"},
                              "result": {"temperature_c": 7}})
        yield RunResult.state(rid, "conversation", "showcase", (ctx.config or {}).get("state_value", "seen"))
        yield RunResult(run_id=rid, type="artifact.created",
                        data={"artifact_type": "file", "name": "report.txt", "mime_type": "text/plain",
                              "content_base64": base64.b64encode(REPORT).decode()})
        yield RunResult.delta(rid, "showcase ")
        yield RunResult.delta(rid, "done")
        yield RunResult.completed_message(rid, "showcase done")
        yield RunResult.done(rid)
