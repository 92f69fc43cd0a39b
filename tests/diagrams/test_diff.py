"""`specstack trace --format mermaid` and `specstack diagram --diff` on a real flow,
and on copies of its trace with steps removed, reordered, added, failed or rerouted."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from generator.commands.flow_diagrams import compare, load_ir

from ..conftest import REPO
from .conftest import Run, specstack, write_trace


def _events(run: Run) -> list[dict[str, Any]]:
    events = run.events()
    assert len(events) >= 15
    return events


def test_trace_draws_the_observed_flow_with_timings(stack_run: Run) -> None:
    proc = specstack(
        "trace", stack_run.flow_id, "--format", "mermaid", "--data-dir", str(stack_run.data_dir)
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("sequenceDiagram")
    ir = load_ir(REPO / "generated" / "ir.json")
    boot = next(s for s in ir.sequences if s.name == "boot-vm")
    for e in _events(stack_run):
        assert f"{e['duration_ms']:.1f} ms" in out
    assert (
        "nova_compute-)hypervisor: 9. Start VM rendering via hypervisor<br/>native API spawn ("
        in out
    )
    assert len(boot.steps) == 15 and all(f": {st.number}. " in out for st in boot.steps)
    puml = specstack(
        "trace", stack_run.flow_id, "--format", "plantuml", "--data-dir", str(stack_run.data_dir)
    )
    assert puml.returncode == 0 and puml.stdout.lstrip().startswith("@startuml")


def test_the_real_flow_matches_its_sequence(stack_run: Run) -> None:
    proc = specstack("diagram", "--diff", stack_run.flow_id, "--data-dir", str(stack_run.data_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "matches the declared sequence" in proc.stderr
    assert "MISSING" not in proc.stdout and "EXTRA" not in proc.stdout


def test_missing_extra_and_out_of_order_steps_are_marked(stack_run: Run, tmp_path: Path) -> None:
    events = _events(stack_run)
    by = {e["step"]: e for e in events}
    changed = [e for e in events if e["step"] != "9"]  # step 9 never happened
    twelve, thirteen = by["12"], by["13"]
    swapped = []
    for e in changed:  # step 13 started before step 12
        e = copy.deepcopy(e)
        if e["step"] == "12":
            e["started_at"], e["ended_at"] = thirteen["started_at"], thirteen["ended_at"]
        elif e["step"] == "13":
            e["started_at"], e["ended_at"] = twelve["started_at"], twelve["ended_at"]
        swapped.append(e)
    extra = copy.deepcopy(by["11"])  # glance asks the database again: not declared
    extra.update(
        step="11.1", started_at=extra["ended_at"] + 1e-6, ended_at=extra["ended_at"] + 2e-6
    )
    write_trace(tmp_path, [*swapped, extra])

    proc = specstack("diagram", "--diff", stack_run.flow_id, "--data-dir", str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    summary, diagram = proc.stderr, proc.stdout
    assert (
        "missing       9     Start VM rendering via hypervisor: nova-compute -> hypervisor"
        in summary
    )
    assert "extra         11.1  glance-api -> glance-db, sql" in summary
    assert "out of order  " in summary
    assert "differs: " in summary
    assert "rect rgba(224, 0, 0, 0.12)" in diagram
    assert "nova_compute--xhypervisor: MISSING: no trace event<br/>9. Start VM rendering" in diagram
    assert "EXTRA: not in the declared sequence" in diagram
    assert "OUT OF ORDER: observed after" in diagram


def test_failed_and_rerouted_steps_are_marked(stack_run: Run) -> None:
    events = copy.deepcopy(_events(stack_run))
    for e in events:
        if e["step"] == "10":
            e["status"] = "error"
            e["detail"] = {"error": "glance answered 503"}
        if e["step"] == "14.1":
            e["target"] = "neutron-l2-agent"
    cmp = compare(load_ir(REPO / "generated" / "ir.json"), events)
    kinds = {(f.kind, f.label) for f in cmp.findings}
    assert kinds == {("failed", "10"), ("mismatch", "14.1")}
    marked = {a.label: a for a in cmp.diagram.arrows if a.mark}
    assert marked["10"].note == "glance answered 503"
    assert "declared neutron-server -> neutron-dhcp-agent" in marked["14.1"].note
    assert not cmp.same


def test_an_unknown_flow_is_a_clear_error(stack_run: Run) -> None:
    """Against a stopped stack, the id is named as what is wrong (not the stack)."""
    data = str(stack_run.data_dir)
    diff = specstack("diagram", "--diff", "req-does-not-exist", "--data-dir", data)
    assert diff.returncode == 2
    trace = specstack("trace", "req-does-not-exist", "--data-dir", data)
    assert trace.returncode == 1
    for proc in (diff, trace):
        assert "no steps recorded for req-does-not-exist in " in proc.stderr, proc.stderr
        assert "no flow or nova-api request has that id" in proc.stderr
        assert "no stack answers" not in proc.stderr


def test_trace_table_piped_keeps_each_step_on_one_line(stack_run: Run) -> None:
    """Piped (no terminal, no COLUMNS), the table is as wide as it needs, not 80 columns."""
    data = str(stack_run.data_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "generator", "trace", stack_run.flow_id, "--data-dir", data],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    by_step = {ln.split()[0]: ln for ln in lines[2:] if ln.strip()}
    assert len(by_step) == len(lines[2:]) == len(_events(stack_run))  # no wrapped lines
    step6 = by_step["6"].split()
    title = "Publish provisioning request to queue; pick up provisioning request"
    assert " ".join(step6[1:10]) == title
    assert step6[10:14] == [
        "nova-api",
        "nova-scheduler",
        "amqp-cast",
        "schedule_and_build_instances",
    ]


def test_declared_diagrams_print() -> None:
    assert specstack("diagram", "delete-vm").stdout.startswith("sequenceDiagram")
    assert "@startuml" in specstack("diagram", "topology", "--format", "plantuml").stdout
    bad = specstack("diagram", "no-such-sequence")
    assert bad.returncode == 2 and "boot-vm, delete-vm" in bad.stderr
