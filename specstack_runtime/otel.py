"""Trace events as OpenTelemetry spans, for Jaeger, Tempo or any OTLP collector.

One trace per flow (its trace id derived from the flow id, so every process of a
distributed stack puts its steps in the same trace), one span per step named by its
label and title, with the step's endpoints, transport and status as attributes. Bodies
and headers are not exported (they may hold secrets). Off unless `otlp_endpoint` is set.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from specstack_runtime.trace import TraceEvent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

INSTALL = "pip install 'specstack[otel]' (opentelemetry-sdk and its OTLP exporter)"


def flow_ids(flow_id: str) -> tuple[int, int]:
    """(trace id, the flow's span id): the same for a flow whichever process records its
    steps, so they meet in one trace under one parent."""
    digest = hashlib.sha256(flow_id.encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1


def _ns(seconds: float) -> int:
    """Epoch seconds as nanoseconds (a float times 1e9 rounds past 2**53, whole ns lost)."""
    whole = int(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


class SpanExport:
    """A trace listener (`TraceRecorder.listen`) that turns each step into a span."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("specstack")

    def __call__(self, event: TraceEvent) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            Status,
            StatusCode,
            TraceFlags,
        )

        trace_id, root_id = flow_ids(event.flow_id)
        flow = SpanContext(
            trace_id=trace_id,
            span_id=root_id,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),  # every flow is exported
        )
        parent = trace.set_span_in_context(NonRecordingSpan(flow))
        span = self.tracer.start_span(
            f"{event.step} {event.title}",
            context=parent,
            start_time=_ns(event.started_at),
            attributes={
                "specstack.flow_id": event.flow_id,
                "specstack.sequence": event.sequence,
                "specstack.step": event.step,
                "specstack.from": event.source,
                "specstack.to": event.target,
                "specstack.via": event.via,
                "specstack.name": event.name or "",
                "specstack.status": event.status,
                "specstack.host": event.host,
                "specstack.request_id": event.request_id,
            },
        )
        if event.status == "error":
            error = str(event.detail.get("error") or "the step failed")
            span.set_status(Status(StatusCode.ERROR, error[:200]))
        elif event.status == "ok":
            span.set_status(Status(StatusCode.OK))
        span.end(end_time=_ns(event.ended_at))


def provider(
    service: str, exporter: SpanExporter | None = None, endpoint: str = ""
) -> TracerProvider:
    """A tracer provider for `service` sending to `exporter`, or to the OTLP/HTTP collector at
    `endpoint` (e.g. http://127.0.0.1:4318/v1/traces) in batches."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        raise RuntimeError(f"OpenTelemetry export needs its packages: {INSTALL}") from exc
    made = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        made.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        made.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return made
