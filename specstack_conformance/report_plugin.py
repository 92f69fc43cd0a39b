"""A pytest plugin that keeps what the conformance report needs.

`specstack conform` loads it into the suite's pytest run (`-p specstack_conformance.report_plugin`)
and names a file in SPECSTACK_REPORT_DATA; at the end of the session the plugin writes
there, as JSON, every test's outcome, duration and failure text, and the trace events
of each flow the suite drove.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

DATA_ENV = "SPECSTACK_REPORT_DATA"
_STEP_TEST = re.compile(r"^test_step(\d+)([a-z]*)_")

_tests: dict[str, dict[str, Any]] = {}
_flows: dict[str, dict[str, Any]] = {}
_started = time.time()


def _entry(item: pytest.Item) -> dict[str, Any]:
    entry = _tests.get(item.nodeid)
    if entry is None:
        module = getattr(item, "module", None)
        m = _STEP_TEST.match(item.name)
        entry = {
            "nodeid": item.nodeid,
            "name": item.name,
            "module": item.nodeid.split("::")[0].rsplit("/", 1)[-1],
            "sequence": getattr(module, "SEQUENCE", None),
            "step": f"{int(m.group(1))}{m.group(2)}" if m else None,
            "doc": (getattr(getattr(item, "obj", None), "__doc__", None) or "").strip(),
            "outcome": "not run",
            "duration_s": 0.0,
            "evidence": "",
        }
        _tests[item.nodeid] = entry
    return entry


def pytest_collection_finish(session: pytest.Session) -> None:
    for item in session.items:  # what runs, after `-k` and other deselection
        _entry(item)


def pytest_runtest_call(item: pytest.Item) -> None:
    """The flows a test was given (FlowRecord fixtures), with their observed events."""
    for value in getattr(item, "funcargs", {}).values():
        if all(hasattr(value, a) for a in ("sequence", "flow_id", "events", "server_id")):
            _flows[value.sequence] = {
                "sequence": value.sequence,
                "flow_id": value.flow_id,
                "server_id": value.server_id,
                "events": value.events,
            }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    entry = _entry(item)
    if report.when == "call":
        entry["duration_s"] = round(report.duration, 4)
        entry["outcome"] = "passed" if report.passed else report.outcome
    elif report.failed:  # setup or teardown: the test could not be judged
        entry["outcome"] = "error"
    elif report.skipped and report.when == "setup":
        entry["outcome"] = "skipped"
    if report.failed or report.skipped:
        text = report.longreprtext.strip()
        if report.skipped and isinstance(report.longrepr, tuple):
            text = str(report.longrepr[2])
        entry["evidence"] = (entry["evidence"] + "\n\n" + text).strip()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(DATA_ENV)
    if not path:
        return
    body = {
        "started": _started,
        "duration_s": round(time.time() - _started, 3),
        "exitstatus": int(exitstatus),
        "tests": list(_tests.values()),
        "flows": _flows,
    }
    Path(path).write_text(json.dumps(body, default=str), encoding="utf-8")
