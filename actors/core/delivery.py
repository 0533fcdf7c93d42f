"""The delivery engine: a run's frames → platform messages, each one a recorded fact.

Contract (what the run path calls, per run with a non-empty :class:`DeliveryPlan`):

* ``await on_frames(plan, frames)`` for every batch of relayed frames, in order;
* ``await on_terminal(plan, frame)`` once, with the terminal frame; returns the run's
  delivery records.

Per target:

* **edit targets** (platform edits, policy streams): the text is posted as soon as there is
  some, then edited at most once per ``edit_interval_s`` (a timer flushes a trailing change),
  and a final edit on the terminal frame;
* **other targets**: the complete text is sent on the terminal frame;
* text longer than ``max_message_size`` is split (:func:`platforms.base.split_text`) into parts
  0, 1, …; artifacts with inline content go out as files (parts 1000+); interaction prompts are
  parts 2000+; a runner's explicit messages (``send_message``) are parts 3000+.

Exactly once: every part's row ``(run, target, part)`` is written before the platform call and
updated after it. A part whose row has a platform message id is edited, never posted again; a
row left ``sending`` by a crashed predecessor is marked ``unknown`` and not re-posted (the
platform may have it). A restarted engine rebuilds the text from the run ledger.
Retries: a retryable :class:`~platforms.base.PlatformError` (429, 5xx, network) is retried
with exponential back-off, honouring the platform's ``retry_after``, up to ``max_attempts`` for
final content; an intermediate streaming edit that fails is simply superseded by the next one.
"""
from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from platforms.base import OutboundAdapter, PlatformError, message_text, split_text
from platforms.config import DeliveryTuning
from protocol.delivery import DeliveryPlan, DeliveryRecord, DeliveryTarget
from protocol.errors import ErrorCode, RunnerHostError, invalid_argument, unauthorized
from protocol.interactions import INTERACTION_REQUESTED_ACTION
from protocol.logs import get_logger
from store.deliveries import content_digest

from .. import metrics, tracing
from .storage_port import StoragePort

log = get_logger(__name__)

FILE_PART_BASE = 1000
INTERACTION_PART_BASE = 2000
#: Runner-initiated messages (``message_send``: LangBot's reply / send_message / reply_stream):
#: message ``n`` of a run takes parts ``ACTION_PART_BASE + n * ACTION_PART_STRIDE + i``, one per
#: platform-sized piece ``i`` of its text.
ACTION_PART_BASE = 3000
ACTION_PART_STRIDE = 1000
#: Explicit messages one run may send.
ACTION_MESSAGES_MAX = 1000
_LEDGER_PAGE = 100

SenderLookup = Callable[[str], OutboundAdapter]
InteractionHook = Callable[[DeliveryPlan, dict[str, Any]], Awaitable[dict[str, Any] | None]]


def _attempt_outcome(give_up: bool, final: bool, retryable: bool) -> str:
    """The ``runnerhost_deliveries_total`` outcome of one failed platform call: ``retry`` (another
    attempt follows), ``deferred`` (an intermediate update held back; the final content retries),
    ``failed`` (the part is given up)."""
    if not give_up:
        return "retry"
    return "failed" if final or not retryable else "deferred"


@dataclass
class _Part:
    message_id: str | None = None
    digest: str | None = None
    status: str = "pending"


@dataclass
class _Stream:
    """What one target of one run has seen and shown."""

    target: DeliveryTarget
    completed: list[str] = field(default_factory=list)
    current: str = ""
    last_sequence: int = -1
    files: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    parts: dict[int, _Part] = field(default_factory=dict)
    last_push: float = 0.0
    #: No call before this (the platform's retry_after on an intermediate update).
    hold_until: float = 0.0
    dirty: bool = False
    timer: asyncio.Task | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loaded: bool = False
    final: bool = False

    def text(self) -> str:
        pieces = [*self.completed, self.current] if self.current else list(self.completed)
        return "\n\n".join(p for p in pieces if p)

    def take(self, frame: dict[str, Any]) -> bool:
        """Fold one frame in; ``True`` when the text changed."""
        seq = frame.get("sequence")
        if isinstance(seq, int):
            if seq <= self.last_sequence:
                return False
            self.last_sequence = seq
        kind, data = frame.get("type"), frame.get("data") or {}
        if kind == "message.delta":
            chunk = message_text((data.get("chunk") or {}).get("content"))
            self.current += chunk
            return bool(chunk)
        if kind == "message.completed":
            self.completed.append(message_text((data.get("message") or {}).get("content")))
            self.current = ""
            return True
        if kind == "run.completed" and data.get("message") and not self.completed:
            self.completed.append(message_text(data["message"].get("content")))
            self.current = ""
            return True
        if kind == "artifact.created" and data.get("content_base64"):
            self.files.append(data)
        return False


