"""Cross-references between spec files, and the deck's rules on communication types."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.load import LoadedSpec, PathElem, SpecFile, to_plain
from generator.pipeline.validate.names import hint
from generator.pipeline.validate.openapi import operations_of
from generator.pipeline.validate.tables import compound_indexes

# Which fields each communication type takes (beyond from/to/via/summary).
VIA_FIELDS = {
    "user": set(),
    "http": {"operation"},
    "amqp-cast": {"message"},
    "amqp-call": {"message"},
    "sql": {"tables"},
    "native": {"call"},
}
STEP_ONLY_FIELDS = {
    "after",
    "from",
    "to",
    "via",
    "summary",
    "number",
    "title",
    "then",
    "behaviour",
    "with",
    "as",
}
NOT_PLACED = {"actor"}
NO_CONSUMERS = {"actor", "client", "database", "queue", "hypervisor"}


@dataclass
class Index:
    """Everything declared, with the file each declaration came from."""

    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    components_file: SpecFile | None = None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    topology_file: SpecFile | None = None
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages_file: SpecFile | None = None
    drivers: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, Any] = field(default_factory=dict)
    driver_types: dict[str, Any] = field(default_factory=dict)
    hypervisors_file: SpecFile | None = None
    operations: dict[str, set[str]] = field(default_factory=dict)  # api name -> operationIds
    api_files: dict[str, SpecFile] = field(default_factory=dict)


def build_index(spec: LoadedSpec) -> Index:
    ix = Index()
    if f := spec.one("components"):
        ix.components_file, ix.components = f, to_plain(f.data)["components"]
    if f := spec.one("topology"):
        ix.topology_file, ix.nodes = f, to_plain(f.data)["topology"]["nodes"]
    if f := spec.one("messages"):
        ix.messages_file, ix.messages = f, to_plain(f.data)["messages"]
    if f := spec.one("hypervisors"):
        data = to_plain(f.data)
        ix.hypervisors_file = f
        ix.drivers = data["hypervisors"]["drivers"]
        ix.methods = data["hypervisors"]["interface"]["methods"]
        ix.driver_types = data.get("types") or {}
    for f in spec.of_kind("openapi"):
        doc = to_plain(f.data)
        ix.api_files[f.stem] = f
        ix.operations[f.stem] = {
            op["operationId"] for _, _, op in operations_of(doc) if "operationId" in op
        }
    return ix


def check_xrefs(spec: LoadedSpec) -> list[Diagnostic]:
    ix = build_index(spec)
    diags = _components(ix) + _topology(ix) + _messages(ix) + _hypervisors(ix)
    diags += _apis(ix)
    seen_names: dict[str, SpecFile] = {}
    for f in spec.of_kind("sequence"):
        diags += _sequence(ix, f, seen_names)
    if not diags:
        diags += _segments_agree(spec)
    return diags


def _segments_agree(spec: LoadedSpec) -> list[Diagnostic]:
    """One trigger, one handler: where a trigger recurs, its component must do the same."""
    from generator.pipeline import segments as sg

    first: dict[tuple[str, str, str], tuple[sg.Segment, SpecFile]] = {}
    diags: list[Diagnostic] = []
    for f in spec.of_kind("sequence"):
        seq = to_plain(f.data)["sequence"]
        for seg in sg.segments(seq["name"], seq["steps"]):
            if not seg.items or seg.kind == "user":
                continue
            key = (seg.component, seg.kind, seg.trigger)
            if key not in first:
                first[key] = (seg, f)
                continue
            other, _ = first[key]
            if sg.shape(other) != sg.shape(seg):
                trig = next(i for i in sg.linearize(seq["steps"]) if i.label == seg.trigger_label)
                diags.append(
                    f.at(
                        trig.path,
                        f"step {seg.trigger_label}: '{seg.component}' handles {seg.trigger} with "
                        f"other steps here than at step {other.trigger_label} of {other.sequence} "
                        f"({', '.join(i.label for i in seg.items)} vs "
                        f"{', '.join(i.label for i in other.items)}); one trigger, one handler",
                    )
                )
    return diags


def _components(ix: Index) -> list[Diagnostic]:
    f = ix.components_file
    if f is None:
        return []
    diags: list[Diagnostic] = []
    catalog_types: dict[str, str] = {}
    table_owners: dict[str, str] = {}  # table name -> the database that has it
    ports_used: dict[tuple[str, int], str] = {}
    for name, c in ix.components.items():
        base: list[PathElem] = ["components", name]
        if c["kind"] not in NOT_PLACED and not c.get("nodes"):
            diags.append(
                f.at(base, f"component '{name}' is not placed on any topology node", key=True)
            )
        if c["kind"] == "hypervisor":
            for i, node in enumerate(c.get("nodes", [])):
                if node in ix.nodes and not ix.nodes[node].get("driver"):
                    diags.append(
                        f.at(
                            [*base, "nodes", i],
                            f"hypervisor '{name}' is placed on node '{node}', which has no driver",
                        )
                    )
        if c.get("port") and c["kind"] in ("api", "client"):
            for node in c.get("nodes", []):
                other = ports_used.get((node, c["port"]))
                if other:
                    diags.append(
                        f.at(
                            [*base, "port"],
                            f"port {c['port']} on node '{node}' is already used by '{other}'",
                        )
                    )
                ports_used[(node, c["port"])] = name
        for i, node in enumerate(c.get("nodes", [])):
            if node not in ix.nodes:
                diags.append(
                    f.at(
                        [*base, "nodes", i],
                        f"component '{name}': unknown node '{node}'{hint(node, ix.nodes, 'nodes')}",
                    )
                )
        if (api := c.get("api")) and api not in ix.api_files:
            diags.append(
                f.at([*base, "api"], f"component '{name}': no API document apis/{api}.yaml")
            )
        if cat := c.get("catalog"):
            if cat["type"] in catalog_types:
                diags.append(
                    f.at(
                        [*base, "catalog", "type"],
                        f"catalog type '{cat['type']}' is already used by "
                        f"'{catalog_types[cat['type']]}'",
                    )
                )
            catalog_types[cat["type"]] = name
        for table in c.get("tables") or {} if c["kind"] == "database" else {}:
            if table in table_owners:  # one schema could not hold both (tests/db does so)
                diags.append(
                    f.at(
                        [*base, "tables", table],
                        f"table '{table}' is already a table of '{table_owners[table]}': "
                        "a table's name is unique across the stack's databases",
                        key=True,
                    )
                )
            table_owners.setdefault(table, name)
            diags += compound_indexes(f, [*base, "tables", table], table, c["tables"][table] or {})
        if db := c.get("database"):
            target = ix.components.get(db)
            if target is None:
                diags.append(
                    f.at(
                        [*base, "database"],
                        f"component '{name}': unknown database '{db}'"
                        f"{hint(db, _of_kind(ix, 'database'), 'databases')}",
                    )
                )
            elif target["kind"] != "database":
                diags.append(
                    f.at([*base, "database"], f"'{db}' is a {target['kind']}, not a database")
                )
            elif target["project"] != c["project"]:
                diags.append(
                    f.at(
                        [*base, "database"],
                        f"component '{name}' (project {c['project']}) cannot own '{db}' "
                        f"(project {target['project']}): each project has its own database",
                    )
                )
        for msg in c.get("consumes", {}):
            where: list[PathElem] = [*base, "consumes", msg]
            if msg not in ix.messages:
                known = hint(msg, ix.messages, "messages")
                diags.append(
                    f.at(where, f"component '{name}': unknown message '{msg}'{known}", key=True)
                )
            elif c["kind"] in NO_CONSUMERS:
                diags.append(f.at(where, f"a {c['kind']} cannot consume queue messages", key=True))
            # a consumer's on_failure steps are interactions from it, checked as a sequence's
            for i, step in enumerate(c["consumes"][msg].get("on_failure") or []):
                label = f"{name} {msg} on_failure step {i + 1}"
                at: list[PathElem] = [*where, "on_failure", i]
                diags += _interaction(ix, f, at, {**step, "from": name}, label)
    return diags


def _of_kind(ix: Index, kind: str) -> list[str]:
    return [n for n, c in ix.components.items() if c.get("kind") == kind]


def _topology(ix: Index) -> list[Diagnostic]:
    f = ix.topology_file
    if f is None:
        return []
    diags: list[Diagnostic] = []
    for name, node in ix.nodes.items():
        base: list[PathElem] = ["topology", "nodes", name]
        if (drv := node.get("driver")) and drv not in ix.drivers:
            diags.append(
                f.at(
                    [*base, "driver"],
                    f"node '{name}': unknown hypervisor driver '{drv}'"
                    f"{hint(drv, ix.drivers, 'drivers')}",
                )
            )
        lo, hi, count = node.get("min", 1), node.get("max"), node.get("count", 1)
        if count < lo or (hi is not None and (count > hi or lo > hi)):
            diags.append(
                f.at(
                    [*base, "count"], f"node '{name}': count {count} is outside min..max {lo}..{hi}"
                )
            )
    return diags


def _messages(ix: Index) -> list[Diagnostic]:
    f = ix.messages_file
    if f is None:
        return []
    diags: list[Diagnostic] = []
    for name in ix.messages:
        consumers = [c for c, comp in ix.components.items() if name in comp.get("consumes", [])]
        if not consumers:
            diags.append(
                f.at(
                    ["messages", name],
                    f"message '{name}' is not consumed by any component",
                    key=True,
                )
            )
            continue
        projects = sorted({ix.components[c]["project"] for c in consumers})
        if len(projects) > 1:
            diags.append(
                f.at(
                    ["messages", name],
                    f"message '{name}' is consumed in several projects ({', '.join(projects)}): "
                    "AMQP stays within a project",
                    key=True,
                )
            )
    return diags


def _hypervisors(ix: Index) -> list[Diagnostic]:
    f = ix.hypervisors_file
    if f is None:
        return []
    diags: list[Diagnostic] = []
    for mname, method in ix.methods.items():
        base: list[PathElem] = ["hypervisors", "interface", "methods", mname]
        uses: list[tuple[list[PathElem], Any]] = [
            ([*base, "params", p], t) for p, t in method["params"].items()
        ]
        uses.append(([*base, "returns"], method["returns"]))
        for path, use in uses:
            for tname in _type_names(use):
                if tname not in ix.driver_types:
                    known = hint(tname, ix.driver_types, "types")
                    diags.append(
                        f.at(path, f"driver method '{mname}': unknown type '{tname}'{known}")
                    )
    return diags


def _type_names(use: Any) -> list[str]:
    if isinstance(use, str):
        return [use]
    if isinstance(use, dict) and isinstance(use.get("items"), str | dict):
        return _type_names(use["items"])
    return []


def _apis(ix: Index) -> list[Diagnostic]:
    used = {c.get("api") for c in ix.components.values()}
    users: dict[str, str] = {}
    diags: list[Diagnostic] = []
    for cname, c in ix.components.items():
        api = c.get("api")
        if api and api in users and ix.components_file:
            diags.append(
                ix.components_file.at(
                    ["components", cname, "api"],
                    f"API '{api}' is already served by '{users[api]}'",
                )
            )
        if api:
            users.setdefault(api, cname)
    for name, f in ix.api_files.items():
        if name not in used:
            diags.append(f.at([], f"API document '{name}' is not served by any component"))
    return diags


def _sequence(ix: Index, f: SpecFile, seen: dict[str, SpecFile]) -> list[Diagnostic]:
    seq = to_plain(f.data)["sequence"]
    diags: list[Diagnostic] = []
    if seq["name"] != f.stem:
        diags.append(
            f.at(
                ["sequence", "name"],
                f"sequence '{seq['name']}' must be named after its file '{f.stem}'",
            )
        )
    if seq["name"] in seen:
        diags.append(f.at(["sequence", "name"], f"sequence '{seq['name']}' is declared twice"))
    seen[seq["name"]] = f
    diags += _numbering(f, seq["steps"])
    diags += _error_steps(f, seq)
    from generator.pipeline.segments import step_labels

    for i, (step, lbl) in enumerate(zip(seq["steps"], step_labels(seq["steps"]), strict=True)):
        path: list[PathElem] = ["sequence", "steps", i]
        label = f"step {lbl}"
        diags += _interaction(ix, f, path, step, label)
        for j, sub in enumerate(step.get("then", [])):
            diags += _interaction(ix, f, [*path, "then", j], sub, f"{label}.{j + 1}")
    return diags


def _error_steps(f: SpecFile, seq: dict[str, Any]) -> list[Diagnostic]:
    """Each error path provokes a failure at a step the sequence has."""
    numbers = sorted({s["number"] for s in seq["steps"] if "number" in s})
    diags: list[Diagnostic] = []
    for i, err in enumerate(seq.get("errors", [])):
        if err["step"] not in numbers:
            steps = f"{numbers[0]} to {numbers[-1]}" if numbers else "none"
            diags.append(
                f.at(
                    ["sequence", "errors", i, "step"],
                    f"error path '{err['name']}': no step {err['step']} in this sequence "
                    f"(its steps are {steps})",
                )
            )
    return diags


def _numbering(f: SpecFile, steps: list[dict[str, Any]]) -> list[Diagnostic]:
    """Numbered steps run 1..N, each once, in order; an inserted step (`after: N`) follows
    step N (or another step inserted after N) in the file. One message per real problem."""
    from generator.pipeline.segments import step_labels

    diags: list[Diagnostic] = []
    first_at: dict[int, int] = {}
    numbered = [(i, s["number"]) for i, s in enumerate(steps) if "number" in s]

    def at(i: int) -> list[PathElem]:
        return ["sequence", "steps", i, "number"]

    for i, n in numbered:
        if n in first_at:
            line = f.locate(at(first_at[n])).line
            diags.append(f.at(at(i), f"duplicate step number {n} (first used on line {line})"))
        first_at.setdefault(n, i)
    numbers = [n for _, n in numbered]
    if numbers and numbers[0] != 1 and 1 not in first_at:
        diags.append(
            f.at(at(numbered[0][0]), f"steps must start at 1, but the first is {numbers[0]}")
        )
    present = sorted(first_at)
    for missing in range(2, (present[-1] if present else 0) + 1):
        if missing not in first_at:
            after = min(n for n in present if n > missing)
            diags.append(
                f.at(at(first_at[after]), f"gap in step numbering: step {missing} is missing")
            )
    unique = [n for i, n in numbered if first_at[n] == i]
    for a, b in itertools.pairwise(unique):
        if b < a:
            diags.append(
                f.at(at(first_at[b]), f"steps out of order: step {b} comes after step {a}")
            )
            break
    labels = step_labels(steps)
    for i, step in enumerate(steps):
        if "after" not in step:
            continue
        anchor = str(step["after"])
        before = labels[i - 1] if i else None
        if anchor not in labels[:i]:
            known = ", ".join(labels[:i]) or "none"
            diags.append(
                f.at(
                    ["sequence", "steps", i, "after"],
                    f"after: {anchor} is not a step before this one (steps before it: {known})",
                )
            )
        elif before is None or not (
            before == anchor
            or before.rstrip("abcdefghijklmnopqrstuvwxyz")
            == anchor.rstrip("abcdefghijklmnopqrstuvwxyz")
        ):
            diags.append(
                f.at(
                    ["sequence", "steps", i, "after"],
                    f"a step inserted after {anchor} must come right after it in the file "
                    f"(it follows step {before})",
                )
            )
    return diags


def _interaction(
    ix: Index, f: SpecFile, path: list[PathElem], it: dict[str, Any], label: str
) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    ends: dict[str, dict[str, Any]] = {}
    for end in ("from", "to"):
        name = it[end]
        if name not in ix.components:
            known = hint(name, ix.components, "components")
            diags.append(f.at([*path, end], f"{label}: unknown component '{name}'{known}"))
        else:
            ends[end] = ix.components[name]
    via = it["via"]
    for key in sorted(set(it) - STEP_ONLY_FIELDS - VIA_FIELDS[via]):
        diags.append(
            f.at([*path, key], f"{label}: '{key}' does not apply to a {via} step", key=True)
        )
    if len(ends) < 2:
        return diags
    src, dst = ends["from"], ends["to"]
    rule = _RULES[via]
    problems = rule(ix, it, src, dst)
    if not problems and it["from"] == it["to"]:
        problems = [("to", f"a step cannot go from '{it['to']}' to itself")]
    diags += [f.at([*path, where], f"{label}: {msg}") for where, msg in problems]
    return diags


Problem = tuple[str, str]  # (field to point at, message)


def _user(ix: Index, it: dict[str, Any], src: dict[str, Any], dst: dict[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    if src["kind"] != "actor":
        out.append(
            ("from", f"a user step starts from an actor, not a {src['kind']} ('{it['from']}')")
        )
    if dst["kind"] != "client":
        out.append(("to", f"a user step goes to a client, not a {dst['kind']} ('{it['to']}')"))
    return out


def _http(ix: Index, it: dict[str, Any], src: dict[str, Any], dst: dict[str, Any]) -> list[Problem]:
    api = dst.get("api")
    if api is None:
        return [("to", f"'{it['to']}' has no HTTP API (it is a {dst['kind']})")]
    out: list[Problem] = []
    if api in ix.operations and it["operation"] not in ix.operations[api]:
        out.append(
            (
                "operation",
                f"operation '{it['operation']}' is not in the {api} API of '{it['to']}'"
                f"{hint(it['operation'], ix.operations[api], 'operations')}",
            )
        )
    if src["project"] == dst["project"]:
        out.append(
            (
                "via",
                f"HTTP goes between projects, but '{it['from']}' and '{it['to']}' are both in "
                f"project {src['project']}: use amqp-cast or amqp-call",
            )
        )
    return out


def _amqp(ix: Index, it: dict[str, Any], src: dict[str, Any], dst: dict[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    if src["project"] != dst["project"]:
        out.append(
            (
                "via",
                f"AMQP stays within a project, but '{it['from']}' is in {src['project']} and "
                f"'{it['to']}' is in {dst['project']}: use http",
            )
        )
    name = it["message"]
    msg = ix.messages.get(name)
    if msg is None:
        out.append(("message", f"unknown message '{name}'{hint(name, ix.messages, 'messages')}"))
        return out
    if name not in dst.get("consumes", []):
        out.append(("message", f"message '{name}' is not consumed by '{it['to']}'"))
    want = {"amqp-call": ("call",), "amqp-cast": ("cast", "fanout")}[it["via"]]
    if msg["pattern"] not in want:
        out.append(
            ("via", f"message '{name}' is a {msg['pattern']}, but the step says {it['via']}")
        )
    return out


def _sql(ix: Index, it: dict[str, Any], src: dict[str, Any], dst: dict[str, Any]) -> list[Problem]:
    if dst["kind"] != "database":
        return [("to", f"an sql step goes to a database, not a {dst['kind']} ('{it['to']}')")]
    if src["project"] != dst["project"]:
        return [
            (
                "to",
                f"SQL goes only to the project's own database: '{it['from']}' ({src['project']}) "
                f"cannot use '{it['to']}' ({dst['project']})",
            )
        ]
    return []


def _native(
    ix: Index, it: dict[str, Any], src: dict[str, Any], dst: dict[str, Any]
) -> list[Problem]:
    out: list[Problem] = []
    if dst["kind"] != "hypervisor":
        out.append(
            ("to", f"a native step goes to a hypervisor, not a {dst['kind']} ('{it['to']}')")
        )
    if (
        dst["kind"] == "hypervisor"
        and src.get("nodes")
        and not set(src["nodes"]) & set(dst.get("nodes", []))
    ):
        out.append(
            (
                "from",
                f"'{it['from']}' does not run on a node of the hypervisor '{it['to']}' "
                "(the native API is local to a node)",
            )
        )
    if it["call"] not in ix.methods:
        out.append(
            (
                "call",
                f"'{it['call']}' is not a method of the hypervisor driver interface"
                f"{hint(it['call'], ix.methods, 'methods')}",
            )
        )
    return out


_RULES = {
    "user": _user,
    "http": _http,
    "amqp-cast": _amqp,
    "amqp-call": _amqp,
    "sql": _sql,
    "native": _native,
}
