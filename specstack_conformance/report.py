"""The conformance report: one self-contained HTML file (inline CSS and SVG, no scripts,
nothing fetched) with pass or fail per step and its timings, the declared and observed
diagrams side by side, and each failure with its evidence."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from specstack_runtime.ir import IR, Sequence
from specstack_runtime.steps import in_step

_ID = re.compile(r'\bid="([^"]+)"')

#: Draws the flows a run observed, each compared with its sequence: (SVGs, Mermaid
#: sources, summaries, notes), each by sequence name. `specstack conform` passes
#: `generator.commands.flow_diagrams.observed_diagrams`.
ObservedDiagrams = Callable[
    [IR, dict[str, dict[str, Any]]],
    tuple[dict[str, str], dict[str, str], dict[str, str], list[str]],
]


def inline_svg(svg: str, prefix: str) -> Markup:
    """An SVG document as an element to place in HTML; its ids made unique in the page."""
    body = svg[svg.find("<svg") :] if "<svg" in svg else ""
    ids = set(_ID.findall(body))
    for old in sorted(ids, key=len, reverse=True):
        new = f"{prefix}-{old}"
        body = body.replace(f'id="{old}"', f'id="{new}"')
        body = body.replace(f"url(#{old})", f"url(#{new})").replace(
            f'href="#{old}"', f'href="#{new}"'
        )
    return Markup(body)  # PlantUML's own output, not user input


@dataclass
class StepRow:
    number: str  # the step label: "7", or "6a" for an inserted step
    title: str
    route: str
    via: str
    outcome: str
    test_s: float
    observed_ms: float | None
    events: list[dict[str, Any]]
    evidence: str


@dataclass
class SequenceSection:
    name: str
    title: str
    flow_id: str
    steps: list[StepRow]
    declared_svg: Markup | None
    observed_svg: Markup | None
    observed_source: str  # shown when no SVG could be drawn
    summary: str
    total_ms: float | None
    passed: int = 0
    failed: int = 0


@dataclass
class Report:
    target: str
    when: str
    duration_s: float
    exitstatus: int
    counts: dict[str, int]
    sections: list[SequenceSection]
    others: list[dict[str, Any]]  # per test module: counts
    failures: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def _step_events(events: list[dict[str, Any]], label: str) -> list[dict[str, Any]]:
    return [e for e in events if in_step(e["step"], str(label))]


def _section(
    ir: IR,
    seq: Sequence,
    tests: list[dict[str, Any]],
    flow: dict[str, Any] | None,
    declared_svg: str | None,
    observed_svgs: dict[str, str],
    observed_sources: dict[str, str],
    summaries: dict[str, str],
) -> SequenceSection:
    by_step = {t["step"]: t for t in tests if t["sequence"] == seq.name and t["step"] is not None}
    events = flow["events"] if flow else []
    rows = []
    for st in seq.steps:
        t = by_step.get(st.label, {})
        mine = _step_events(events, st.label)
        main = next((e for e in mine if str(e["step"]) == st.label), None)
        via = st.main.via + (f" +{len(st.then)}" if st.then else "")
        rows.append(
            StepRow(
                number=st.label,
                title=st.title,
                route=f"{st.main.source_component} → {st.main.target_component}",
                via=via,
                outcome=t.get("outcome", "not run"),
                test_s=float(t.get("duration_s", 0.0)),
                observed_ms=float(main["duration_ms"]) if main else None,
                events=mine,
                evidence=t.get("evidence", ""),
            )
        )
    total = None
    if events:
        total = (max(e["ended_at"] for e in events) - min(e["started_at"] for e in events)) * 1000
    obs = observed_svgs.get(seq.name)
    return SequenceSection(
        name=seq.name,
        title=seq.title,
        flow_id=flow["flow_id"] if flow else "",
        steps=rows,
        declared_svg=inline_svg(declared_svg, f"{seq.module}-declared") if declared_svg else None,
        observed_svg=inline_svg(obs, f"{seq.module}-observed") if obs else None,
        observed_source=observed_sources.get(seq.name, ""),
        summary=summaries.get(seq.name, ""),
        total_ms=total,
        passed=sum(1 for r in rows if r.outcome == "passed"),
        failed=sum(1 for r in rows if r.outcome in ("failed", "error")),
    )


def build(
    data: dict[str, Any],
    ir: IR,
    generated: Path,
    target: str,
    templates: Path,
    observed_diagrams: ObservedDiagrams,
) -> str:
    """The report's HTML from the plugin's data, the IR and the committed declared SVGs;
    `templates` holds `report/`."""
    tests: list[dict[str, Any]] = data.get("tests", [])
    flows: dict[str, dict[str, Any]] = data.get("flows", {})
    observed_svgs, observed_src, summaries, notes = observed_diagrams(ir, flows)
    sections = []
    for seq in ir.sequences:
        if not any(t["sequence"] == seq.name for t in tests) and seq.name not in flows:
            continue  # not part of this run (e.g. `-k`)
        svg_path = generated / "diagrams" / f"{seq.name}.svg"
        declared = svg_path.read_text("utf-8") if svg_path.is_file() else None
        if declared is None:
            notes.append(f"no {svg_path}: run `specstack generate` with plantuml installed")
        sections.append(
            _section(
                ir,
                seq,
                tests,
                flows.get(seq.name),
                declared,
                observed_svgs,
                observed_src,
                summaries,
            )
        )
    counts: dict[str, int] = {}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    others: dict[str, dict[str, Any]] = {}
    for t in tests:
        if t["step"] is not None:
            continue
        row = others.setdefault(
            t["module"],
            {
                "module": t["module"],
                "tests": 0,
                "passed": 0,
                "failed": 0,
                "skipped": 0,
                "seconds": 0.0,
            },
        )
        row["tests"] += 1
        key = {"passed": "passed", "skipped": "skipped"}.get(t["outcome"], "failed")
        row[key] += 1
        row["seconds"] += t["duration_s"]
    failures = [t for t in tests if t["outcome"] in ("failed", "error")]
    for f in failures:
        flow = flows.get(f["sequence"] or "")
        f["events"] = _step_events(flow["events"], f["step"]) if flow and f["step"] else []
    report = Report(
        target=target,
        when=time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(data.get("started", time.time())))
        ),
        duration_s=float(data.get("duration_s", 0.0)),
        exitstatus=int(data.get("exitstatus", -1)),
        counts=counts,
        sections=sections,
        others=sorted(others.values(), key=lambda r: r["module"]),
        failures=failures,
        notes=notes,
    )
    return render_html(report, templates)


def render_html(report: Report, templates: Path) -> str:
    env = Environment(
        loader=FileSystemLoader(str(templates)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json"] = lambda v: json.dumps(v, indent=2, default=str)
    css = (templates / "report" / "report.css").read_text("utf-8")
    return env.get_template("report/report.html.j2").render(r=report, css=Markup(css))


def write(path: Path, html: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
