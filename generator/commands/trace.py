"""`specstack trace ID`: the observed steps of one flow, read from the running stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from generator.commands.flow_events import TraceError, load_events, unknown


def _order(label: str) -> tuple[int, ...]:
    return tuple(int(p) for p in label.split("."))


COLUMNS = ("step", "title", "from", "to", "via", "name", "status", "ms", "host")


def render_table(events: list[dict[str, Any]], console: Console | None = None) -> None:
    """The steps as a table: fitted to a terminal (cells wrap where it is too narrow),
    or, piped, as wide as it needs, one line per step."""
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    rows = [
        (
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
        for e in sorted(events, key=lambda e: (_order(e["step"]), e["started_at"]))
    ]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for col in COLUMNS:
        if col in ("step", "ms"):
            table.add_column(col, justify="right", no_wrap=True)
        else:  # wrapped (at spaces, else anywhere) when the terminal is too narrow
            table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = console or Console(highlight=False)
    if not console.is_terminal:
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        console = Console(file=console.file, width=natural, highlight=False, color_system=None)
    console.print(table)


def main(flow_id: str, data_dir: Path, fmt: str) -> int:
    try:
        result = load_events(data_dir, flow_id)
    except TraceError as exc:
        print(f"specstack trace: {exc}", file=sys.stderr)
        return 2
    events = result["events"]
    if not events:
        print(f"specstack trace: {unknown(flow_id, result)}", file=sys.stderr)
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
