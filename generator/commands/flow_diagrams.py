"""Observed flows as diagrams: the declared sequence compared with a flow's trace events.

Shared by `specstack diagram --diff`, `specstack trace --format mermaid|plantuml` and the
conformance report that `specstack conform` writes (`observed_diagrams`): a flow's events
drawn in start order (`observed`), or compared with their sequence (`compare`), marking
steps missing, extra, out of order, failed or not as declared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment

from generator.pipeline.render.diagrams import (
    MARK_TEXT,
    VIA,
    Arrow,
    Mark,
    SequenceDiagram,
    diagram_env,
    ident,
    interaction_what,
    render_sequence,
    sequence_diagram,
    what,
)
from specstack_runtime.ir import IR, Interaction, Sequence
from specstack_runtime.steps import in_declared_order, label_key
from specstack_runtime.tracepoints import declared_items


def load_ir(path: Path | None = None) -> IR:
    """The IR `specstack generate` wrote (what the running stack was generated from)."""
    if path is None:
        from generator.pipeline import REPO_ROOT

        path = Path("generated/ir.json")
        if not path.is_file():
            path = REPO_ROOT / "generated" / "ir.json"
    return IR.model_validate_json(path.read_bytes())


def env() -> Environment:
    from generator.pipeline import DEFAULT_TEMPLATES
    from generator.pipeline.render.base import template_env

    return diagram_env(template_env(DEFAULT_TEMPLATES))


def _order(label: str) -> tuple[tuple[int, str], ...]:
    return label_key(label)


def _band(label: str) -> int:
    """One number per main step (6, 6a, 7 differ), for the diagram's alternating bands."""
    number, letters = label_key(label)[0]
    return number * 27 + sum(ord(c) - ord("a") + 1 for c in letters[:1])


def _ms(event: dict[str, Any]) -> str:
    return f"{float(event.get('duration_ms', 0.0)):.1f} ms"


def _event_arrow(
    event: dict[str, Any], declared_it: Interaction | None, mark: Mark = "", note: str = ""
) -> Arrow:
    label = str(event["step"])
    tables = declared_it.tables if declared_it is not None else ()
    known = event["via"] in VIA
    via = event["via"] if known else "http"  # drawn as a plain request, named as it was seen
    return Arrow(
        label=label,
        title=str(event.get("title") or "") if "." not in label else "",
        source=ident(event["source"]),
        target=ident(event["target"]),
        via=via,
        what=what(via, event.get("name"), tables)
        if known
        else f"{event['via']} {event.get('name') or ''}".strip(),
        band=_band(label),
        timing=_ms(event),
        mark=mark if mark else ("failed" if event.get("status") == "error" else ""),
        note=note
        or (
            str(event.get("detail", {}).get("error", "")) if event.get("status") == "error" else ""
        ),
    )


def sequence_of(ir: IR, events: list[dict[str, Any]]) -> Sequence:
    names = [e.get("sequence") for e in events if e.get("sequence")]
    name = max(set(names), key=names.count) if names else None
    seq = next((s for s in ir.sequences if s.name == name), None)
    if seq is None:
        raise LookupError(f"the trace names sequence {name!r}, which the spec does not declare")
    return seq


def observed(ir: IR, events: list[dict[str, Any]]) -> SequenceDiagram:
    """The flow as it happened: events in start order, each with the time it took."""
    seq = sequence_of(ir, events)
    decl = {label: it for label, _, it in declared_items(seq)}
    ordered = sorted(events, key=lambda e: e["started_at"])
    arrows = [_event_arrow(e, decl.get(str(e["step"]))) for e in ordered]
    flow = ordered[0].get("flow_id", "") if ordered else ""
    total = (ordered[-1]["ended_at"] - ordered[0]["started_at"]) * 1000 if ordered else 0.0
    return sequence_diagram(
        ir,
        seq.name,
        f"{seq.name} observed: flow {flow} ({total:.1f} ms)",
        arrows,
        f"{len(ordered)} steps observed in {total:.1f} ms",
    )


@dataclass
class Finding:
    kind: Mark
    label: str
    text: str


