"""The spec against the behaviour library: every name known, of the kind its place needs,
with what it needs provided.

The library's declarations come from `specstack_runtime/behaviours/catalog.json`
(written from the code by `python -m specstack_runtime.registry --write`), so this
check imports none of the runtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.load import LoadedSpec, PathElem, SpecFile, to_plain
from generator.pipeline.validate.names import suggest
from generator.pipeline.validate.openapi import operations_of
from specstack_runtime.registry import KINDS, read_catalog


@dataclass(frozen=True)
class Use:
    """One place the spec names a behaviour."""

    file: SpecFile
    path: tuple[PathElem, ...]
    name: str
    kind: str  # the kind this place needs
    via: str | None = None  # for steps: the interaction's communication type


def uses(spec: LoadedSpec) -> Iterator[Use]:
    """Every behaviour the spec names, with the kind its place needs."""
    for f in spec.of_kind("openapi"):
        doc = to_plain(f.data)
        for path, method, op in operations_of(doc):
            for key, kind in (
                ("x-specstack-behaviour", "operation"),
                ("x-specstack-on-error", "error"),
            ):
                if isinstance(op.get(key), str):
                    yield Use(f, ("paths", path, method, key), op[key], kind)
    if comps := spec.one("components"):
        for name, c in to_plain(comps.data)["components"].items():
            for msg, h in (c.get("consumes") or {}).items():
                yield Use(
                    comps,
                    ("components", name, "consumes", msg, "behaviour"),
                    h["behaviour"],
                    "message",
                )
                if h.get("on_error"):
                    on_error: tuple[PathElem, ...] = (
                        "components",
                        name,
                        "consumes",
                        msg,
                        "on_error",
                    )
                    yield Use(comps, on_error, h["on_error"], "error")
            for i, b in enumerate((c.get("behaviours") or {}).get("startup", [])):
                if isinstance(b, str):
                    at: tuple[PathElem, ...] = ("components", name, "behaviours", "startup", i)
                    yield Use(comps, at, b, "startup")
    for f in spec.of_kind("sequence"):
        steps = to_plain(f.data)["sequence"]["steps"]
        for i, st in enumerate(steps):
            if st.get("behaviour"):
                yield Use(
                    f, ("sequence", "steps", i, "behaviour"), st["behaviour"], "step", st["via"]
                )
            for j, it in enumerate(st.get("then") or ()):
                if it.get("behaviour"):
                    then: tuple[PathElem, ...] = ("sequence", "steps", i, "then", j, "behaviour")
                    yield Use(f, then, it["behaviour"], "step", it.get("via"))
    for f in spec.of_kind("resources"):
        data = to_plain(f.data)
        for rname, r in data["resources"].items():
            for point, b in (r.get("hooks") or {}).items():
                yield Use(f, ("resources", rname, "hooks", point), b, "hook")
            for aname, a in ((r.get("states") or {}).get("actions") or {}).items():
                if a.get("hook"):
                    yield Use(
                        f,
                        ("resources", rname, "states", "actions", aname, "hook"),
                        a["hook"],
                        "hook",
                    )
            for i, rule in enumerate((r.get("states") or {}).get("recover") or ()):
                if rule.get("hook"):
                    where = ("resources", rname, "states", "recover", i, "hook")
                    yield Use(f, where, rule["hook"], "hook")


def _provided(spec: LoadedSpec) -> set[str]:
    """Catalog types of the APIs the spec's components serve."""
    comps = spec.one("components")
    if comps is None:
        return set()
    out: set[str] = set()
    for c in to_plain(comps.data)["components"].values():
        cat = c.get("catalog")
        if isinstance(cat, dict) and c.get("api"):
            out.add(str(cat.get("type")))
    return out


def _startup_calls(spec: LoadedSpec) -> list[Diagnostic]:
    """A start-up interaction calls an operation of an API some component serves."""
    comps_file = spec.one("components")
    if comps_file is None:
        return []
    comps = to_plain(comps_file.data)["components"]
    ops: dict[str, set[str]] = {}
    for f in spec.of_kind("openapi"):
        doc = to_plain(f.data)
        ops[f.stem] = {op["operationId"] for _, _, op in operations_of(doc) if "operationId" in op}
    diags: list[Diagnostic] = []
    for name, c in comps.items():
        for i, item in enumerate((c.get("behaviours") or {}).get("startup", [])):
            if not isinstance(item, dict):
                continue
            where: tuple[PathElem, ...] = ("components", name, "behaviours", "startup", i)
            target = comps.get(item["to"])
            if "message" in item:
                consumed = sorted((target or {}).get("consumes") or {})
                if item["message"] not in consumed:
                    diags.append(
                        comps_file.at(
                            (*where, "message"),
                            f"start-up message '{item['message']}': not consumed by "
                            f"'{item['to']}'{suggest(item['message'], consumed)}",
                        )
                    )
                continue
            if target is None or not target.get("api"):
                apis = sorted(n for n, x in comps.items() if x.get("api"))
                diags.append(
                    comps_file.at(
                        (*where, "to"),
                        f"start-up call to '{item['to']}': not a component serving an API"
                        f"{suggest(item['to'], apis)}",
                    )
                )
                continue
            known = sorted(ops.get(target["api"], set()))
            if item["operation"] not in known:
                diags.append(
                    comps_file.at(
                        (*where, "operation"),
                        f"start-up call: '{item['operation']}' is not an operation of API "
                        f"{target['api']}{suggest(item['operation'], known)}",
                    )
                )
    return diags


def check_behaviours(spec: LoadedSpec) -> list[Diagnostic]:
    library = read_catalog()
    provided = _provided(spec)
    diags: list[Diagnostic] = _startup_calls(spec)
    for use in uses(spec):
        declared = library.get(use.name)
        if declared is None:
            same_kind = sorted(n for n, d in library.items() if d["kind"] == use.kind)
            known = (
                f"one of {', '.join(same_kind)}"
                if len(same_kind) <= 12
                else f"the {use.kind} behaviours of docs/behaviours.md"
            )
            diags.append(
                use.file.at(
                    use.path,
                    f"unknown behaviour '{use.name}'{suggest(use.name, same_kind)} "
                    f"({KINDS[use.kind]} takes {known})",
                )
            )
            continue
        if declared["kind"] != use.kind:
            diags.append(
                use.file.at(
                    use.path,
                    f"behaviour '{use.name}' is {_a(declared['kind'])} behaviour "
                    f"({KINDS[declared['kind']]}); here the spec needs {_a(use.kind)} behaviour "
                    f"({KINDS[use.kind]})",
                )
            )
            continue
        vias: list[Any] = declared.get("via") or []
        if use.via and vias and use.via not in vias:
            diags.append(
                use.file.at(
                    use.path,
                    f"behaviour '{use.name}' carries out {' or '.join(vias)} interactions, "
                    f"not {use.via}",
                )
            )
        missing = [n for n in declared.get("needs") or [] if n not in provided]
        if missing:
            diags.append(
                use.file.at(
                    use.path,
                    f"behaviour '{use.name}' needs an API of catalog type "
                    f"{', '.join(repr(m) for m in missing)}, which no component of the spec "
                    f"serves (catalog types here: {', '.join(sorted(provided))})",
                )
            )
    return diags


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind
