"""The result stream (SPEC §5): envelope, typed payloads and the validator.

:class:`ResultValidator` holds the per-run rules — payload validation, the
``sequence`` contract (rise by one; duplicates dropped, gaps logged) and the
terminal latch — so the RunActor only relays what it says is accepted.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from .agents import StateScope
from .events import ContentPart
from .logs import get_logger
from .text import make_storable

log = get_logger(__name__)

INLINE_ARTIFACT_LIMIT = 1 << 20  # 1 MiB of decoded bytes


class ResultType(str, Enum):
    MESSAGE_DELTA = "message.delta"
    MESSAGE_COMPLETED = "message.completed"
    TOOL_CALL_STARTED = "tool.call.started"
    TOOL_CALL_COMPLETED = "tool.call.completed"
    ARTIFACT_CREATED = "artifact.created"
    STATE_UPDATED = "state.updated"
    ACTION_REQUESTED = "action.requested"
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"


TERMINAL_TYPES = frozenset({ResultType.RUN_COMPLETED.value, ResultType.RUN_FAILED.value})


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Compact(BaseModel):
    """Serializes without ``None`` fields: frames carry what the runner said, not our defaults."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> Any:
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    type: str = "function"
    function: FunctionCall
    provider_specific_fields: dict[str, Any] | None = None


class ChatMessage(_Compact):
    """A chat message or chunk; shape-compatible with LangBot's Message/MessageChunk."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    resp_message_id: str | None = None
    all_content: str | None = None
    provider_specific_fields: dict[str, Any] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(p.text or "" for p in self.content if p.type == "text")


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class MessageDelta(_Payload):
    chunk: ChatMessage


class MessageCompleted(_Payload):
    message: ChatMessage
    file_ids: list[str] = Field(default_factory=list, max_length=100)


class ToolCallStarted(_Payload):
    tool_call_id: str
    tool_name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class ToolCallCompleted(_Payload):
    tool_call_id: str
    tool_name: str
    result: dict[str, Any] | None = None
    error: str | None = None


class ArtifactCreated(_Payload):
    artifact_type: str = Field(max_length=64)
    artifact_id: str | None = Field(default=None, max_length=128)
    mime_type: str | None = Field(default=None, max_length=128)
    name: str | None = Field(default=None, max_length=512)
    size_bytes: int | None = Field(default=None, ge=0)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    metadata: dict[str, Any] | None = None
    content_base64: str | None = Field(default=None, max_length=(INLINE_ARTIFACT_LIMIT * 4) // 3 + 4)

    @field_validator("content_base64")
    @classmethod
    def _inline_content(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("content_base64 is not valid base64") from None
        if len(decoded) > INLINE_ARTIFACT_LIMIT:
            raise ValueError(f"inline artifact content exceeds {INLINE_ARTIFACT_LIMIT} bytes")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ArtifactCreated":
        if self.content_base64 is not None:
            decoded = base64.b64decode(self.content_base64)
            if self.size_bytes is not None and self.size_bytes != len(decoded):
                raise ValueError("size_bytes does not match the inline content")
            if self.sha256 is not None and hashlib.sha256(decoded).hexdigest() != self.sha256:
                raise ValueError("sha256 does not match the inline content")
        return self


class StateUpdated(_Payload):
    scope: StateScope
    key: str = Field(min_length=1, max_length=256)
    value: Any


class ActionRequested(_Payload):
    action: str
    target: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None


class RunCompleted(_Payload):
    finish_reason: str = "stop"
    message: ChatMessage | None = None


class RunFailed(_Payload):
    code: str = "runner.error"
    error: str
    retryable: bool = False


PAYLOADS: dict[str, type[_Payload]] = {
    ResultType.MESSAGE_DELTA.value: MessageDelta,
    ResultType.MESSAGE_COMPLETED.value: MessageCompleted,
    ResultType.TOOL_CALL_STARTED.value: ToolCallStarted,
    ResultType.TOOL_CALL_COMPLETED.value: ToolCallCompleted,
    ResultType.ARTIFACT_CREATED.value: ArtifactCreated,
    ResultType.STATE_UPDATED.value: StateUpdated,
    ResultType.ACTION_REQUESTED.value: ActionRequested,
    ResultType.RUN_COMPLETED.value: RunCompleted,
    ResultType.RUN_FAILED.value: RunFailed,
}

#: Telemetry types are lenient: an invalid payload is kept as-is with a warning.
LENIENT_TYPES = frozenset({ResultType.TOOL_CALL_STARTED.value, ResultType.TOOL_CALL_COMPLETED.value})


class RunResult(BaseModel):
    """One frame of a run's result stream."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    sequence: int | None = None
    timestamp: int | None = None
    usage: Usage | None = None

    # Constructors runner authors use; each builds a payload that validates.
    @classmethod
    def delta(cls, run_id: str, text: str, role: str = "assistant") -> "RunResult":
        return cls(run_id=run_id, type="message.delta", data={"chunk": {"role": role, "content": text}})

    @classmethod
    def completed_message(cls, run_id: str, text: str, role: str = "assistant") -> "RunResult":
        return cls(run_id=run_id, type="message.completed",
                   data={"message": {"role": role, "content": text}, "file_ids": []})

    @classmethod
    def state(cls, run_id: str, scope: str, key: str, value: Any) -> "RunResult":
        return cls(run_id=run_id, type="state.updated", data={"scope": scope, "key": key, "value": value})

    @classmethod
    def done(cls, run_id: str, finish_reason: str = "stop") -> "RunResult":
        return cls(run_id=run_id, type="run.completed", data={"finish_reason": finish_reason})

    @classmethod
    def failed(cls, run_id: str, code: str, error: str, retryable: bool = False) -> "RunResult":
        return cls(run_id=run_id, type="run.failed",
                   data={"code": code, "error": error, "retryable": retryable})

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


