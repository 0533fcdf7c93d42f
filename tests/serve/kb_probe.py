"""Test-only runner: reports the knowledge bases its run was granted (one delta, ids space-separated,
``-`` for none). Registered through ``HostConfig.extra_runners`` as
``tests.serve.kb_probe:KnowledgeProbeRunner``."""
from __future__ import annotations

from protocol.manifest import Permissions, RunnerManifest
from protocol.results import RunResult
from protocol.runner import Runner

KB_PROBE_ID = "plugin:test/kbprobe/default"


class KnowledgeProbeRunner(Runner):
    manifest = RunnerManifest(id=KB_PROBE_ID, label="knowledge probe", version="1.0.0",
                              permissions=Permissions(knowledge_bases=["list", "retrieve"]))

    async def run(self, ctx, api):
        granted = sorted(kb.kb_id for kb in ctx.resources.knowledge_bases)
        yield RunResult.delta(ctx.run_id, " ".join(granted) or "-")
        yield RunResult.done(ctx.run_id)
