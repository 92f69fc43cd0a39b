"""Which interactions each component performs when a sequence reaches it.

A sequence is read as one ordered list of interactions (step 7 then 7.1, 7.2 ...).
An interaction *triggers* its target: an HTTP operation, a queue message, or (for
a user step) the client. The component then performs, in order, every later
interaction that starts from it, up to the next time it is triggered. That run
of interactions is the component's *segment* for the trigger; generated code
carries it out, so adding a step to the spec adds it to the running stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

TRIGGERING_VIAS = ("user", "http", "amqp-cast", "amqp-call")


@dataclass(frozen=True)
class Linear:
    """One interaction of a sequence with its label ("7", "7.1") and place in the file."""

    label: str
    step_index: int
    then_index: int | None
    it: dict[str, Any]

    @property
    def path(self) -> list[str | int]:
        base: list[str | int] = ["sequence", "steps", self.step_index]
        return base if self.then_index is None else [*base, "then", self.then_index]


def step_labels(steps: list[dict[str, Any]]) -> list[str]:
    """Each step's label as diagrams and traces show it: its number, or, for a step inserted
    with `after: N`, N followed by a letter (6a, 6b, ...) so later steps keep their numbers."""
    labels: list[str] = []
    taken: set[str] = set()
    for step in steps:
        if "number" in step:
            label = str(step["number"])
        else:
            anchor = str(step.get("after"))
            base = anchor.rstrip("abcdefghijklmnopqrstuvwxyz") or anchor
            letter = 0
            label = f"{base}{chr(ord('a') + letter)}"
            while label in taken:
                letter += 1
                label = f"{base}{chr(ord('a') + letter)}"
        taken.add(label)
        labels.append(label)
    return labels


def linearize(steps: list[dict[str, Any]]) -> list[Linear]:
    out: list[Linear] = []
    for i, (step, label) in enumerate(zip(steps, step_labels(steps), strict=True)):
        out.append(Linear(label, i, None, step))
        for j, sub in enumerate(step.get("then", [])):
            out.append(Linear(f"{label}.{j + 1}", i, j, sub))
    return out


def trigger_of(it: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of what an interaction triggers at its target, if anything."""
    via = it["via"]
    if via == "http":
        return ("operation", it["operation"])
    if via in ("amqp-cast", "amqp-call"):
        return ("message", it["message"])
    if via == "user":
        return ("user", "")
    return None


@dataclass(frozen=True)
class Segment:
    component: str
    kind: str  # operation | message | user
    trigger: str  # operationId, message name, or the sequence name for user triggers
    sequence: str
    trigger_label: str
    source: str  # who triggered it
    items: tuple[Linear, ...]


def segments(sequence: str, steps: list[dict[str, Any]]) -> Iterator[Segment]:
    lin = linearize(steps)
    for p, entry in enumerate(lin):
        trig = trigger_of(entry.it)
        if trig is None:
            continue
        comp = entry.it["to"]
        items: list[Linear] = []
        if trig[0] == "user":
            items.append(entry)  # the client carries out the user's request itself
        for q in range(p + 1, len(lin)):
            later = lin[q]
            if later.it["to"] == comp and trigger_of(later.it) is not None:
                break
            if later.it["from"] == comp:
                items.append(later)
        name = sequence if trig[0] == "user" else trig[1]
        yield Segment(comp, trig[0], name, sequence, entry.label, entry.it["from"], tuple(items))


def shape(seg: Segment) -> tuple[tuple[Any, ...], ...]:
    """What must agree between two segments of one trigger for one handler to serve both."""
    return tuple(
        (
            item.it["to"],
            item.it["via"],
            item.it.get("operation") or item.it.get("message") or item.it.get("call"),
            item.it.get("behaviour"),
        )
        for item in seg.items
    )
