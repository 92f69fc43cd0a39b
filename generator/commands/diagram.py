"""`specstack diagram`: declared and observed sequence diagrams, and their comparison.

- `specstack diagram [SEQUENCE|topology] [--format mermaid|plantuml]` prints the
  declared diagram (from `generated/ir.json`, as `specstack generate` left it).
- `specstack diagram --diff ID` compares the observed trace of one flow with the
  sequence it ran and marks steps missing, extra, out of order, failed or not
  as declared, in the diagram and in a text summary; exit 1 when they differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from generator.commands.flow_diagrams import compare, env, load_ir
from generator.commands.flow_events import TraceError, load_events, unknown
from generator.pipeline.render.diagrams import declared, render_sequence, render_topology, topology

EXIT_SAME, EXIT_DIFFERENT, EXIT_ERROR = 0, 1, 2


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
    try:
        result = load_events(data_dir, diff)
    except TraceError as exc:
        print(f"specstack diagram: {exc}", file=sys.stderr)
        return EXIT_ERROR
    events = result["events"]
    if not events:
        print(f"specstack diagram: {unknown(diff, result)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        comparison = compare(ir, events)
    except LookupError as exc:
        print(f"specstack diagram: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(render_sequence(e, comparison.diagram, fmt), end="")
    print(comparison.summary(), file=sys.stderr)
    return EXIT_SAME if comparison.same else EXIT_DIFFERENT
