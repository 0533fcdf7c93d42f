"""protocol.text: the one rule for text that reaches a database column."""
import pytest
from pydantic import ValidationError

from protocol.agents import AgentConfig
from protocol.events import EventEnvelope
from protocol.text import find_unstorable, make_storable


def test_find_unstorable_names_the_path_of_values_and_keys():
    assert find_unstorable({"a": [{"b": "ok"}, {"c": "x\x00"}]}) == ("a[1].c", "contains a NUL character")
    assert find_unstorable({"k\x00": 1})[0] == "k\x00"
    assert find_unstorable(["\udc80"])[1].startswith("is not valid Unicode text")
    assert find_unstorable({"a": "é ✓ 😀", "n": 1, "none": None}) is None


def test_make_storable_replaces_and_counts():
    value, changed = make_storable({"a\x00": ["x\x00y", "\ud800z", "fine"], "n": 3})
    assert value == {"a\ufffd": ["x\ufffdy", "\ufffdz", "fine"], "n": 3} and changed == 3
    same = {"a": ["b"]}
    assert make_storable(same) == (same, 0)


@pytest.mark.parametrize("model,data", [
    (EventEnvelope, {"event_type": "message.received", "input": {"text": "a\x00"}}),
    (EventEnvelope, {"event_type": "api.invoked", "data": {"deep": [{"x": "\ud800"}]}}),
    (AgentConfig, {"runner_id": "plugin:builtin/echo/default", "runner_config": {"p": "\x00"}}),
])
def test_inbound_models_refuse_unstorable_text(model, data):
    with pytest.raises(ValidationError):
        model.model_validate(data)
