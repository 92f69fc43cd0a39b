"""Deleting a row, and what that does to the rows that refer to it (the spec's `delete`);
or handing the row to the component that deletes it (`delete.handoff`)."""

from __future__ import annotations

import logging
from typing import Any

from specstack_runtime import ir
from specstack_runtime.bus import BusError
from specstack_runtime.expr import compile_expr
from specstack_runtime.messaging import InvalidMessage, send
from specstack_runtime.resources import collects, hooks
from specstack_runtime.resources.compiled import error, fill
from specstack_runtime.resources.context import Doc, ResourceCall

logger = logging.getLogger(__name__)

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


def _value(rc: ResourceCall, spec: Any, doc: Doc) -> Any:
    if isinstance(spec, dict) and set(spec) == {"expr"}:
        return compile_expr(str(spec["expr"])).evaluate(**rc.variables(doc=doc))
    if isinstance(spec, dict):
        return {k: _value(rc, v, doc) for k, v in spec.items()}
    return spec


async def hand_off(rc: ResourceCall, doc: Doc) -> Doc | None:
    """The row changed (compare-and-set) and the message to the component that deletes it
    sent; if it cannot be sent, the row takes `failed` (cinder's error_deleting) and the
    caller is answered all the same. None: `when` does not hold, delete it here."""
    h = rc.res.res.handoff
    assert h is not None
    if h.when and not compile_expr(h.when).evaluate(**rc.variables(doc=doc)):
        return None
    await refusals(rc, doc)
    table, changes = rc.res.res.table, {k: _value(rc, v, doc) for k, v in h.set.items()}
    if changes:
        updated = await rc.store.update(
            table, doc["id"], changes, expect={k: doc.get(k) for k in changes}
        )
        if updated is None:
            raise rc.res.fail(h.raced or "changed", id=doc["id"])
        doc = updated
    host = compile_expr(h.host).evaluate(**rc.variables(doc=doc)) if h.host else None
    payload = {k: _value(rc, v, doc) for k, v in h.payload.items()}
    try:
        await send(rc.call, h.send, payload, host=host or None)
    except (BusError, InvalidMessage) as exc:
        logger.error("could not ask %s to delete %s %s: %s", host, rc.res.name, doc["id"], exc)
        failed = {k: _value(rc, v, doc) for k, v in h.failed.items()}
        if failed:
            doc = await rc.store.update(table, doc["id"], failed) or doc
    return doc
