"""classify() and ResultValidator: the result-stream rules of SPEC §5."""
from __future__ import annotations

import base64
import logging

import pytest

from protocol.results import (
    INLINE_ARTIFACT_LIMIT,
    Classified,
    ResultValidator,
    RunResult,
    Verdict,
    classify,
)

RUN = "run_t"


def delta(text="hi", **extra):
    return {"type": "message.delta", "data": {"chunk": {"role": "assistant", "content": text}}, **extra}


def completed(text="hi", **extra):
    return {"type": "message.completed", "data": {"message": {"role": "assistant", "content": text}},
            **extra}


# --------------------------------------------------------------------------
# classify: accepted / dropped_invalid / ignored_unknown / lenient
# --------------------------------------------------------------------------

ACCEPTED = {
    "delta": delta(),
    "delta_parts": {"type": "message.delta",
                    "data": {"chunk": {"role": "assistant", "content": [{"type": "text", "text": "x"}]}}},
    "completed": completed(),
    "completed_files": {"type": "message.completed",
                        "data": {"message": {"role": "assistant", "content": "x"}, "file_ids": ["f"]}},
    "tool_started": {"type": "tool.call.started",
                     "data": {"tool_call_id": "c", "tool_name": "t", "parameters": {"a": 1}}},
    "tool_completed": {"type": "tool.call.completed",
                       "data": {"tool_call_id": "c", "tool_name": "t", "result": {"ok": True}}},
    "artifact_ref": {"type": "artifact.created", "data": {"artifact_type": "image", "artifact_id": "a1"}},
    "artifact_inline": {"type": "artifact.created",
                        "data": {"artifact_type": "file", "content_base64": "aGVsbG8=", "size_bytes": 5}},
    "state_each_scope_conversation": {"type": "state.updated",
                                      "data": {"scope": "conversation", "key": "k", "value": 1}},
    "state_actor": {"type": "state.updated", "data": {"scope": "actor", "key": "k", "value": [1, "a"]}},
    "state_subject": {"type": "state.updated", "data": {"scope": "subject", "key": "k", "value": None}},
    "state_runner": {"type": "state.updated", "data": {"scope": "runner", "key": "k", "value": {"x": 1}}},
    "action": {"type": "action.requested", "data": {"action": "react", "target": {"m": 1}}},
    "run_completed": {"type": "run.completed", "data": {}},
    "run_completed_msg": {"type": "run.completed",
                          "data": {"finish_reason": "length",
                                   "message": {"role": "assistant", "content": "x"}}},
    "run_failed": {"type": "run.failed", "data": {"error": "boom"}},
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_valid_results_are_accepted(name):
    verdict = classify(ACCEPTED[name], RUN)
    assert verdict.verdict is Verdict.ACCEPTED, verdict.reason
    assert verdict.accepted
    assert verdict.payload is not None
    assert verdict.result.run_id == RUN


def test_payload_defaults_are_filled_in_the_accepted_envelope():
    failed = classify({"type": "run.failed", "data": {"error": "boom"}}, RUN).result
    assert failed.data == {"code": "runner.error", "error": "boom", "retryable": False}
    done = classify({"type": "run.completed", "data": {}}, RUN).result
    assert done.data["finish_reason"] == "stop"


def test_host_stamps_its_own_run_id():
    verdict = classify({**delta(), "run_id": "someone_else"}, RUN)
    assert verdict.accepted and verdict.result.run_id == RUN


def test_result_type_enum_and_runresult_objects_are_accepted():
    from protocol.results import ResultType

    assert classify({"type": ResultType.MESSAGE_DELTA, "data": delta()["data"]}, RUN).accepted
    assert classify(RunResult.delta("x", "hi"), RUN).accepted


DROPPED_INVALID = {
    "state_bad_scope": {"type": "state.updated", "data": {"scope": "galaxy", "key": "k", "value": 1}},
    "state_empty_key": {"type": "state.updated", "data": {"scope": "actor", "key": "", "value": 1}},
    "state_no_value_key": {"type": "state.updated", "data": {"scope": "actor"}},
    "delta_no_chunk": {"type": "message.delta", "data": {}},
    "delta_chunk_no_role": {"type": "message.delta", "data": {"chunk": {"content": "x"}}},
    "delta_extra_key": {"type": "message.delta",
                        "data": {"chunk": {"role": "assistant", "content": "x"}, "bogus": 1}},
    "completed_no_message": {"type": "message.completed", "data": {"text": "hi"}},
    "completed_too_many_files": {"type": "message.completed",
                                 "data": {"message": {"role": "assistant", "content": "x"},
                                          "file_ids": [str(i) for i in range(101)]}},
    "artifact_no_type": {"type": "artifact.created", "data": {"artifact_id": "a"}},
    "artifact_bad_sha": {"type": "artifact.created", "data": {"artifact_type": "f", "sha256": "xyz"}},
    "artifact_negative_size": {"type": "artifact.created", "data": {"artifact_type": "f", "size_bytes": -1}},
    "action_no_action": {"type": "action.requested", "data": {"target": {}}},
    "run_failed_no_error": {"type": "run.failed", "data": {"code": "x"}},
    "run_completed_bad_message": {"type": "run.completed", "data": {"message": "not an object"}},
    "data_not_object": {"type": "message.delta", "data": "hello"},
    "no_type": {"data": {}},
    "type_not_string": {"type": 5, "data": {}},
    "sequence_not_int": {**delta(), "sequence": "first"},
}


@pytest.mark.parametrize("name", sorted(DROPPED_INVALID))
def test_invalid_strict_results_are_dropped(name):
    verdict = classify(DROPPED_INVALID[name], RUN)
    assert verdict.verdict is Verdict.DROPPED_INVALID
    assert not verdict.accepted
    assert verdict.reason  # something a human can read in the warning


@pytest.mark.parametrize("raw", [None, "message.delta", 42, ["type", "x"], b"{}"])
def test_non_object_results_are_dropped(raw):
    verdict = classify(raw, RUN)
    assert verdict.verdict is Verdict.DROPPED_INVALID and verdict.result is None


def test_dropped_reason_names_the_field():
    verdict = classify(DROPPED_INVALID["state_bad_scope"], RUN)
    assert "scope" in verdict.reason


@pytest.mark.parametrize("rtype", ["foo.bar", "processor.log", "message", "run.cancelled", ""])
def test_unknown_types_are_ignored(rtype):
    verdict = classify({"type": rtype, "data": {"anything": [1, 2]}}, RUN)
    assert verdict.verdict is Verdict.IGNORED_UNKNOWN
    assert not verdict.accepted
    assert verdict.result is not None and verdict.result.type == rtype


@pytest.mark.parametrize("raw", [
    {"type": "tool.call.started", "data": {}},
    {"type": "tool.call.started", "data": {"tool_name": 7, "parameters": "not a dict", "extra": 1}},
    {"type": "tool.call.completed", "data": {"tool_call_id": "c"}},
    {"type": "tool.call.completed", "data": {"tool_call_id": "c", "tool_name": "t", "result": "text"}},
])
def test_tool_call_telemetry_is_lenient(raw):
    verdict = classify(raw, RUN)
    assert verdict.verdict is Verdict.ACCEPTED
    assert verdict.payload is None
    assert verdict.reason.startswith("lenient")
    assert verdict.result.data == raw["data"]  # kept as-is


# --------------------------------------------------------------------------
# artifact inline limit
# --------------------------------------------------------------------------

def _artifact(n_bytes: int) -> dict:
    content = base64.b64encode(b"\0" * n_bytes).decode()
    return {"type": "artifact.created", "data": {"artifact_type": "file", "content_base64": content}}


def test_artifact_at_the_inline_limit_is_accepted():
    assert classify(_artifact(INLINE_ARTIFACT_LIMIT), RUN).verdict is Verdict.ACCEPTED


@pytest.mark.parametrize("n_bytes", [INLINE_ARTIFACT_LIMIT + 3, INLINE_ARTIFACT_LIMIT + 4096,
                                     2 * INLINE_ARTIFACT_LIMIT])
def test_artifact_over_one_mib_is_dropped(n_bytes):
    verdict = classify(_artifact(n_bytes), RUN)
    assert verdict.verdict is Verdict.DROPPED_INVALID
    assert "content_base64" in verdict.reason


@pytest.mark.parametrize("extra", [1, 2])
def test_artifact_just_over_one_mib_is_dropped(extra):
    from protocol.results import INLINE_ARTIFACT_LIMIT
    verdict = classify(_artifact(INLINE_ARTIFACT_LIMIT + extra), RUN)
    assert verdict.verdict is Verdict.DROPPED_INVALID


def test_artifact_with_non_base64_content_is_dropped():
    raw = {"type": "artifact.created", "data": {"artifact_type": "file", "content_base64": "@@not base64@@"}}
    assert classify(raw, RUN).verdict is Verdict.DROPPED_INVALID


# --------------------------------------------------------------------------
# ResultValidator: sequence discipline
# --------------------------------------------------------------------------

def test_sequence_rising_by_one_is_accepted():
    v = ResultValidator(RUN)
    for seq in range(1, 6):
        verdict = v.check(delta(sequence=seq))
        assert verdict.verdict is Verdict.ACCEPTED and verdict.gap == 0
    assert v.last_sequence == 5
    assert v.counts == {"accepted": 5}


def test_sequence_may_start_anywhere():
    v = ResultValidator(RUN)
    assert v.check(delta(sequence=0)).gap == 0
    v2 = ResultValidator(RUN)
    assert v2.check(delta(sequence=41)).gap == 0


@pytest.mark.parametrize("repeat", [3, 2, 1])
def test_duplicate_or_older_sequence_is_dropped(repeat):
    v = ResultValidator(RUN)
    for seq in (1, 2, 3):
        v.check(delta(sequence=seq))
    verdict = v.check(delta(sequence=repeat))
    assert verdict.verdict is Verdict.DROPPED_DUPLICATE
    assert v.last_sequence == 3
    # the stream continues normally afterwards
    assert v.check(delta(sequence=4)).verdict is Verdict.ACCEPTED


def test_sequence_gap_is_accepted_and_recorded(caplog):
    v = ResultValidator(RUN)
    v.check(delta(sequence=1))
    with caplog.at_level(logging.WARNING, logger="runnerhost.protocol.results"):
        verdict = v.check(delta(sequence=5))
    assert verdict.verdict is Verdict.ACCEPTED
    assert verdict.gap == 3
    assert v.last_sequence == 5
    assert "gap" in caplog.text
    assert v.check(delta(sequence=6)).gap == 0


def test_results_without_sequence_do_not_disturb_sequencing():
    v = ResultValidator(RUN)
    v.check(delta(sequence=1))
    assert v.check(delta()).accepted
    assert v.check(delta(sequence=2)).gap == 0


def test_invalid_result_does_not_consume_a_sequence():
    v = ResultValidator(RUN)
    v.check(delta(sequence=1))
    assert v.check({"type": "message.delta", "data": {}, "sequence": 2}).verdict is Verdict.DROPPED_INVALID
    verdict = v.check(delta(sequence=2))
    assert verdict.verdict is Verdict.ACCEPTED and verdict.gap == 0


def test_counts_track_every_verdict(caplog):
    v = ResultValidator(RUN)
    v.check(delta(sequence=1))
    v.check(delta(sequence=1))
    v.check({"type": "foo.bar"})
    v.check({"type": "message.delta", "data": {}})
    v.check({"type": "run.completed"})
    v.check(delta())
    assert v.counts == {"accepted": 2, "dropped_duplicate": 1, "ignored_unknown": 1,
                        "dropped_invalid": 1, "dropped_after_terminal": 1}


# --------------------------------------------------------------------------
# ResultValidator: terminal latch and finish()
# --------------------------------------------------------------------------

@pytest.mark.parametrize("terminal", [{"type": "run.completed", "data": {}},
                                      {"type": "run.failed", "data": {"error": "x"}}])
@pytest.mark.parametrize("after", [delta(), completed(), {"type": "run.completed", "data": {}},
                                   {"type": "run.failed", "data": {"error": "again"}},
                                   {"type": "state.updated",
                                    "data": {"scope": "actor", "key": "k", "value": 1}},
                                   {"type": "foo.bar"}])
def test_result_after_terminal_is_dropped(terminal, after):
    v = ResultValidator(RUN)
    v.check(completed())
    assert v.check(terminal).accepted
    first_terminal = v.terminal
    verdict = v.check(after)
    assert verdict.verdict is Verdict.DROPPED_AFTER_TERMINAL
    assert v.terminal is first_terminal


def test_finish_without_anything_is_empty_output_failure():
    final = ResultValidator(RUN).finish()
    assert final.type == "run.failed"
    assert final.run_id == RUN
    assert final.data["code"] == "runner.empty_output"
    assert final.data["retryable"] is False
    assert final.is_terminal


def test_run_completed_without_any_message_is_empty_output_failure():
    v = ResultValidator(RUN)
    v.check({"type": "state.updated", "data": {"scope": "actor", "key": "k", "value": 1}})
    v.check({"type": "tool.call.started", "data": {"tool_call_id": "c", "tool_name": "t"}})
    assert v.check({"type": "run.completed", "data": {"finish_reason": "stop"}}).accepted
    final = v.finish()
    assert final.type == "run.failed"
    assert final.data["code"] == "runner.empty_output"


def test_only_invalid_or_unknown_messages_still_count_as_empty():
    v = ResultValidator(RUN)
    v.check({"type": "message.delta", "data": {}})
    v.check({"type": "message.text", "data": {"text": "hi"}})
    v.check({"type": "run.completed", "data": {}})
    assert v.finish().data["code"] == "runner.empty_output"


def test_run_completed_carrying_a_message_is_a_success():
    v = ResultValidator(RUN)
    v.check({"type": "run.completed",
             "data": {"message": {"role": "assistant", "content": "done"}}})
    final = v.finish()
    assert final.type == "run.completed"
    assert final.data["message"]["content"] == "done"


@pytest.mark.parametrize("message", [delta("part"), completed("all")])
def test_message_then_run_completed_passes_through(message):
    v = ResultValidator(RUN)
    v.check(message)
    v.check({"type": "run.completed", "data": {"finish_reason": "length"}})
    final = v.finish()
    assert final.type == "run.completed" and final.data["finish_reason"] == "length"


def test_message_without_terminal_finishes_as_completed():
    v = ResultValidator(RUN)
    v.check(completed("hi"))
    final = v.finish()
    assert final.type == "run.completed" and final.run_id == RUN


@pytest.mark.parametrize("with_message", [False, True])
def test_runner_run_failed_passes_through(with_message):
    v = ResultValidator(RUN)
    if with_message:
        v.check(delta("partial"))
    v.check({"type": "run.failed", "data": {"code": "runner.crash", "error": "kaput", "retryable": True}})
    final = v.finish()
    assert final.type == "run.failed"
    assert final.data == {"code": "runner.crash", "error": "kaput", "retryable": True}


def test_classified_accepted_property():
    assert Classified(Verdict.ACCEPTED).accepted
    assert not Classified(Verdict.DROPPED_DUPLICATE).accepted


def _strip_none(value):
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    return value


def test_runresult_constructors_round_trip_through_classify():
    for result in (RunResult.delta(RUN, "a"), RunResult.completed_message(RUN, "b"),
                   RunResult.state(RUN, "runner", "k", [1]), RunResult.done(RUN),
                   RunResult.failed(RUN, "c", "d")):
        verdict = classify(result, RUN)
        assert verdict.accepted, verdict.reason
        # classify normalises the payload (fills defaults/None); nothing is lost
        assert _strip_none(verdict.result.data) == _strip_none(result.data)
    assert RunResult.done(RUN).is_terminal and RunResult.failed(RUN, "c", "d").is_terminal
    assert not RunResult.delta(RUN, "a").is_terminal
