"""OSProfiler both ways, without a collector: signed trace headers, the point each step
makes, and a hand-written trace of an OpenStack cloud compared with the deck's steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osprofiler import profiler, web

from generator.commands import diagram
from generator.commands.flow_diagrams import compare
from specstack_runtime.ir import IR
from specstack_runtime.osprofiler_export import PointExport, signed_base_id
from specstack_runtime.trace import TraceEvent
from specstack_runtime.tracepoints import ReportError, TraceMap, declared_items, events_of_report

from ..osprofiler_traces import openstack_boot

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ir() -> IR:
    return IR.model_validate_json((REPO / "generated" / "ir.json").read_bytes())


def headers_signed_with(key: str) -> dict[str, str]:
    """What an OSProfiler client (`openstack --os-profile KEY`) sends."""
    profiler.init(key)
    try:
        return web.get_trace_id_headers()
    finally:
        profiler.clean()


def test_a_trace_header_signed_with_a_configured_key_gives_its_base_id() -> None:
    sent = headers_signed_with("k2")
    info, mac = sent["X-Trace-Info"], sent["X-Trace-HMAC"]
    base_id = json.loads(__import__("base64").urlsafe_b64decode(info))["base_id"]
    assert signed_base_id(info, mac, ("k1", "k2")) == base_id
    # another key, a changed body, no signature, no key configured: not trusted
    assert signed_base_id(info, mac, ("k1",)) is None
    assert signed_base_id(info[:-4] + "AAAA", mac, ("k2",)) is None
    assert signed_base_id(info, None, ("k2",)) is None
    assert signed_base_id(info, mac, ()) is None
    assert signed_base_id("x" * 5000, mac, ("k2",)) is None


def test_each_transport_makes_the_point_the_spec_declares(ir: IR) -> None:
    tmap = TraceMap(ir)
    items = {label: it for label, _, it in declared_items(next(s for s in ir.sequences))}
    create = tmap.point_of(items["3"])
    assert create is not None
    assert (create.name, create.project, create.service) == ("wsgi", "nova", "nova-api")
    assert create.info == {"request": {"method": "POST", "path": "/v2.1/servers"}}
    cast = tmap.point_of(items["6"])
    assert cast is not None and (cast.name, cast.project) == ("rpc", "nova")
    assert cast.info == {"function": {"name": "nova-scheduler.schedule_and_build_instances"}}
    sql = tmap.point_of(items["5"])  # recorded by nova-api, the side that runs the SQL
    assert sql is not None and (sql.name, sql.service) == ("db", "nova-api")
    assert sql.info["db"]["statement"] == "-- specstack: instances, flavors"
    failed = tmap.point_of(items["9"], failed="no valid host")
    assert failed is not None and failed.name == "driver"
    assert (failed.info["etype"], failed.info["message"]) == ("StepFailed", "no valid host")
    assert tmap.point_of(items["1"]) is None  # the user's step is in no trace


def test_an_openstack_trace_shows_the_deck_steps_through_the_spec(ir: IR) -> None:
    seq = next(s for s in ir.sequences if s.name == "boot-vm")
    events = events_of_report(TraceMap(ir), seq, openstack_boot())
    shown = [e["step"] for e in events]
    # 2.1: keystone's SQL names its table `user`, the spec `users`: it shows nothing
    assert shown == [
        "2",
        "3",
        "4",
        "4.1",
        "4.2",
        "5",
        "6",
        "7",
        "7.1",
        "8",
        "8.1",
        "9",
        "10",
        "10.1",
        "11",
        "12",
        "13",
        "13.1",
        "14",
        "14.1",
        "14.2",
        "14.3",
    ]
    create = events[1]
    assert (create["source"], create["target"], create["via"], create["name"]) == (
        "cli",
        "nova-api",
        "http",
        "createServer",
    )
    assert create["duration_ms"] == pytest.approx(0.5, abs=1e-3)


def test_a_step_missing_and_one_out_of_order_are_marked(ir: IR, tmp_path: Path) -> None:
    seq = next(s for s in ir.sequences if s.name == "boot-vm")
    tmap = TraceMap(ir)
    events = events_of_report(tmap, seq, openstack_boot(skip="12", early="13"))
    cmp = compare(ir, events, tmap.traced)
    marks = {(f.kind, f.label) for f in cmp.findings}
    assert ("missing", "12") in marks and ("out-of-order", "13") in marks
    assert ("missing", "1") not in marks  # the user's step is not traced: not missing
    assert {kind for kind, _ in marks} == {"missing", "out-of-order"}
    # the same through the command, from the file `osprofiler trace show --json` writes
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(openstack_boot(skip="12", early="13")))
    assert diagram.main("boot-vm", "mermaid", str(path), tmp_path) == diagram.EXIT_DIFFERENT


def test_what_is_not_an_osprofiler_trace_is_refused_clearly(
    ir: IR, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seq = next(s for s in ir.sequences if s.name == "boot-vm")
    with pytest.raises(ReportError, match="osprofiler trace show --json"):
        events_of_report(TraceMap(ir), seq, {"events": []})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert diagram.main("boot-vm", "mermaid", str(bad), tmp_path) == diagram.EXIT_ERROR
    assert f"specstack diagram: {bad}:" in capsys.readouterr().err
    missing = tmp_path / "absent.json"
    assert diagram.main("boot-vm", "mermaid", str(missing), tmp_path) == diagram.EXIT_ERROR
    assert "cannot read" in capsys.readouterr().err


def test_each_step_is_written_as_a_start_and_stop_point_of_the_flow(ir: IR) -> None:
    export = PointExport(ir, "redis://127.0.0.1:1")  # never reached: the queue is read here
    export.close()
    now = 1_700_000_000.25
    common = {"flow_id": "req-8c1b6f0e-9d7a-4d55-8f4e-3b2a1c0d9e8f", "sequence": "boot-vm"}
    for step, status in (("3", "ok"), ("9", "error"), ("15", "skipped")):
        export(
            TraceEvent(
                **common,
                step=step,
                title="",
                source="cli",
                target="nova-api",
                via="http",
                name=None,
                status=status,
                started_at=now,
                ended_at=now + 0.5,
                request_id="req-x",
                host="controller",
                detail={"error": "no valid host", "sent": {"password": "secret"}},
            )
        )
    written = []
    while not export.queue.empty():
        item = export.queue.get()
        assert item is not None
        written.append(item)
    assert [p["name"] for _, _, p in written] == [
        "wsgi-start",
        "wsgi-stop",
        "driver-start",
        "driver-stop",
    ]
    project, service, start = written[0]
    assert (project, service) == ("nova", "nova-api")
    assert start["base_id"] == start["parent_id"] == "8c1b6f0e-9d7a-4d55-8f4e-3b2a1c0d9e8f"
    assert start["timestamp"] == "2023-11-14T22:13:20.250000"
    assert start["info"] == {
        "request": {"method": "POST", "path": "/v2.1/servers"},
        "host": "controller",
    }
    assert written[1][2]["trace_id"] == start["trace_id"]
    assert written[3][2]["info"] == {
        "etype": "StepFailed",
        "message": "no valid host",
        "host": "controller",
    }
    assert "secret" not in json.dumps(written)
