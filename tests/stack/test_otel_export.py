"""`otlp_endpoint` set: a `specstack run --once` sends its boot's steps to an OTLP/HTTP
collector as spans of one trace (a collector stand-in decodes what arrives)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from specstack_conformance.harness import free_port_block

from .test_run import run_once


class Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        Collector.received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()


def test_a_boot_reaches_the_collector_as_one_trace_of_spans(
    tmp_path: Path, collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(os.environ, "SPECSTACK_OTLP_ENDPOINT", collector)
    proc = run_once(tmp_path / "data", free_port_block(8))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spans = [
        span
        for request in Collector.received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    attrs = [{a.key: a.value.string_value for a in span.attributes} for span in spans]
    boot = [a for a in attrs if a["specstack.sequence"] == "boot-vm"]
    assert {a["specstack.step"] for a in boot} >= {str(n) for n in range(1, 16)}
    traces = {span.trace_id for span, a in zip(spans, attrs, strict=True) if a in boot}
    assert len(traces) == 1  # one flow, one trace
    schedule = next(a for a in boot if a["specstack.step"] == "7")
    assert (schedule["specstack.from"], schedule["specstack.to"], schedule["specstack.via"]) == (
        "nova-scheduler",
        "nova-db",
        "sql",
    )
