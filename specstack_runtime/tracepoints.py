"""The spec's steps as OSProfiler trace points, both ways (spec/traces.yaml says how).

- `point_of`: the trace point (name, project, service, info) a specstack step makes, so
  that OpenStack's `osprofiler trace show` displays a specstack flow;
- `events_of_report`: the steps a trace of any OpenStack cloud shows (the JSON that
  `osprofiler trace show --json` prints), as trace events of the declared sequence, so
  that `specstack diagram --diff` marks each step seen, missing or out of order.

A point shows an interaction when its name is the transport's point, it was recorded by
the component of the transport's `side` (the same OpenStack project), and its info names
what the interaction does: the operation's method and path, the message or driver method
the called function ends in, or one of the tables the statement names.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from specstack_runtime.ir import IR, Interaction, Operation, Sequence, TracePoint


@dataclass(frozen=True)
class Point:
    name: str
    project: str
    service: str
    info: dict[str, Any]


def declared_items(seq: Sequence) -> list[tuple[str, str, Interaction]]:
    """(label, title, interaction) of every declared interaction, in declared order."""
    out: list[tuple[str, str, Interaction]] = []
    for st in seq.steps:
        out.append((st.label, st.title, st.main))
        out += [(f"{st.label}.{i + 1}", it.title or "", it) for i, it in enumerate(st.then)]
    return out


def _operations(ir: IR) -> dict[str, Operation]:
    return {op.operation_id: op for api in ir.apis for op in api.operations}


def _put(info: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        info = info.setdefault(key, {})
    info[last] = value


def _get(info: Mapping[str, Any], dotted: str) -> Any:
    value: Any = info
    for key in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


class TraceMap:
    """The spec's trace points, with what matching and writing them needs looked up once."""

    def __init__(self, ir: IR) -> None:
        self.ir = ir
        self.points: dict[str, TracePoint] = dict(ir.osprofiler)
        self.operations = _operations(ir)
        self.projects = {c.name: c.project for c in ir.components}

    def traced(self, it: Interaction) -> bool:
        return it.via in self.points

    def recorder(self, it: Interaction) -> str:
        """The component that records the interaction's point."""
        tp = self.points[it.via]
        return it.target_component if tp.side == "target" else it.source_component

    def point_of(self, it: Interaction, failed: str | None = None) -> Point | None:
        """The point `it` makes (None: its transport is not traced); `failed`: its error."""
        tp = self.points.get(it.via)
        if tp is None:
            return None
        info: dict[str, Any] = {}
        what = it.operation or it.message or it.call or ""
        if tp.method and tp.path and it.operation in self.operations:
            op = self.operations[it.operation]
            _put(info, tp.method, op.method.upper())
            _put(info, tp.path, op.path)
        if tp.function:
            _put(info, tp.function, f"{it.target_component}.{what}")
        if tp.statement:
            _put(info, tp.statement, f"-- specstack: {', '.join(it.tables)}")
        if failed is not None:
            info.update(etype="StepFailed", message=failed[:300])
        who = self.recorder(it)
        return Point(tp.point, self.projects.get(who, who), who, info)

    def shows(self, it: Interaction, name: str, project: str, info: Mapping[str, Any]) -> bool:
        """Whether a point (`name`, recorded in `project`, with `info`) shows `it`."""
        tp = self.points.get(it.via)
        if tp is None or tp.point != name:
            return False
        if self.projects.get(self.recorder(it)) != project:
            return False
        if tp.method and tp.path:
            op = self.operations.get(it.operation or "")
            if op is None:
                return False
            method, path = _get(info, tp.method), _get(info, tp.path)
            return (
                str(method).upper() == op.method.upper()
                and isinstance(path, str)
                and _path_pattern(op.path).search(path.split("?")[0]) is not None
            )
        if tp.function:
            function = _get(info, tp.function)
            what = it.message or it.call or ""
            return isinstance(function, str) and (function == what or function.endswith(f".{what}"))
        if tp.statement:
            statement = _get(info, tp.statement)
            return isinstance(statement, str) and any(
                re.search(rf"\b{re.escape(t)}\b", statement) for t in it.tables
            )
        return False


