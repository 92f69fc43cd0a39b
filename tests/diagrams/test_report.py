"""`specstack conform` writes a self-contained HTML report; headless Debian chromium shows it."""

from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from generator.commands.flow_diagrams import load_ir, observed_diagrams
from generator.pipeline import DEFAULT_TEMPLATES
from specstack_conformance import report

from ..conftest import REPO
from .conftest import Run, browser, need_plantuml, specstack


@pytest.fixture(scope="module")
def conform_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a real conformance run (boot-vm's tests) against the embedded stack."""
    need_plantuml()
    path = tmp_path_factory.mktemp("report") / "report.html"
    proc = specstack(
        "conform", "--report", str(path), "--", "-q", "-k", "test_boot_vm", timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"report: {path}" in proc.stdout
    return path


def _open(path: Path, tmp_path: Path, screenshot: Path | None = None) -> dict[str, Any]:
    """Open `path` in headless chromium; what the page showed, said and asked for."""
    errors: list[str] = []
    requests: list[str] = []
    with browser(tmp_path / "chromium-profile") as ctx:
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri(), wait_until="load")
        seq = page.locator("section.sequence[data-sequence='boot-vm']")
        rows = seq.locator("tr.step")
        shown = {
            "errors": errors,
            "requests": requests,
            "rows": rows.count(),
            "titles": [rows.nth(i).locator("td.title").inner_text() for i in range(rows.count())],
            "outcomes": [
                rows.nth(i).locator("td.outcome").inner_text() for i in range(rows.count())
            ],
            "visible": all(rows.nth(i).is_visible() for i in range(rows.count())),
            "declared_svg": seq.locator(".panel.declared svg").count(),
            "observed_svg": seq.locator(".panel.observed svg").count(),
            "svg_box": seq.locator(".panel.observed svg").first.bounding_box(),
            "text": page.locator("body").inner_text(),
        }
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
        return shown


def test_the_report_shows_all_15_steps_in_chromium_without_errors(
    conform_report: Path, tmp_path: Path
) -> None:
    html = conform_report.read_text()
    # self-contained: nothing to fetch, no scripts
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|url\(\s*["']?(https?:|//)""", html)
    keep = os.environ.get("SPECSTACK_REPORT_SCREENSHOT")
    shown = _open(conform_report, tmp_path, Path(keep) if keep else tmp_path / "report.png")
    assert shown["errors"] == []
    assert all(u.startswith("file://") for u in shown["requests"]), shown["requests"]
    ir = load_ir(REPO / "generated" / "ir.json")
    boot = next(s for s in ir.sequences if s.name == "boot-vm")
    assert shown["rows"] == 15 == len(boot.steps)
    assert shown["titles"] == [st.title for st in boot.steps]
    assert shown["visible"]
    assert all(o.endswith("pass") for o in shown["outcomes"]), shown["outcomes"]
    assert shown["declared_svg"] == 1 and shown["observed_svg"] == 1
    assert shown["svg_box"] and shown["svg_box"]["width"] > 300
    assert "matches the declared sequence" in shown["text"]


def test_a_failure_is_shown_with_its_evidence(stack_run: Run, tmp_path: Path) -> None:
    need_plantuml()
    ir = load_ir(REPO / "generated" / "ir.json")
    boot = next(s for s in ir.sequences if s.name == "boot-vm")
    events = copy.deepcopy(stack_run.events())
    events = [e for e in events if e["step"] != "9"]
    evidence = "boot-vm step 9: did not happen (no trace event)"
    tests = [
        {
            "nodeid": f"generated/conformance/test_boot_vm.py::{st.test_id.replace('-', '_')}",
            "name": st.test_id,
            "module": "test_boot_vm.py",
            "sequence": "boot-vm",
            "step": st.label,
            "doc": "",
            "outcome": "failed" if st.number == 9 else "passed",
            "duration_s": 0.001,
            "evidence": evidence if st.number == 9 else "",
        }
        for st in boot.steps
    ]
    data = {
        "started": 0,
        "duration_s": 1.0,
        "exitstatus": 1,
        "tests": tests,
        "flows": {"boot-vm": {"flow_id": stack_run.flow_id, "server_id": "x", "events": events}},
    }
    html = report.build(
        data, ir, REPO / "generated", "a test", DEFAULT_TEMPLATES, observed_diagrams
    )
    path = tmp_path / "failed.html"
    report.write(path, html)
    keep = os.environ.get("SPECSTACK_REPORT_SCREENSHOT")
    shown = _open(path, tmp_path, Path(keep).with_suffix(".failed.png") if keep else None)
    assert shown["errors"] == []
    assert shown["rows"] == 15
    assert shown["outcomes"][8] == "✘ failed"
    assert evidence in shown["text"]
    assert "missing  9     Start VM rendering via hypervisor" in shown["text"]
    assert "MISSING" in html


def test_no_report_without_results(tmp_path: Path) -> None:
    shutil.copytree(REPO / "generated", tmp_path / "generated")
    proc = specstack(
        "conform",
        "--report",
        str(tmp_path / "r.html"),
        "--",
        "-q",
        "-k",
        "no_such_test_at_all",
        cwd=tmp_path,
    )
    assert proc.returncode == 5  # pytest: nothing selected
    assert (tmp_path / "r.html").is_file()  # the report says so rather than leaving nothing
