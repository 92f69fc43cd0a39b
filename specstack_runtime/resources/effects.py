"""Effects: what a write of one row does to a row of another resource (the spec's `effects`).

cinder's attachment reserves its volume when it is created, gives it back when that
create fails, and makes it in-use when it completes: each is an effect, declared on the
attachment's hook points or actions. An effect reads the other row (`row`, beside `doc`,
the row written, and `old`), applies `set` when `when` holds (and `take`, values of the
row written: a snapshot's size is its volume's), compare-and-set on what it
changes and the row's `updated_at` (and its revision, if the resource keeps one), read
again and retried when another writer won. An effect with `create` makes a row instead
(cinder's os-attach: the attachment it records); one with `send` casts a message
(a new volume to the scheduler), the row written taking `failed` if it cannot be sent; one
with `call` tells another API about the other row, best effort (neutron tells nova).
"""

from __future__ import annotations

import logging
from typing import Any

from specstack_runtime import ir
from specstack_runtime.bus import BusError
from specstack_runtime.expr import compile_expr
from specstack_runtime.messaging import InvalidMessage, send
from specstack_runtime.resources import collects, writes
from specstack_runtime.resources.compiled import error
from specstack_runtime.resources.context import Doc, ResourceCall

MAX_ATTEMPTS = 50
logger = logging.getLogger(__name__)


def _value(spec: Any, names: dict[str, Any]) -> Any:
    """A literal, or {expr: CEL}; maps of them are evaluated item by item."""
    if isinstance(spec, dict) and set(spec) == {"expr"}:
        return compile_expr(str(spec["expr"])).evaluate(**names)
    if isinstance(spec, dict):
        return {k: _value(v, names) for k, v in spec.items()}
    return spec


async def apply(
    rc: ResourceCall,
    effects: tuple[ir.Effect, ...],
    doc: Doc,
    old: Doc | None,
    params: Any = None,
) -> None:
    """Each effect in turn; `params` is an action's argument (else the query's), `refs` the
    relations loaded."""
    for effect in effects:
        names = rc.variables(doc=doc, old=old or {}, refs=rc.refs)
        if params is not None:
            names["params"] = params
        if effect.send:
            await _send(rc, effect, doc, names)
        elif effect.create:
            await _create(rc, effect, doc, names)
        else:
            await _apply(rc, effect, doc, names)


async def _send(rc: ResourceCall, effect: ir.Effect, doc: Doc, names: dict[str, Any]) -> None:
    """The message (a cast); one that cannot be sent leaves the written row `failed`."""
    assert effect.send is not None
    host = compile_expr(effect.host).evaluate(**names) if effect.host else None
    payload = {k: _value(v, names) for k, v in effect.payload.items()}
    try:
        await send(rc.call, effect.send, payload, host=host or None)
    except (BusError, InvalidMessage) as exc:
        logger.error("could not send %s for %s %s: %s", effect.send, rc.res.name, doc["id"], exc)
        failed = {k: _value(v, names) for k, v in effect.failed.items()}
        if failed:
            doc.update(await rc.store.update(rc.res.res.table, doc["id"], failed) or failed)


async def _create(rc: ResourceCall, effect: ir.Effect, doc: Doc, names: dict[str, Any]) -> None:
    """New rows of the other resource (one, or one per item of `each`), made as its create
    makes one (defaults, id, references and uniqueness), the rows collecting them told; the
    row written shows what it collects of them."""
    other = rc.of(effect.resource)
    items = compile_expr(effect.each).evaluate(**names) if effect.each else [None]
    for item in items:
        attrs = {k: _value(v, {**names, "item": item}) for k, v in effect.create.items()}
        row = await writes.for_create(other, attrs, attrs.pop("id", None), server=True)
        if effect.counted:  # within its quotas (cinder's volume a restore makes)
            new = await writes.store_new(other, row)
        else:
            new = await other.store.create(other.res.res.table, row)
        await collects.added(other, new)
        if effect.var:
            rc.call.vars[effect.var] = new
    if any(res.name == rc.res.name for res, _ in rc.catalog.collectors(other.res.name)):
        doc.update(await rc.store.get(rc.res.res.table, doc["id"]) or {})


async def _call(rc: ResourceCall, effect: ir.Effect, body: Doc) -> None:
    """Another API told, as the service itself; best effort: a failure is logged."""
    rt, api, operation = rc.call.rt, effect.call["api"], effect.call["operation"]
    try:
        token = await rt.service_token()
        resp = await rt.clients.call(rt.info.api_of_type(api), operation, body=body, token=token)
        if resp.status_code >= 400:
            logger.warning("%s refused %s %s: %s", api, operation, body, resp.text)
    except Exception:
        logger.warning("%s could not be told %s %s", api, operation, body, exc_info=True)


async def _apply(rc: ResourceCall, effect: ir.Effect, doc: Doc, names: dict[str, Any]) -> None:
    other = rc.of(effect.resource)
    table = other.res.res.table
    row_id = str(compile_expr(str(effect.id)).evaluate(**names))
    for _ in range(MAX_ATTEMPTS):
        row = await other.store.get(table, row_id)
        if row is None:
            if effect.missing:
                raise other.res.fail(effect.missing, id=row_id)
            return
        seen = {**names, "row": row}
        changes: Doc = {}
        if effect.call and (effect.when is None or compile_expr(effect.when).evaluate(**seen)):
            return await _call(rc, effect, {k: _value(v, seen) for k, v in effect.body.items()})
        if effect.when is None or compile_expr(effect.when).evaluate(**seen):
            doc.update({k: _value(v, seen) for k, v in effect.take.items()})
            changes = {k: _value(v, seen) for k, v in effect.set.items()}
        elif effect.refuse:
            raise rc.res.fail(effect.refuse, **row)
        new: Doc | None = row
        if changes:
            expect = {k: row.get(k) for k in changes}
            expect["updated_at"] = row.get("updated_at")
            if rev := other.res.res.revision:
                expect[rev] = row.get(rev)
                changes[rev] = int(row.get(rev) or 0) + 1
            new = await other.store.update(table, row_id, changes, expect=expect, current=row)
        if new is not None:
            if effect.var:
                rc.call.vars[effect.var] = new
            return
    message = f"{table} {row_id} is being changed concurrently; try again."
    raise error(409, message, "ConflictingRequest")
