"""CEL expressions of the spec (computed fields, defaults, visibility, queries).

The spec's expressions are in CEL, the Common Expression Language Kubernetes uses
for CRD rules, evaluated by Google's CEL runtime (`cel-expr-python`). Each is
compiled once (at validation and at start-up) and evaluated with the variables
below; CEL is typed and does not mix int and double (write `double(x)`).

Variables (all dynamic): `doc` (the row), `old` (the row before a change),
`auth` (user_id, project_id, domain_id, roles, is_admin), `path` (path
parameters), `params` (parsed query parameters), `base` (the URL the caller
used, no trailing slash), `config` (a few stack settings), `rows` (a query's
rows), `row` (one of them with its joins), `vars` (flow variables).
Functions besides the standard, strings and bindings (`cel.bind`) libraries:
`pairs("A:1,B:2")` gives `{"A": 1, "B": 2}`; `sum(list)` adds numbers up;
`map_of([[k, v], ...])` builds a map from pairs; `now()` the current time as
OpenStack writes it. A computed query also sees `tables` (every row of the resources
its `tables:` names, e.g. `tables.allocations`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import cel_expr_python.cel as cel
from cel_expr_python.ext import ext_bindings, ext_strings

VARIABLES = (
    "doc",
    "old",
    "auth",
    "path",
    "params",
    "base",
    "config",
    "rows",
    "row",
    "join",
    "tables",
    "vars",
)


class ExprError(ValueError):
    """An expression that does not compile, or fails on the data it was given."""


def _pairs(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        key = key.strip()
        if not key or not sep:
            raise ValueError(f"{part!r} is not NAME:VALUE")
        value = value.strip()
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _sum(values: list[Any]) -> Any:
    total: Any = 0
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"sum: {v!r} is not a number")
        total += v
    return total


def _map_of(items: list[Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for item in items:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError(f"map_of: {item!r} is not a [key, value] pair")
        out[item[0]] = item[1]
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@lru_cache(maxsize=1)
def _env() -> Any:
    functions = [
        cel.FunctionDecl(
            "pairs",
            [
                cel.Overload(
                    "pairs_string",
                    cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
                    [cel.Type.STRING],
                    impl=_pairs,
                )
            ],
        ),
        cel.FunctionDecl("now", [cel.Overload("now_", cel.Type.STRING, [], impl=_now)]),
        cel.FunctionDecl(
            "sum",
            [cel.Overload("sum_list", cel.Type.DYN, [cel.Type.List(cel.Type.DYN)], impl=_sum)],
        ),
        cel.FunctionDecl(
            "map_of",
            [
                cel.Overload(
                    "map_of_list",
                    cel.Type.Map(cel.Type.DYN, cel.Type.DYN),
                    [cel.Type.List(cel.Type.DYN)],
                    impl=_map_of,
                )
            ],
        ),
    ]
    return cel.NewEnv(
        variables={name: cel.Type.DYN for name in VARIABLES},
        extensions=[ext_strings.ExtStrings(), ext_bindings.ExtBindings()],
        functions=functions,
    )


class Expr:
    """A compiled expression; `evaluate(**variables)` gives its plain Python value."""

    __slots__ = ("_program", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self._program = _env().compile(text)
        except Exception as exc:  # the runtime raises its own status error type
            raise ExprError(_clean(str(exc))) from None

    def evaluate(self, **variables: Any) -> Any:
        data = {k: v for k, v in variables.items() if v is not None}
        try:
            value = self._program.eval(data=data)
        except Exception as exc:
            raise ExprError(f"{self.text}: {_clean(str(exc))}") from None
        if value.type() == cel.Type.ERROR:
            raise ExprError(f"{self.text}: {_clean(str(value.value()))}")
        return value.plain_value()


@lru_cache(maxsize=4096)
def compile_expr(text: str) -> Expr:
    """The compiled expression (cached by its text); ExprError if it does not compile."""
    return Expr(text)


def problem(text: str) -> tuple[str, int, int] | None:
    """Why `text` does not compile, with the 1-based line and column in it; None if it does."""
    try:
        compile_expr(text)
    except ExprError as exc:
        message = str(exc)
        line, col = 1, 1
        marker = "<input>:"
        if marker in message:
            where = message.split(marker, 1)[1].split(":")
            if len(where) >= 2 and where[0].isdigit() and where[1].isdigit():
                line, col = int(where[0]), int(where[1]) + 1
        return _first_line(message), line, col
    return None


def _first_line(message: str) -> str:
    for line in message.splitlines():
        if "ERROR:" in line:
            text = line.split("ERROR:", 1)[1].split(": ", 2)[-1]
            return text.split(" | ", 1)[0].strip()
    return message.splitlines()[0] if message else "invalid expression"


def _clean(message: str) -> str:
    return " ".join(message.replace("[INVALID_ARGUMENT]", "").split())


def auth_vars(auth: Any) -> Mapping[str, Any]:
    """What `auth` is in an expression."""
    if auth is None:
        return {}
    return {
        "user_id": auth.user_id,
        "user_name": auth.user_name,
        "project_id": auth.project_id or "",
        "project_name": auth.project_name or "",
        "domain_id": auth.domain_id or "",
        "roles": list(auth.roles),
        "is_admin": bool(auth.is_admin),
    }