@cache
def _path_pattern(template: str) -> re.Pattern[str]:
    """The request paths an operation's template matches, a prefix (the catalog's) allowed."""
    parts = re.split(r"(\{[^}/]+\})", template)
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(rf"{body}/?$")


def _nodes(report: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for child in report.get("children") or ():
        if isinstance(child, Mapping):
            yield child
            yield from _nodes(child)


def _payload_info(info: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for edge in ("start", "stop"):
        raw = info.get(f"meta.raw_payload.{name}-{edge}")
        if isinstance(raw, Mapping) and isinstance(raw.get("info"), Mapping):
            got: Mapping[str, Any] = raw["info"]
            return got
    return {}


def _stamp(info: Mapping[str, Any], name: str, edge: str) -> float | None:
    raw = info.get(f"meta.raw_payload.{name}-{edge}")
    stamp = raw.get("timestamp") if isinstance(raw, Mapping) else None
    if not isinstance(stamp, str):
        return None
    try:
        at = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f")
    except ValueError:
        return None
    return at.replace(tzinfo=datetime.UTC).timestamp()


def _times(info: Mapping[str, Any]) -> tuple[float, float] | None:
    """(start, end) in seconds: the points' own microsecond timestamps where the report
    keeps them (its `started`/`finished` are whole milliseconds, too coarse to order)."""
    name = str(info["name"])
    start, stop = _stamp(info, name, "start"), _stamp(info, name, "stop")
    if start is None:
        ms = info.get("started")
        if not isinstance(ms, int | float):
            return None
        start = float(ms) / 1000.0
        done = info.get("finished")
        stop = float(done) / 1000.0 if isinstance(done, int | float) else start
    return start, stop if stop is not None else start


class ReportError(ValueError):
    pass


def events_of_report(
    tmap: TraceMap, seq: Sequence, report: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The declared interactions of `seq` an OSProfiler report shows, as trace events.

    Points are taken in start order; each shows the first interaction it fits that is not
    yet seen, looking forward from the one the point before showed, else the first it fits
    before it (out of order); a point fitting only steps already seen (a cloud doing a step
    twice) shows nothing. Points that fit no interaction are OpenStack's own detail and are left out."""
    if not isinstance(report, Mapping) or "children" not in report:
        raise ReportError(
            "not an OSProfiler trace: expected the JSON of `osprofiler trace show --json`"
        )
    items = [(label, it) for label, _, it in declared_items(seq) if tmap.traced(it)]
    points = []
    for node in _nodes(report):
        info = node.get("info")
        if not isinstance(info, Mapping) or not isinstance(info.get("name"), str):
            continue
        at = _times(info)
        if at is not None:
            points.append((at, node, info))
    points.sort(key=lambda p: p[0][0])
    seen: set[int] = set()
    last = -1
    events: list[dict[str, Any]] = []
    for (started, finished), node, info in points:
        name, project = str(info["name"]), str(info.get("project") or "")
        payload = _payload_info(info, name)
        raw = info.get(f"meta.raw_payload.{name}-start") or {}
        fits = [
            i
            for i, (_, it) in enumerate(items)
            if i not in seen and tmap.shows(it, name, project, payload)
        ]
        if not fits:
            continue
        ahead = [i for i in fits if i > last]
        pick = ahead[0] if ahead else fits[0]
        seen.add(pick)
        last = pick
        label, it = items[pick]
        error = str(info.get("exception") or "None")
        events.append(
            {
                "sequence": seq.name,
                "flow_id": str(raw.get("base_id") or "") if isinstance(raw, Mapping) else "",
                "step": label,
                "title": it.title or "",
                "source": it.source_component,
                "target": it.target_component,
                "via": it.via,
                "name": it.operation or it.message or it.call,
                "status": "ok" if error == "None" else "error",
                "started_at": started,
                "ended_at": finished,
                "duration_ms": (finished - started) * 1000.0,
                "host": str(info.get("host") or ""),
                "request_id": str(node.get("trace_id") or ""),
                "detail": {"osprofiler": {"point": name, "project": project}}
                | ({"error": error} if error != "None" else {}),
            }
        )
    return events
