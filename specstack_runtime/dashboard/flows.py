"""A flow as the dashboard shows it: the declared steps of its sequence, each lit by its
trace events as they arrive.

The dashboard carries out the client's own steps (the user's request, the token, the
API request) and records them here; every later step comes from the stack's trace
endpoint (`/specstack/trace/{id}`), read with the user's token.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from specstack_runtime.steps import in_declared_order, in_step, label_key


@dataclass(frozen=True)
class Row:
    """One declared interaction of a sequence: a step, or one of its sub-steps."""

    label: str
    title: str
    source: str
    target: str
    via: str
    name: str | None
    main: bool

    @property
    def anchor(self) -> str:
        return "step-" + self.label.replace(".", "-")


@dataclass
class Shown:
    """A row with what the trace says about it."""

    row: Row
    status: str = "pending"  # pending | ok | error | skipped
    duration_ms: float | None = None
    offset_ms: float | None = None  # since the flow's first event
    error: str | None = None
    host: str | None = None
    source: str | None = None  # who carried it out, as observed
    target: str | None = None
    # declared versus observed: "" (as declared), "mismatch" (another interaction than the
    # declared one), "out-of-order", or "missing" (the flow ended without it)
    mark: str = ""
    note: str = ""

    def key(self) -> tuple[str, float | None, str | None, str]:
        return (self.status, self.duration_ms, self.error, self.mark)


@dataclass
class Watch:
    """A flow the dashboard started (or was asked to show) for one session."""

    flow_id: str
    sequence: str
    local: list[dict[str, Any]] = field(default_factory=list)
    server_id: str | None = None
    started_at: float = field(default_factory=time.time)
    extra: list[dict[str, Any]] = field(default_factory=list)  # events no declared step names
    settled: bool = False  # the trace has been quiet for QUIET_S (see `settled`)

    def record(
        self,
        row: Row,
        started: float,
        status: str = "ok",
        error: str | None = None,
        host: str = "dashboard",
    ) -> None:
        self.local.append(
            {
                "flow_id": self.flow_id,
                "sequence": self.sequence,
                "step": row.label,
                "title": row.title,
                "source": row.source,
                "target": row.target,
                "via": row.via,
                "name": row.name,
                "status": status,
                "started_at": started,
                "ended_at": time.time(),
                "host": host,
                "detail": {"error": error} if error else {},
            }
        )


def rows(sequence: dict[str, Any], client: str) -> list[Row]:
    """The declared rows of a sequence; steps the spec gives to a client are the
    dashboard's when it runs them (`client` replaces the declared client)."""
    out: list[Row] = []
    for step in sequence["steps"]:
        parts = [(step["label"], step["main"], step["title"])]
        parts += [
            (f"{step['label']}.{i}", sub, sub.get("title") or step["title"])
            for i, sub in enumerate(step.get("then") or (), start=1)
        ]
        for label, part, title in parts:
            out.append(
                Row(
                    label=str(label),
                    title=str(title),
                    source=part["source_component"],
                    target=part["target_component"],
                    via=part["via"],
                    name=part.get("operation") or part.get("message") or part.get("call"),
                    main="." not in str(label),
                )
            )
    return out


def client_rows(declared: list[Row], kinds: dict[str, str]) -> list[Row]:
    """The rows a client carries out: those from the user or from a client component
    (the user's request, the token, the API request)."""
    return [r for r in declared if kinds.get(r.source) in ("actor", "client")]


#: How long the trace of a flow must stay quiet before a declared row it lacks counts as
#: missing: the last step's sub-steps (attach, complete, mark ACTIVE) are recorded after
#: the step itself, later still on a loaded machine.
QUIET_S = 10.0


def settled(events: list[dict[str, Any]], now: float) -> bool:
    """No event has ended for QUIET_S: whatever the flow still lacks is not coming."""
    return bool(events) and now - max(float(e["ended_at"]) for e in events) >= QUIET_S


