"""A stored row as the API answers it: hidden and guarded fields out, computed ones in."""

from __future__ import annotations

from typing import Any

from specstack_runtime.resources.context import Doc, ResourceCall

#: What the store adds to every row; shown only when the schema has them.
BOOKKEEPING = frozenset({"created_at", "updated_at"})


def render(rc: ResourceCall, doc: Doc, view: str | None = None) -> Doc:
    """`doc` as the API shows it; with `view` (or the operation's), only that view's fields."""
    res = rc.res
    doc = res.complete(doc)
    fields = res.fields
    hidden = res.hidden
    out: Doc = {}
    for key, value in doc.items():
        f = fields.get(key)
        if f is None:
            if res.res.extra and key not in BOOKKEEPING and key not in hidden:
                out[key] = value
            continue
        if f.hidden or key in hidden or f.computed or not f.in_schema:
            continue
        out[key] = value
    for f in res.res.fields:
        if f.always and f.name not in out and not f.computed and not f.hidden:
            out[f.name] = None
    for name, rule in res.guarded:
        if name in out and not rc.allows(rule, doc):
            del out[name]
    if res.computed or res.renders:
        variables = rc.variables(doc=doc)
        for name, expr in res.renders:
            if name in out:
                out[name] = expr.evaluate(**variables)
        for name, expr in res.computed:
            out[name] = expr.evaluate(**variables)
    for name in res.optional:
        if out.get(name) is None:
            out.pop(name, None)
    chosen = view or rc.call.args.get("view")
    if chosen:
        shown = res.res.views.get(str(chosen), ())
        out = {k: out[k] for k in shown if k in out}
    return out


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
