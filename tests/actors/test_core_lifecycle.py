"""RunLifecycle and the terminal-cause map, without Ray: every edge, every non-edge, every cause."""
from __future__ import annotations

import itertools

import pytest

from actors.core.lifecycle import (Cause, IllegalTransition, RunLifecycle, RunPhase, reason_of_frame, status_of,
                                   status_of_frame)
from protocol.lifecycle import RunStatus
from protocol.results import ResultType

P = RunPhase
EDGES = {
    (P.QUEUED, P.LEASED), (P.QUEUED, P.FINALIZING),
    (P.LEASED, P.STARTING), (P.LEASED, P.FINALIZING),
    (P.STARTING, P.RUNNING), (P.STARTING, P.LEASED), (P.STARTING, P.FINALIZING),
    (P.RUNNING, P.FINALIZING),
    (P.FINALIZING, P.DONE),
}
#: The shortest way from QUEUED to each phase, to put a lifecycle there.
PATH = {P.QUEUED: [], P.LEASED: [P.LEASED], P.STARTING: [P.LEASED, P.STARTING],
        P.RUNNING: [P.LEASED, P.STARTING, P.RUNNING], P.FINALIZING: [P.FINALIZING],
        P.DONE: [P.FINALIZING, P.DONE]}


def at(phase: RunPhase) -> RunLifecycle:
    life = RunLifecycle("run_t")
    for step in PATH[phase]:
        life.to(step)
    return life


@pytest.mark.parametrize("source, target", sorted(EDGES, key=str))
def test_every_edge_moves_and_is_recorded(source, target):
    life = at(source)
    life.to(target)
    assert life.phase is target and life.history[-2:] == [source, target]


@pytest.mark.parametrize("source, target", sorted(
    (pair for pair in itertools.product(RunPhase, RunPhase) if pair not in EDGES), key=str))
def test_every_other_move_is_refused_and_changes_nothing(source, target):
    life = at(source)
    before = list(life.history)
    with pytest.raises(IllegalTransition, match=f"{source.value} → {target.value}"):
        life.to(target)
    assert life.phase is source and life.history == before


def test_the_phases_say_what_the_ledger_row_says():
    life = RunLifecycle("run_t")
    assert not life.started and not life.finalizing and not life.done
    life.to(P.LEASED)
    life.to(P.STARTING)
    assert life.started  # start facts committed: the row says running
    life.to(P.LEASED)  # the executor was gone before anything ran: leased again, still started
    assert life.started and life.phase is P.LEASED
    life.to(P.STARTING)
    life.to(P.RUNNING)
    life.to(P.FINALIZING)
    assert life.finalizing and not life.done
    life.to(P.DONE)
    assert life.finalizing and life.done


def test_a_queued_run_can_end_without_ever_holding_a_slot():
    life = RunLifecycle("run_t")
    life.to(P.FINALIZING)  # cancelled or its host lost while it waited
    life.to(P.DONE)
    assert not life.started and life.history == [P.QUEUED, P.FINALIZING, P.DONE]


EXPECTED_STATUS = {Cause.TIMEOUT: RunStatus.TIMEOUT, Cause.CANCELLED: RunStatus.CANCELLED}


@pytest.mark.parametrize("cause", list(Cause), ids=lambda c: c.name)
def test_every_cause_is_one_failed_frame_with_its_ledger_status(cause):
    frame = cause.frame("run_t", sequence=7)
    assert frame["type"] == ResultType.RUN_FAILED.value and frame["sequence"] == 7
    assert frame["data"] == {"code": cause.code, "error": cause.value[1], "retryable": cause.retryable}
    assert status_of_frame(frame) is EXPECTED_STATUS.get(cause, RunStatus.FAILED)
    assert reason_of_frame(frame) == cause.code
    result = cause.result("run_t", "said otherwise")
    assert result.type == ResultType.RUN_FAILED.value and result.is_terminal
    assert result.data["code"] == cause.code and result.data["error"] == "said otherwise"
    assert result.data["retryable"] is cause.retryable


def test_only_a_cancel_is_final_for_the_client():
    assert [c for c in Cause if not c.retryable] == [Cause.CANCELLED]


def test_status_of_runner_results():
    assert status_of(ResultType.RUN_COMPLETED.value) is RunStatus.COMPLETED
    assert status_of(ResultType.RUN_FAILED.value, "runner.error") is RunStatus.FAILED
    assert status_of(ResultType.RUN_FAILED.value) is RunStatus.FAILED
    assert reason_of_frame({"type": ResultType.RUN_COMPLETED.value, "data": {"finish_reason": "stop"}}) == "stop"
    with pytest.raises(ValueError, match="not a terminal result type"):
        status_of(ResultType.MESSAGE_DELTA.value)
