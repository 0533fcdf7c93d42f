"""RunActor: one active run = one (pooled, reused) RunActor.

It owns the run's frozen authorization snapshot, its steering queue, result
sequencing, deadline and cancellation, and serves the runner-facing API.
Between runs it is reset and returned to the pool; ``api`` calls for any run
id other than the current one — including a finished one — are
``unauthorized``.

``execute`` streams *batches* of frames: ``run.started`` alone (time to first
frame), then each batch of accepted results as it arrives from the executor;
results that arrive together with the terminal result leave together with the
terminal frame, after the ledger is final. Fewer objects per run on the Ray
stream is most of what a short run costs.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from typing import Any, AsyncIterator

import ray
from ray.exceptions import RayActorError

from protocol.errors import ErrorCode, RunnerHostError, unauthorized
from protocol.lifecycle import RunStatus
from protocol.redact import redact
from protocol.results import ResultType, RunResult

from .addresses import ActorAddress
from .core.authz import AccessSnapshot
from .core.run import RunBook
from .core.runner_api import RunIdentity, RunnerApiService
from .core.steering import SteeringEntry, SteeringQueue
from .providers_backend import ProviderBackend
from .retry import call_with_retry, reply, unwrap

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 0.25
FLUSH_AT_FRAMES = 64
# An executor silent this long may have died with its node while idle: ping it alongside start_run.
EXECUTOR_RECHECK_S = 2.0


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class _Cancelled(Exception):
    pass


class _Deadline(Exception):
    pass


class ExecutorUnavailable(Exception):
    """The run's worker or session actor no longer exists (e.g. its node was lost while it was
    idle). Raised before anything of the run happened, so the host may retry with another."""


@ray.remote(max_restarts=0, max_concurrency=1000, enable_task_events=False)
class RunActor:
    def __init__(self, storage: Any, providers: Any, registry: Any, address: ActorAddress) -> None:
        self._storage = storage
        self._registry = registry
        self.address = address
        self._providers = ProviderBackend(storage, providers)
        self._steering = SteeringQueue()
        self._reset()

    def _reset(self) -> None:
        self._book: RunBook | None = None
        self._snapshot: AccessSnapshot | None = None
        self._service: RunnerApiService | None = None
        self._token: str | None = None
        self._cancel = asyncio.Event()
        self._cancel_reason: str | None = None
        self._rollback = False
        self._worker: Any = None

    # -- pool support ----------------------------------------------------------
    async def ping(self) -> dict[str, Any]:
        return {"busy": self._book is not None, "node_id": ray.get_runtime_context().get_node_id()}

    # -- the run ------------------------------------------------------------------
    async def execute(self, plan: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        if self._book is not None:
            raise RunnerHostError(ErrorCode.RUNTIME_ERROR, "RunActor is already serving a run")
        run_id: str = plan["run_id"]
        snapshot: AccessSnapshot = plan["snapshot"]
        identity: RunIdentity = plan["identity"]
        book = RunBook(run_id, identity.runner_id)
        book.next_sequence = plan.get("first_sequence", 0)
        executor: ActorAddress = plan["executor"]
        try:
            self._worker = executor.handle()
        except ValueError:
            raise ExecutorUnavailable(executor.name) from None
        self._book, self._snapshot = book, snapshot
        self._token = secrets.token_urlsafe(24)
        self._steering.reset(plan.get("steering_capacity", 32))
        self._service = RunnerApiService(
            snapshot, identity, self._providers, self._steering,
            on_steering_pulled=self._audit_injected,
            state_scope_key=lambda scope: self._scope_key(plan, scope),
            on_state_written=book.record_state_write,
            cancel_run=None,
        )
        override: RunResult | None = None
        pending: list[dict[str, Any]] = []  # accepted, not yet relayed; the rest leave with the terminal
        started = False  # no ledger row exists until start_run commits
        try:
            start = await self._start(run_id, plan, executor)
            started = True
            ctx = plan["ctx"]
            ctx["state"] = start.get("state") or ctx.get("state") or {}
            ctx["context"].update({k: start[k] for k in ("latest_cursor", "event_seq", "transcript_seq",
                                                          "has_history_before") if k in start})
            if snapshot.harness_gateway and plan.get("gateway_url"):
                token = secrets.token_urlsafe(32)
                await self._registry.register_token.remote(token_digest(token), run_id, self.address)
                ctx["runtime"]["metadata"].update({"gateway_url": plan["gateway_url"], "capability_token": token})
            yield [book.host_frame("run.started", plan["started_data"])]
            gen = self._worker.run.options(num_returns="streaming").remote(ctx, self.address, self._token)
            last_flush = time.monotonic()
            async for batch in self._relay(gen, snapshot.deadline_at):
                executor.heard_from()
                if await self._accept_batch(book, batch, plan, pending):
                    break
                if pending:
                    yield pending
                    pending = []
                if len(book.unflushed) >= FLUSH_AT_FRAMES or time.monotonic() - last_flush > FLUSH_EVERY_S:
                    await self._write("run_events", run_id=run_id, frames=book.take_unflushed())
                    last_flush = time.monotonic()
        except ExecutorUnavailable:
            self._reset()  # nothing reached the client; the host retries on another executor
            raise
        except _Deadline:
            override = RunResult.failed(run_id, "runner.timeout", "the run passed its deadline", True)
        except _Cancelled:
            override = RunResult.failed(run_id, "run.cancelled", self._cancel_reason or "cancelled", False)
        except RayActorError:
            override = RunResult.failed(run_id, "runner.crashed", "the runner worker died", True)
        except RunnerHostError as exc:
            override = RunResult.failed(run_id, f"host.{exc.code.value}", redact(exc.message), exc.retryable)
        except Exception as exc:
            log.exception("run %s failed in the host", run_id)
            override = RunResult.failed(run_id, "host.error", redact(f"{type(exc).__name__}: {exc}")[:300], True)
        if override is not None and override.data["code"] in ("runner.timeout", "run.cancelled"):
            await self._stop_worker(run_id)
        status, terminal = book.finish(override)
        dropped = self._steering.close_and_drain()
        if snapshot.harness_gateway:
            try:  # the token dies with the run (release revokes it too, belt and braces)
                await self._registry.revoke_run_tokens.remote(run_id)
            except Exception:
                pass
        try:
            if started:  # without a ledger row there is nothing to finalize: the cause stands as is
                await self._write(
                    "finish_run", run_id=run_id, status=status.value,
                    reason=terminal["data"].get("code") if terminal["type"] == ResultType.RUN_FAILED.value
                    else terminal["data"].get("finish_reason"),
                    frames=book.take_unflushed(),
                    assistant=self._assistant_item(plan, book, status),
                    dropped=[self._steering_record(e, "dropped") for e in dropped],
                    rollback=[{**u.__dict__, "runner_id": book.runner_id} for u in book.undo]
                    if (self._rollback and status is RunStatus.CANCELLED) else None,
                    rollback_requested=self._rollback and status is RunStatus.CANCELLED,
                )
        finally:
            self._reset()
        try:  # free the conversation lane now: queued runs must not wait for a reader
            await call_with_retry(lambda: self._registry.release.remote(run_id), what="registry release")
        except RunnerHostError:
            log.error("could not release run %s from the registry", run_id)
        yield [*pending, terminal]

    async def _start(self, run_id: str, plan: dict[str, Any], executor: ActorAddress) -> dict[str, Any]:
        """Record the run as running (idempotent: a retried start changes nothing) and, if the executor
        has been silent for a while, check in the same breath that it still exists."""
        if executor.silent_for() <= EXECUTOR_RECHECK_S:
            return await self._write("start_run", **plan["start"])
        start, ping = await asyncio.gather(self._write("start_run", **plan["start"]),
                                           self._worker.ping.remote(), return_exceptions=True)
        if isinstance(ping, RayActorError):
            executor.forget()
            raise ExecutorUnavailable(executor.name)
        if isinstance(ping, BaseException):
            raise ping
        executor.heard_from()
        if isinstance(start, BaseException):
            raise start
        return start

    async def _accept_batch(self, book: RunBook, batch: list[Any], plan: dict[str, Any],
                            out: list[dict[str, Any]]) -> bool:
        """Validate and apply one batch of raw results, appending frames to relay to ``out``.
        True once the runner's terminal result is accepted (anything after it is ignored)."""
        for raw in batch:
            verdict, frame = book.accept(raw)
            if not verdict.accepted:
                continue
            await self._apply(book, verdict.result, plan)
            if frame is not None:
                out.append(frame)
            if verdict.result.is_terminal:
                return True
        return False

    async def _relay(self, gen: Any, deadline_at: float | None) -> AsyncIterator[Any]:
        cancel_wait = asyncio.ensure_future(self._cancel.wait())
        try:
            while True:
                next_ref = asyncio.ensure_future(gen.__anext__())
                timeout = None if deadline_at is None else max(0.0, deadline_at - time.time())
                done, _ = await asyncio.wait({next_ref, cancel_wait}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if next_ref not in done:
                    next_ref.cancel()
                    if cancel_wait in done:
                        raise _Cancelled()
                    raise _Deadline()
                try:
                    ref = next_ref.result()
                except StopAsyncIteration:
                    return
                yield await ref
        finally:
            cancel_wait.cancel()

    async def _apply(self, book: RunBook, result: RunResult, plan: dict[str, Any]) -> None:
        """Persist side effects of accepted results; a rejected fact is logged, not fatal."""
        try:
            if result.type == ResultType.STATE_UPDATED.value:
                scope = result.data["scope"]
                if scope not in self._snapshot.state_scopes:
                    log.warning("run %s: state.updated for ungranted scope %s dropped", book.run_id, scope)
                    return
                scope_key = self._scope_key(plan, scope)
                out = await self._write("state_set", scope_key=scope_key, key=result.data["key"],
                                        value=result.data["value"], scope=scope, runner_id=book.runner_id)
                book.record_state_write(scope_key, scope, result.data["key"], out.get("previous"))
            elif result.type == ResultType.ARTIFACT_CREATED.value:
                await self._write("artifact_created", run_id=book.run_id, runner_id=book.runner_id,
                                  conversation_id=self._snapshot.conversation_id, data=result.data,
                                  fallback_id=f"art_{book.run_id}_{book.next_sequence}")
        except RunnerHostError as exc:
            log.warning("run %s: %s result not persisted: %s", book.run_id, result.type, exc.message)

    async def _stop_worker(self, run_id: str) -> None:
        try:
            await asyncio.wait_for(self._worker.cancel_run.remote(run_id), 5)
        except Exception:  # a dead worker has nothing left to stop
            pass

    # -- control ----------------------------------------------------------------
    async def cancel(self, run_id: str, reason: str | None = None, rollback: bool = False) -> bool:
        if self._book is None or self._book.run_id != run_id:
            return False
        self._cancel_reason = reason or "cancelled"
        self._rollback = self._rollback or rollback
        self._cancel.set()
        return True

    async def claim_steering(self, run_id: str, item: dict[str, Any]) -> bool:
        if self._book is None or self._book.run_id != run_id or self._snapshot is None \
                or not self._snapshot.steering:
            return False
        return self._steering.offer(SteeringEntry(item["event"]["event_id"], item))

    # -- the runner-facing API ---------------------------------------------------------
    def _check_caller(self, run_id: str, token: str) -> RunnerApiService:
        if self._book is None or self._service is None or self._book.run_id != run_id:
            raise unauthorized("run is not active", run_id=run_id)
        if not secrets.compare_digest(token or "", self._token or ""):
            raise unauthorized("caller is not the runner bound to this run", run_id=run_id)
        return self._service

    async def api(self, run_id: str, token: str, method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        async def go():
            return await self._check_caller(run_id, token).call(method, kwargs or {})
        return await reply(go())

    async def api_stream(self, run_id: str, token: str, method: str, kwargs: dict[str, Any]):
        try:
            service = self._check_caller(run_id, token)
            if method != "invoke_llm_stream":
                raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, f"{method} is not a streaming method")
            async for chunk in service.invoke_llm_stream(**(kwargs or {})):
                yield {"ok": chunk}
        except RunnerHostError as exc:
            yield {"error": exc.to_dict()}
        except TypeError as exc:
            yield {"error": RunnerHostError(ErrorCode.INVALID_ARGUMENT, str(exc)).to_dict()}

    async def gateway_call(self, run_id: str, method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Runner-API call from the harness gateway (already token-checked by the gateway)."""
        async def go():
            if self._book is None or self._service is None or self._book.run_id != run_id:
                raise unauthorized("run is not active", run_id=run_id)
            return await self._service.call(method, kwargs or {})
        return await reply(go())

    # -- storage helpers -------------------------------------------------------------
    async def _write(self, kind: str, **kwargs: Any) -> Any:
        return unwrap(await call_with_retry(lambda: self._storage.write.remote(kind, kwargs),
                                            what=f"storage {kind}"))

    @staticmethod
    def _scope_key(plan: dict[str, Any], scope: str) -> str:
        try:
            return plan["scope_keys"][scope]
        except KeyError:
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, f"state scope {scope!r} is not available "
                                  "for this event") from None

    async def _audit_injected(self, entries: list[SteeringEntry]) -> None:
        await self._write("steering_audit", records=[self._steering_record(e, "injected") for e in entries])

    def _steering_record(self, entry: SteeringEntry, status: str) -> dict[str, Any]:
        return {"source_event_id": entry.source_event_id, "status": status,
                "run_id": self._book.run_id if self._book else None,
                "runner_id": self._book.runner_id if self._book else None,
                "conversation_id": self._snapshot.conversation_id if self._snapshot else None,
                "thread_id": self._snapshot.thread_id if self._snapshot else None,
                "at": time.time()}

    @staticmethod
    def _assistant_item(plan: dict[str, Any], book: RunBook, status: RunStatus) -> dict[str, Any] | None:
        text = book.assistant_message()
        event = plan["start"]["event"]
        if text is None or not event.get("conversation_id"):
            return None
        return {"transcript_id": f"tr_{book.run_id}_assistant", "text": text,
                "partial": status is not RunStatus.COMPLETED, "event_id": event["event_id"],
                "conversation_id": event["conversation_id"], "thread_id": event.get("thread_id"),
                "bot_id": event.get("bot_id"), "workspace_id": event.get("workspace_id")}
