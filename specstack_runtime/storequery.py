"""The filters of `Store.list` as SQL: what a filter value tests, its parameters, its clause.

A filter value is a plain value (equality), a list ("any of"), None (NULL), `Not(value)`
(anything else, NULL included) or `AtLeast(text)` (at least that in text order: the
scheduler's resource filters, pushed down into the query, on `sortable` numbers).

`Not` is written as three ranges (NULL, below, above) each beside the filter's equalities:
with a compound index on those columns and the `Not` column last (spec/components.yaml's
`compound`), each is an index range, so counting a project's live servers reads those
servers' index entries only, not every server it ever deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Numeric, Table, and_, bindparam, cast, func, or_
from sqlalchemy.sql import ColumnElement


@dataclass(frozen=True)
class Not:
    """A filter value: rows whose column does not hold `value` (NULL included)."""

    value: Any


@dataclass(frozen=True)
class AtLeast:
    """A filter value: rows whose column is at least `value` in text order (numbers
    written with `sortable`, so that the comparison is an index range, no cast per row)."""

    value: str


def sortable(number: float) -> str:
    """`number` (thousandths kept, |number| < 10**12) as text that sorts as the number does."""
    return f"{round(number * 1000) + 10**15:016d}"


def column_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def order_expr(col: Column[Any]) -> ColumnElement[Any]:
    """What rows sort by: NULL as the empty string, so that every backend puts it first."""
    return func.coalesce(col, "") if col.nullable else col


Shape = tuple[tuple[str, str], ...]


def shape_of(where: Mapping[str, Any]) -> Shape:
    """What a filter tests of each column: equality, "any of", or NULL."""
    return tuple((key, test_of(value)) for key, value in where.items())


def test_of(value: Any) -> str:
    if isinstance(value, Not):
        return "not"
    if isinstance(value, AtLeast):
        return "atleast"
    if isinstance(value, list | tuple | set):
        return "in"
    return "null" if value is None else "eq"


def params_of(where: Mapping[str, Any]) -> dict[str, Any]:
    """The bound values of `where` for the statement `restrict` builds for its shape."""
    params: dict[str, Any] = {}
    for key, value in where.items():
        if isinstance(value, list | tuple | set):
            params[f"where_{key}"] = [column_value(v) for v in value]
        elif isinstance(value, Not):
            params[f"where_{key}"] = column_value(value.value)
        elif isinstance(value, AtLeast):
            params[f"where_{key}"] = value.value
        elif value is not None:
            params[f"where_{key}"] = column_value(value)
    return params


def restrict(stmt: Any, t: Table, shape: Shape) -> Any:
    """`stmt` restricted to rows whose columns hold the filter of `shape` (see `params_of`)."""
    equal = [_clause(t, key, test) for key, test in shape if test in ("eq", "null")]
    negated = [key for key, test in shape if test == "not"]
    for key, test in shape:
        if test not in ("eq", "null", "not"):
            stmt = stmt.where(_clause(t, key, test))
    if len(negated) == 1:
        # NULL, below or above: each an index range after the equalities (see the docstring);
        # `!=` would read every entry that matches the equalities
        col = t.c[negated[0]]
        value: Any = bindparam(f"where_{negated[0]}")
        ranges = (col.is_(None), col < value, col > value)
        return stmt.where(or_(*(and_(*equal, r) for r in ranges)))
    for key in negated:
        col = t.c[key]
        stmt = stmt.where(or_(col.is_(None), col != bindparam(f"where_{key}")))
    return stmt.where(*equal) if equal else stmt


def _clause(t: Table, key: str, test: str) -> ColumnElement[bool]:
    col = t.c[key]
    if test == "in":
        return col.in_(bindparam(f"where_{key}", expanding=True))
    if test == "null":
        return col.is_(None)
    if test == "atleast":
        return col >= bindparam(f"where_{key}")
    return col == bindparam(f"where_{key}")


def as_number(col: Column[Any]) -> ColumnElement[Any]:
    """A text column read as a number (NULL and text that is no number: 0 on SQLite)."""
    return cast(col, Numeric)


def matches_value(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, AtLeast):
        return actual is not None and str(actual) >= wanted.value
    if isinstance(wanted, Not):
        return not matches_value(actual, wanted.value)
    if isinstance(wanted, list | tuple | set):
        return any(matches_value(actual, w) for w in wanted)
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return str(actual).lower() == str(wanted).lower()
    return actual == wanted or (actual is not None and str(actual) == str(wanted))
