"""Inbound models, ids, agent config, manifests, the error model and cursors."""
from __future__ import annotations

import json
import pickle
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from protocol.agents import AgentBinding, AgentConfig, BindingScope, MultitaskStrategy
from protocol.cursor import MAX_CURSOR_LEN, cursor_int, decode_cursor, encode_cursor
from protocol.errors import (
    HTTP_STATUS,
    ErrorBody,
    ErrorCode,
    RunnerHostError,
    invalid_argument,
    not_found,
    payload_too_large,
    unauthorized,
)
from protocol.events import STABLE_EVENT_TYPES, EventEnvelope
from protocol.ids import RunnerId, parse_runner_id, validate_runner_id
from protocol.manifest import Capabilities, Permissions, RunnerDescriptor, RunnerManifest

EXPECTED_FORM = "plugin:<author>/<name>/<runner>"

# --------------------------------------------------------------------------
# EventEnvelope
# --------------------------------------------------------------------------


def test_envelope_fills_event_id_and_time():
    before = int(time.time())
    a = EventEnvelope(event_type="message.received")
    b = EventEnvelope(event_type="message.received")
    assert a.event_id.startswith("evt_") and len(a.event_id) > 10
    assert a.event_id != b.event_id
    assert before <= a.event_time <= int(time.time()) + 1
    assert a.source == "api"


def test_envelope_keeps_given_id_and_time():
    env = EventEnvelope.model_validate({"event_id": "e-1", "event_time": 12, "event_type": "api.invoked"})
    assert (env.event_id, env.event_time) == ("e-1", 12)


@pytest.mark.parametrize("raw", [
    {"event_type": "message.received", "evnt_id": "typo"},
    {"event_type": "message.received", "messages": []},
    {"event_type": "message.received", "actor": {"actor_id": "u", "nick": "x"}},
    {"event_type": "message.received", "input": {"text": "hi", "history": []}},
    {"event_type": "message.received", "delivery": {"surface": "api", "stream": True}},
    {"event_type": "message.received", "subject": {"subject_type": "g", "extra": 1}},
    {"event_type": "message.received", "raw_ref": {"ref_id": "r", "blob": "x"}},
    {"event_type": "message.received", "input": {"attachments": [{"ref": "a", "bytes": "x"}]}},
])
def test_envelope_rejects_unknown_fields(raw):
    with pytest.raises(ValidationError) as info:
        EventEnvelope.model_validate(raw)
    assert any(err["type"] == "extra_forbidden" for err in info.value.errors())


@pytest.mark.parametrize("event_type", ["GroupMessageEvent", "message", "message.received ",
                                        "Message.Received", "member.joined"])
def test_envelope_rejects_unknown_event_type_clearly(event_type):
    with pytest.raises(ValidationError) as info:
        EventEnvelope(event_type=event_type)
    text = str(info.value)
    assert "unknown event_type" in text
    assert "message.received" in text  # lists the stable types
    assert "source_event_type" in text  # and says where the platform name goes


@pytest.mark.parametrize("event_type", sorted(STABLE_EVENT_TYPES))
def test_envelope_accepts_every_stable_type(event_type):
    env = EventEnvelope(event_type=event_type)
    assert env.is_message is (event_type == "message.received")


def test_platform_event_name_is_kept_in_source_event_type():
    env = EventEnvelope.model_validate({
        "event_type": "group.member_joined", "source": "platform",
        "source_event_type": "MemberJoinEvent", "bot_id": "b",
        "actor": {"actor_type": "user", "actor_id": "u1"},
        "subject": {"subject_type": "group", "subject_id": "g1"},
    })
    assert env.event_type == "group.member_joined"
    assert env.source_event_type == "MemberJoinEvent"
    assert not env.is_message
    assert env.input.to_text() == ""  # never disguised as a user message
    assert env.model_dump(mode="json")["source_event_type"] == "MemberJoinEvent"


def test_envelope_rejects_unknown_source():
    with pytest.raises(ValidationError):
        EventEnvelope(event_type="message.received", source="telegram")


def test_envelope_input_to_text():
    env = EventEnvelope.model_validate({"event_type": "message.received", "input": {
        "contents": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "u"}},
                     {"type": "text", "text": "b"}]}})
    assert env.input.to_text() == "a b"
    env2 = EventEnvelope.model_validate({"event_type": "message.received",
                                         "input": {"text": "t", "contents": [{"type": "text", "text": "x"}]}})
    assert env2.input.to_text() == "t"


