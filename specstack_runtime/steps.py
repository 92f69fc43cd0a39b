"""Step labels as the deck writes them: "7", "7.2", and "6a" for a step inserted after 6."""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping

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


def in_declared_order(seen: list[str], index: Mapping[str, int]) -> set[str]:
    """Of the labels in the order they were observed, those of one longest run that keeps
    the declared order (`index`: each label's declared position); the rest were observed
    out of order. A longest run marks the fewest steps: one late step is one mark."""
    positions = [index[label] for label in seen]
    tails: list[int] = []  # the smallest last position of a run of each length
    tail_at: list[int] = []  # where in `seen` that run ends
    prev = [-1] * len(positions)
    for i, v in enumerate(positions):
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tail_at.append(i)
        else:
            tails[k] = v
            tail_at[k] = i
        prev[i] = tail_at[k - 1] if k > 0 else -1
    keep: set[str] = set()
    i = tail_at[-1] if tail_at else -1
    while i >= 0:
        keep.add(seen[i])
        i = prev[i]
    return keep
