"""One run inside its RunActor: the :class:`RunSlot` (per-run state) and the run's execution.

A RunActor holds up to ``runs_per_actor`` slots (default 1: each active run is an actor).
A slot owns everything that belongs to one run — the frozen authorization snapshot, the
runner-API service, the lease token, the steering queue, the cancel flag, the result
bookkeeping — so runs sharing an actor share nothing but the process.

``RunSlot.execute`` relays the runner's results as ``(frames, final)`` items:

* ``frames`` — accepted frames for the client, in sequence order;
* ``final`` — ``None`` on every item but the last; the last item carries the terminal
  frame and, in ``final``, the run's closing facts (status, unflushed frames, assistant
  transcript item, dropped steering, rollback) that the host commits before anyone sees the
  terminal frame.

The run's start facts are committed by the host before the plan arrives, so an executor
found gone before anything ran (:class:`ExecutorUnavailable`) is safe to retry elsewhere.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol

from protocol.context import RunContext
from protocol.delivery import DeliveryPlan
from protocol.errors import ErrorCode, RunnerHostError, unauthorized
from protocol.lifecycle import RunStatus
from protocol.logs import get_logger
from protocol.redact import redact
from protocol.results import ResultType, RunResult

from .. import constants, metrics, tracing
from .authz import AccessSnapshot
from .lifecycle import Cause
from .run import RunBook
from .runner_api import Backend, RunIdentity, RunnerApiService
from .steering import SteeringEntry, SteeringQueue

log = get_logger(__name__)

#: The ``action.requested`` a harness runner reports when a resume fell back to a fresh session.
SESSION_RESUME_FAILED = "session.resume_failed"

#: One item of a run's stream: (frames for the client, closing facts on the last item).
RunOutput = tuple[list[dict[str, Any]], dict[str, Any] | None]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ExecutorUnavailable(Exception):
    """The run's worker or session actor no longer exists (e.g. its node was lost while it was
    idle). Raised before the runner ran, so the host may run it on another executor."""


class ExecutorCrashed(Exception):
    """The executor died while the runner was running (retryable for the client, not for us)."""


class ExecutorStream(Protocol):
    """Where a run's runner executes: in this process, a pooled worker or a session actor."""

    async def check(self) -> None:
        """Raise :class:`ExecutorUnavailable` if the executor is gone (called before the run)."""

    def batches(self, ctx: RunContext, token: str) -> AsyncIterator[list[Any]]:
        """The runner's raw results in batches; :class:`ExecutorCrashed` if the executor dies."""

    async def stop(self, run_id: str) -> None:
        """Stop the runner (cancel, deadline); never raises."""


class SlotPorts(Protocol):
    """What a slot needs from the actor around it."""

    async def write(self, kind: str, **kwargs: Any) -> Any: ...
    async def register_token(self, digest: str, run_id: str) -> None: ...
    async def revoke_tokens(self, run_id: str) -> None: ...

    async def send_message(self, plan: DeliveryPlan, text: str, *, key: str, address: dict[str, Any] | None,
                           ordinal: int) -> dict[str, Any]:
        """Post a runner's explicit message through the delivery engine (``DeliveryService.send_message``)."""


@dataclass
class RunPlan:
    """Everything a RunActor needs for one run; built once, by the host."""

    run_id: str
    snapshot: AccessSnapshot
    identity: RunIdentity
    ctx: RunContext
    execution: str                      # "in_actor" | "pool" | "session"
    runner_target: str                  # "module:Class"
    executor: Any = None                # the worker / session actor's address (pool, session)
    first_sequence: int = 0
    scope_keys: dict[str, str] = field(default_factory=dict)
    steering_capacity: int = 32
    gateway_url: str | None = None
    #: The event the assistant transcript item answers (None: no conversation, no item).
    reply_to: dict[str, Any] | None = None
    #: The run's trace context (W3C carrier) for the spans this actor adds.
    trace: dict[str, str] | None = None
    #: The run's delivery plan (its own chat: where ``message_send`` posts); None: no platform.
    delivery: DeliveryPlan | None = None


class _Cancelled(Exception):
    pass


class _Deadline(Exception):
    pass


