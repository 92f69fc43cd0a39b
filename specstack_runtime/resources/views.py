"""A stored row as the API answers it: hidden and guarded fields out, computed ones in."""

from __future__ import annotations

from typing import Any

from specstack_runtime.expr import Bound, compile_expr
from specstack_runtime.grouped import values_in
from specstack_runtime.microversions import parse
from specstack_runtime.resources.compiled import Compiled
from specstack_runtime.resources.context import Doc, ResourceCall

#: What the store adds to every row; shown only when the schema has them.
BOOKKEEPING = frozenset({"created_at", "updated_at"})


def render(rc: ResourceCall, doc: Doc, view: str | None = None) -> Doc:
    """`doc` as the API shows it; with `view` (or the operation's), only that view's fields.

    Stored fields first (under their API names), then `render` transforms, then computed
    fields (only those the answer shows), then fields the caller may not see go, then
    optional ones without a value.
    """
    res = rc.res
    doc = res.complete(doc)
    hidden = res.hidden
    chosen = view or rc.call.args.get("view")
    if chosen and str(chosen) not in res.res.views:
        chosen = None  # another resource's view (a row a join reads): all of this one
    if not view and chosen and past_view(rc):
        chosen = None  # the operation's view ends at a microversion older than the request's
    picks = [entry.partition("=") for entry in res.res.views.get(str(chosen), ())] if chosen else []
    wanted = {source or name for name, _, source in picks} if chosen else None
    # fields the caller may not see, and those its microversion does not have
    denied = rc.denied(res.guarded, doc) | res.absent_at(rc.call.microversion)
    out: Doc = {}
    known = res.answer_keys
    for key, value in doc.items():
        name = known.get(key, _UNSEEN)
        if name is _UNSEEN:
            name = answer_key(res, key)
            if name != "" or not res.res.extra:  # not the names callers give extra attributes
                known[key] = name
        if name:
            out[name] = value
        elif (
            name == ""  # no field: an extra attribute (set to null: removed)
            and res.res.extra
            and key not in BOOKKEEPING
            and key not in hidden
            and value is not None
        ):
            out[key] = value
    for name in res.always:
        if name not in out:
            out[name] = None
    if res.computed or res.renders:
        uses = res.render_uses
        more = {"doc": doc}
        if "join" in uses and rc.res.res.joins and _joins_wanted(rc, wanted, denied):
            more["join"] = _joined(rc, doc)
        chosen_exprs = [
            (name, expr)
            for name, expr in res.renders
            if name in out and name not in denied and (wanted is None or name in wanted)
        ]
        chosen_exprs += [
            (name, expr)
            for name, expr in res.computed
            if name not in denied
            and not (wanted is None and name in res.off_schema)
            and (wanted is None or name in wanted)
        ]
        # a field as it is (`doc.F`) is the row's value, when CEL would give it unchanged;
        # the others in one evaluation (one by one when one fails: its own error)
        copies, evaluated, reads = res.copies, [], res.cel_render_reads
        found: list[Any] = [_UNSEEN] * len(chosen_exprs)
        for n, (_, expr) in enumerate(chosen_exprs):
            if expr.text not in copies:
                evaluated.append(n)
            elif (copy_of := copies[expr.text]) in doc and _as_cel_gives(value := doc[copy_of]):
                found[n] = value
            else:  # a field it cannot copy: CEL reads it too (for its value or error)
                evaluated.append(n)
                reads = res.render_reads
        texts = tuple([chosen_exprs[n][1].text for n in evaluated])
        # only what the expressions evaluated read is handed to the CEL runtime
        variables = Bound(reads, **rc.variables(**more))
        values = values_in(texts, variables)
        if values is None:
            values = [chosen_exprs[n][1].evaluate_in(variables) for n in evaluated]
        for n, value in zip(evaluated, values, strict=True):
            found[n] = value
        for (name, _), value in zip(chosen_exprs, found, strict=True):
            out[name] = value
    for name in denied:
        out.pop(name, None)
    for name in res.optional:
        if out.get(name) is None:
            out.pop(name, None)
    if chosen:
        return {name: out[source or name] for name, _, source in picks if (source or name) in out}
    return out


_UNSEEN = "\0unseen"  # not a key any row has
_INT64 = (-(2**63), 2**63 - 1)


def _as_cel_gives(value: Any) -> bool:
    """Whether CEL gives `value` back as it is (a copy of a field): null, a bool, an int
    or a double, a string without NUL (CEL's ends there) or a lone surrogate (CEL fails)."""
    kind = type(value)
    if value is None or kind is bool or kind is float:
        return True
    if kind is int:
        return bool(_INT64[0] <= value <= _INT64[1])
    if kind is not str or "\0" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def past_view(rc: ResourceCall) -> bool:
    """Whether the request's microversion is newer than the operation's `view_until`."""
    until, version = rc.call.args.get("view_until"), rc.call.microversion
    return bool(until) and version is not None and version > parse(str(until))


def answer_key(res: Compiled, key: str) -> str | None:
    """The answer's key for a row's `key`: None if the answer does not show it, "" if no
    field has it (an extra attribute). The same for every row of the resource."""
    f = res.fields.get(res.stored_as.get(key, key))
    if f is None:
        return ""
    if f.stored and key != f.stored:
        return None  # the row's own key of that name is not this field
    name = f.name if f.stored else key
    if f.hidden or name in res.hidden or f.computed or not f.in_schema:
        return None
    return name


def _joins_wanted(rc: ResourceCall, wanted: set[str] | None, denied: set[str]) -> bool:
    """Whether a field this answer shows reads `join` (others need no joined rows)."""
    return any(
        "join" in expr.uses and name not in denied and (wanted is None or name in wanted)
        for name, expr in rc.res.computed
    )


def only(rep: Doc, wanted: list[str]) -> Doc:
    """The `fields=` a caller asked for (neutron's and others' field selection)."""
    return {k: v for k, v in rep.items() if k in wanted} if wanted else rep


def requested_fields(rc: ResourceCall) -> list[str]:
    param = rc.res.conventions.fields_param
    if not param:
        return []
    out: list[str] = []
    for value in rc.call.query.get(param, []):
        out += [f.strip() for f in value.split(",") if f.strip()]
    return out


def one(rc: ResourceCall, doc: Doc) -> Any:
    """A single resource's answer, in its envelope."""
    rep = only(render(rc, doc), requested_fields(rc))
    key = rc.res.res.envelope_one
    return {key: rep} if key else rep


def join_key(rc: ResourceCall, on: str, doc: Doc) -> str | None:
    """The value (CEL `on` over `doc`) a join finds its row by; None: no row."""
    value = compile_expr(on).evaluate(**rc.variables(doc=rc.res.complete(doc)))
    return None if value in (None, "") else str(value)


def _joined(rc: ResourceCall, doc: Doc) -> dict[str, Any]:
    """`join` for one row: each join's row (null when none); the rows must be loaded."""
    out: dict[str, Any] = {}
    for name, join in rc.res.res.joins.items():
        if name not in rc.joined:
            raise RuntimeError(f"{rc.res.name}: join {name} read before it was loaded")
        key = join_key(rc, join.on, doc)
        out[name] = None if key is None else rc.joined[name].get(key)
    return out
