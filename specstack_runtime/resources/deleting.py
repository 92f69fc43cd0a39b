"""Deleting a row, and what that does to the rows that refer to it (the spec's `delete`)."""

from __future__ import annotations

from specstack_runtime import ir
from specstack_runtime.resources import collects, hooks
from specstack_runtime.resources.compiled import error, fill
from specstack_runtime.resources.context import Doc, ResourceCall

#: How deep cascades may go (a spec whose rules loop is refused at validation).
MAX_DEPTH = 8


async def _referring(rc: ResourceCall, rule: ir.DeleteRule, doc: Doc) -> list[Doc]:
    other = rc.of(rule.resource)
    if doc.get(rule.key) is None:
        return []
    rows = await other.store.list(other.res.res.table, {rule.field: doc[rule.key]})
    if rule.where:
        from specstack_runtime.expr import compile_expr

        expr = compile_expr(rule.where)
        rows = [r for r in rows if expr.evaluate(**other.variables(doc=r, old=doc))]
    return rows


async def refusals(rc: ResourceCall, doc: Doc) -> None:
    """Raise the first `refuse` rule that finds rows referring to `doc` (a behaviour that
    deletes by itself, as cinder's back end does, checks them so)."""
    for rule in rc.res.res.deletes:
        if rule.action == "refuse" and await _referring(rc, rule, doc):
            err = rc.res.fail("in_use", id=doc["id"], field=rule.field, referrer=rule.resource)
            if rule.status or rule.message or rule.kind:
                values = {"id": doc["id"], "field": rule.field, "referrer": rule.resource}
                err = error(
                    rule.status or err.status,
                    fill(rule.message or err.message, {**doc, **values}),
                    rule.kind or err.kind,
                )
            raise err


async def delete(rc: ResourceCall, doc: Doc, depth: int = 0) -> None:
    """Refuse while a `refuse` rule finds rows; otherwise cascade, clear, then delete."""
    if depth > MAX_DEPTH:
        raise RuntimeError(f"delete of {rc.res.name} cascades deeper than {MAX_DEPTH}")
    rules = rc.res.res.deletes
    await refusals(rc, doc)
    await hooks.run(rc, "before_delete", doc, None)
    for rule in rules:
        if rule.action == "cascade":
            other = rc.of(rule.resource)
            for row in await _referring(rc, rule, doc):
                await delete(other, row, depth + 1)
        elif rule.action == "clear":
            other = rc.of(rule.resource)
            for row in await _referring(rc, rule, doc):
                await other.store.update(other.res.res.table, row["id"], {rule.field: None})
    if await rc.store.delete(rc.res.res.table, doc["id"]):
        await collects.removed(rc, doc)
        await hooks.run(rc, "after_delete", doc, None)
