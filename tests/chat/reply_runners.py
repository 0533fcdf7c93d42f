"""Test-only runners that post explicit messages into their chat (``RunnerAPI.message_send``).

* :class:`ReplyProbeRunner` (our protocol): sends one keyed message twice (a retried call), tries
  another chat, and answers with what it saw as JSON (or, with ``config.silent``, answers nothing).
* :class:`EventProcessorRunner` (a LangBot SDK runner, unmodified SDK API only): replies with
  ``ctx.reply``, ``reply_message`` (a chain with an image), ``ctx.reply_stream`` and tries
  ``send_message`` into another chat; it yields no message at all, as LangBot's event-processor
  runners do, and reports what it saw in a last ``ctx.reply``.
"""
from __future__ import annotations

import json

from langbot_plugin.api.definition.components.runner.runner import Runner as SDKRunner
from langbot_plugin.api.entities.builtin.platform.message import Image, MessageChain, Plain
from langbot_plugin.api.entities.builtin.runner.errors import AgentAPIException

from protocol.errors import RunnerHostError
from protocol.manifest import Capabilities, Permissions, RunnerManifest
from protocol.results import RunResult
from protocol.runner import Runner
from runners.langbot_sdk import langbot_runner

REPLY_PROBE_ID = "plugin:test/replier/default"
SDK_REPLY_ID = "plugin:test/sdkreply/default"
FOREIGN_CHAT = 424242


class ReplyProbeRunner(Runner):
    manifest = RunnerManifest(id=REPLY_PROBE_ID, label="replier", version="1.0.0",
                              capabilities=Capabilities(streaming=True), permissions=Permissions())

    async def run(self, ctx, api):
        seen = {"automatic_reply": ctx.delivery.automatic_reply,
                "message_send": ctx.context.available_apis.message_send}
        try:
            first = await api.message_send("progress: 50%", key="progress")
            again = await api.message_send("progress: 50%", key="progress")  # the same call, retried
            seen.update(status=first.status, first=first.platform_message_ids, again=again.platform_message_ids,
                        parts=[p.part for p in first.parts])
            try:
                await api.message_send("progress: 60%", key="progress")  # a used key, another text
                seen["reused_key"] = "sent"
            except RunnerHostError as exc:
                seen["reused_key"] = exc.code.value
        except RunnerHostError as exc:
            seen.update(error=exc.code.value, reason=exc.details.get("reason"), message=exc.message)
        if ctx.context.available_apis.message_send:
            try:
                await api.message_send("leak", target={"chat_id": FOREIGN_CHAT})
                seen["foreign"] = "sent"
            except RunnerHostError as exc:
                seen["foreign"] = exc.code.value
        if (ctx.config or {}).get("silent"):
            yield RunResult.done(ctx.run_id)  # it spoke through message_send only
            return
        yield RunResult.completed_message(ctx.run_id, json.dumps(seen, sort_keys=True))
        yield RunResult.done(ctx.run_id)


class EventProcessor(SDKRunner):
    async def run(self, ctx):
        notes = {"automatic_reply": ctx.delivery.automatic_reply}
        await ctx.reply("sdk: hello")
        sent = await ctx.api.reply_message(MessageChain([Plain(text="sdk: chain"),
                                                         Image(url="https://example.com/a.png")]))
        notes["not_sent"] = sent.get("not_sent")
        try:
            await ctx.api.send_message(ctx.conversation.bot_id or "", "group", str(FOREIGN_CHAT),
                                       MessageChain([Plain(text="leak")]))
            notes["foreign"] = "sent"
        except AgentAPIException as exc:
            notes["foreign"] = exc.error.code
        async with ctx.reply_stream() as stream:
            await stream.update("sdk: str")
            await stream.update("sdk: streamed")
        notes["stream"] = stream.result.get("status")
        await ctx.reply(json.dumps(notes, sort_keys=True))
        # no message result: everything was said explicitly


EventProcessorRunner = langbot_runner(EventProcessor, author="test", plugin="sdkreply", runner="default")
