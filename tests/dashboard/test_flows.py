"""The live flow view's rows, without a browser: declared steps lit by trace events, a
failed step red with its error, and what the view says when the flow ends."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, FileSystemLoader

from specstack_runtime.dashboard import flows
from specstack_runtime.stackinfo import StackInfo

from ..conftest import REPO

INFO = StackInfo.load(REPO / "generated" / "ir.json")
TEMPLATES = REPO / "specstack_runtime" / "dashboard" / "templates"
DECLARED = {r.label: r for r in flows.rows(INFO.sequences["boot-vm"], "dashboard")}


def event(step: str, status: str = "ok", at: float = 0.0, **detail: Any) -> dict[str, Any]:
    """A trace event of boot-vm's step `step`, as declared (an undeclared step: as 7)."""
    row = DECLARED.get(step, DECLARED["7"])
    return {
        "step": step,
        "status": status,
        "started_at": 100.0 + at,
        "ended_at": 100.0 + at + 0.002,
        "source": row.source,
        "target": row.target,
        "via": row.via,
        "name": row.name,
        "host": "controller",
        "detail": detail,
    }


def test_rows_are_the_sequence_s_steps_and_sub_steps_in_order() -> None:
    rows = flows.rows(INFO.sequences["boot-vm"], "dashboard")
    mains = [r for r in rows if r.main]
    assert [r.label for r in mains] == [str(n) for n in range(1, 16)]
    assert mains[1].title == "Validate auth data" and mains[1].name == "issueToken"
    assert [r.label for r in rows if r.label.startswith("14.")] == ["14.1", "14.2", "14.3"]
    kinds = {n: c["kind"] for n, c in INFO.components.items()}
    # the steps a client carries out (the dashboard does them itself): 1, 2, 3
    assert [r.label for r in flows.client_rows(rows, kinds)] == ["1", "2", "3"]


def test_a_failed_step_is_shown_red_with_its_error_and_ends_the_flow() -> None:
    rows = flows.rows(INFO.sequences["boot-vm"], "dashboard")
    events = [event(str(n), at=n / 100) for n in range(1, 7)]
    events.append(event("7", "error", at=0.07, error="NoValidHost: No valid host was found."))
    shown = flows.show(rows, events)
    by = {s.row.label: s for s in shown}
    assert by["6"].status == "ok" and by["6"].duration_ms == 2.0 and by["6"].offset_ms == 50.0
    assert by["8"].status == "pending" and by["8"].duration_ms is None
    assert flows.finished(shown)
    assert flows.summary(shown) == "Failed at step 7: NoValidHost: No valid host was found."

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True)
    html = env.get_template("step.html").render(s=by["7"])
    assert 'class="step error"' in html and 'data-status="error"' in html
    assert "NoValidHost: No valid host was found." in html
    assert 'sse-swap="step-7"' in html  # the live view replaces it by its SSE event


def test_a_flow_in_progress_is_not_finished() -> None:
    rows = flows.rows(INFO.sequences["boot-vm"], "dashboard")
    shown = flows.show(rows, [event(str(n), at=n) for n in range(1, 10)])
    assert not flows.finished(shown)
    assert flows.summary(shown).startswith("Stopped watching: 9 of 15 steps")
    every = flows.show(rows, [event(r.label, at=i) for i, r in enumerate(rows)])
    assert flows.finished(every) and flows.summary(every) == "Finished: all 15 steps recorded."
    assert [s.mark for s in every] == [""] * len(rows)


def test_the_last_step_seen_before_its_sub_steps_is_not_the_end() -> None:
    """Step 15 is recorded when cinder answers; attaching, completing and marking the
    instance ACTIVE (15.3-15.6) come after it: every main step seen is not yet the end."""
    rows = flows.rows(INFO.sequences["boot-vm"], "dashboard")
    late = {"15.3", "15.4", "15.5", "15.6"}
    events = [event(r.label, at=i) for i, r in enumerate(rows) if r.label not in late]
    shown = flows.show(rows, events)
    assert [s.row.label for s in flows.due(shown)] == sorted(late)
    assert not flows.finished(shown) and [s.mark for s in shown] == [""] * len(rows)
    assert flows.summary(shown) == (
        "Stopped watching: all 15 steps recorded, 4 of their sub-steps not yet;"
        " reload to look again."
    )
    # the trace quiet for QUIET_S: what is still lacking is missing, and the flow ended
    last = max(float(e["ended_at"]) for e in events)
    assert not flows.settled(events, last + flows.QUIET_S - 1.0)
    assert flows.settled(events, last + flows.QUIET_S)
    quiet = flows.show(rows, events, settled=True)
    assert flows.finished(quiet, settled=True)
    assert {s.row.label for s in quiet if s.mark == "missing"} == late
    assert flows.summary(quiet, settled=True) == (
        "Finished: all 15 steps recorded; differs from the declared sequence: 4 missing."
    )


