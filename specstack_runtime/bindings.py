"""The spec's `with:` arguments: `{var.path}` placeholders filled from a flow's variables,
and `{expr: CEL}` values computed from them (CEL's `vars`, and `item` in an `each`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from specstack_runtime.context import Call
from specstack_runtime.errors import StepFailed
from specstack_runtime.expr import Bound, ExprError, auth_vars, compile_expr, reads_of
from specstack_runtime.grouped import values_in

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_:-]+)*)\}")

#: Keys of a step's `with:` that say how it runs, not what it is given (flowsteps).
CONTROL = ("when", "require", "each", "accept", "until", "keep")


def _lookup(scope: dict[str, Any], path: str) -> Any:
    node: Any = scope
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise StepFailed(f"flow variable {{{path}}} is not set")
    return node


def evaluate(text: str, scope: dict[str, Any], **variables: Any) -> Any:
    """A CEL expression of a `with:` over the flow (`vars`) and `variables`."""
    variables.setdefault("item", scope.get("item"))
    try:
        return compile_expr(str(text)).evaluate(vars=scope, **variables)
    except ExprError as exc:
        raise StepFailed(f"with: {exc}") from None


def bound(scope: dict[str, Any], texts: Iterable[str]) -> Bound:
    """The variables `evaluate(text, scope)` sees for each of `texts`, bound once (the
    flow's variables converted for CEL once, not once per expression, and only those the
    expressions read); `scope` must not change while it is in use."""
    return Bound(reads_of(tuple(str(t) for t in texts)), vars=scope, item=scope.get("item"))


def evaluate_in(text: str, variables: Bound) -> Any:
    """`evaluate` over variables `bound` made."""
    try:
        return compile_expr(str(text)).evaluate_in(variables)
    except ExprError as exc:
        raise StepFailed(f"with: {exc}") from None


def control(bindings: dict[str, Any]) -> dict[str, Any]:
    """The `with:` keys that say how the step runs (`when`, `require`, `each`, `accept`,
    `until`, `keep`)."""
    return {k: bindings[k] for k in CONTROL if k in bindings}


def bind(value: Any, scope: dict[str, Any]) -> Any:
    """Fill `{var.path}` placeholders; a value that is one placeholder keeps its type."""
    return _bind(value, scope, [], value)


def _exprs(value: Any) -> Iterator[str]:
    """The `{expr: CEL}` texts in a `with:` value."""
    if isinstance(value, dict):
        if set(value) == {"expr"}:
            yield str(value["expr"])
            return
        for v in value.values():
            yield from _exprs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _exprs(v)


def _bind(value: Any, scope: dict[str, Any], shared: list[Any], whole: Any) -> Any:
    # `shared`: the scope bound at its first `{expr}`, and the values of every `{expr}` of
    # `whole` found then in one evaluation (each text's, in the order they come), or None
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return _lookup(scope, whole.group(1))
        return _PLACEHOLDER.sub(lambda m: str(_lookup(scope, m.group(1))), value)
    if isinstance(value, dict):
        if set(value) == {"expr"}:
            if not shared:
                texts = list(_exprs(whole))
                variables = bound(scope, texts)
                got = values_in(tuple(texts), variables)
                found: dict[str, list[Any]] = {}
                for text, one in zip(texts, got or (), strict=False):
                    found.setdefault(text, []).append(one)
                shared += [variables, found if got is not None else None]
            if shared[1] is None:  # one failed: each in turn, the first failing one's error
                return evaluate_in(value["expr"], shared[0])
            return shared[1][str(value["expr"])].pop(0)
        # keys too: {"{host}": ...} names a map entry by a variable
        return {
            (str(_bind(k, scope, shared, whole)) if isinstance(k, str) else k): _bind(
                v, scope, shared, whole
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_bind(v, scope, shared, whole) for v in value]
    return value


def call_scope(call: Call) -> dict[str, Any]:
    """What `{var.path}` placeholders may name: the flow's variables, the trigger's data and
    the caller (`auth`, as resource expressions see it)."""
    return {
        **call.vars,
        "payload": call.payload,
        "body": call.body,
        "path": call.path_params,
        "auth": dict(auth_vars(call.auth)),
    }
