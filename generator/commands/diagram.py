"""`specstack diagram`: declared and observed sequence diagrams, and their comparison.

- `specstack diagram [SEQUENCE|topology] [--format mermaid|plantuml]` prints the
  declared diagram (from `generated/ir.json`, as `specstack generate` left it).
- `specstack diagram --diff ID` compares the observed trace of one flow with the
  sequence it ran and marks steps missing, extra, out of order, failed or not
  as declared, in the diagram and in a text summary; exit 1 when they differ.
- `specstack diagram SEQUENCE --diff TRACE.json` does the same for an OSProfiler trace of
  any OpenStack cloud (`osprofiler trace show --json`), read through spec/traces.yaml.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from generator.commands.flow_diagrams import compare, env, load_ir
from generator.commands.flow_events import TraceError, load_events, unknown
from generator.pipeline.render.diagrams import declared, render_sequence, render_topology, topology
from specstack_runtime.ir import IR, Interaction
from specstack_runtime.tracepoints import ReportError, TraceMap, events_of_report

EXIT_SAME, EXIT_DIFFERENT, EXIT_ERROR = 0, 1, 2


def osprofiler_events(
    ir: IR, sequence: str, path: Path
) -> tuple[list[dict[str, Any]], Callable[[Interaction], bool]]:
    """The steps of `sequence` an OSProfiler trace file shows, and which steps it can show."""
    seq = next((s for s in ir.sequences if s.name == sequence), None)
    if seq is None:
        raise TraceError(f"no sequence {sequence!r} to compare {path} with")
    tmap = TraceMap(ir)
    if not tmap.points:
        raise TraceError("the spec has no traces.yaml: it does not say how OSProfiler shows a step")
    try:
        report = json.loads(path.read_text("utf-8"))
        events = events_of_report(tmap, seq, report)
    except OSError as exc:
        raise TraceError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, ReportError) as exc:
        raise TraceError(f"{path}: {exc}") from None
    if not events:
        raise TraceError(f"{path}: no trace point shows a step of {sequence}")
    return events, tmap.traced


def main(
    target: str,
    fmt: str,
    diff: str | None,
    data_dir: Path,
) -> int:
    try:
        ir = load_ir()
    except (OSError, ValueError, ImportError) as exc:
        print(
            f"specstack diagram: cannot read generated/ir.json ({exc}); run `specstack generate`",
            file=sys.stderr,
        )
        return EXIT_ERROR
    e = env()
    if diff is None:
        if target == "topology":
            print(render_topology(e, topology(ir), fmt), end="")
            return EXIT_SAME
        names = [s.name for s in ir.sequences]
        if target not in names:
            print(
                f"specstack diagram: no sequence {target!r}; the spec declares "
                f"{', '.join(names)} (or ask for `topology`)",
                file=sys.stderr,
            )
            return EXIT_ERROR
        print(render_sequence(e, declared(ir, target), fmt), end="")
        return EXIT_SAME
    observable = None
    try:
        if Path(diff).suffix == ".json" or Path(diff).is_file():
            events, observable = osprofiler_events(ir, target, Path(diff))
        else:
            result = load_events(data_dir, diff)
            events = result["events"]
            if not events:
                print(f"specstack diagram: {unknown(diff, result)}", file=sys.stderr)
                return EXIT_ERROR
    except TraceError as exc:
        print(f"specstack diagram: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        comparison = compare(ir, events, observable)
    except LookupError as exc:
        print(f"specstack diagram: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(render_sequence(e, comparison.diagram, fmt), end="")
    print(comparison.summary(), file=sys.stderr)
    return EXIT_SAME if comparison.same else EXIT_DIFFERENT