def test_envelope_json_round_trip():
    env = EventEnvelope.model_validate({
        "event_type": "message.received", "source": "webui", "conversation_id": "c",
        "input": {"text": "hi", "attachments": [{"ref": "art_1", "size": 3}]},
        "delivery": {"surface": "webui", "max_message_size": 100}, "raw_ref": {"ref_id": "r"},
        "data": {"k": [1]},
    })
    again = EventEnvelope.model_validate_json(env.model_dump_json())
    assert again == env


# --------------------------------------------------------------------------
# runner ids
# --------------------------------------------------------------------------

@pytest.mark.parametrize("value, parts", [
    ("plugin:builtin/echo/default", ("builtin", "echo", "default")),
    ("plugin:acme/openai-agent/v2", ("acme", "openai-agent", "v2")),
    ("plugin:a.b/c_d/E-9", ("a.b", "c_d", "E-9")),
    ("plugin:A/B/C", ("A", "B", "C")),
    ("plugin:" + "/".join(["x" * 64] * 3), ("x" * 64,) * 3),
])
def test_valid_runner_ids(value, parts):
    rid = parse_runner_id(value)
    assert isinstance(rid, RunnerId)
    assert tuple(rid) == parts
    assert str(rid) == value
    assert validate_runner_id(value) == value
    assert rid.is_builtin is (parts[0] == "builtin")


INVALID_RUNNER_IDS = {
    "missing prefix": "builtin/echo/default",
    "wrong prefix": "runner:builtin/echo/default",
    "upper-case prefix": "PLUGIN:builtin/echo/default",
    "prefix only": "plugin:",
    "too few segments": "plugin:builtin/echo",
    "one segment": "plugin:echo",
    "too many segments": "plugin:builtin/echo/default/extra",
    "empty author": "plugin:/echo/default",
    "empty name": "plugin:builtin//default",
    "empty runner": "plugin:builtin/echo/",
    "leading space": " plugin:builtin/echo/default",
    "space after colon": "plugin: builtin/echo/default",
    "space inside": "plugin:builtin/my echo/default",
    "trailing space": "plugin:builtin/echo/default ",
    "segment too long": "plugin:" + "x" * 65 + "/echo/default",
    "segment starts with dash": "plugin:-x/echo/default",
    "slash-y separators": "plugin:builtin\\echo\\default",
    "empty": "",
}


@pytest.mark.parametrize("label", sorted(INVALID_RUNNER_IDS))
def test_invalid_runner_ids(label):
    with pytest.raises(RunnerHostError) as info:
        parse_runner_id(INVALID_RUNNER_IDS[label])
    err = info.value
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert EXPECTED_FORM in err.message
    assert err.http_status == 400


def test_runner_id_with_trailing_newline_is_rejected():
    with pytest.raises(RunnerHostError):
        parse_runner_id("plugin:a/b/c\n")


@pytest.mark.parametrize("value", [None, 42, b"plugin:a/b/c", ["plugin:a/b/c"]])
def test_non_string_runner_id(value):
    with pytest.raises(RunnerHostError) as info:
        parse_runner_id(value)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_invalid_runner_id_message_is_truncated():
    with pytest.raises(RunnerHostError) as info:
        parse_runner_id("x" * 10_000)
    assert len(info.value.message) < 200


# --------------------------------------------------------------------------
# AgentConfig / AgentBinding / BindingScope
# --------------------------------------------------------------------------

def test_agent_config_defaults():
    agent = AgentConfig(runner_id="plugin:builtin/echo/default")
    assert agent.timeout_s == 300
    assert agent.multitask_strategy is MultitaskStrategy.PARALLEL
    assert agent.event_types == ["message.received"]
    assert agent.enabled is True
    assert agent.runner_config == {}
    assert agent.handles("message.received") and not agent.handles("group.member_joined")


@pytest.mark.parametrize("runner_id", ["echo", "plugin:builtin/echo", "builtin/echo/default",
                                       "plugin:a/b/c/d", "plugin:a b/c/d"])
def test_agent_config_rejects_invalid_runner_id(runner_id):
    with pytest.raises(ValidationError) as info:
        AgentConfig(runner_id=runner_id)
    assert EXPECTED_FORM in str(info.value)
    assert info.value.errors()[0]["loc"] == ("runner_id",)


@pytest.mark.parametrize("strategy", ["steer", "enqueue", "reject", "interrupt", "rollback", "parallel"])
def test_agent_config_accepts_each_strategy(strategy):
    agent = AgentConfig(runner_id="plugin:builtin/echo/default", multitask_strategy=strategy)
    assert agent.multitask_strategy.value == strategy