class RunSlot:
    def __init__(self, plan: RunPlan, ports: SlotPorts, backend: Backend, stream: ExecutorStream) -> None:
        self.plan = plan
        self.run_id = plan.run_id
        self.snapshot = plan.snapshot
        self.book = RunBook(plan.run_id, plan.identity.runner_id)
        self.book.next_sequence = plan.first_sequence
        self.token = secrets.token_urlsafe(24)
        self.steering = SteeringQueue(plan.steering_capacity)
        self._claimed: set[str] = set()
        self._ports = ports
        self._stream = stream
        self._cancel = asyncio.Event()
        self._cancel_reason: str | None = None
        self._rollback = False
        self.closed = False
        self.metadata: dict[str, Any] = {}  # merged into the run's ledger metadata at the end
        self._messages: dict[str, tuple[int, str]] = {}  # idempotency key → (message number, text digest)
        self._messages_delivered: set[str] = set()
        self._messages_lock = asyncio.Lock()
        self.service = RunnerApiService(
            plan.snapshot, plan.identity, backend, self.steering,
            on_steering_pulled=self._audit_injected,
            state_scope_key=self.scope_key,
            on_state_written=self.book.record_state_write,
            cancel_run=None,
            send_message=self._send_message if plan.delivery is not None else None,
        )

    # -- control ----------------------------------------------------------------------------
    def cancel(self, reason: str | None, rollback: bool) -> None:
        self._cancel_reason = reason or "cancelled"
        self._rollback = self._rollback or rollback
        self._cancel.set()

    def claim_steering(self, item: dict[str, Any]) -> str:
        """Offer a steered input: "claimed", "duplicate" (this event was claimed before) or "refused"."""
        event_id = item["event"]["event_id"]
        if event_id in self._claimed:
            return "duplicate"
        if self.closed or not self.snapshot.steering or not self.steering.offer(SteeringEntry(event_id, item)):
            return "refused"
        self._claimed.add(event_id)
        return "claimed"

    def check_caller(self, token: str) -> RunnerApiService:
        if self.closed:
            raise unauthorized("run is not active", run_id=self.run_id)
        if not secrets.compare_digest(token or "", self.token):
            raise unauthorized("caller is not the runner bound to this run", run_id=self.run_id)
        return self.service

    def scope_key(self, scope: str) -> str:
        try:
            return self.plan.scope_keys[scope]
        except KeyError:
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, f"state scope {scope!r} is not available "
                                  "for this event") from None

    # -- the run ------------------------------------------------------------------------------
    async def execute(self) -> AsyncIterator[RunOutput]:
        plan, book = self.plan, self.book
        await self._stream.check()  # ExecutorUnavailable: nothing ran, the host retries elsewhere
        ctx = plan.ctx
        if self.snapshot.harness_gateway and plan.gateway_url:
            capability = secrets.token_urlsafe(32)
            await self._ports.register_token(token_digest(capability), self.run_id)
            ctx.runtime.metadata.update({"gateway_url": plan.gateway_url, "capability_token": capability})
        override: RunResult | None = None
        pending: list[dict[str, Any]] = []  # accepted, not yet relayed; the rest leave with the terminal
        span = tracing.start_child(tracing.SPAN_RUNNER_EXECUTE, plan.trace, runner_id=plan.identity.runner_id,
                                   execution=plan.execution)
        try:
            last_flush = time.monotonic()
            async for batch in self._relay(self._stream.batches(ctx, self.token), self.snapshot.deadline_at):
                if await self._accept_batch(batch, pending):
                    break
                if pending:
                    yield pending, None
                    pending = []
                if (len(book.unflushed) >= constants.FLUSH_AT_FRAMES
                        or time.monotonic() - last_flush > constants.FLUSH_EVERY_S):
                    await self._ports.write("run_events", run_id=self.run_id, frames=book.take_unflushed())
                    last_flush = time.monotonic()
        except _Deadline:
            override = Cause.TIMEOUT.result(self.run_id)
        except _Cancelled:
            override = Cause.CANCELLED.result(self.run_id, self._cancel_reason)
        except ExecutorCrashed:
            override = Cause.RUNNER_CRASHED.result(self.run_id)
        except RunnerHostError as exc:
            override = RunResult.failed(self.run_id, f"host.{exc.code.value}", redact(exc.message), exc.retryable)
        except Exception as exc:
            log.exception("run %s failed in its RunActor", self.run_id)
            override = Cause.HOST_ERROR.result(self.run_id, redact(f"{type(exc).__name__}: {exc}")[:300])
        finally:
            span.end()
        if override is not None and override.data["code"] in (Cause.TIMEOUT.code, Cause.CANCELLED.code):
            await self._stream.stop(self.run_id)
        yield self._close(override, pending)

    def _close(self, override: RunResult | None, pending: list[dict[str, Any]]) -> RunOutput:
        """Decide the terminal frame and the closing facts; the slot refuses API calls from here."""
        book = self.book
        status, terminal = book.finish(override)
        self.closed = True
        dropped = self.steering.close_and_drain()
        metrics.steering("dropped", len(dropped))
        rolled_back = self._rollback and status is RunStatus.CANCELLED
        final = {
            "run_id": self.run_id, "status": status.value,
            "reason": terminal["data"].get("code") if terminal["type"] == ResultType.RUN_FAILED.value
            else terminal["data"].get("finish_reason"),
            "frames": book.take_unflushed(),
            "assistant": self._assistant_item(status),
            "dropped": [self._steering_record(e, "dropped") for e in dropped],
            "rollback": [{**u.__dict__, "runner_id": book.runner_id} for u in book.undo] if rolled_back else None,
            "rollback_requested": rolled_back,
            "metadata": self.metadata or None,
        }
        return [*pending, terminal], final

    async def _accept_batch(self, batch: list[Any], out: list[dict[str, Any]]) -> bool:
        """Validate and apply one batch of raw results, appending frames to relay to ``out``.
        True once the runner's terminal result is accepted (anything after it is ignored)."""
        for raw in batch:
            verdict, frame = self.book.accept(raw)
            if not verdict.accepted:
                continue
            await self._apply(verdict.result)
            if frame is not None:
                out.append(frame)
            if verdict.result.is_terminal:
                return True
        return False

    async def _relay(self, batches: AsyncIterator[list[Any]], deadline_at: float | None
                     ) -> AsyncIterator[list[Any]]:
        """The executor's batches until it ends, the deadline passes or the run is cancelled."""
        cancel_wait = asyncio.ensure_future(self._cancel.wait())
        iterator = batches.__aiter__()
        try:
            while True:
                next_batch = asyncio.ensure_future(iterator.__anext__())
                timeout = None if deadline_at is None else max(0.0, deadline_at - time.time())
                done, _ = await asyncio.wait({next_batch, cancel_wait}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if next_batch not in done:
                    next_batch.cancel()
                    raise _Cancelled() if cancel_wait in done else _Deadline()
                try:
                    yield next_batch.result()
                except StopAsyncIteration:
                    return
        finally:
            cancel_wait.cancel()
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # a dead executor's stream may fail to close: nothing left to stop
                    pass

    async def _apply(self, result: RunResult) -> None:
        """Persist side effects of accepted results; a rejected fact is logged, not fatal."""
        try:
            if result.type == ResultType.STATE_UPDATED.value:
                scope = result.data["scope"]
                if scope not in self.snapshot.state_scopes:
                    log.warning("run %s: state.updated for ungranted scope %s dropped", self.run_id, scope)
                    return
                scope_key = self.scope_key(scope)
                out = await self._ports.write("state_set", scope_key=scope_key, key=result.data["key"],
                                              value=result.data["value"], scope=scope,
                                              runner_id=self.book.runner_id)
                self.book.record_state_write(scope_key, scope, result.data["key"], out.get("previous"))
            elif (result.type == ResultType.ACTION_REQUESTED.value
                  and result.data.get("action") == SESSION_RESUME_FAILED):
                # A harness lost its native session and started a fresh one: the conversation lost
                # its memory. Never silent: the run's metadata and the EventLog say so.
                payload = dict(result.data.get("payload") or {})
                self.metadata["session"] = {"resumed": False, **payload}
                await self._ports.write("system_event", event_type=SESSION_RESUME_FAILED, run_id=self.run_id,
                                        runner_id=self.book.runner_id, conversation_id=self.snapshot.conversation_id,
                                        thread_id=self.snapshot.thread_id, data=payload,
                                        event_id=f"{self.run_id}:{SESSION_RESUME_FAILED}")
            elif result.type == ResultType.ARTIFACT_CREATED.value:
                await self._ports.write("artifact_created", run_id=self.run_id, runner_id=self.book.runner_id,
                                        conversation_id=self.snapshot.conversation_id, data=result.data,
                                        fallback_id=f"art_{self.run_id}_{self.book.next_sequence}")
        except RunnerHostError as exc:
            log.warning("run %s: %s result not persisted: %s", self.run_id, result.type, exc.message)

    async def _send_message(self, text: str, target: dict[str, Any] | None, key: str | None) -> dict[str, Any]:
        """An explicit message, numbered by its idempotency key (no key: a new number): a repeated
        key posts nothing again, and answers the facts on record. One at a time per run, so
        a repeat waits for the first to settle. A platform refusal is ``runtime_error``."""
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        async with self._messages_lock:
            name = f"auto:{len(self._messages)}" if key is None else f"key:{key}"
            ordinal, known = self._messages.setdefault(name, (len(self._messages), digest))
            if known != digest:
                raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, "this key was used for a different message",
                                      details={"key": key})
            sent = await self._ports.send_message(self.plan.delivery, text, key=name, address=target,
                                                  ordinal=ordinal)
        if sent["status"] == "failed":
            error = next((p.get("last_error") for p in sent["parts"] if p.get("last_error")), None)
            raise RunnerHostError(ErrorCode.RUNTIME_ERROR, f"the platform refused the message: {error or 'failed'}",
                                  details={"status": "failed", "connection": sent["connection"]})
        if sent["status"] == "delivered" and name not in self._messages_delivered:
            self._messages_delivered.add(name)
            self.book.record_message_sent(text)
        return sent

    async def _audit_injected(self, entries: list[SteeringEntry]) -> None:
        metrics.steering("injected", len(entries))
        await self._ports.write("steering_audit", records=[self._steering_record(e, "injected") for e in entries])

    def _steering_record(self, entry: SteeringEntry, status: str) -> dict[str, Any]:
        return {"source_event_id": entry.source_event_id, "status": status, "run_id": self.run_id,
                "runner_id": self.book.runner_id, "conversation_id": self.snapshot.conversation_id,
                "thread_id": self.snapshot.thread_id, "at": time.time()}

    def _assistant_item(self, status: RunStatus) -> dict[str, Any] | None:
        text = self.book.assistant_message()
        reply_to = self.plan.reply_to
        if text is None or not reply_to:
            return None
        return {"transcript_id": f"tr_{self.run_id}_assistant", "text": text,
                "partial": status is not RunStatus.COMPLETED, **reply_to}


