"""A sequence step's `with:` (docs/resources.md, "Flow steps"): every CEL expression it
holds compiles and its control keys have the shape the flow gives them, so a slip is
reported with its position at validation, not as a failed step at run time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from generator.pipeline.diagnostics import Diagnostic
from generator.pipeline.load import LoadedSpec, PathElem, SpecFile, to_plain
from specstack_runtime.expr import problem

Where = list[PathElem]


def _expressions(value: Any, where: Where) -> Iterator[tuple[Where, Any]]:
    """The `{expr: CEL}` values of an argument, at any depth."""
    if isinstance(value, dict):
        if set(value) == {"expr"}:
            yield [*where, "expr"], value["expr"]
            return
        for key, item in value.items():
            yield from _expressions(item, [*where, key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _expressions(item, [*where, i])


class _Step:
    """The diagnostics of one `with:`."""

    def __init__(self, f: SpecFile) -> None:
        self.f = f
        self.diags: list[Diagnostic] = []

    def cel(self, where: Where, text: Any) -> None:
        if not isinstance(text, str):
            self.diags.append(self.f.at(where, "with: a CEL expression must be a string"))
        elif (why := problem(text)) is not None:
            message, line, col = why
            self.diags.append(
                self.f.at(where, f"with: CEL expression (line {line}, column {col}): {message}")
            )

    def check(self, bindings: Any, where: Where) -> None:
        if not isinstance(bindings, dict):
            return
        for key in ("when", "each", "until"):
            if key in bindings:
                self.cel([*where, key], bindings[key])
        keep = bindings.get("keep")
        if isinstance(keep, dict):
            for name, text in keep.items():
                self.cel([*where, "keep", name], text)
        elif keep is not None:
            self.diags.append(self.f.at([*where, "keep"], "with.keep: is not a table of name: CEL"))
        require = bindings.get("require")
        for i, rule in enumerate(require if isinstance(require, list) else ()):
            if isinstance(rule, dict) and "expr" in rule and isinstance(rule.get("message"), str):
                self.cel([*where, "require", i, "expr"], rule["expr"])
            else:
                self.diags.append(
                    self.f.at([*where, "require", i], "with.require: each is {expr, message}")
                )
        if require is not None and not isinstance(require, list):
            self.diags.append(
                self.f.at([*where, "require"], "with.require: is not a list of {expr, message}")
            )
        rest = {k: v for k, v in bindings.items() if k != "require"}
        for at, text in _expressions(rest, where):
            self.cel(at, text)


def check_step_bindings(spec: LoadedSpec) -> list[Diagnostic]:
    """Each sequence step's `with:`, each of its `then:` interactions', and each of a
    consumer's `on_failure` steps'."""
    diags: list[Diagnostic] = []
    for f in spec.of_kind("sequence"):
        checker = _Step(f)
        steps = to_plain(f.data).get("sequence", {}).get("steps") or []
        for i, step in enumerate(steps):
            where: Where = ["sequence", "steps", i]
            checker.check(step.get("with"), [*where, "with"])
            for j, sub in enumerate(step.get("then") or ()):
                checker.check(sub.get("with"), [*where, "then", j, "with"])
        diags += checker.diags
    cf = spec.one("components")
    if cf is not None:
        checker = _Step(cf)
        for name, comp in (to_plain(cf.data).get("components") or {}).items():
            for msg, consumer in (comp.get("consumes") or {}).items():
                for i, step in enumerate((consumer or {}).get("on_failure") or ()):
                    at: Where = ["components", name, "consumes", msg, "on_failure", i, "with"]
                    checker.check(step.get("with"), at)
        diags += checker.diags
    return diags
