"""runner_config checked against the runner's config_schema (what the console's form is built from)."""
from __future__ import annotations

import pytest

from protocol.errors import ErrorCode, RunnerHostError
from protocol.manifest import ConfigField, check_runner_config
from runners.echo.runner import EchoRunner
from runners.openai_agent.runner import OpenAIAgentRunner

ECHO = EchoRunner.manifest.config_schema


@pytest.mark.parametrize("config", [{}, {"mode": "context", "chunks": 3, "delay_s": 0.5, "steering": True},
                                    {"delay_s": 1, "state_key": None, "undeclared": "left to the runner"}])
def test_fitting_configs_pass(config):
    check_runner_config(ECHO, config)


@pytest.mark.parametrize("config, field, msg", [
    ({"chunks": "3"}, "chunks", "must be an integer"),
    ({"chunks": 2.5}, "chunks", "must be an integer"),
    ({"chunks": True}, "chunks", "must be an integer"),
    ({"delay_s": "slow"}, "delay_s", "must be a number"),
    ({"steering": "yes"}, "steering", "must be true or false"),
    ({"mode": "shout"}, "mode", "must be one of ['echo', 'context']"),
    ({"state_key": 7}, "state_key", "must be a string"),
])
def test_misfits_are_invalid_argument_with_http_style_errors(config, field, msg):
    with pytest.raises(RunnerHostError) as info:
        check_runner_config(ECHO, config)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert info.value.details["errors"] == [{"loc": ["runner_config", field], "msg": msg, "type": "runner_config"}]
    assert info.value.message == f"invalid runner_config: {field}: {msg}"


def test_required_fields_and_several_errors():
    schema = [ConfigField(name="token", type="secret", required=True),
              ConfigField(name="n", type="integer"), ConfigField(name="tags", type="array"),
              ConfigField(name="opts", type="object"), ConfigField(name="kb", type="knowledge-base-selector")]
    with pytest.raises(RunnerHostError) as info:
        check_runner_config(schema, {"n": "x", "tags": "a,b", "opts": [], "kb": 42})
    assert [e["loc"][1] for e in info.value.details["errors"]] == ["token", "n", "tags", "opts"]
    assert info.value.message.endswith("(and 3 more)")
    check_runner_config(schema, {"token": "t", "n": 1, "tags": [], "opts": {}})


def test_the_builtin_runners_defaults_fit_their_own_schemas():
    for manifest in (EchoRunner.manifest, OpenAIAgentRunner.manifest):
        check_runner_config(manifest.config_schema, {f.name: f.default for f in manifest.config_schema
                                                     if f.default is not None})


def test_the_registry_refuses_an_agent_whose_runner_config_misfits_before_it_is_stored():
    """The check the HTTP PUT and the startup config go through (``Registry.check_agent``)."""
    from actors.core.registry import Registry

    registry = Registry()
    with pytest.raises(RunnerHostError) as info:
        registry.put_agent("bad", {"runner_id": "plugin:builtin/echo/default",
                                   "runner_config": {"chunks": "not-a-number", "mode": "bogus"}}, 1)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert sorted(e["loc"][1] for e in info.value.details["errors"]) == ["chunks", "mode"]
    assert "bad" not in registry.resolver.agents
    registry.put_agent("good", {"runner_id": "plugin:builtin/echo/default", "runner_config": {"chunks": 2}}, 1)
    assert "good" in registry.resolver.agents
