"""OpenTelemetry traces: one trace per run (plain module, no Ray).

* The run's root span (:func:`start_run`) continues the inbound request's W3C ``traceparent``
  when it has a valid one (same trace id, the caller's span as parent); otherwise it starts a
  new trace. :func:`trace_id` gives the 32-hex id for ``ctx.runtime.trace_id``.
* Spans cross Ray calls as :data:`Carrier` dicts (``{"traceparent": …, "tracestate": …}``, plain
  strings, picklable): :func:`carrier` writes one, :func:`child` and the named helpers continue
  it in whatever process receives it.
* Export: every process calls :func:`configure` once (idempotent) with ``[observability]
  otlp_endpoint``. With an endpoint, spans go over OTLP/HTTP in batches; without one nothing is
  recorded or exported, but ids are still generated and propagated (``ctx.runtime.trace_id``
  is always a real trace id). Tests pass ``exporter=`` (e.g. an in-memory exporter).
* Nothing here raises into the caller on a bad inbound header or a failed export.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import Any, Iterator, Mapping

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from protocol.logs import get_logger

log = get_logger(__name__)

#: W3C trace context as it crosses a Ray call: {"traceparent": "00-<32hex>-<16hex>-<2hex>", "tracestate"?}
Carrier = dict[str, str]

ENV_ENDPOINT = "RUNNERHOST_OTLP_ENDPOINT"
SERVICE_NAME = "runnerhost"
TRACER_NAME = "runnerhost"

# Span names: one trace per run, these below its root.
SPAN_RUN = "run"
SPAN_ADMISSION = "admission"
SPAN_CONTEXT_BUILD = "context.build"
SPAN_LEASE = "lease"
SPAN_RUNNER_API = "runner.api"
SPAN_RUNNER_EXECUTE = "runner.execute"
SPAN_STORAGE = "storage.write"
SPAN_DELIVERY = "delivery"

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_MAX_TRACESTATE = 512
_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: TracerProvider | None = None
_configured_for: tuple[Any, ...] | None = None


# -- configuration ---------------------------------------------------------------------------
def otlp_traces_url(endpoint: str) -> str:
    """An OTLP/HTTP base URL (``http://collector:4318``) or a full ``…/v1/traces`` URL → the latter."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def configure(otlp_endpoint: str | None = None, *, exporter: SpanExporter | None = None,
              service_name: str = SERVICE_NAME) -> None:
    """Set this process's tracer provider; a repeated call with the same arguments does nothing."""
    global _provider, _configured_for
    key = (otlp_endpoint or None, id(exporter) if exporter is not None else None, service_name)
    with _lock:
        if _configured_for == key and _provider is not None:
            return
        previous = _provider
        resource = Resource.create({"service.name": service_name})
        if exporter is not None:
            provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
            provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_traces_url(otlp_endpoint))))
        else:  # ids and propagation only: nothing recorded, nothing exported
            provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
        _provider, _configured_for = provider, key
    if previous is not None:
        try:
            previous.shutdown()
        except Exception as exc:  # pragma: no cover - exporter shutdown trouble is not ours to raise
            log.warning("tracer shutdown failed: %s", type(exc).__name__)


def configure_from_env(env: Mapping[str, str] | None = None) -> None:
    """:func:`configure` from ``RUNNERHOST_OTLP_ENDPOINT`` (for processes that get no config)."""
    env = os.environ if env is None else env
    configure(env.get(ENV_ENDPOINT) or None)


def force_flush(timeout_ms: int = 5000) -> bool:
    return _provider.force_flush(timeout_ms) if _provider is not None else True


_tracer: otel_trace.Tracer | None = None
_tracer_of: TracerProvider | None = None


def tracer() -> otel_trace.Tracer:
    """This process's tracer (one per provider: ``get_tracer`` is not free on a hot path)."""
    global _tracer, _tracer_of
    if _provider is None:
        configure_from_env()
    assert _provider is not None
    if _tracer is None or _tracer_of is not _provider:
        _tracer, _tracer_of = _provider.get_tracer(TRACER_NAME), _provider
    return _tracer


# -- W3C trace context ----------------------------------------------------------------------------
def parse_traceparent(traceparent: str | None, tracestate: str | None = None) -> Carrier | None:
    """A carrier for a valid inbound ``traceparent`` (version 00 rules; all-zero ids and version
    ``ff`` are invalid), else None — a bad header starts a new trace, it is never an error."""
    if not isinstance(traceparent, str):
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if match is None:
        return None
    version, trace, span, _flags, rest = match.groups()
    if version == "ff" or trace == "0" * 32 or span == "0" * 16 or (version == "00" and rest):
        return None
    out: Carrier = {"traceparent": traceparent.strip().lower()}
    if isinstance(tracestate, str) and tracestate.strip() and len(tracestate) <= _MAX_TRACESTATE:
        out["tracestate"] = tracestate.strip()
    return out


