"""Traces without Ray: one run → one trace continuing the inbound traceparent, across carriers."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors import tracing
from actors.core.authz import ResourceCatalog, compute_access
from actors.core.context_builder import build_context
from protocol.agents import AgentBinding, AgentConfig
from protocol.events import EventEnvelope
from runners.echo.runner import EchoRunner

INBOUND_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INBOUND = f"00-{INBOUND_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter():
    spans = InMemorySpanExporter()
    tracing.configure(exporter=spans)
    yield spans
    tracing.configure(None)


def simulated_run(parent_headers: dict[str, str] | None):
    """The order of a run: admission, context build, lease; the RunActor (another process: only the
    carrier crosses) executes the runner, serves a runner API call and writes to storage."""
    run_id = "run_trace_1"
    root = tracing.start_run(run_id, parent=tracing.from_headers(parent_headers), agent_id="echo")
    event = EventEnvelope(event_type="message.received", conversation_id="c1", input={"text": "hi"})
    binding = AgentBinding.from_agent("echo", AgentConfig(runner_id=EchoRunner.manifest.id), 1)
    with tracing.admission_span(root, run_id=run_id):
        pass
    with tracing.context_build_span(root):
        snapshot = compute_access(run_id=run_id, manifest=EchoRunner.manifest, binding=binding,
                                  conversation_id="c1", thread_id=None, catalog=ResourceCatalog(),
                                  deadline_at=time.time() + 60)
        ctx = build_context(run_id=run_id, event=event, binding=binding, snapshot=snapshot,
                            trace_id=tracing.trace_id(root))
    with tracing.lease_span(root, "run-actor pool"):
        pass
    wire = json.loads(json.dumps(tracing.carrier(root)))  # what a Ray call would carry: plain strings
    with tracing.runner_execute_span(wire, runner_id=binding.runner_id) as execute:
        inner = tracing.carrier(execute)
        with tracing.runner_api_span(inner, "history_page"):
            pass
        with tracing.storage_span(inner, "finish_run", ops=3):
            pass
    tracing.end_run(root, "completed", "stop")
    return root, ctx


def test_one_run_is_one_trace_continuing_the_inbound_traceparent(exporter):
    root, ctx = simulated_run({"traceparent": INBOUND, "tracestate": "vendor=x"})
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert set(names) == {"run", "admission", "context.build", "lease", "runner.execute", "runner.api",
                          "storage.write"}, names
    assert {format(s.context.trace_id, "032x") for s in spans} == {INBOUND_TRACE}
    assert ctx.runtime.trace_id == INBOUND_TRACE == tracing.trace_id(root)
    by_name = {s.name: s for s in spans}
    assert format(by_name["run"].parent.span_id, "016x") == "00f067aa0ba902b7"  # the caller's span
    assert by_name["run"].parent.is_remote
    for name in ("admission", "context.build", "lease", "runner.execute"):
        assert by_name[name].parent.span_id == by_name["run"].context.span_id, name
    for name in ("runner.api", "storage.write"):
        assert by_name[name].parent.span_id == by_name["runner.execute"].context.span_id, name
    assert by_name["run"].attributes["runnerhost.status"] == "completed"
    assert by_name["storage.write"].attributes["runnerhost.kind"] == "finish_run"
    assert dict(by_name["run"].context.trace_state) == {"vendor": "x"}


def test_without_inbound_trace_a_new_trace_per_run(exporter):
    first, ctx1 = simulated_run(None)
    second, ctx2 = simulated_run({"traceparent": "garbage"})
    ids = {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
    assert ids == {ctx1.runtime.trace_id, ctx2.runtime.trace_id} and len(ids) == 2
    assert all(len(i) == 32 and int(i, 16) for i in ids)


@pytest.mark.parametrize("header", [
    None, "", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", f"00-{INBOUND_TRACE}-" + "0" * 16 + "-01",
    f"ff-{INBOUND_TRACE}-00f067aa0ba902b7-01", f"00-{INBOUND_TRACE}-00f067aa0ba902b7-01-extra",
    f"00-{INBOUND_TRACE[:-1]}-00f067aa0ba902b7-01", "00-xyz", 42])
def test_invalid_traceparent_is_ignored_not_an_error(header):
    assert tracing.parse_traceparent(header) is None


def test_a_failing_step_marks_its_span_error_and_reraises(exporter):
    root = tracing.start_run("run_err")
    with pytest.raises(ValueError):
        with tracing.storage_span(root, "start_run"):
            raise ValueError("db down")
    tracing.end_run(root, "failed", "host.error")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["storage.write"].status.status_code.name == "ERROR"
    assert spans["run"].status.status_code.name == "ERROR" and spans["run"].status.description == "host.error"


def test_no_endpoint_records_nothing_but_still_propagates_ids():
    tracing.configure(None)
    root = tracing.start_run("run_noop", parent=tracing.parse_traceparent(INBOUND))
    assert not root.is_recording()
    assert tracing.trace_id(root) == INBOUND_TRACE
    with tracing.storage_span(tracing.carrier(root), "run_events") as span:
        assert not span.is_recording() and tracing.trace_id(span) == INBOUND_TRACE
    fresh = tracing.start_run("run_noop_2")
    assert tracing.trace_id(fresh) and tracing.trace_id(fresh) != INBOUND_TRACE
    assert tracing.carrier(fresh)["traceparent"].split("-")[1] == tracing.trace_id(fresh)


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_otlp_export_reaches_a_collector_over_http():
    """A real OTLP/HTTP receiver (protobuf over HTTP) gets the run's spans when the endpoint is set."""
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tracing.configure(f"http://127.0.0.1:{server.server_port}")
        root = tracing.start_run("run_otlp", parent=tracing.parse_traceparent(INBOUND))
        with tracing.admission_span(root):
            pass
        tracing.end_run(root, "completed")
        assert tracing.force_flush(10_000)
        assert _Collector.received and {p for p, _ in _Collector.received} == {"/v1/traces"}
        names, ids = set(), set()
        for _, body in _Collector.received:
            request = ExportTraceServiceRequest.FromString(body)
            for rs in request.resource_spans:
                assert {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"] == "runnerhost"
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        names.add(span.name)
                        ids.add(span.trace_id.hex())
        assert names == {"run", "admission"} and ids == {INBOUND_TRACE}
    finally:
        tracing.configure(None)
        server.shutdown()


def test_observability_config_section_and_env(tmp_path):
    from serve.config import ConfigError, load_settings

    cfg = tmp_path / "rh.toml"
    cfg.write_text('[observability]\notlp_endpoint = "http://collector:4318"\n')
    assert load_settings(cfg, env={}).host_config().otlp_endpoint == "http://collector:4318"
    env = {"RUNNERHOST_OTLP_ENDPOINT": "https://otel.example:4318"}
    assert load_settings(cfg, env=env).host_config().otlp_endpoint == "https://otel.example:4318"
    assert load_settings(None, env={"RUNNERHOST_CONFIG": str(cfg)}).observability.otlp_endpoint
    cfg.write_text('[observability]\notlp_endpoint = "collector:4318"\n')
    with pytest.raises(ConfigError, match="otlp_endpoint"):
        load_settings(cfg, env={})
    assert tracing.otlp_traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert tracing.otlp_traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