@dataclass
class Comparison:
    sequence: Sequence
    flow_id: str
    diagram: SequenceDiagram
    findings: list[Finding] = field(default_factory=list)
    declared_count: int = 0
    observed_count: int = 0

    @property
    def same(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        lines = [
            f"{self.sequence.name} ({self.sequence.title}), flow {self.flow_id}: "
            f"{self.declared_count} interactions declared, {self.observed_count} observed"
        ]
        width = max((len(MARK_TEXT[f.kind]) for f in self.findings), default=0)
        for f in self.findings:
            lines.append(f"  {MARK_TEXT[f.kind].lower():<{width}}  {f.label:<5} {f.text}")
        if self.same:
            lines.append("matches the declared sequence: every step, in order")
        else:
            counts: dict[str, int] = {}
            for f in self.findings:
                counts[MARK_TEXT[f.kind].lower()] = counts.get(MARK_TEXT[f.kind].lower(), 0) + 1
            lines.append("differs: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
        return "\n".join(lines)


def _describe(it: Interaction) -> str:
    return f"{it.source_component} -> {it.target_component}, {interaction_what(it)}"


def compare(
    ir: IR,
    events: list[dict[str, Any]],
    observable: Callable[[Interaction], bool] | None = None,
) -> Comparison:
    """Mark each declared interaction as seen, missing, failed, out of order or not as
    declared, and each observed one the sequence does not declare as extra. `observable`:
    the interactions the trace can show at all (an OSProfiler trace has no user step)."""
    seq = sequence_of(ir, events)
    items = [x for x in declared_items(seq) if observable is None or observable(x[2])]
    index = {label: i for i, (label, _, _) in enumerate(items)}
    ordered = sorted(events, key=lambda e: e["started_at"])
    first: dict[str, dict[str, Any]] = {}
    extras: list[dict[str, Any]] = []
    for e in ordered:
        label = str(e["step"])
        if label in index and label not in first:
            first[label] = e
        else:
            extras.append(e)
    seen = [lbl for lbl in (str(e["step"]) for e in ordered) if lbl in first]
    seen = list(dict.fromkeys(seen))
    in_order = in_declared_order(seen, index)
    findings: list[Finding] = []
    arrows: list[Arrow] = []
    # where each extra event goes: after the last declared interaction observed before it
    extras_after: dict[str, list[dict[str, Any]]] = {}
    last = ""
    extra_ids = {id(x) for x in extras}
    for e in ordered:
        label = str(e["step"])
        if id(e) in extra_ids:
            extras_after.setdefault(last, []).append(e)
        else:
            last = label
    for x in extras_after.get("", []):
        arrows.append(_event_arrow(x, None, "extra", "not in the declared sequence"))
        findings.append(Finding("extra", str(x["step"]), _event_text(x)))
    for label, title, it in items:
        found = first.get(label)
        band = _band(label)
        if found is None and ("when" in it.bindings or "each" in it.bindings):
            continue  # a conditional interaction this flow did not take (no event for it)
        if found is None:
            arrows.append(
                Arrow(
                    label=label,
                    title=title,
                    source=ident(it.source_component),
                    target=ident(it.target_component),
                    via=it.via,
                    what=interaction_what(it),
                    band=band,
                    mark="missing",
                    note="no trace event",
                )
            )
            findings.append(
                Finding("missing", label, f"{title + ': ' if title else ''}{_describe(it)}")
            )
        else:
            e = found
            got = (e["source"], e["target"], e["via"], e.get("name"))
            want = (
                it.source_component,
                it.target_component,
                it.via,
                it.operation or it.message or it.call,
            )
            mark: Mark = ""
            note = ""
            if got != want:
                mark, note = "mismatch", f"declared {_describe(it)}"
                findings.append(Finding("mismatch", label, f"observed {_event_text(e)}; {note}"))
            elif e.get("status") == "error":
                mark = "failed"
                note = str(e.get("detail", {}).get("error", "") or "status error")
                findings.append(Finding("failed", label, f"{_describe(it)}: {note}"))
            elif label not in in_order:
                before = _observed_before(ordered, e, index)
                mark, note = (
                    "out-of-order",
                    f"observed after {before}" if before else "observed first",
                )
                findings.append(Finding("out-of-order", label, f"{_describe(it)}: {note}"))
            arrow = _event_arrow(e, it, mark, note)
            arrows.append(Arrow(**{**arrow.__dict__, "title": title, "band": band}))
        for x in extras_after.get(label, []):
            arrows.append(_event_arrow(x, None, "extra", "not in the declared sequence"))
            findings.append(Finding("extra", str(x["step"]), _event_text(x)))
    flow = str(ordered[0].get("flow_id", "")) if ordered else ""
    diagram = sequence_diagram(
        ir,
        seq.name,
        f"{seq.name}: declared vs observed flow {flow}",
        arrows,
        "matches the declared sequence" if not findings else f"{len(findings)} difference(s)",
    )
    findings.sort(key=lambda f: _order(f.label))
    return Comparison(seq, flow, diagram, findings, len(items), len(ordered))


def _event_text(e: dict[str, Any]) -> str:
    name = f" {e['name']}" if e.get("name") else ""
    return f"{e['source']} -> {e['target']}, {e['via']}{name}"


def _observed_before(
    ordered: list[dict[str, Any]], e: dict[str, Any], index: dict[str, int]
) -> str:
    prior = [str(x["step"]) for x in ordered[: ordered.index(e)] if str(x["step"]) in index]
    return prior[-1] if prior else ""


def observed_diagrams(
    ir: IR, flows: dict[str, dict[str, Any]]
) -> tuple[dict[str, str], dict[str, str], dict[str, str], list[str]]:
    """Each flow compared with its sequence: SVGs (one PlantUML run), sources, summaries."""
    from generator.pipeline.render.plantuml import RenderError, render

    sources: dict[str, str] = {}
    mermaid: dict[str, str] = {}
    summaries: dict[str, str] = {}
    for name, flow in flows.items():
        if not flow.get("events"):
            continue
        cmp = compare(ir, flow["events"])
        sources[name] = render_sequence(env(), cmp.diagram, "plantuml")
        mermaid[name] = render_sequence(env(), cmp.diagram, "mermaid")
        summaries[name] = cmp.summary()
    notes: list[str] = []
    try:
        svgs = render(sources) if sources else {}
    except RenderError as exc:
        svgs = {}
        notes.append(f"observed diagrams shown as Mermaid source: {exc}")
    return svgs, mermaid, summaries, notes
