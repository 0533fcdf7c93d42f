"""RunBook (frames, terminal, undo log) and RunnerApiService (argument and snapshot checks), without Ray."""
from __future__ import annotations

import pytest

from actors.core.authz import ResourceCatalog, compute_access
from actors.core.run import RunBook
from actors.core.runner_api import RunIdentity, RunnerApiService
from actors.core.steering import SteeringEntry, SteeringQueue
from protocol.agents import AgentBinding, AgentConfig, ResourcePolicy
from protocol.errors import ErrorCode, RunnerHostError
from protocol.lifecycle import RunStatus
from protocol.manifest import Capabilities, Permissions, RunnerManifest
from protocol.results import RunResult


# -- RunBook -------------------------------------------------------------------------------------
def test_host_and_runner_frames_share_one_rising_sequence():
    book = RunBook("r1", "plugin:builtin/echo/default")
    started = book.host_frame("run.started", {})
    _, delta = book.accept(RunResult.delta("r1", "hi ").model_dump())
    _, completed = book.accept(RunResult.completed_message("r1", "hi there").model_dump())
    verdict, none = book.accept(RunResult.done("r1").model_dump())
    assert verdict.accepted and none is None  # the terminal is emitted by finish()
    status, terminal = book.finish()
    assert [started["sequence"], delta["sequence"], completed["sequence"], terminal["sequence"]] == [0, 1, 2, 3]
    assert status is RunStatus.COMPLETED and book.assistant_message() == "hi there"
    assert [f["type"] for f in book.take_unflushed()] == ["run.started", "message.delta",
                                                           "message.completed", "run.completed"]


def test_invalid_and_unknown_results_are_not_relayed():
    book = RunBook("r1", "x")
    assert book.accept({"type": "state.updated", "data": {"scope": "galaxy"}})[1] is None
    assert book.accept({"type": "who.knows", "data": {}})[1] is None
    status, terminal = book.finish()
    assert status is RunStatus.FAILED and terminal["data"]["code"] == "runner.empty_output"


@pytest.mark.parametrize("code,status", [("runner.timeout", RunStatus.TIMEOUT),
                                         ("run.cancelled", RunStatus.CANCELLED),
                                         ("runner.crashed", RunStatus.FAILED)])
def test_override_terminal_maps_to_ledger_status(code, status):
    book = RunBook("r1", "x")
    book.accept(RunResult.delta("r1", "partial").model_dump())
    got, terminal = book.finish(RunResult.failed("r1", code, "stopped", True))
    assert got is status and terminal["data"]["code"] == code
    assert book.assistant_message() == "partial"


def test_undo_log_keeps_only_the_first_write_of_a_key():
    book = RunBook("r1", "x")
    book.record_state_write("k", "conversation", "color", None)
    book.record_state_write("k", "conversation", "color", {"value": "red"})
    assert len(book.undo) == 1 and book.undo[0].previous is None


# -- RunnerApiService ---------------------------------------------------------------------------
class Backend:
    def __init__(self):
        self.calls = []

    async def read(self, kind, **kw):
        self.calls.append(("read", kind, kw))
        return {"items": []}

    async def write(self, kind, **kw):
        self.calls.append(("write", kind, kw))
        return {"entry": {"key": kw.get("key"), "value": kw.get("value")}, "previous": None}


def service(**perms):
    manifest = RunnerManifest(id="plugin:t/r/default", label="t", capabilities=Capabilities(steering=True),
                              permissions=Permissions(**perms))
    binding = AgentBinding.from_agent("a", AgentConfig(runner_id="plugin:t/r/default",
                                                       resource_policy=ResourcePolicy()))
    snap = compute_access(run_id="r1", manifest=manifest, binding=binding, conversation_id="c1",
                          thread_id=None, catalog=ResourceCatalog())
    ident = RunIdentity("r1", "plugin:t/r/default", "a", None, None, "c1", None, "user", "u1", None, None)
    queue = SteeringQueue(4)
    pulled = []

    async def on_pulled(entries):
        pulled.extend(entries)
    backend = Backend()
    svc = RunnerApiService(snap, ident, backend, queue, on_pulled, lambda scope: f"key:{scope}")
    return svc, backend, queue, pulled


async def test_arguments_are_checked_before_anything_is_forwarded():
    svc, backend, _, _ = service(history=["page"])
    for method, kwargs in [("history_page", {"limit": 0}), ("history_page", {"limit": 101}),
                           ("history_page", {"direction": "sideways"}), ("history_page", {"bogus": 1}),
                           ("no_such_method", {})]:
        with pytest.raises(RunnerHostError) as err:
            await svc.call(method, kwargs)
        assert err.value.code is ErrorCode.INVALID_ARGUMENT, (method, kwargs)
    assert backend.calls == []
    await svc.call("history_page", {"limit": 100})
    assert backend.calls[0][2]["conversation_id"] == "c1"


async def test_reads_by_id_carry_the_run_scope():
    """The store applies it (tests/actors/test_runner_api_scope.py reads through the real one)."""
    svc, backend, _, _ = service(events=["get"])
    await svc.call("event_get", {"event_id": "e1"})
    assert backend.calls[-1][2]["scope"] == {"conversation_id": "c1", "run_id": "r1"}


async def test_steering_pull_drains_and_audits():
    svc, _, queue, pulled = service(steering=["pull"])
    queue.offer(SteeringEntry("e1", {"event": {"event_id": "e1"}}))
    out = await svc.call("steering_pull", {"mode": "all"})
    assert out == {"items": [{"event": {"event_id": "e1"}}]} and [e.source_event_id for e in pulled] == ["e1"]


async def test_state_writes_use_the_run_scope_key_and_payload_cap():
    svc, backend, _, _ = service(state=["read", "write"])
    await svc.call("state_set", {"scope": "conversation", "key": "k", "value": 1})
    assert backend.calls[-1][2]["scope_key"] == "key:conversation"
    with pytest.raises(RunnerHostError) as err:
        await svc.call("state_set", {"scope": "conversation", "key": "k", "value": "x" * (2 << 20)})
    assert err.value.code is ErrorCode.PAYLOAD_TOO_LARGE


async def test_message_send_checks_its_arguments_and_says_when_there_is_no_chat():
    """``message_send`` before it reaches delivery: a run without a chat of its own gets a clear
    ``invalid_argument`` (``no_delivery_target``); bad arguments are ``invalid_argument``."""
    from dataclasses import replace
    svc, _, _, _ = service()
    with pytest.raises(RunnerHostError) as info:
        await svc.call("message_send", {"text": "hello"})
    assert info.value.code is ErrorCode.INVALID_ARGUMENT and info.value.details["reason"] == "no_delivery_target"
    sent = []

    async def send(text, target, key):
        sent.append((text, target, key))
        return {"status": "delivered"}
    chatty = RunnerApiService(replace(svc.snapshot, message_send=True), svc.identity, svc.backend, svc.steering,
                              on_steering_pulled=svc._on_pulled, state_scope_key=svc._scope_key, send_message=send)
    for bad in ({"text": ""}, {"text": 42}, {"text": "hi", "target": ["chat"]}, {"text": "hi", "key": "k" * 257},
                {"text": "hi", "colour": "red"}):
        with pytest.raises(RunnerHostError) as info:
            await chatty.call("message_send", bad)
        assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert await chatty.call("message_send", {"text": "hi", "target": {"chat_id": 1}, "key": "k"}) == {
        "status": "delivered"}
    assert sent == [("hi", {"chat_id": 1}, "k")]
    assert chatty.snapshot.available_apis().message_send and not svc.snapshot.available_apis().message_send