def show(
    declared: list[Row],
    events: list[dict[str, Any]],
    clients: Collection[str] = (),
    settled: bool = False,
) -> list[Shown]:
    """Each declared row with its first event (sorted by the flow's order), marked where
    the observed flow differs from the declared one. `clients`: the client components,
    which stand for one another (the dashboard carries out the CLI's declared steps).
    `settled`: the flow has gone quiet, so a due row without an event is marked missing."""
    first = min((float(e["started_at"]) for e in events), default=0.0)
    by_step: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: float(e["started_at"])):
        by_step.setdefault(str(e["step"]), e)
    out: list[Shown] = []
    for row in declared:
        found = by_step.get(row.label)
        if found is None:
            out.append(Shown(row))
            continue
        e = found
        started, ended = float(e["started_at"]), float(e["ended_at"])
        detail = e.get("detail") or {}
        out.append(
            Shown(
                row,
                status=str(e["status"]),
                duration_ms=round((ended - started) * 1000.0, 1),
                offset_ms=round((started - first) * 1000.0, 1),
                error=str(detail["error"])
                if e["status"] == "error" and "error" in detail
                else None,
                host=str(e.get("host") or ""),
                source=str(e.get("source") or row.source),
                target=str(e.get("target") or row.target),
            )
        )
    _mark(out, by_step, clients, settled)
    return out


def due(shown: list[Shown]) -> list[Shown]:
    """The rows still to come: no event yet, in a step that was not skipped (a skipped
    step's own interactions are not due), in a flow that has not failed."""
    if any(s.status == "error" for s in shown):
        return []
    skipped = {s.row.label for s in shown if s.status == "skipped"}
    return [s for s in shown if s.status == "pending" and s.row.label.split(".")[0] not in skipped]


def _mark(
    shown: list[Shown],
    by_step: dict[str, dict[str, Any]],
    clients: Collection[str],
    settled: bool,
) -> None:
    index = {s.row.label: i for i, s in enumerate(shown)}
    seen = [label for label in by_step if label in index]  # in observed order
    in_order = in_declared_order(seen, index)
    # the flow went quiet with every main step seen: what it still lacks is missing
    missing = {s.row.label for s in due(shown)} if settled and _mains_seen(shown) else set()
    for s in shown:
        e = by_step.get(s.row.label)
        row = s.row
        if e is None:
            if row.label in missing:
                s.mark, s.note = "missing", "no trace event"
            continue
        got = (e.get("source"), e.get("target"), e.get("via"), e.get("name"))
        want = (row.source, row.target, row.via, row.name)
        if any(
            g != w and not (g in clients and w in clients) for g, w in zip(got, want, strict=True)
        ):
            s.mark = "mismatch"
            s.note = f"observed {got[0]} → {got[1]}, {got[2]} {got[3] or ''}".rstrip()
        elif row.label not in in_order:
            before = seen[: seen.index(row.label)]
            s.mark = "out-of-order"
            s.note = f"observed after {before[-1]}" if before else "observed first"


def differences(shown: list[Shown], extra_events: int = 0) -> str:
    """The marks, counted: '' when the observed flow is the declared one."""
    counts: dict[str, int] = {}
    for s in shown:
        if s.mark:
            counts[s.mark] = counts.get(s.mark, 0) + 1
    if extra_events:
        counts["not declared"] = extra_events
    return ", ".join(f"{n} {mark}" for mark, n in sorted(counts.items()))


def _mains_seen(shown: list[Shown]) -> bool:
    mains = [s for s in shown if s.row.main]
    return bool(mains) and all(s.status != "pending" for s in mains)


def finished(shown: list[Shown], settled: bool = False) -> bool:
    """A step failed (nothing later will come), or every main step has been seen and so
    has every row due, or the flow went quiet (`settled`) with every main step seen."""
    if any(s.status == "error" for s in shown):
        return True
    return _mains_seen(shown) and (settled or not due(shown))


def summary(shown: list[Shown], extra_events: int = 0, settled: bool = False) -> str:
    """What the live view says when the flow has ended (or the watch gave up)."""
    failed = [s for s in shown if s.status == "error"]
    if failed:
        return f"Failed at step {failed[0].row.label}: {failed[0].error or 'error'}"
    mains = [s for s in shown if s.row.main]
    seen = sum(1 for s in mains if s.status != "pending")
    if finished(shown, settled):
        differ = differences(shown, extra_events)
        return f"Finished: all {len(mains)} steps recorded" + (
            f"; differs from the declared sequence: {differ}." if differ else "."
        )
    if mains and seen == len(mains):
        return (
            f"Stopped watching: all {seen} steps recorded, {len(due(shown))} of their"
            " sub-steps not yet; reload to look again."
        )
    return f"Stopped watching: {seen} of {len(mains)} steps recorded so far; reload to look again."


def extra(declared: list[Row], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Observed events no declared row names (the declared-versus-observed difference)."""
    labels = {r.label for r in declared}
    out = [e for e in events if str(e["step"]) not in labels]
    return sorted(out, key=lambda e: label_key(str(e["step"])))


def of_step(label: str, shown: list[Shown]) -> list[Shown]:
    return [s for s in shown if in_step(s.row.label, label)]