class Verdict(str, Enum):
    ACCEPTED = "accepted"
    DROPPED_INVALID = "dropped_invalid"
    IGNORED_UNKNOWN = "ignored_unknown"
    DROPPED_DUPLICATE = "dropped_duplicate"
    DROPPED_AFTER_TERMINAL = "dropped_after_terminal"


@dataclass
class Classified:
    verdict: Verdict
    result: RunResult | None = None
    payload: BaseModel | None = None
    reason: str = ""
    gap: int = 0

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPTED


def classify(raw: Any, run_id: str) -> Classified:
    """Stateless half: envelope + payload validation for one raw result."""
    if isinstance(raw, RunResult):
        raw = raw.model_dump()
    elif isinstance(raw, BaseModel):
        raw = raw.model_dump(mode="json")
    if not isinstance(raw, dict):
        return Classified(Verdict.DROPPED_INVALID, reason=f"result is a {type(raw).__name__}, not an object")
    raw = {**raw, "run_id": run_id}
    rtype = raw.get("type")
    if hasattr(rtype, "value"):
        raw["type"] = rtype = rtype.value
    try:
        envelope = RunResult.model_validate(raw)
    except ValidationError as exc:
        return Classified(Verdict.DROPPED_INVALID, reason=_short(exc))
    model = PAYLOADS.get(envelope.type)
    if model is None:
        return Classified(Verdict.IGNORED_UNKNOWN, envelope, reason=f"unknown result type {envelope.type!r}")
    # Runner text a database column cannot hold (NUL, lone surrogates) is replaced here, where
    # results enter the host, so what is relayed is what gets recorded (protocol.text).
    envelope.data, replaced = make_storable(envelope.data)
    note = f"; {replaced} unstorable text value(s) replaced with U+FFFD" if replaced else ""
    if replaced:
        log.warning("run %s: %s result%s", run_id, envelope.type, note)
    try:
        payload = model.model_validate(envelope.data)
    except ValidationError as exc:
        if envelope.type in LENIENT_TYPES:
            return Classified(Verdict.ACCEPTED, envelope, None, reason="lenient: " + _short(exc) + note)
        return Classified(Verdict.DROPPED_INVALID, envelope, reason=_short(exc))
    envelope.data = payload.model_dump(mode="json", exclude_none=False)
    return Classified(Verdict.ACCEPTED, envelope, payload, reason=note[2:])


def _short(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))


@dataclass
class ResultValidator:
    """Per-run stateful validation: sequence discipline and the terminal latch."""

    run_id: str
    last_sequence: int | None = None
    terminal: RunResult | None = None
    saw_message: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def check(self, raw: Any) -> Classified:
        verdict = classify(raw, self.run_id)
        if verdict.result is not None and self.terminal is not None:
            verdict = Classified(Verdict.DROPPED_AFTER_TERMINAL, verdict.result, reason="result after terminal")
        elif verdict.accepted and verdict.result.sequence is not None:
            seq = verdict.result.sequence
            if self.last_sequence is not None and seq <= self.last_sequence:
                verdict = Classified(Verdict.DROPPED_DUPLICATE, verdict.result,
                                     reason=f"sequence {seq} after {self.last_sequence}")
            else:
                if self.last_sequence is not None and seq != self.last_sequence + 1:
                    verdict.gap = seq - self.last_sequence - 1
                    log.warning("run %s: sequence gap of %d before %d", self.run_id, verdict.gap, seq)
                self.last_sequence = seq
        self.counts[verdict.verdict.value] = self.counts.get(verdict.verdict.value, 0) + 1
        if verdict.accepted:
            rtype = verdict.result.type
            if rtype in (ResultType.MESSAGE_COMPLETED.value, ResultType.MESSAGE_DELTA.value):
                self.saw_message = True
            if rtype in TERMINAL_TYPES:
                if rtype == ResultType.RUN_COMPLETED.value and verdict.result.data.get("message"):
                    self.saw_message = True
                self.terminal = verdict.result
        elif verdict.verdict is not Verdict.ACCEPTED:
            log.warning("run %s: %s result: %s", self.run_id, verdict.verdict.value, verdict.reason)
        return verdict

    def finish(self) -> RunResult:
        """The terminal the caller gets: the runner's own, or a controlled failure."""
        if self.terminal is not None:
            if self.terminal.type == ResultType.RUN_COMPLETED.value and not self.saw_message:
                return RunResult.failed(self.run_id, "runner.empty_output",
                                        "runner completed without producing any message")
            return self.terminal
        if not self.saw_message:
            return RunResult.failed(self.run_id, "runner.empty_output",
                                    "runner ended without any message and without run.failed")
        return RunResult.done(self.run_id)


def now_ts() -> int:
    return int(time.time())