class DeliveryService:
    def __init__(self, storage: StoragePort, senders: SenderLookup, tuning: DeliveryTuning | None = None, *,
                 interactions: InteractionHook | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self._storage = storage
        self._senders = senders
        self._tuning = tuning or DeliveryTuning()
        self._interactions = interactions
        self._clock = clock
        self._sleep = sleep
        self._streams: dict[tuple[str, str], _Stream] = {}

    # -- the contract ---------------------------------------------------------------------
    async def on_frames(self, plan: DeliveryPlan, frames: list[dict[str, Any]]) -> None:
        streams = []
        for target in plan.targets:
            stream = await self._stream(plan, target, frames)
            for frame in frames:
                if stream.take(frame):
                    stream.dirty = True
            streams.append(stream)
        await self._prompts(plan, frames)  # after the text before them is out
        for stream in streams:
            if stream.dirty and stream.target.edit:
                await self._maybe_push(plan, stream)

    async def on_terminal(self, plan: DeliveryPlan, frame: dict[str, Any]) -> list[dict[str, Any]]:
        await self.on_frames(plan, [frame])
        for target in plan.targets:
            stream = await self._stream(plan, target, [frame])
            if stream.timer is not None:
                stream.timer.cancel()
            async with stream.lock:
                stream.final = True
                text = stream.text()
                if not text and frame.get("type") == "run.failed" and not stream.files:
                    text = f"⚠️ The run failed ({(frame.get('data') or {}).get('code', 'error')})."
                await self._push_text(plan, stream, text, final=True)
                await self._push_files(plan, stream)
            self._streams.pop((plan.run_id, target.key), None)
        return await self._storage.read("delivery_list", run_id=plan.run_id)

    async def send_message(self, plan: DeliveryPlan, text: str, *, key: str,
                           address: dict[str, Any] | None = None, ordinal: int | None = None) -> dict[str, Any]:
        """A runner's explicit message (``message_send``), posted once per message number.

        ``ordinal``: the message's number in its run (the RunActor numbers a run's messages by
        their idempotency keys); without it, a number derived from ``key``. A repeated call
        finds the parts on record and posts nothing again. ``address`` must name the run's own
        conversation (:meth:`_own_target`). Text longer than the platform takes is split; the
        pieces go out in order and the first one that fails stops the rest. Returns a
        :class:`~protocol.delivery.SentMessage` as a dict."""
        target = self._own_target(plan, address)
        if not text:
            raise invalid_argument("message text is empty")
        if ordinal is None:
            ordinal = int(content_digest(key)[:12], 16) % ACTION_MESSAGES_MAX
        elif not 0 <= ordinal < ACTION_MESSAGES_MAX:
            raise invalid_argument(f"a run may send at most {ACTION_MESSAGES_MAX} messages")
        chunks = split_text(text, target.max_message_size)
        if len(chunks) > ACTION_PART_STRIDE:
            raise invalid_argument(f"message needs more than {ACTION_PART_STRIDE} platform messages")
        first = ACTION_PART_BASE + ordinal * ACTION_PART_STRIDE
        # A stream of its own (not the run's result stream for the same chat): it sees only this
        # message's parts, so nothing here disturbs the rows or the resume of the results' stream.
        stream = _Stream(target=target, loaded=True)
        for row in await self._storage.read("delivery_parts", run_id=plan.run_id, target_key=target.key):
            if first <= row["part"] < first + ACTION_PART_STRIDE:
                status = row["status"]
                if status == "sending" and not row["platform_message_id"]:  # an attempt died mid-call
                    status = "unknown"
                    await self._record(plan, target, row["part"], status="unknown",
                                       error="interrupted mid-call; not re-sent (the platform may have it)")
                stream.parts[row["part"]] = _Part(row["platform_message_id"], row["content_sha256"], status)
        adapter = self._adapter(target)
        for index, chunk in enumerate(chunks):
            await self._put(plan, stream, first + index, chunk, final=True,
                            send=lambda a, c=chunk: adapter.send_text(a, c), edit=None)
            if stream.parts[first + index].status != "delivered":
                break
        rows = await self._storage.read("delivery_parts", run_id=plan.run_id, target_key=target.key)
        return sent_message(target, [r for r in rows if first <= r["part"] < first + ACTION_PART_STRIDE])

    @staticmethod
    def _own_target(plan: DeliveryPlan, address: dict[str, Any] | None) -> DeliveryTarget:
        """The run's own chat, or the one of its chats ``address`` names (matched on every key it
        gives, message ids aside). No chat: ``invalid_argument``; another chat: ``unauthorized``."""
        chats = [t for t in ([plan.own_chat] if plan.own_chat else []) + list(plan.targets) if t.platform != "webhook"]
        if not chats:
            raise invalid_argument("this run's event has no delivery target: it came from no platform chat",
                                   reason="no_delivery_target", run_id=plan.run_id)
        if address is None:
            return chats[0]
        wanted = {k: v for k, v in address.items() if k not in ("message_id", "message_ts")}
        for target in chats:
            own = {k: v for k, v in target.reply_target.items() if k not in ("message_id", "message_ts")}
            if all(own.get(k) == v for k, v in wanted.items()) and wanted.get("connection", target.connection) \
                    == target.connection:
                return target
        raise unauthorized("a run may only send to its own conversation", run_id=plan.run_id)

    # -- state ------------------------------------------------------------------------------
    async def _stream(self, plan: DeliveryPlan, target: DeliveryTarget, frames: list[dict[str, Any]]) -> _Stream:
        key = (plan.run_id, target.key)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(target=target)
        if not stream.loaded:
            stream.loaded = True
            await self._resume(plan, stream, frames)
        return stream

    async def _resume(self, plan: DeliveryPlan, stream: _Stream, frames: list[dict[str, Any]]) -> None:
        """After a restart: the parts already on the platform, and the text streamed before."""
        rows = await self._storage.read("delivery_parts", run_id=plan.run_id, target_key=stream.target.key)
        for row in rows:
            if row["part"] >= ACTION_PART_BASE:  # a runner's explicit message: send_message owns it
                continue
            status = row["status"]
            if status == "sending" and not row["platform_message_id"]:
                status = "unknown"
                await self._record(plan, stream.target, row["part"], status="unknown",
                                   error="interrupted mid-call; not re-sent (the platform may have it)")
            stream.parts[row["part"]] = _Part(row["platform_message_id"], row["content_sha256"], status)
        sequences = [f["sequence"] for f in frames if isinstance(f.get("sequence"), int)]
        first = min(sequences) if sequences else None
        if first and first > 0:  # frames before the first we saw (a restart, or a late join): from the ledger
            for earlier in await self._ledger_frames(plan.run_id, before=first):
                stream.take(earlier)

    async def _ledger_frames(self, run_id: str, before: int) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        cursor = None
        while True:
            try:
                page = await self._storage.read("run_events_page", run_id=run_id, after_cursor=cursor,
                                                limit=_LEDGER_PAGE)
            except RunnerHostError as exc:
                if exc.code is ErrorCode.NOT_FOUND:  # the run's facts are not written yet
                    return frames
                raise
            for item in page["items"]:
                if item["sequence"] < before:
                    frames.append({"type": item["type"], "data": item.get("data") or {}, "sequence": item["sequence"]})
            if not page.get("has_more"):
                return frames
            cursor = page["next_cursor"]

    # -- streaming -------------------------------------------------------------------------------
    async def _maybe_push(self, plan: DeliveryPlan, stream: _Stream) -> None:
        wait = max(stream.last_push + stream.target.edit_interval_s, stream.hold_until) - self._clock()
        if wait <= 0:
            async with stream.lock:
                if not stream.final:
                    await self._push_text(plan, stream, stream.text(), final=False)
        elif stream.timer is None or stream.timer.done():
            stream.timer = asyncio.ensure_future(self._later(plan, stream, wait))

    async def _later(self, plan: DeliveryPlan, stream: _Stream, wait: float) -> None:
        await self._sleep(wait)
        async with stream.lock:
            if stream.dirty and not stream.final:
                await self._push_text(plan, stream, stream.text(), final=False)

    async def _push_text(self, plan: DeliveryPlan, stream: _Stream, text: str, *, final: bool) -> None:
        stream.dirty = False
        stream.last_push = self._clock()
        if not text:
            return
        target = stream.target
        if not final and not target.edit:
            return
        if final and stream.hold_until > self._clock():  # the platform asked for a pause: honour it
            await self._sleep(stream.hold_until - self._clock())
        chunks = split_text(text, target.max_message_size)
        for index, chunk in enumerate(chunks):
            settled = final or index < len(chunks) - 1
            ok = await self._put(plan, stream, index, chunk, final=settled,
                                 send=lambda a, c=chunk: self._adapter(target).send_text(a, c),
                                 edit=(lambda a, m, c=chunk: self._adapter(target).edit_text(a, m, c))
                                 if target.edit else None)
            if not ok and not final:
                stream.dirty = True  # try again at the next flush
                return

    async def _push_files(self, plan: DeliveryPlan, stream: _Stream) -> None:
        target = stream.target
        adapter = self._adapter(target)
        for k, data in enumerate(stream.files):
            if not (target.send_artifacts and adapter.supports_files):
                break
            name = data.get("name") or f"{data.get('artifact_id') or 'artifact'}"
            raw = base64.b64decode(data["content_base64"])
            await self._put(plan, stream, FILE_PART_BASE + k, f"file:{data.get('sha256') or content_digest(name)}",
                            final=True, send=lambda a, n=name, r=raw, m=data.get("mime_type"):
                            adapter.send_file(a, n, r, m), edit=None)

    async def _prompts(self, plan: DeliveryPlan, frames: list[dict[str, Any]]) -> None:
        """Store and render ``interaction.requested`` actions (after the text so far is out)."""
        if self._interactions is None or not plan.enable_interactions:
            return
        for frame in frames:
            data = frame.get("data") or {}
            if frame.get("type") != "action.requested" or data.get("action") != INTERACTION_REQUESTED_ACTION:
                continue
            stored = await self._interactions(plan, data.get("payload") or {})
            if stored is None:
                continue
            from protocol.interactions import InteractionRequest
            request = InteractionRequest.model_validate(stored["request"])
            for target in plan.targets:
                stream = await self._stream(plan, target, [])
                async with stream.lock:
                    if target.edit and stream.dirty:
                        await self._push_text(plan, stream, stream.text(), final=False)
                    index = INTERACTION_PART_BASE + len(stream.prompts)
                    stream.prompts.append(stored)
                    adapter = self._adapter(target)
                    await self._put(plan, stream, index, f"interaction:{stored['interaction_id']}", final=True,
                                    send=lambda a, i=stored["interaction_id"], r=request, ad=adapter:
                                    ad.send_interaction(a, i, r), edit=None)

    # -- one part, exactly once ------------------------------------------------------------------
    async def _put(self, plan: DeliveryPlan, stream: _Stream, index: int, content: str, *, final: bool,
                   send: Callable[[dict[str, Any]], Awaitable[str]],
                   edit: Callable[[dict[str, Any], str, str], Awaitable[None]] | None) -> bool:
        """Make part ``index`` show ``content``. ``False``: not yet (an intermediate attempt failed)."""
        target = stream.target
        part = stream.parts.get(index)
        if part is None:
            row = await self._storage.write("delivery_open", run_id=plan.run_id, target_key=target.key, part=index,
                                            platform=target.platform, connection=target.connection,
                                            target=target.reply_target)
            part = stream.parts[index] = _Part(row["platform_message_id"], row["content_sha256"], row["status"])
        if part.message_id is None and part.status in ("unknown", "failed", "sending"):
            return True  # never re-post what may have reached the platform, nor what gave up
        digest = content_digest(content)
        address = self._address(plan, target, index)
        status = "delivered" if final else "streaming"
        if part.message_id is None:
            part.status = "sending"
            await self._record(plan, target, index, status="sending")
            message_id = await self._attempt(plan, stream, index, part, lambda: send(address), final=final)
            if message_id is None:
                if part.status == "sending":  # a known failure that reached nothing: post again later
                    part.status = "pending"
                    await self._record(plan, target, index, status="pending")
                return part.status == "failed"
            part.message_id, part.digest, part.status = str(message_id), digest, status
            await self._record(plan, target, index, status=status, message_id=str(message_id), content=content)
            return True
        if part.digest != digest and edit is not None:
            done = await self._attempt(plan, stream, index, part, lambda: edit(address, part.message_id, content),
                                       final=final)
            if done is None:
                return part.status == "failed"
            part.digest, part.status = digest, status
            await self._record(plan, target, index, status=status, content=content)
            return True
        if final and part.status != "delivered":
            part.status = "delivered"
            await self._record(plan, target, index, status="delivered")
        return True

    async def _attempt(self, plan: DeliveryPlan, stream: _Stream, index: int, part: _Part,
                       call: Callable[[], Awaitable[Any]], *, final: bool) -> Any:
        """One platform call, retried (final content only) with back-off / ``retry_after``; an
        intermediate update's ``retry_after`` holds the stream's next update back instead.
        Every attempt is counted on the row; ``None`` when it did not succeed."""
        tuning = self._tuning
        target = stream.target
        attempts = tuning.max_attempts if final else 1
        delay = tuning.backoff_base_s
        for attempt in range(1, attempts + 1):
            await self._record(plan, target, index, status=part.status, attempt=True)
            try:
                with tracing.delivery_span(plan.trace or None, target.platform, run_id=plan.run_id, part=index,
                                           attempt=attempt, final=final):
                    result = await call()
            except PlatformError as exc:
                after = exc.retry_after
                give_up = attempt == attempts or not exc.retryable or (
                    after is not None and after > tuning.max_retry_after_s)
                metrics.delivery(target.platform, _attempt_outcome(give_up, final, exc.retryable))
                log.info("delivery %s part %d to %s: %s (attempt %d)", plan.run_id, index, target.connection,
                         exc.message, attempt)
                if give_up:
                    if after is not None and not final:
                        stream.hold_until = self._clock() + after  # flood control: no update before then
                    if final or not exc.retryable:
                        part.status = "failed"
                    await self._record(plan, target, index, status=part.status, error=exc.message)
                    return None
                await self._record(plan, target, index, status=part.status, error=exc.message)
                await self._sleep(after if after is not None else delay * (1 + random.random() * 0.2))
                delay = min(delay * 2, tuning.backoff_max_s)
            else:
                metrics.delivery(target.platform, "ok")
                return True if result is None else result
        return None

    # -- helpers ------------------------------------------------------------------------------------
    def _adapter(self, target: DeliveryTarget) -> OutboundAdapter:
        return self._senders(target.connection)

    @staticmethod
    def _address(plan: DeliveryPlan, target: DeliveryTarget, index: int) -> dict[str, Any]:
        if target.platform != "webhook":
            return target.reply_target
        return {**target.reply_target, "run_id": plan.run_id, "part": index,
                "delivery_id": f"{plan.run_id}:{target.key}:{index}"}

    async def _record(self, plan: DeliveryPlan, target: DeliveryTarget, index: int, *, status: str,
                      message_id: str | None = None, content: str | None = None, attempt: bool = False,
                      error: str | None = None) -> None:
        await self._storage.write("delivery_record", run_id=plan.run_id, target_key=target.key, part=index,
                                  status=status, platform_message_id=message_id, content=content,
                                  attempt=attempt, error=error)


def sent_message(target: DeliveryTarget, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One explicit message's rows (in part order) as a :class:`~protocol.delivery.SentMessage` dict."""
    statuses = [r["status"] for r in rows]
    if "failed" in statuses:
        status = "failed"
    else:
        status = next((s for s in statuses if s != "delivered"), "delivered" if statuses else "pending")
    fields = DeliveryRecord.model_fields
    return {"status": status, "connection": target.connection, "platform": target.platform,
            "target_key": target.key, "parts": [{k: v for k, v in r.items() if k in fields} for r in rows]}
