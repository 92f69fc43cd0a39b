"""Step labels as the deck writes them: "7", "7.2", and "6a" for a step inserted after 6."""

from __future__ import annotations

import re

_PART = re.compile(r"^(\d+)([a-z]*)$")


def label_key(label: str) -> tuple[tuple[int, str], ...]:
    """Sorts labels in flow order: 6 < 6.1 < 6a < 6a.1 < 7."""
    out: list[tuple[int, str]] = []
    for part in str(label).split("."):
        m = _PART.match(part)
        out.append((int(m.group(1)), m.group(2)) if m else (0, part))
    return tuple(out)


def in_step(event_step: str, label: str) -> bool:
    """Whether a trace event's step label belongs to step `label` (its main or a sub-step)."""
    step = str(event_step)
    return step == label or step.startswith(label + ".")