@pytest.mark.parametrize("strategy", ["fanout", "STEER", "", "queue"])
def test_agent_config_rejects_unknown_strategy(strategy):
    with pytest.raises(ValidationError) as info:
        AgentConfig(runner_id="plugin:builtin/echo/default", multitask_strategy=strategy)
    assert info.value.errors()[0]["loc"] == ("multitask_strategy",)


@pytest.mark.parametrize("extra", [{"runnerId": "x"}, {"prompt": "be nice"},
                                   {"resource_policy": {"modles": ["m"]}},
                                   {"state_policy": {"scopes": ["actor"]}},
                                   {"delivery_policy": {"stream": True}},
                                   {"scope": {"bot": "b"}}])
def test_agent_config_rejects_unknown_keys(extra):
    with pytest.raises(ValidationError) as info:
        AgentConfig.model_validate({"runner_id": "plugin:builtin/echo/default", **extra})
    assert any(err["type"] == "extra_forbidden" for err in info.value.errors())


@pytest.mark.parametrize("timeout", [0, -1, 24 * 3600 + 1])
def test_agent_config_rejects_bad_timeout(timeout):
    with pytest.raises(ValidationError):
        AgentConfig(runner_id="plugin:builtin/echo/default", timeout_s=timeout)


def test_agent_config_event_types():
    assert AgentConfig(runner_id="plugin:a/b/c", event_types=["*"]).handles("api.invoked")
    with pytest.raises(ValidationError):
        AgentConfig(runner_id="plugin:a/b/c", event_types=["GroupMessageEvent"])
    with pytest.raises(ValidationError):
        AgentConfig(runner_id="plugin:a/b/c", event_types=[])


def test_agent_binding_from_agent():
    agent = AgentConfig(runner_id="plugin:builtin/echo/default", runner_config={"mode": "echo"},
                        event_types=["message.received", "api.invoked"], timeout_s=12,
                        multitask_strategy="steer", scope={"bot_id": "b1"})
    binding = AgentBinding.from_agent("agent_1", agent, version=3)
    assert binding.binding_id == "agent_1@3"
    assert binding.identity == "agent_1"
    assert binding.runner_id == "plugin:builtin/echo/default"
    assert binding.runner_config == {"mode": "echo"}
    assert binding.multitask_strategy is MultitaskStrategy.STEER
    assert binding.timeout_s == 12
    assert binding.scope.bot_id == "b1"
    # a copy: editing the binding does not reach back into the agent
    binding.runner_config["mode"] = "context"
    assert agent.runner_config == {"mode": "echo"}


@pytest.mark.parametrize("scope, event, expected", [
    ({}, ("b1", "w1", "platform"), True),
    ({}, (None, None, None), True),
    ({"bot_id": "b1"}, ("b1", None, "api"), True),
    ({"bot_id": "b1"}, ("b2", None, "api"), False),
    ({"bot_id": "b1"}, (None, None, "api"), False),
    ({"workspace_id": "w1"}, ("b", "w1", "api"), True),
    ({"workspace_id": "w1"}, ("b", "w2", "api"), False),
    ({"sources": ["platform", "webui"]}, (None, None, "webui"), True),
    ({"sources": ["platform"]}, (None, None, "api"), False),
    ({"sources": []}, (None, None, "api"), False),
    ({"bot_id": "b1", "workspace_id": "w1", "sources": ["api"]}, ("b1", "w1", "api"), True),
    ({"bot_id": "b1", "workspace_id": "w1", "sources": ["api"]}, ("b1", "w2", "api"), False),
])
def test_binding_scope_matches(scope, event, expected):
    assert BindingScope(**scope).matches(*event) is expected


@pytest.mark.parametrize("a, b, expected", [
    ({}, {}, True),
    ({}, {"bot_id": "b1", "sources": ["api"]}, True),
    ({"bot_id": "b1"}, {"bot_id": "b1"}, True),
    ({"bot_id": "b1"}, {"bot_id": "b2"}, False),
    ({"bot_id": "b1"}, {"workspace_id": "w1"}, True),
    ({"workspace_id": "w1"}, {"workspace_id": "w2"}, False),
    ({"sources": ["api", "webui"]}, {"sources": ["webui"]}, True),
    ({"sources": ["api"]}, {"sources": ["platform"]}, False),
    ({"sources": ["api"]}, {}, True),
    ({"bot_id": "b1", "sources": ["api"]}, {"bot_id": "b1", "sources": ["platform"]}, False),
])
def test_binding_scope_overlaps_is_symmetric(a, b, expected):
    sa, sb = BindingScope(**a), BindingScope(**b)
    assert sa.overlaps(sb) is expected
    assert sb.overlaps(sa) is expected