def from_headers(headers: Mapping[str, str] | None) -> Carrier | None:
    """The carrier of an HTTP request's ``traceparent`` / ``tracestate`` headers, if valid."""
    if not headers:
        return None
    return parse_traceparent(headers.get("traceparent"), headers.get("tracestate"))


def carrier(span: Span | None) -> Carrier:
    """The W3C headers of ``span`` as a plain dict (cross a Ray call with it)."""
    out: Carrier = {}
    if span is not None:
        _propagator.inject(out, context=otel_trace.set_span_in_context(span))
    return out


def _context(parent: Span | Carrier | None) -> Any:
    if parent is None:
        return None
    if isinstance(parent, Mapping):
        return _propagator.extract(dict(parent)) if parent.get("traceparent") else None
    return otel_trace.set_span_in_context(parent)


def trace_id(parent: Span | Carrier | None) -> str | None:
    """The 32-hex trace id of a span or carrier (``ctx.runtime.trace_id``); None if it has none."""
    if parent is None:
        return None
    if isinstance(parent, Mapping):
        found = parse_traceparent(parent.get("traceparent"))
        return found["traceparent"].split("-")[1] if found else None
    ctx = parent.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


# -- spans ------------------------------------------------------------------------------------------
def start_run(run_id: str, *, parent: Carrier | None = None, agent_id: str | None = None,
              runner_id: str | None = None, conversation_id: str | None = None) -> Span:
    """The run's root span (the caller ends it with :func:`end_run`); continues ``parent``."""
    attributes = {"runnerhost.run_id": run_id}
    for key, value in (("agent_id", agent_id), ("runner_id", runner_id), ("conversation_id", conversation_id)):
        if value is not None:
            attributes[f"runnerhost.{key}"] = value
    return tracer().start_span(SPAN_RUN, context=_context(parent), kind=SpanKind.SERVER, attributes=attributes)


def end_run(span: Span, status: str, code: str | None = None) -> None:
    """End the root span with the run's ledger status (failed/timeout → span status ERROR)."""
    span.set_attribute("runnerhost.status", status)
    if code:
        span.set_attribute("runnerhost.code", code)
    if status in ("failed", "timeout"):
        span.set_status(Status(StatusCode.ERROR, code or status))
    span.end()


def start_child(name: str, parent: Span | Carrier | None, **attributes: Any) -> Span:
    """A child span of ``parent`` that the caller ends (for spans that outlive one block, e.g.
    across a generator's yields); :func:`child` is the block form."""
    attrs = {f"runnerhost.{k}": v for k, v in attributes.items() if v is not None}
    return tracer().start_span(name, context=_context(parent), attributes=attrs)


@contextlib.contextmanager
def child(name: str, parent: Span | Carrier | None, **attributes: Any) -> Iterator[Span]:
    """A child span of ``parent`` (a span here or a carrier from another process). An exception
    leaving the block is recorded on the span (status ERROR) and re-raised."""
    span = start_child(name, parent, **attributes)
    try:
        yield span
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()


def admission_span(parent: Span | Carrier | None, **attributes: Any):
    return child(SPAN_ADMISSION, parent, **attributes)


def context_build_span(parent: Span | Carrier | None, **attributes: Any):
    return child(SPAN_CONTEXT_BUILD, parent, **attributes)


def lease_span(parent: Span | Carrier | None, pool: str, **attributes: Any):
    return child(SPAN_LEASE, parent, pool=pool, **attributes)


def runner_execute_span(parent: Span | Carrier | None, runner_id: str | None = None, **attributes: Any):
    return child(SPAN_RUNNER_EXECUTE, parent, runner_id=runner_id, **attributes)


def runner_api_span(parent: Span | Carrier | None, method: str, **attributes: Any):
    return child(SPAN_RUNNER_API, parent, method=method, **attributes)


def storage_span(parent: Span | Carrier | None, kind: str, **attributes: Any):
    return child(SPAN_STORAGE, parent, kind=kind, **attributes)


def delivery_span(parent: Span | Carrier | None, platform: str, **attributes: Any):
    return child(SPAN_DELIVERY, parent, platform=platform, **attributes)
