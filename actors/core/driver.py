"""The host's run flow as a plain class: intake → admission → durable accept → queue → run → finalize.

:class:`RunDriver` decides and sequences; everything that crosses a process boundary goes
through :class:`HostPorts` (the registry, the storage actor, RunActors, executors), so the
flow is unit-tested with in-memory ports and the Ray host (``actors/host.py``) is a thin
shell around it.

Invariants (SPEC §8, §9, §12):

* **Accepted means durable.** ``submit`` returns (and the HTTP layer answers 2xx) only after
  the event's EventLog row, user transcript item and ledger row committed. Nothing before
  that commit is visible; a failure before it releases everything taken and raises.
* **One event, one run.** A re-sent ``event_id`` joins (live) or replays (finished) the run it
  started — announced by a ``run.duplicate`` frame — and a different request under a used
  ``event_id`` is a ``conflict``. The registry catches re-sends of admitted and recently
  finished runs; the accept write catches the rest.
* **Capacity is explicit.** A run holds a RunActor slot only while it runs. Beyond free slots it
  is queued (ledger ``created``, a ``run.queued`` frame with its position) and starts FIFO.
* **Every exit releases what it took and ends in one terminal frame and final facts** —
  slot, executor, conversation lane — whatever fails, including this host's shutdown.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Protocol

from protocol.agents import AgentBinding
from protocol.delivery import DeliveryPlan, plan_delivery
from protocol.errors import ErrorCode, RunnerHostError
from protocol.events import EventEnvelope
from protocol.lifecycle import TERMINAL_STATUSES
from protocol.logs import get_logger
from protocol.manifest import RunnerDescriptor, RunnerManifest

from .. import constants, metrics, tracing
from .authz import ResourceCatalog, compute_access, named_selection
from .context_builder import build_context
from .conversations import Decision
from .deadlines import effective_timeout_s
from .frames import is_terminal
from .lifecycle import Cause, RunLifecycle, RunPhase
from .live import LiveRun
from .relay import relay
from .run_slot import ExecutorUnavailable, RunOutput, RunPlan
from .runner_api import RunIdentity
from .slots import Reservation, SlotPool
from .state_keys import scope_keys_for

log = get_logger(__name__)

TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


def submission_digest(event: EventEnvelope, agent_id: str | None) -> str:
    """Digest of what a client sent: the agent and the event fields it set (not the defaults the
    host filled in, such as a missing ``event_time``) — a retry has the same digest."""
    sent = {"agent_id": agent_id, "event": event.model_dump(mode="json", exclude_unset=True)}
    return hashlib.sha256(json.dumps(sent, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class RunActorGone(Exception):
    """The RunActor serving a run died. ``handed_over``: whether the run's plan may have reached
    it (its runner may have started, and acted). Only a run whose RunActor was found dead before
    the hand-over starts again on a live one; any other ends ``host.run_actor_died`` (retryable):
    a runner is never executed twice for one run."""

    def __init__(self, handed_over: bool = True) -> None:
        super().__init__(handed_over)
        self.handed_over = handed_over


class HostPorts(Protocol):
    """Everything the driver does outside its own process."""

    host_id: str

    async def registry(self, op: str, **kwargs: Any) -> Any:
        """One registry op (coalesced with other runs' ops); its value or its RunnerHostError."""

    def registry_post(self, op: str, **kwargs: Any) -> None:
        """A registry op nobody waits for (rides with the next batch)."""

    async def wait_released(self, run_ids: list[str], timeout: float | None, waiter: str) -> str:
        """"released" | "timeout" | "cancelled" (see ``ConversationIndex.wait_released``)."""

    async def write(self, kind: str, **kwargs: Any) -> Any:
        """A storage write (coalesced, retried while the storage actor restarts)."""

    async def read(self, kind: str, **kwargs: Any) -> Any: ...

    async def claim_steering(self, actor: Any, run_id: str, item: dict[str, Any]) -> str: ...

    async def cancel_on(self, actor: Any, run_id: str, reason: str, rollback: bool, early: bool = False) -> bool:
        """Cancel ``run_id`` on its RunActor; ``early``: its plan may still be on the way (remembered)."""

    async def check_member(self, member: Any) -> None:
        """Before a hand-over: :class:`RunActorGone` (``handed_over=False``) if ``member`` (a RunActor
        silent for a while, which may have died with its node while idle) does not answer."""

    def execute(self, member: Any, plan: RunPlan) -> AsyncIterator[RunOutput]:
        """The run on ``member`` (a RunActor); :class:`RunActorGone` if it dies."""

    async def executor(self, run: "AcceptedRun") -> "Executor":
        """Where a pool/session run's runner executes (leased); in_actor runs get a no-op one."""

    def address_of(self, member: Any) -> Any:
        """The address other processes reach ``member`` (a RunActor) by."""

    async def member_died(self, member: Any) -> None:
        """``member`` (a RunActor) is dead: drop it and check the rest of the pools."""

    async def deliver_frames(self, plan: DeliveryPlan, frames: list[dict[str, Any]]) -> Any:
        """Hand a batch of the run's non-terminal frames to delivery (platform messages, webhooks)."""

    async def deliver_terminal(self, plan: DeliveryPlan, frame: dict[str, Any]) -> Any:
        """Hand the run's terminal frame to delivery; its delivery records."""


class Executor(Protocol):
    address: Any

    async def release(self, *, dead: bool = False) -> None: ...

    async def stop(self, run_id: str) -> None:
        """Stop ``run_id``'s runner here, if it still runs (its RunActor died under it)."""


@dataclass
class BindingInfo:
    binding: AgentBinding
    descriptor: RunnerDescriptor
    target: str
    manifest: RunnerManifest
    timeout_s: float = 300.0  # the binding's, or the runner's own ``timeout`` field (deadlines.py)

    @property
    def execution(self) -> str:
        """Where the runner executes: the agent's choice where it may choose, else the runner's."""
        declared = self.descriptor.execution
        chosen = self.binding.execution
        if declared == "session" or chosen in (None, "default"):
            return declared
        return chosen


@dataclass
class DriverSettings:
    steering_capacity: int = 32
    gateway_url: str | None = None
    queue_timeout_s: float = 3600.0
    live_frames_kept: int = 512
    max_start_attempts: int = 3
    #: Platform connections (name → platform) a run's delivery policy may name.
    connections: dict[str, str] = field(default_factory=dict)


@dataclass
class AcceptedRun:
    """A run this host accepted, from its durable accept to its final facts."""

    run_id: str
    event: EventEnvelope
    info: BindingInfo
    decision: Decision
    wait_for: list[str]
    digest: str
    reservation: Reservation | None
    live: LiveRun
    lifecycle: RunLifecycle
    scope_keys: dict[str, str]
    handles: dict[str, Any] | None = None
    next_sequence: int = 1
    deadline_at: float | None = None
    event_seq: int | None = None  # the event's place in the EventLog (a handle of the context)
    cancel_reason: str | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    member: Any = None  # the RunActor it runs on, once leased
    task: asyncio.Task | None = None
    span: Any = None      # the run's root span (one trace per run)
    delivery: DeliveryPlan | None = None  # where the host delivers the run's results (platforms, webhooks)
                                          # and where the runner may post (its own chat)
    submitted_at: float = field(default_factory=time.monotonic)
    first_frame_seen: bool = False


class RunDriver:
    def __init__(self, ports: HostPorts, slots: SlotPool, catalog: ResourceCatalog,
                 settings: DriverSettings | None = None, skills: dict[str, dict[str, Any]] | None = None) -> None:
        self.ports = ports
        self.slots = slots
        self.catalog = catalog
        self.skills = skills or {}
        self.settings = settings or DriverSettings()
        self.runs: dict[str, AcceptedRun] = {}
        self._deliveries: set[asyncio.Task] = set()
        self._bindings: dict[str, BindingInfo] = {}
        self._closing = False
        # The knowledge-base catalog is shared by every replica through the store: a base created
        # through another replica is learnt when a run first names it (one storage read).
        self._kb_read_at = float("-inf")
        self._kb_reading: asyncio.Future | None = None

    # -- intake -----------------------------------------------------------------------------
    async def submit(self, event: EventEnvelope, agent_id: str | None = None, run_id: str | None = None,
                     trace: tracing.Carrier | None = None) -> AsyncIterator[dict[str, Any]]:
        """Admit and durably accept the event; the stream of its run's frames. Raises (4xx/5xx
        error model) before anything is accepted; once it returns, the event is on record.
        ``trace``: the inbound request's W3C trace context, continued by the run's trace."""
        if self._closing:
            raise RunnerHostError(ErrorCode.RUNTIME_ERROR, "this host is shutting down", retryable=True)
        run_id = run_id or new_run_id()
        span = tracing.start_run(run_id, parent=trace, agent_id=agent_id, conversation_id=event.conversation_id)
        try:
            stream = await self._submit(event, agent_id, run_id, span)
        except BaseException as exc:
            tracing.end_run(span, "refused", getattr(getattr(exc, "code", None), "value", type(exc).__name__))
            raise
        if run_id not in self.runs:  # steered into another run, or a re-sent event: no run of its own
            tracing.end_run(span, "absorbed")
        return stream

    async def _submit(self, event: EventEnvelope, agent_id: str | None, run_id: str,
                      span: Any) -> AsyncIterator[dict[str, Any]]:
        digest = submission_digest(event, agent_id)
        reservation = self.slots.try_reserve()
        try:
            with tracing.admission_span(span):
                admission = await self.ports.registry(
                    "admit", run_id=run_id, agent_id=agent_id, event=_summary(event),
                    actor=self.ports.address_of(reservation.member) if reservation else None,
                    host_id=self.ports.host_id, digest=digest)
        except BaseException:
            if reservation is not None:
                reservation.cancel()
            raise
        decision = Decision(admission["decision"])
        if decision is not Decision.START and reservation is not None:
            reservation.cancel()
            reservation = None
        if decision is Decision.DUPLICATE:
            return await self._duplicate(event, admission["duplicate"])
        try:
            info = await self._binding(admission["binding_id"])
        except BaseException:
            self._release_lane(run_id, decision)
            raise
        wait_for = list(admission.get("wait_for") or [])
        if decision is Decision.REJECT:
            earlier = await self.ports.read("event_submission", event_id=event.event_id)
            if earlier is not None:  # a re-send of an event this conversation already has
                return await self._duplicate(event, {"run_id": earlier["run_id"], "live": False,
                                                     "same_body": earlier["body_sha256"] == digest})
            raise RunnerHostError(ErrorCode.CONFLICT, "the conversation already has an active run and the "
                                  "agent's multitask strategy is 'reject'", details={"active_run_ids": wait_for})
        if decision is Decision.STEER:
            steered = await self._try_steer(event, info, admission["targets"][0], digest)
            if steered is not None:
                return steered
            reservation = self.slots.try_reserve()
            fallback = await self.ports.registry(
                "admit_fallback", run_id=run_id, runner_id=info.binding.runner_id, conv_key=admission["conv_key"],
                steerable=True, actor=self.ports.address_of(reservation.member) if reservation else None,
                host_id=self.ports.host_id, event_id=event.event_id, digest=digest)
            decision, wait_for = Decision(fallback["decision"]), list(fallback["wait_for"])
            if decision is not Decision.START and reservation is not None:
                reservation.cancel()
                reservation = None
        if decision is Decision.START and reservation is None:
            try:
                reservation = self.slots.reserve()  # in line for a slot (rate_limited when the line is full)
            except BaseException:
                self._release_lane(run_id, decision)
                raise
        return await self._accept(run_id, event, info, decision, wait_for, digest, reservation, span)

    async def _accept(self, run_id: str, event: EventEnvelope, info: BindingInfo, decision: Decision,
                      wait_for: list[str], digest: str, reservation: Reservation | None, span: Any
                      ) -> AsyncIterator[dict[str, Any]]:
        granted = reservation is not None and reservation.granted
        binding = info.binding
        scope_keys = scope_keys_for(event, binding)
        if granted:
            first = _frame(run_id, "run.started", 0, _started_data(event, binding))
            deadline_at: float | None = time.time() + info.timeout_s
        else:
            queued = {"strategy": binding.multitask_strategy.value}
            if wait_for:
                queued.update(behind=wait_for, reason="conversation")
            else:
                queued.update(position=reservation.position if reservation else None, reason="capacity")
            first = _frame(run_id, "run.queued", 0, queued)
            deadline_at = None
        try:
            with tracing.storage_span(span, "run_accept"):
                out = await self.ports.write(
                    "run_accept", run_id=run_id, event=event, agent_id=binding.agent_id,
                    binding_id=binding.binding_id, runner_id=binding.runner_id, deadline_at=deadline_at,
                    scope_keys=scope_keys, status="running" if granted else "created",
                    owner_host=self.ports.host_id, body_sha256=digest, frames=[first])
        except BaseException:
            if reservation is not None:
                reservation.cancel()
            self._release_lane(run_id, decision)
            raise
        if out.get("duplicate") is not None:
            if reservation is not None:
                reservation.cancel()
            self._release_lane(run_id, decision)
            return await self._duplicate(event, {**out["duplicate"], "live": False})
        lifecycle = RunLifecycle(run_id)
        live = LiveRun(run_id, keep=self.settings.live_frames_kept)
        run = AcceptedRun(run_id=run_id, event=event, info=info, decision=decision, wait_for=wait_for,
                          digest=digest, reservation=reservation, live=live, lifecycle=lifecycle,
                          scope_keys=scope_keys, handles=out.get("handles"), span=span,
                          event_seq=out.get("event_seq"))
        if granted:
            run.member = reservation.member
            lifecycle.to(RunPhase.LEASED)
            lifecycle.to(RunPhase.STARTING)
            run.deadline_at = deadline_at
            metrics.run_started(binding.agent_id, binding.runner_id)
        await live.publish([first])
        self.runs[run_id] = run
        run.delivery = plan_delivery(run_id, binding.agent_id, binding.delivery_policy, event,
                                     self.settings.connections,
                                     trace=tracing.carrier(span) if self.settings.connections else None)
        run.task = asyncio.get_running_loop().create_task(self._drive(run))
        if not run.delivery.empty:
            self._deliver(run)
        return live.follow(0, self._ledger_reader(run_id))

    def _deliver(self, run: AcceptedRun) -> None:
        """Follow the run and hand its frames to delivery (host-owned replies, SPEC §13), in order,
        off the run's own path: a slow platform never holds the run up."""
        plan = run.delivery

        async def deliver() -> None:
            try:
                await relay(plan, run.live.follow(0, self._ledger_reader(run.run_id)),
                            self.ports.deliver_frames, self.ports.deliver_terminal)
            except Exception:  # recorded per part by delivery; the run's facts stand either way
                log.exception("delivery of run %s failed", run.run_id)
        self._deliveries.add(task := asyncio.get_running_loop().create_task(deliver()))
        task.add_done_callback(self._deliveries.discard)

    # -- the run --------------------------------------------------------------------------------
    async def _drive(self, run: AcceptedRun) -> None:
        executor: Executor | None = None
        try:
            if not run.lifecycle.started:
                if not await self._wait_turn(run):
                    return
            for attempt in range(1, self.settings.max_start_attempts + 1):
                with tracing.lease_span(run.span, run.info.execution):
                    executor = await self.ports.executor(run)
                if run.cancelled.is_set():  # cancelled before its runner ran: nothing to stop
                    await self._fail(run, Cause.CANCELLED, run.cancel_reason)
                    return
                await self.learn_knowledge_bases(run.info.manifest, run.info.binding)
                plan = self._plan(run, executor.address)
                try:
                    await self.ports.check_member(run.member)
                    if run.lifecycle.phase is RunPhase.LEASED:
                        run.lifecycle.to(RunPhase.STARTING)
                    terminal = await self._relay(run, plan)
                    if (terminal.get("data") or {}).get("code") == Cause.RUNNER_CRASHED.code:
                        await executor.release(dead=True)  # before anyone is leased onto the corpse
                        executor = None
                    return
                except ExecutorUnavailable:
                    # gone before the runner ran (e.g. its node was lost while idle): run elsewhere
                    await executor.release(dead=True)
                    executor = None
                    if attempt == self.settings.max_start_attempts:
                        await self._fail(run, Cause.NO_EXECUTOR)
                        return
                    run.lifecycle.to(RunPhase.LEASED)
                except RunActorGone as gone:
                    await self.ports.member_died(run.member)
                    run.member = None
                    if gone.handed_over or attempt == self.settings.max_start_attempts:
                        if gone.handed_over:  # its runner may live on in a worker: stop it
                            await executor.stop(run.run_id)
                        await self._fail(run, Cause.RUN_ACTOR_DIED)
                        return
                    # found dead before the hand-over: the same run on a live RunActor (and executor)
                    await executor.release()
                    executor = None
                    if run.lifecycle.phase is not RunPhase.LEASED:
                        run.lifecycle.to(RunPhase.LEASED)
                    run.reservation = self.slots.reserve()
                    run.member = await run.reservation.wait()
                    self.ports.registry_post("mark_started", run_id=run.run_id,
                                             actor=self.ports.address_of(run.member))
        except asyncio.CancelledError:
            if not run.lifecycle.finalizing:
                await asyncio.shield(self._fail(run, Cause.HOST_STOPPED))
            raise
        except RunnerHostError as exc:
            if not run.lifecycle.finalizing:
                await self._fail(run, Cause.START_FAILED, f"{exc.code.value}: {exc.message}")
        except Exception as exc:  # never leave a reader hanging or a ledger row open
            log.exception("run %s failed in the host", run.run_id)
            if not run.lifecycle.finalizing:
                await self._fail(run, Cause.HOST_ERROR, type(exc).__name__)
        finally:
            if not run.lifecycle.done:
                await asyncio.shield(self._fail(run, Cause.NO_TERMINAL))
            if executor is not None:
                await executor.release()
            self._release(run)

    async def _wait_turn(self, run: AcceptedRun) -> bool:
        """Queued: wait for the conversation lane, then for a slot, then record the start.
        False when the run ended while it waited (cancelled, timed out)."""
        timeout = self.settings.queue_timeout_s
        if run.decision in (Decision.QUEUE, Decision.INTERRUPT, Decision.ROLLBACK):
            if run.decision is not Decision.QUEUE:
                await self.cancel_runs(run.wait_for, f"{run.decision.value} by event {run.event.event_id}",
                                       rollback=run.decision is Decision.ROLLBACK)
            waited = time.monotonic()
            outcome = await self._until_cancelled(
                run, self.ports.wait_released(run.wait_for, timeout, run.run_id))
            metrics.admission_wait("lane", time.monotonic() - waited)
            if outcome != "released":
                await self._end_queued(run, outcome)
                return False
            run.reservation = self.slots.reserve()
        assert run.reservation is not None
        if not run.reservation.granted:
            waited = time.monotonic()
            try:
                with tracing.lease_span(run.span, self.slots.name):
                    member = await self._until_cancelled(run, run.reservation.wait(timeout))
            except asyncio.TimeoutError:
                member = "timeout"
            metrics.admission_wait(self.slots.name, time.monotonic() - waited)
            if not isinstance(member, str):
                self.ports.registry_post("mark_started", run_id=run.run_id, actor=self.ports.address_of(member))
            else:
                run.reservation.cancel()
                await self._end_queued(run, member)
                return False
        run.member = run.reservation.member
        run.lifecycle.to(RunPhase.LEASED)
        binding = run.info.binding
        deadline_at = time.time() + run.info.timeout_s
        started = _frame(run.run_id, "run.started", run.next_sequence, _started_data(run.event, binding))
        with tracing.storage_span(run.span, "start_run"):
            out = await self.ports.write("start_run", run_id=run.run_id, deadline_at=deadline_at,
                                         scope_keys=run.scope_keys, frames=[started], event_seq=run.event_seq,
                                         is_message=run.event.is_message)
        if out.get("cancelled") is not None:
            run.lifecycle.to(RunPhase.FINALIZING)
            await run.live.publish([Cause.CANCELLED.frame(run.run_id, "cancelled while queued",
                                                          out["cancelled"]["sequence"])])
            run.lifecycle.to(RunPhase.DONE)
            self._finished(run, "cancelled", Cause.CANCELLED.code)
            return False
        run.handles = out["handles"]
        run.deadline_at = deadline_at
        metrics.run_started(binding.agent_id, binding.runner_id)
        run.next_sequence += 1
        await run.live.publish([started])
        return True

    async def _until_cancelled(self, run: AcceptedRun, awaitable: Any) -> Any:
        """``awaitable``'s result, or "cancelled" if the run is cancelled first."""
        task = asyncio.ensure_future(awaitable)
        cancelled = asyncio.ensure_future(run.cancelled.wait())
        try:
            done, _ = await asyncio.wait({task, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
        if task in done:
            return task.result()
        task.cancel()
        return "cancelled"

    async def _end_queued(self, run: AcceptedRun, outcome: str) -> None:
        cause = Cause.CANCELLED if outcome == "cancelled" else Cause.QUEUE_TIMEOUT
        await self._fail(run, cause, run.cancel_reason if cause is Cause.CANCELLED else None)

    async def _relay(self, run: AcceptedRun, plan: RunPlan) -> dict[str, Any]:
        """Relay the run's stream; commit its final facts; its terminal frame."""
        async for frames, final in self.ports.execute(run.member, plan):
            if run.lifecycle.phase is RunPhase.STARTING:
                run.lifecycle.to(RunPhase.RUNNING)
            if frames and not run.first_frame_seen:
                run.first_frame_seen = True
                metrics.first_frame(run.info.binding.agent_id, time.monotonic() - run.submitted_at)
            if final is None:
                await run.live.publish(frames)
                continue
            run.lifecycle.to(RunPhase.FINALIZING)
            self._free_slot(run)  # the RunActor is done with it: the next run need not wait for our commit
            return await self._commit_final(run, frames, final)
        raise RunActorGone()  # the stream ended without its closing facts

    async def _commit_final(self, run: AcceptedRun, frames: list[dict[str, Any]],
                            final: dict[str, Any]) -> dict[str, Any]:
        try:
            with tracing.storage_span(run.span, "finish_run"):
                await self.ports.write("finish_run", **final)
            self._finished(run, final["status"], final["reason"])
        except RunnerHostError as exc:
            # The facts could not be recorded: the client must not believe an outcome the ledger
            # does not hold. The row stays open until a sweep finalizes it (host.lost, retryable).
            log.error("run %s: final facts not recorded (%s)", run.run_id, exc.message)
            terminal = frames[-1]
            frames = [*frames[:-1], Cause.HOST_ERROR.frame(run.run_id, "the run's facts could not be recorded",
                                                           terminal.get("sequence"))]
        await run.live.publish(frames)
        run.lifecycle.to(RunPhase.DONE)
        return frames[-1]

    async def _fail(self, run: AcceptedRun, cause: Cause, message: str | None = None) -> None:
        """Finalize a run nobody else will: the failure on record, the terminal frame out."""
        if run.lifecycle.done:
            return
        if not run.lifecycle.finalizing:
            run.lifecycle.to(RunPhase.FINALIZING)
        frame = cause.frame(run.run_id, message)
        try:  # what readers saw goes on record too (frames relayed but not yet flushed)
            out = await self.ports.write("run_abort", run_id=run.run_id, frame=frame, seen=run.live.recent())
            frame = {**frame, "sequence": out.get("sequence")}
            if out.get("sequence") is not None:  # this call finalized it (not an earlier one)
                self._finished(run, out["status"], cause.code)
        except RunnerHostError as exc:
            log.error("run %s: could not record its failure (%s)", run.run_id, exc.message)
        if frame.get("sequence") is None:
            frame["sequence"] = run.live.next_sequence
        await run.live.publish([frame])
        run.lifecycle.to(RunPhase.DONE)

    def _finished(self, run: AcceptedRun, status: str, code: str | None) -> None:
        """The run's final facts are committed: count it, end its trace."""
        metrics.run_finished(run.info.binding.agent_id, status, code or "none",
                             time.monotonic() - run.submitted_at)
        if run.span is not None:
            tracing.end_run(run.span, status, code)
            run.span = None

    def _free_slot(self, run: AcceptedRun) -> None:
        if run.reservation is not None:
            run.reservation.cancel()
            run.reservation = None

    def _release(self, run: AcceptedRun) -> None:
        self._free_slot(run)
        self.ports.registry_post("release", run_id=run.run_id)
        self.runs.pop(run.run_id, None)

    def _release_lane(self, run_id: str, decision: Decision) -> None:
        """Give back the lane of a run that was never accepted."""
        if decision not in (Decision.REJECT, Decision.STEER, Decision.DUPLICATE):
            self.ports.registry_post("release", run_id=run_id, accepted=False)

    # -- the plan ------------------------------------------------------------------------------------
    async def learn_knowledge_bases(self, manifest: RunnerManifest, binding: AgentBinding) -> None:
        """Bring the catalog's knowledge bases up to date before a grant that may name one this host
        has not seen (created through another replica). No read when every base the binding names is
        known; a binding granted every base re-reads the list at most every KNOWLEDGE_CATALOG_TTL_S.
        A failed read leaves the catalog as it was (the run is granted what is known)."""
        if not manifest.permissions.knowledge_bases:
            return
        named = named_selection(binding.resource_policy.knowledge_bases,
                                (binding.runner_config or {}).get("knowledge_bases"))
        if named is not None:
            if named <= set(self.catalog.knowledge_bases):
                return
        elif time.monotonic() - self._kb_read_at < constants.KNOWLEDGE_CATALOG_TTL_S:
            return
        if self._kb_reading is None:  # concurrent runs share one read
            self._kb_reading = asyncio.ensure_future(self._read_knowledge_bases())
        reading = self._kb_reading
        try:
            await asyncio.shield(reading)
        except Exception as exc:  # noqa: BLE001 - the catalog stays as it was
            log.warning("could not read the knowledge bases (%s); granting the known ones", type(exc).__name__)
        finally:
            if self._kb_reading is reading:
                self._kb_reading = None

    async def _read_knowledge_bases(self) -> None:
        stored = await self.ports.read("knowledge_bases")
        self._kb_read_at = time.monotonic()
        self.catalog.knowledge_bases = sorted({*self.catalog.knowledge_bases, *stored})

    def _plan(self, run: AcceptedRun, executor_address: Any) -> RunPlan:
        event, info = run.event, run.info
        binding = info.binding
        delivery = run.delivery if run.delivery is not None and run.delivery.own_chat is not None else None
        snapshot = compute_access(run_id=run.run_id, manifest=info.manifest, binding=binding,
                                  conversation_id=event.conversation_id, thread_id=event.thread_id,
                                  catalog=self.catalog, deadline_at=run.deadline_at, own_chat=delivery is not None)
        scopes = snapshot.state_scopes & frozenset(run.scope_keys)
        snapshot = replace(snapshot, state_scopes=scopes, state_ops=snapshot.state_ops if scopes else frozenset())
        handles = run.handles or {}
        with tracing.context_build_span(run.span):
            ctx = build_context(run_id=run.run_id, event=event, binding=binding, snapshot=snapshot,
                                catalog=self.catalog, handles=handles, state=handles.get("state") or {},
                                trace_id=tracing.trace_id(run.span),
                                runtime_metadata={"binding_id": binding.identity, "agent_id": binding.agent_id},
                                skill_catalog=self.skills,
                                automatic_reply=run.delivery is not None and run.delivery.automatic_reply)
        identity = RunIdentity(
            run_id=run.run_id, runner_id=binding.runner_id, binding_identity=binding.identity,
            bot_id=event.bot_id, workspace_id=event.workspace_id, conversation_id=event.conversation_id,
            thread_id=event.thread_id, actor_type=event.actor.actor_type, actor_id=event.actor.actor_id,
            subject_type=event.subject.subject_type if event.subject else None,
            subject_id=event.subject.subject_id if event.subject else None)
        reply_to = None
        if event.conversation_id:
            reply_to = {"event_id": event.event_id, "conversation_id": event.conversation_id,
                        "thread_id": event.thread_id, "bot_id": event.bot_id, "workspace_id": event.workspace_id}
        return RunPlan(run_id=run.run_id, snapshot=snapshot, identity=identity, ctx=ctx,
                       execution=info.execution, runner_target=info.target, executor=executor_address,
                       first_sequence=run.next_sequence, scope_keys=run.scope_keys,
                       steering_capacity=self.settings.steering_capacity,
                       gateway_url=self.settings.gateway_url, reply_to=reply_to, trace=tracing.carrier(run.span),
                       delivery=delivery)

    async def _binding(self, binding_id: str) -> BindingInfo:
        info = self._bindings.get(binding_id)
        if info is None:
            found = await self.ports.registry("binding", binding_id=binding_id)
            descriptor = RunnerDescriptor.model_validate(found["descriptor"])
            binding = AgentBinding.model_validate(found["binding"])
            info = BindingInfo(binding=binding, descriptor=descriptor, target=found["runner_target"],
                               manifest=RunnerManifest(id=descriptor.id, label=descriptor.label,
                                                       capabilities=descriptor.capabilities,
                                                       permissions=descriptor.permissions),
                               timeout_s=effective_timeout_s(binding, descriptor))
            self._bindings[binding_id] = info
        return info

    # -- steering -------------------------------------------------------------------------------------
    async def _try_steer(self, event: EventEnvelope, info: BindingInfo, target: dict[str, Any],
                         digest: str) -> AsyncIterator[dict[str, Any]] | None:
        """Claim the event into the active run's queue; None means "take the normal path"."""
        binding = info.binding
        item = {
            "claimed_run_id": target["run_id"], "runner_id": binding.runner_id, "claimed_at": int(time.time()),
            "event": {"event_id": event.event_id, "event_type": event.event_type, "event_time": event.event_time,
                      "source": event.source, "source_event_type": event.source_event_type, "data": event.data},
            "input": event.input.model_dump(mode="json"),
            "conversation": {"conversation_id": event.conversation_id, "thread_id": event.thread_id,
                             "bot_id": event.bot_id, "workspace_id": event.workspace_id,
                             "sender_id": event.actor.actor_id},
            "actor": event.actor.model_dump(mode="json"),
            "subject": event.subject.model_dump(mode="json") if event.subject else None,
        }
        try:
            claimed = await self.ports.claim_steering(target["actor"], target["run_id"], item)
        except Exception as exc:  # a dying target must not break intake
            log.warning("steering claim into %s failed: %s", target["run_id"], type(exc).__name__)
            return None
        if claimed == "refused":
            metrics.steering("refused")
            return None
        if claimed == "claimed":
            metrics.steering("claimed")
        steering_meta = {"status": "queued", "trigger_behavior": "absorbed_into_active_run",
                         "claimed_by_run_id": target["run_id"], "claimed_runner_id": binding.runner_id,
                         "claimed_at": item["claimed_at"]}
        out = await self.ports.write("event_accept", event=event, binding_id=binding.binding_id,
                                     agent_id=binding.agent_id, runner_id=binding.runner_id, run_id=None,
                                     metadata={"steering": steering_meta}, body_sha256=digest)
        duplicate = out.get("duplicate")
        if duplicate is not None and not duplicate["same_body"]:
            raise _conflict(event.event_id)
        return _single({"run_id": target["run_id"], "type": "event.steered", "sequence": None,
                        "data": {"claimed_by_run_id": target["run_id"], "event_id": event.event_id,
                                 **({"duplicate": True} if claimed == "duplicate" or duplicate else {})}})

    # -- duplicates, joins, cancels ---------------------------------------------------------------------
    async def _duplicate(self, event: EventEnvelope, duplicate: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        if not duplicate.get("same_body", True):
            raise _conflict(event.event_id)
        run_id = duplicate.get("run_id")
        note = {"run_id": run_id, "type": "run.duplicate", "sequence": None,
                "data": {"event_id": event.event_id, "run_id": run_id,
                         "note": "this event_id was already accepted; this stream is its run's"}}
        if run_id is None:  # it was steered into another run: nothing of its own to join
            return _single(note)
        return self._then(note, self.join(run_id))

    async def _then(self, first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        yield first
        async for frame in rest:
            yield frame

    async def join(self, run_id: str, poll_s: float = 0.2) -> AsyncIterator[dict[str, Any]]:
        """The run's frames from its first: live from this host, or from the ledger (polled until
        terminal when another host drives it)."""
        run = self.runs.get(run_id)
        if run is not None:
            async for frame in run.live.follow(0, self._ledger_reader(run_id)):
                yield frame
            return
        await self.ports.read("run_get", run_id=run_id)  # not_found for an unknown run
        sequence = 0
        while True:
            frames = await self._ledger_reader(run_id)(sequence)
            for frame in frames:
                if frame["sequence"] < sequence:
                    continue
                sequence = frame["sequence"] + 1
                yield frame
                if is_terminal(frame):
                    return
            if not frames:
                status = (await self.ports.read("run_get", run_id=run_id))["status"]
                if status in TERMINAL:
                    return
                await asyncio.sleep(poll_s)

    def _ledger_reader(self, run_id: str):
        async def read(sequence: int) -> list[dict[str, Any]]:
            page = await self.ports.read("run_events_from", run_id=run_id, sequence=sequence, limit=100)
            return [{"run_id": run_id, "type": i["type"], "data": i["data"], "sequence": i["sequence"]}
                    for i in page["items"]]
        return read

    async def cancel(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        reason = reason or "cancelled by request"
        run = self.runs.get(run_id)
        if run is not None and not run.lifecycle.finalizing:
            run.cancel_reason = reason
            run.cancelled.set()
            if run.member is not None and run.lifecycle.started:
                await self.ports.cancel_on(self.ports.address_of(run.member), run_id, reason, False, early=True)
            return {"run_id": run_id, "cancel_requested": True}
        entries = await self.ports.registry("run_actors", run_ids=[run_id])
        if entries and entries[0]["actor"] is not None:
            if await self.ports.cancel_on(entries[0]["actor"], run_id, reason, False):
                return {"run_id": run_id, "cancel_requested": True}
        record = await self.ports.read("run_get", run_id=run_id)
        if record["status"] in TERMINAL:
            raise RunnerHostError(ErrorCode.CONFLICT, f"run {run_id} already finished ({record['status']})",
                                  details={"status": record["status"]})
        # queued on another host (or about to start there): on record, honoured before it starts
        await self.ports.write("request_cancel", run_id=run_id, reason=reason)
        self.ports.registry_post("request_cancel", run_id=run_id)
        return {"run_id": run_id, "cancel_requested": True}

    async def cancel_runs(self, run_ids: list[str], reason: str, rollback: bool) -> None:
        for entry in await self.ports.registry("run_actors", run_ids=run_ids):
            local = self.runs.get(entry["run_id"])
            if local is not None and not local.lifecycle.started:
                local.cancel_reason = reason
                local.cancelled.set()
            elif entry["actor"] is not None:
                try:
                    await self.ports.cancel_on(entry["actor"], entry["run_id"], reason, rollback)
                except Exception:  # its actor is gone: the run ends as failed on its own
                    pass

    def cancel_queued(self, run_ids: list[str], reason: str = "cancelled while queued") -> None:
        """Cancel runs of this host that still wait (their cancellation was requested elsewhere)."""
        for run_id in run_ids:
            run = self.runs.get(run_id)
            if run is not None and not run.lifecycle.started:
                run.cancel_reason = reason
                run.cancelled.set()

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop taking events; end every run of this host on record (``host.stopped``)."""
        self._closing = True
        tasks = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for run in list(self.runs.values()):  # a task cancelled before it ever ran handled nothing
            if not run.lifecycle.done:
                await self._fail(run, Cause.HOST_STOPPED)
            self._release(run)


# -- helpers ----------------------------------------------------------------------------------------
def _frame(run_id: str, type_: str, sequence: int, data: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run_id, "type": type_, "data": data, "sequence": sequence}


def _started_data(event: EventEnvelope, binding: AgentBinding) -> dict[str, Any]:
    return {"runner_id": binding.runner_id, "binding_id": binding.binding_id, "agent_id": binding.agent_id,
            "event_id": event.event_id}


def _summary(event: EventEnvelope) -> dict[str, Any]:
    """What the registry needs of an event to admit it."""
    return {"event_id": event.event_id, "event_type": event.event_type, "bot_id": event.bot_id,
            "workspace_id": event.workspace_id, "source": event.source,
            "conversation_id": event.conversation_id, "thread_id": event.thread_id}


def _conflict(event_id: str) -> RunnerHostError:
    return RunnerHostError(ErrorCode.CONFLICT, f"event_id {event_id!r} was already used by a different request",
                           details={"event_id": event_id})


async def _single(frame: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield frame


__all__ = ["RunDriver", "HostPorts", "AcceptedRun", "BindingInfo", "DriverSettings", "RunActorGone",
           "submission_digest", "new_run_id"]
