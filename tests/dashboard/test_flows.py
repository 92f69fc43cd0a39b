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


def event(step: str, status: str = "ok", at: float = 0.0, **detail: Any) -> dict[str, Any]:
    return {
        "step": step,
        "status": status,
        "started_at": 100.0 + at,
        "ended_at": 100.0 + at + 0.002,
        "source": "nova-api",
        "target": "keystone",
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
    every = flows.show(rows, [event(str(n), at=n) for n in range(1, 16)])
    assert flows.finished(every) and flows.summary(every) == "Finished: all 15 steps recorded."


def test_events_no_declared_step_names_are_listed_apart() -> None:
    rows = flows.rows(INFO.sequences["boot-vm"], "dashboard")
    events = [event("1"), event("7b", at=0.5), event("2")]
    assert [e["step"] for e in flows.extra(rows, events)] == ["7b"]
