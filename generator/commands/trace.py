"""`specstack trace ID`: the observed steps of one flow, read from the running stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from generator.commands.flow_events import TraceError, load_events


def _order(label: str) -> tuple[int, ...]:
    return tuple(int(p) for p in label.split("."))


def render_table(events: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("step", "title", "from", "to", "via", "name", "status", "ms", "host"):
        table.add_column(col, justify="right" if col in ("step", "ms") else "left")
    for e in sorted(events, key=lambda e: (_order(e["step"]), e["started_at"])):
        table.add_row(
            e["step"],
            e["title"] if "." not in e["step"] else "",
            e["source"],
            e["target"],
            e["via"],
            e.get("name") or "",
            e["status"],
            f"{e['duration_ms']:.1f}",
            e["host"],
        )
    Console(soft_wrap=True).print(table)


def main(flow_id: str, data_dir: Path, fmt: str) -> int:
    try:
        result = load_events(data_dir, flow_id)
    except TraceError as exc:
        print(f"specstack trace: {exc}", file=sys.stderr)
        return 2
    events = result["events"]
    if not events:
        print(f"specstack trace: no steps recorded for {flow_id}", file=sys.stderr)
        return 1
    if fmt == "json":
        print(json.dumps(result, indent=2))
    elif fmt in ("mermaid", "plantuml"):
        from generator.commands.flow_diagrams import env, load_ir, observed
        from generator.pipeline.render.diagrams import render_sequence

        try:
            diagram = observed(load_ir(), events)
        except (LookupError, OSError, ValueError) as exc:
            print(f"specstack trace: {exc}", file=sys.stderr)
            return 2
        print(render_sequence(env(), diagram, fmt), end="")
    else:
        render_table(events)
    return 0