def test_binding_scope_rejects_unknown_keys():
    with pytest.raises(ValidationError):
        BindingScope(bot="b1")


# --------------------------------------------------------------------------
# Manifest models
# --------------------------------------------------------------------------

@pytest.mark.parametrize("model, raw", [
    (Capabilities, {"streaming": True, "telepathy": True}),
    (Capabilities, {"tool_call": True}),
    (Permissions, {"models": ["invoke"], "network": ["any"]}),
    (Permissions, {"history": ["page"], "histroy": ["search"]}),
])
def test_capabilities_and_permissions_reject_unknown_keys(model, raw):
    with pytest.raises(ValidationError) as info:
        model.model_validate(raw)
    assert any(err["type"] == "extra_forbidden" for err in info.value.errors())


@pytest.mark.parametrize("raw", [{"models": ["delete"]}, {"tools": ["exec"]}, {"storage": ["global"]},
                                 {"history": ["write"]}, {"files": ["all"]}])
def test_permissions_reject_unknown_operations(raw):
    with pytest.raises(ValidationError):
        Permissions.model_validate(raw)


def test_permissions_accept_the_spec_vocabulary():
    perms = Permissions(models=["invoke", "stream", "rerank"], tools=["detail", "call"],
                        knowledge_bases=["list", "retrieve"], history=["page", "search"],
                        events=["get", "page"], artifacts=["metadata", "read"],
                        storage=["plugin", "workspace"], files=["config", "knowledge"])
    assert perms.models == ["invoke", "stream", "rerank"]
    caps = Capabilities(streaming=True, tool_calling=True, knowledge_retrieval=True,
                        multimodal_input=True, skill_authoring=True, interrupt=True, steering=True)
    assert all(caps.model_dump().values())


def test_manifest_rejects_unknown_keys_and_bad_ids():
    base = {"id": "plugin:acme/bot/default", "label": "Bot"}
    manifest = RunnerManifest.model_validate(base)
    assert manifest.version == "0.0.0" and manifest.capabilities == Capabilities()
    with pytest.raises(ValidationError):
        RunnerManifest.model_validate({**base, "grants": {}})
    with pytest.raises(ValidationError):
        RunnerManifest.model_validate({**base, "capabilities": {"flying": True}})
    with pytest.raises(ValidationError):
        RunnerManifest.model_validate({**base, "permissions": {"root": True}})
    with pytest.raises(ValidationError) as info:
        RunnerManifest.model_validate({**base, "id": "acme/bot"})
    assert EXPECTED_FORM in str(info.value)


def test_descriptor_from_manifest():
    from runners.echo import EchoRunner

    desc = RunnerDescriptor.from_manifest(EchoRunner.manifest)
    assert desc.id == "plugin:builtin/echo/default"
    assert desc.source == "builtin"
    assert desc.capabilities.streaming and not desc.capabilities.tool_calling
    json.dumps(desc.model_dump(mode="json"))


# --------------------------------------------------------------------------
# Error model
# --------------------------------------------------------------------------

SPEC_CODES = ["unauthorized", "not_found", "deadline_exceeded", "payload_too_large",
              "rate_limited", "invalid_argument", "runtime_error"]


@pytest.mark.parametrize("code", [c.value for c in ErrorCode])
def test_error_round_trips_through_pickle(code):
    err = RunnerHostError(code, "it broke", retryable=True, details={"run_id": "r", "n": [1, 2]})
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is RunnerHostError
    assert again.code is ErrorCode(code)
    assert again.message == "it broke"
    assert again.retryable is True
    assert again.details == {"run_id": "r", "n": [1, 2]}
    assert str(again) == str(err)
    assert again.to_dict() == err.to_dict()


def test_error_pickle_defaults():
    again = pickle.loads(pickle.dumps(not_found("nope")))
    assert again.retryable is False and again.details == {}


def test_spec_codes_all_exist():
    assert set(SPEC_CODES) <= {c.value for c in ErrorCode}


def test_to_dict_shape_is_exact():
    body = RunnerHostError("rate_limited", "slow down", retryable=True, details={"after_s": 2}).to_dict()
    assert body == {"code": "rate_limited", "message": "slow down", "retryable": True,
                    "details": {"after_s": 2}}
    assert list(body) == ["code", "message", "retryable", "details"]
    assert isinstance(body["code"], str) and not isinstance(body["code"], ErrorCode)
    json.dumps(body)
    assert set(ErrorBody.model_fields) == {"code", "message", "retryable", "details"}


