"""Expressions over the same variables evaluated as one CEL program listing them.

A server's view has some thirty computed fields, nova's createServer some forty refusal
rules: one evaluation of the list of their values (`values_in`) costs what one of them
does (the variables converted once, one call into the runtime), not thirty.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from specstack_runtime.expr import Bound, Expr, ExprError, compile_expr


@lru_cache(maxsize=1024)
def compile_group(texts: tuple[str, ...]) -> Expr:
    """One program whose value is the list of the values of `texts` (each compiled alone
    first: ExprError if one does not)."""
    for text in texts:
        compile_expr(text)
    # `dyn`: a list of mixed types; the newline ends a `//` comment closing a text
    return compile_expr("[" + ", ".join(f"dyn({text}\n)" for text in texts) + "]")


def values_in(texts: tuple[str, ...], bound: Bound) -> list[Any] | None:
    """The values of `texts` over `bound` (it reads what they all read) in one evaluation
    of the CEL runtime, not one each: a view's tens of fields, a create's refusal rules.
    None when one of them fails: the caller evaluates them one by one, in its order, so
    that the error (or what an earlier one decides) is what it was."""
    grouped, alone = _grouping(texts)
    if not alone:  # most: every text in the one list
        try:
            return _listed(texts, bound)
        except ExprError:
            return None
    values: list[Any] = [None] * len(texts)
    try:
        found = _listed(tuple([texts[n] for n in grouped]), bound)
        for n, value in zip(grouped, found, strict=True):
            values[n] = value
        for n in alone:
            values[n] = compile_expr(texts[n]).evaluate_in(bound)
    except ExprError:
        return None
    return values


def _listed(texts: tuple[str, ...], bound: Bound) -> list[Any]:
    if len(texts) < 2:
        return [compile_expr(text).evaluate_in(bound) for text in texts]
    values = compile_group(texts).evaluate_in(bound)
    if not isinstance(values, list) or len(values) != len(texts):
        raise ExprError("a group's value is not the list of its values")
    return values


@lru_cache(maxsize=1024)
def _grouping(texts: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where the `texts` evaluated in one list are, and those evaluated alone: with
    `cel.bind`. The CEL runtime (cel-expr-python 0.1.3) binds lazily, in a slot a
    comprehension before it may have left a value in: `[l.exists(x, ...), cel.bind(m,
    l[0], m)]` binds `m` to the last `x`. Each text alone is as it always was."""
    return (
        tuple([n for n, t in enumerate(texts) if "cel.bind" not in t]),
        tuple([n for n, t in enumerate(texts) if "cel.bind" in t]),
    )