def test_declared_versus_observed_marks_each_difference() -> None:
    """Step 12 seen before 11, sub-step 14.2 never seen, step 9 another interaction."""
    rows = flows.rows(INFO.sequences["boot-vm"], "dashboard")
    at = {r.label: float(i) for i, r in enumerate(rows)}
    at["12"] = at["11"] - 0.5  # observed before 11
    events = [event(label, at=t) for label, t in at.items() if label != "14.2"]
    nine = next(e for e in events if e["step"] == "9")
    nine.update(source="nova-compute", target="cinder-api", via="http", name="getVolume")
    shown = flows.show(rows, events, settled=True)
    marks = {s.row.label: (s.mark, s.note) for s in shown if s.mark}
    assert marks == {
        "9": ("mismatch", "observed nova-compute → cinder-api, http getVolume"),
        "12": ("out-of-order", "observed after 10.1"),
        "14.2": ("missing", "no trace event"),
    }, marks
    assert flows.summary(shown, extra_events=1, settled=True) == (
        "Finished: all 15 steps recorded; differs from the declared sequence: "
        "1 mismatch, 1 missing, 1 not declared, 1 out-of-order."
    )
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True)
    html = env.get_template("step.html").render(s=next(s for s in shown if s.row.label == "12"))
    assert 'data-mark="out-of-order"' in html and "out-of-order: observed after 10.1" in html
    # a skipped step's sub-steps are not due (step 15 with no volume asked for)
    no_volume = [event(r.label, at=i) for i, r in enumerate(rows) if not r.label.startswith("15")]
    no_volume.append(event("15", "skipped", at=99.0))
    assert [s.mark for s in flows.show(rows, no_volume)] == [""] * len(rows)
    # a flow that failed does not call the steps after the failure missing
    failed = flows.show(rows, [event("1"), event("2", "error", at=1.0, error="401")])
    assert [s.mark for s in failed] == [""] * len(rows)


def test_events_no_declared_step_names_are_listed_apart() -> None:
    rows = flows.rows(INFO.sequences["boot-vm"], "dashboard")
    events = [event("1"), event("7b", at=0.5), event("2")]
    assert [e["step"] for e in flows.extra(rows, events)] == ["7b"]


def test_the_end_of_the_watch_sends_the_whole_block_as_one_event() -> None:
    """`done` carries the final state line and every row, so a row update the browser
    dropped in a burst cannot outlive the flow's end."""
    from types import SimpleNamespace

    from specstack_runtime.dashboard.app import sse_event

    rows = flows.rows(INFO.sequences["boot-vm"], "dashboard")
    events = [event(str(n), at=n / 100) for n in range(1, 16)]
    shown = flows.show(rows, events, settled=True)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True)
    watch = SimpleNamespace(sequence="boot-vm")
    html = env.get_template("flow_body.html").render(
        watch=watch, shown=shown, live=False, summary=flows.summary(shown, settled=True)
    )
    sent = sse_event("done", html)
    assert sent.startswith("event: done\ndata: ") and sent.endswith("\n\n")
    lines = sent.splitlines()
    assert all(line.startswith("data: ") for line in lines[1:-1]) and lines[-1] == ""
    data = "\n".join(line.removeprefix("data: ") for line in lines[1:-1])
    assert data == html.rstrip("\n")  # what the browser's EventSource hands the swap
    # the sub-steps had no events here, so the quiet flow marks them missing
    state = '<p id="flow-state" aria-live="polite">Finished: all 15 steps recorded; differs'
    assert state in data and f"{len(rows) - 15} missing.</p>" in data
    for n in range(1, 16):  # each main step with its time since the first
        assert f'data-label="{n}" data-status="ok"' in data
        assert f"+{(n - 1) * 10} ms</td>" in data