def test_from_dict_round_trip_and_unknown_code():
    err = unauthorized("run finished", run_id="r")
    again = RunnerHostError.from_dict(err.to_dict())
    assert again.to_dict() == err.to_dict()
    odd = RunnerHostError.from_dict({"code": "teapot", "message": "m", "extra": 1})
    assert odd.code is ErrorCode.RUNTIME_ERROR and odd.message == "m"


def test_unknown_error_code_is_rejected_at_construction():
    with pytest.raises(ValueError):
        RunnerHostError("teapot", "m")


@pytest.mark.parametrize("code, status", [
    ("unauthorized", 401), ("not_found", 404), ("deadline_exceeded", 504),
    ("payload_too_large", 413), ("rate_limited", 429), ("invalid_argument", 400),
    ("runtime_error", 500), ("no_binding", 404), ("conflict", 409),
])
def test_http_status_mapping(code, status):
    assert RunnerHostError(code, "x").http_status == status


def test_every_code_has_a_status():
    assert set(HTTP_STATUS) == set(ErrorCode)
    assert all(400 <= s < 600 for s in HTTP_STATUS.values())


def test_error_helpers():
    assert unauthorized("u", a=1).code is ErrorCode.UNAUTHORIZED
    assert not_found("n").code is ErrorCode.NOT_FOUND
    assert payload_too_large("p", limit=5).details == {"limit": 5}
    err = invalid_argument("bad", field="x")
    assert (err.code, err.details, err.retryable) == (ErrorCode.INVALID_ARGUMENT, {"field": "x"}, False)
    assert str(err) == "invalid_argument: bad"
    assert isinstance(err, Exception)


def test_error_details_are_copied():
    details = {"a": 1}
    err = RunnerHostError("not_found", "x", details=details)
    details["a"] = 2
    assert err.details == {"a": 1}


# --------------------------------------------------------------------------
# Cursors
# --------------------------------------------------------------------------

def test_cursor_round_trip():
    cursor = encode_cursor("history", seq=42, conv="c-1")
    assert isinstance(cursor, str) and "=" not in cursor
    assert cursor.isascii() and all(c.isalnum() or c in "-_" for c in cursor)
    assert decode_cursor(cursor, "history") == {"seq": 42, "conv": "c-1"}
    assert cursor_int(decode_cursor(cursor, "history"), "seq", "history") == 42


def test_cursor_is_deterministic():
    assert encode_cursor("events", b=1, a=2) == encode_cursor("events", a=2, b=1)


def _assert_invalid(cursor, kind="history"):
    with pytest.raises(RunnerHostError) as info:
        decode_cursor(cursor, kind)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    return info.value


@pytest.mark.parametrize("cursor", [
    "garbage!!", "%%%", "not base64 at all", "a", "abc$", "é", "\x00\x01",
    "bnVsbA",        # base64 of 'null'
    "WzEsMl0",       # base64 of '[1,2]'
    "eyJzZXEiOjF9",  # base64 of '{"seq":1}' (no kind tag)
    "__--",          # decodes to non-UTF-8 bytes
])
def test_garbage_cursors_are_invalid_argument(cursor):
    _assert_invalid(cursor)


def test_cursor_of_another_kind_is_rejected():
    err = _assert_invalid(encode_cursor("events", seq=1), kind="history")
    assert "history" in err.message


@pytest.mark.parametrize("cursor", [None, 123, 1.5, b"eyJrIjoiaCJ9", ["x"], {"k": "history"}, ""])
def test_non_string_or_empty_cursor_is_rejected(cursor):
    _assert_invalid(cursor)


def test_too_long_cursor_is_rejected():
    long = encode_cursor("history", pad="x" * MAX_CURSOR_LEN)
    assert len(long) > MAX_CURSOR_LEN
    _assert_invalid(long)


@pytest.mark.parametrize("data", [{}, {"seq": -1}, {"seq": "1"}, {"seq": True}, {"seq": 1.5}])
def test_cursor_int_rejects_bad_values(data):
    with pytest.raises(RunnerHostError) as info:
        cursor_int(data, "seq", "history")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=700),
                 st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=",
                         max_size=600),
                 st.binary(max_size=300).map(lambda b: __import__("base64").urlsafe_b64encode(b).decode())))
def test_decode_cursor_only_raises_runner_host_error(text):
    try:
        result = decode_cursor(text, "history")
    except RunnerHostError as err:
        assert err.code is ErrorCode.INVALID_ARGUMENT
    else:
        assert isinstance(result, dict) and "k" not in result


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.text(max_size=20))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k != "k"), _json_scalars,
                       max_size=5))
def test_cursor_round_trip_property(fields):
    cursor = encode_cursor("events", **fields)
    if len(cursor) <= MAX_CURSOR_LEN:
        assert decode_cursor(cursor, "events") == fields
