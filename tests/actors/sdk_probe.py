"""LangBot-SDK runners written against the SDK's public API only, hosted through our adapter."""
from __future__ import annotations

from langbot_plugin.api.definition.components.runner.runner import Runner as SDKRunner
from langbot_plugin.api.entities.builtin.provider.message import Message, MessageChunk
from langbot_plugin.api.entities.builtin.runner.context import RunnerContext
from langbot_plugin.api.entities.builtin.runner.errors import AgentAPIException
from langbot_plugin.api.entities.builtin.runner.result import RunnerResult

from runners.langbot_sdk import langbot_runner


class HistoryStateSteeringRunner(SDKRunner):
    """Reads history, sets state, pulls steering (waiting for it), streams deltas."""

    async def run(self, ctx: RunnerContext):
        page = await ctx.history_page(limit=10)
        await ctx.state_set("conversation", "sdk.seen", len(page.items))
        yield RunnerResult.message_delta(ctx.run_id, MessageChunk(role="assistant", content="history="))
        yield RunnerResult.message_delta(ctx.run_id, MessageChunk(role="assistant", content=str(len(page.items))))
        steered: list[str] = []
        for _ in range(int(ctx.config.get("steer_polls", 0))):
            import asyncio
            await asyncio.sleep(0.2)
            pulled = await ctx.steering_pull()
            steered += [item.input.text or "" for item in pulled.items]
        text = f"history={len(page.items)} steered={steered}"
        yield RunnerResult.message_completed(ctx.run_id, Message(role="assistant", content=text))
        yield RunnerResult.run_completed(ctx.run_id)


class ModelCallRunner(SDKRunner):
    """Calls a model named in config; reports a host refusal as its answer."""

    async def run(self, ctx: RunnerContext):
        try:
            await ctx.api.invoke_llm(ctx.config["model"], [Message(role="user", content="hi")])
            answer = "model answered"
        except AgentAPIException as exc:
            answer = f"refused: {exc.error.code}"
        yield RunnerResult.message_completed(ctx.run_id, Message(role="assistant", content=answer))
        yield RunnerResult.run_completed(ctx.run_id)


SdkHistoryRunner = langbot_runner(HistoryStateSteeringRunner, author="sdk", plugin="probe", runner="history",
                                  capabilities={"streaming": True, "steering": True},
                                  permissions={"history": ["page"]})
SdkModelRunner = langbot_runner(ModelCallRunner, author="sdk", plugin="probe", runner="model",
                                permissions={"models": ["invoke"]})
