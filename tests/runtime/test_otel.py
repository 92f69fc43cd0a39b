"""Trace events as OpenTelemetry spans, checked with the SDK's in-memory exporter."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from specstack_runtime import otel
from specstack_runtime.config import StackConfig
from specstack_runtime.trace import TraceEvent, TraceRecorder


def event(flow: str, step: str, title: str, *, status: str = "ok", **more: str) -> TraceEvent:
    now = 1_700_000_000.0  # whole seconds and a quarter: exact in binary
    return TraceEvent(
        flow_id=flow,
        sequence="boot-vm",
        step=step,
        title=title,
        source=more.get("source", "nova-api"),
        target=more.get("target", "keystone"),
        via=more.get("via", "http"),
        name=more.get("name"),
        status=status,
        started_at=now,
        ended_at=now + 0.25,
        request_id="req-1",
        host="controller",
        detail={"sent": {"auth": {"password": "secret"}}, "error": more.get("error", "")},
    )


def test_each_step_is_a_span_and_each_flow_one_trace() -> None:
    exported = InMemorySpanExporter()
    recorder = TraceRecorder(None)
    recorder.listen(otel.SpanExport(otel.provider("specstack", exporter=exported)))
    recorder.record(event("req-a", "4", "Validate token", name="validateToken"))
    recorder.record(event("req-a", "7", "Schedule", via="amqp-call", target="nova-scheduler"))
    recorder.record(event("req-b", "4", "Validate token", status="error", error="401 no token"))
    spans = exported.get_finished_spans()
    assert [s.name for s in spans] == ["4 Validate token", "7 Schedule", "4 Validate token"]
    a4, a7, b4 = spans
    assert a4.context is not None and a7.context is not None and b4.context is not None
    assert a4.context.trace_id == a7.context.trace_id != b4.context.trace_id
    assert a4.parent is not None and a4.parent.span_id == otel.flow_ids("req-a")[1]
    assert dict(a7.attributes or {}) | {} == {
        "specstack.flow_id": "req-a",
        "specstack.sequence": "boot-vm",
        "specstack.step": "7",
        "specstack.from": "nova-api",
        "specstack.to": "nova-scheduler",
        "specstack.via": "amqp-call",
        "specstack.name": "",
        "specstack.status": "ok",
        "specstack.host": "controller",
        "specstack.request_id": "req-1",
    }
    assert a4.status.status_code == StatusCode.OK
    assert b4.status.status_code == StatusCode.ERROR and b4.status.description == "401 no token"
    assert a4.end_time is not None and a4.start_time is not None
    assert a4.start_time == 1_700_000_000 * 10**9  # the step's own times, in ns
    assert a4.end_time - a4.start_time == 250_000_000
    assert all("secret" not in str(s.to_json()) for s in spans)  # bodies are not exported


def test_the_same_flow_meets_in_one_trace_from_any_process() -> None:
    one, two = InMemorySpanExporter(), InMemorySpanExporter()
    for exporter, step in ((one, "7"), (two, "9")):  # two processes, one flow
        recorder = TraceRecorder(None)
        recorder.listen(otel.SpanExport(otel.provider("specstack", exporter=exporter)))
        recorder.record(event("req-shared", step, "a step"))
    (s1,), (s2,) = one.get_finished_spans(), two.get_finished_spans()
    assert s1.context is not None and s2.context is not None
    assert s1.context.trace_id == s2.context.trace_id
    assert s1.parent == s2.parent


def test_export_is_off_unless_an_endpoint_is_set() -> None:
    assert StackConfig().otlp_endpoint == ""
