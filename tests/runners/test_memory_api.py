"""The in-memory test host checks grants with the host's own RunnerApiService, not a copy of it."""
from __future__ import annotations

import pytest

from protocol.context import AvailableApis
from protocol.errors import ErrorCode, RunnerHostError
from tests.fakes.memory_api import MemoryHost, MemoryRunnerAPI


async def refused(coro) -> None:
    with pytest.raises(RunnerHostError) as err:
        await coro
    assert err.value.code is ErrorCode.UNAUTHORIZED


async def test_ungranted_calls_are_refused_by_the_real_service():
    host = MemoryHost()
    ctx = await host.make_context("hi", apis=AvailableApis(history_page=True))
    api = MemoryRunnerAPI(host, ctx)
    await refused(api.history_page("someone-elses-conversation"))
    await refused(api.history_search("hi"))
    await refused(api.event_page())
    await refused(api.state_set("conversation", "k", 1))
    await refused(api.storage_set("plugin", "k", 1))
    await refused(api.invoke_llm("gpt", [{"role": "user", "content": "x"}]))
    with pytest.raises(RunnerHostError) as err:  # argument checks are the service's too
        await api.history_page(limit=101)
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


async def test_events_and_runs_are_read_in_the_run_scope():
    host = MemoryHost()
    other = await host.make_context("private", conversation_id="conv_other")
    await host.run(_Silent(), other, strict=False)
    ctx = await host.make_context("hi", conversation_id="conv_mine")
    api = MemoryRunnerAPI(host, ctx)
    await host.run(_Silent(), ctx, api=api, strict=False)
    api.finished = False  # read after the fact, as if still running
    page = await api.event_page()
    assert [e.event_id for e in page.items] == [ctx.event.event_id]
    await refused(api.event_get(other.event.event_id))
    assert [r.run_id for r in (await api.run_list()).items] == [ctx.run_id]
    await refused(api.run_get(other.run_id))


class _Silent:
    async def run(self, ctx, api):
        return
        yield  # an async generator that yields nothing
