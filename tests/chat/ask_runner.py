"""Test-only runner that asks a question (LangBot's ``interaction.requested``) and answers the
``interaction.submitted`` event it gets back."""
from __future__ import annotations

from protocol.manifest import Capabilities, Permissions, RunnerManifest
from protocol.results import RunResult
from protocol.runner import Runner

ASK_RUNNER_ID = "plugin:test/ask/default"


class AskRunner(Runner):
    manifest = RunnerManifest(id=ASK_RUNNER_ID, label="ask", version="1.0.0",
                              capabilities=Capabilities(streaming=True), permissions=Permissions())

    async def run(self, ctx, api):
        if ctx.input.interaction is not None:
            answer = ctx.input.interaction
            text = f"you chose {answer.values.get('answer')} ({ctx.event.event_type})"
            yield RunResult.delta(ctx.run_id, text)
            yield RunResult.completed_message(ctx.run_id, text)
            yield RunResult.done(ctx.run_id)
            return
        yield RunResult.delta(ctx.run_id, "Let me ask.")
        yield RunResult(run_id=ctx.run_id, type="action.requested", data={
            "action": "interaction.requested", "target": None, "payload": {
                "interaction_id": "ship", "kind": "choice", "title": "Ship it?", "fallback_text": "Ship it? yes/no",
                "expires_at": int((ctx.config or {}).get("expires_at") or 0) or None,
                "fields": [{"id": "answer", "label": "Answer", "type": "select", "required": True,
                            "options": [{"value": "yes", "label": "Yes"}, {"value": "no", "label": "No"}]}]}})
        yield RunResult.completed_message(ctx.run_id, "Let me ask.")
        yield RunResult.done(ctx.run_id)
