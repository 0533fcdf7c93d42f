"""The in-process lifecycle of one run, and the one map from terminal cause to ledger status.

A run a host has accepted moves through these phases (``RunLifecycle``):

    QUEUED ──► LEASED ──► STARTING ──► RUNNING ──► FINALIZING ──► DONE
      │           │  ▲         │                        ▲
      │           │  └─────────┘ (executor gone before   │
      │           │               anything ran: retry)   │
      └───────────┴──────────────┴───────────────────────┘  (cancel, failure)

* QUEUED — accepted (its ``created`` ledger row committed), waiting for its conversation
  lane and/or a run slot; it holds no RunActor.
* LEASED — holds a slot of a RunActor.
* STARTING — its start facts are committed (ledger ``running``), the plan is on its way.
* RUNNING — the runner's results are being relayed.
* FINALIZING — the terminal result is decided; the final facts are being written.
* DONE — facts final, slot and conversation lane released.

The persisted statuses follow: QUEUED/LEASED ↔ ``created`` (``running`` when the slot was free
at admission and the run was accepted already started), STARTING…FINALIZING ↔ ``running``,
DONE ↔ a terminal status. :func:`status_of` is the only place that turns a terminal result
into a ledger status; :class:`Cause` names every terminal cause the host (not the runner)
decides.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from protocol.lifecycle import RunStatus
from protocol.results import ResultType, RunResult


class RunPhase(str, enum.Enum):
    QUEUED = "queued"
    LEASED = "leased"
    STARTING = "starting"
    RUNNING = "running"
    FINALIZING = "finalizing"
    DONE = "done"


_EDGES: dict[RunPhase, frozenset[RunPhase]] = {
    RunPhase.QUEUED: frozenset({RunPhase.LEASED, RunPhase.FINALIZING}),
    RunPhase.LEASED: frozenset({RunPhase.STARTING, RunPhase.FINALIZING}),
    RunPhase.STARTING: frozenset({RunPhase.RUNNING, RunPhase.LEASED, RunPhase.FINALIZING}),
    RunPhase.RUNNING: frozenset({RunPhase.FINALIZING}),
    RunPhase.FINALIZING: frozenset({RunPhase.DONE}),
    RunPhase.DONE: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A lifecycle edge that does not exist: a bug in the caller, never an input error."""


@dataclass
class RunLifecycle:
    """The phase of one run plus what it holds; :meth:`to` is the only way to move."""

    run_id: str
    phase: RunPhase = RunPhase.QUEUED
    history: list[RunPhase] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.history.append(self.phase)

    def to(self, phase: RunPhase) -> None:
        if phase not in _EDGES[self.phase]:
            raise IllegalTransition(f"run {self.run_id}: {self.phase.value} → {phase.value}")
        self.phase = phase
        self.history.append(phase)

    @property
    def started(self) -> bool:
        """Its start facts are (being) committed: the ledger row says ``running``."""
        return RunPhase.STARTING in self.history

    @property
    def done(self) -> bool:
        return self.phase is RunPhase.DONE

    @property
    def finalizing(self) -> bool:
        return self.phase in (RunPhase.FINALIZING, RunPhase.DONE)


class Cause(enum.Enum):
    """Terminal causes decided by the host: (code, default message, retryable)."""

    TIMEOUT = ("runner.timeout", "the run passed its deadline", True)
    CANCELLED = ("run.cancelled", "cancelled", False)
    RUNNER_CRASHED = ("runner.crashed", "the runner worker died", True)
    NO_EXECUTOR = ("runner.crashed", "no live runner worker", True)
    RUN_ACTOR_DIED = ("host.run_actor_died", "the run's actor died", True)
    NO_TERMINAL = ("host.run_actor_died", "the run ended without a terminal frame", True)
    START_FAILED = ("host.start_failed", "the run could not be started", True)
    QUEUE_TIMEOUT = ("host.queue_timeout", "the run waited too long for its turn", True)
    HOST_LOST = ("host.lost", "the host driving this run was lost", True)
    HOST_STOPPED = ("host.stopped", "the host stopped before the run could finish", True)
    HOST_ERROR = ("host.error", "the host failed while running it", True)

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def retryable(self) -> bool:
        return self.value[2]

    def result(self, run_id: str, message: str | None = None) -> RunResult:
        return RunResult.failed(run_id, self.code, message or self.value[1], self.retryable)

    def frame(self, run_id: str, message: str | None = None, sequence: int | None = None) -> dict[str, Any]:
        return {"run_id": run_id, "type": ResultType.RUN_FAILED.value,
                "data": {"code": self.code, "error": message or self.value[1], "retryable": self.retryable},
                "sequence": sequence}


#: Failure codes whose ledger status is not plain ``failed``.
_STATUS_BY_CODE = {Cause.TIMEOUT.code: RunStatus.TIMEOUT, Cause.CANCELLED.code: RunStatus.CANCELLED}


def status_of(result_type: str, code: str | None = None) -> RunStatus:
    """The ledger status a terminal result puts a run in (the one place this is decided)."""
    if result_type == ResultType.RUN_COMPLETED.value:
        return RunStatus.COMPLETED
    if result_type != ResultType.RUN_FAILED.value:
        raise ValueError(f"{result_type!r} is not a terminal result type")
    return _STATUS_BY_CODE.get(code or "", RunStatus.FAILED)


def status_of_frame(frame: dict[str, Any]) -> RunStatus:
    return status_of(frame["type"], (frame.get("data") or {}).get("code"))


def reason_of_frame(frame: dict[str, Any]) -> str | None:
    """``status_reason`` of the ledger row: the failure code, or the completion's finish reason."""
    data = frame.get("data") or {}
    return data.get("code") if frame["type"] == ResultType.RUN_FAILED.value else data.get("finish_reason")