class RunSlots:
    """The slots of one RunActor: at most ``capacity`` runs at once, found by run id.

    A run is leased to this actor a moment before its plan arrives (the host resolves its
    executor first), so a cancel may arrive early: it is remembered (bounded) and applied when
    the slot opens. A steering claim that arrives early waits for the slot (briefly)."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self._slots: dict[str, RunSlot] = {}
        self._early_cancels: collections.OrderedDict[str, tuple[str | None, bool]] = collections.OrderedDict()
        self._opened: dict[str, asyncio.Event] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def open(self, slot: RunSlot) -> RunSlot:
        if slot.run_id in self._slots:
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, f"run {slot.run_id} is already running here")
        if len(self._slots) >= self.capacity:
            raise RunnerHostError(ErrorCode.RUNTIME_ERROR,
                                  f"RunActor is full ({self.capacity} runs)", retryable=True)
        self._slots[slot.run_id] = slot
        early = self._early_cancels.pop(slot.run_id, None)
        if early is not None:
            slot.cancel(*early)
        opened = self._opened.pop(slot.run_id, None)
        if opened is not None:
            opened.set()
        return slot

    def cancel(self, run_id: str, reason: str | None, rollback: bool, *, early: bool = False) -> bool:
        """Cancel the run here; ``early``: its plan is still on the way — remember the cancel."""
        slot = self._slots.get(run_id)
        if slot is not None and not slot.closed:
            slot.cancel(reason, rollback)
            return True
        if early and slot is None:
            self._early_cancels[run_id] = (reason, rollback)
            while len(self._early_cancels) > constants.CANCEL_MEMORY:
                self._early_cancels.popitem(last=False)
            return True
        return False

    async def claim_steering(self, run_id: str, item: dict[str, Any], wait_s: float) -> str:
        """Offer a steered input to the run (waiting up to ``wait_s`` for its slot to open)."""
        if run_id not in self._slots and wait_s > 0:
            opened = self._opened.setdefault(run_id, asyncio.Event())
            try:
                await asyncio.wait_for(opened.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
            finally:
                if self._opened.get(run_id) is opened and not opened.is_set():
                    del self._opened[run_id]
        slot = self._slots.get(run_id)
        return "refused" if slot is None else slot.claim_steering(item)

    def close(self, run_id: str) -> None:
        slot = self._slots.pop(run_id, None)
        if slot is not None:
            slot.closed = True

    def get(self, run_id: str) -> RunSlot | None:
        return self._slots.get(run_id)

    def caller(self, run_id: str, token: str) -> RunnerApiService:
        slot = self._slots.get(run_id)
        if slot is None:
            raise unauthorized("run is not active", run_id=run_id)
        return slot.check_caller(token)

    async def gateway_call(self, run_id: str, method: str, kwargs: dict[str, Any]) -> Any:
        """A call of an active run whose caller the gateway already authenticated (capability token)."""
        slot = self._slots.get(run_id)
        if slot is None or slot.closed:
            raise unauthorized("run is not active", run_id=run_id)
        with tracing.runner_api_span(slot.plan.trace, method, via="gateway"):
            return await slot.service.call(method, kwargs or {})

    async def call(self, run_id: str, token: str, method: str, kwargs: dict[str, Any]) -> Any:
        service = self.caller(run_id, token)
        with tracing.runner_api_span(self._slots[run_id].plan.trace, method):
            return await service.call(method, kwargs or {})

    async def stream(self, run_id: str, token: str, method: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        service = self.caller(run_id, token)
        if method != "invoke_llm_stream":
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, f"{method} is not a streaming method")
        try:
            stream = service.invoke_llm_stream(**(kwargs or {}))
        except TypeError as exc:
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None
        async for chunk in stream:
            yield chunk

    def stats(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "runs": sorted(self._slots)}

