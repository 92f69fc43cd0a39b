"""Rows the engine records by itself as a component handles an operation or a message.

A resource's `record:` rules (spec/resources) name the triggers: an operation the
component answered with a 2xx, or a queue message it consumed (`error` is '' when
its handler succeeded, else the failure). Each rule's `set` gives fields of the row
(whose id is a stable one of its `key` fields) and `append` an item of a list field;
the row is created by the first rule that reaches it, whichever of the components runs
first (the compute host's event may come before the API's own row), and merged after.
nova's instance actions and their events are such rows. With `each` (a CEL list) a rule
writes one row an item (`item`), all in one transaction: the servers of a multiple
create, neutron's agents (each reporting host of a batched report_state).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from specstack_runtime import ir
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import Conflict
from specstack_runtime.expr import Bound, auth_vars, compile_expr, reads_of, values_in
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.compiled import Catalog, Compiled
from specstack_runtime.resources.ids import stable_id

log = logging.getLogger("specstack.records")

#: Compare-and-set attempts on a row another component records at the same time.
ATTEMPTS = 8


def _rules(catalog: Catalog, trigger: str) -> tuple[tuple[Compiled, ir.Record], ...]:
    by_trigger: dict[str, tuple[tuple[Compiled, ir.Record], ...]] | None = getattr(
        catalog, "_records", None
    )
    if by_trigger is None:  # found once per catalog (one per stack)
        by_trigger = {}
        for c in catalog.resources.values():
            for r in c.res.records:
                for on in r.on:
                    by_trigger[on] = (*by_trigger.get(on, ()), (c, r))
        catalog._records = by_trigger  # type: ignore[attr-defined]
    return by_trigger.get(trigger, ())


def stamp(when: float) -> str:
    """A time as nova writes an action's (2.1): microseconds, no zone."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


async def handled(call: Call, started: float, error: BaseException | None = None) -> None:
    """Record what the spec's `record:` rules ask of this handling (never raises: the
    request or message has been served; a row that cannot be written is logged)."""
    rt = call.rt
    if rt.store is None:
        return
    rules = _rules(rt.info.resources, call.trigger)
    if not rules:
        return
    reply = call.reply if isinstance(call.reply, Reply) else None
    if call.kind == "operation" and (error is not None or reply is None or reply.status >= 300):
        return
    database = rt.info.components.get(rt.component, {}).get("database")
    names = {
        "request": {
            "id": call.request_id,
            "global_id": call.global_request_id,
            "trigger": call.trigger,
            "path": dict(call.path_params),
            "body": call.body if isinstance(call.body, dict) else {},
            "payload": dict(call.payload),
            "reply": reply.body if reply is not None and isinstance(reply.body, dict) else {},
        },
        "auth": dict(auth_vars(call.auth)),
        "vars": call.vars,
        "host": rt.host,  # where it was handled (the compute host of a compute's event)
        "error": "" if error is None else f"{type(error).__name__}: {error}",
        "started": stamp(started),
        "finished": stamp(rt.clock.time()),
        "now": rt.clock.time(),  # epoch seconds: a heartbeat's time
    }
    for res, rule in rules:
        owner = rt.info.components.get(res.res.component, {}).get("database")
        if owner != database:
            continue  # the table is not in this component's database
        try:
            await _record(call, res, rule, {**names, "data": res.res.data})
        except Exception:
            log.exception("%s: recording %s of %s failed", rt.component, res.res.name, call.trigger)


def _over(entries: dict[str, str], rowless: Bound, row: Bound | None = None) -> dict[str, Any]:
    """`entries` evaluated: those that read the row (`doc`) over `row`, the others over
    `rowless` (their value is the same over any row)."""
    # the row's entries in one evaluation, the others in another (one by one when one
    # fails: its own error, in order)
    split = [
        (n, t) for n, t in entries.items() if row is not None and "doc" in compile_expr(t).uses
    ]
    rest = [(n, t) for n, t in entries.items() if (n, t) not in split]
    over = values_in(tuple(t for _, t in split), row) if row is not None else []
    others = values_in(tuple(t for _, t in rest), rowless)
    if over is not None and others is not None:
        values = dict(zip((n for n, _ in split), over, strict=True))
        values.update(zip((n for n, _ in rest), others, strict=True))
        return {name: values[name] for name in entries}
    out: dict[str, Any] = {}
    for name, text in entries.items():
        expr = compile_expr(text)
        out[name] = expr.evaluate_in(row if row is not None and "doc" in expr.uses else rowless)
    return out


async def _record(call: Call, res: Compiled, rule: ir.Record, names: dict[str, Any]) -> None:
    # bound once for the rule (each item): the request, its reply and the caller converted once
    texts = (*([rule.when] if rule.when else []), *rule.set.values())
    if rule.append is not None:
        texts += tuple(rule.append[1].values())
    reads = reads_of(texts)
    if rule.each:
        items = compile_expr(rule.each).evaluate_in(Bound(reads_of((rule.each,)), **names))
    else:
        items = [None]
    store = call.rt.require_store()
    rowless = {k: v for k, v in rule.set.items() if "doc" not in compile_expr(v).uses}
    over_row = {k: v for k, v in rule.set.items() if k not in rowless}
    rows: dict[str, dict[str, Any]] = {}
    for item in items:
        empty = Bound(reads, **names, item=item, doc={})
        if rule.when and not compile_expr(rule.when).evaluate_in(empty):
            continue
        fixed = _over(rowless, empty)
        # the row's id: its key fields as set over no row (what a first handling writes)
        key = {**fixed, **_over({f: over_row[f] for f in rule.key if f in over_row}, empty)}
        rows[stable_id(res.res.name, (key.get(f, "") for f in rule.key))] = {
            "item": item,
            "fixed": fixed,
        }
    if not rows:
        return

    def merge(old: dict[str, Any] | None, row: dict[str, Any]) -> dict[str, Any]:
        # over the row as read (locked) in the transaction that writes it: one read and
        # one write, the fields merged with whatever another component recorded first
        doc = dict(old or {})
        empty = Bound(reads, **names, item=row["item"], doc={})
        bound = Bound(reads, **names, item=row["item"], doc=doc)
        changes = {**row["fixed"], **_over(over_row, empty, bound)}
        if rule.append is not None:
            name, item = rule.append
            changes[name] = [*(doc.get(name) or []), _over(item, empty, bound)]
        return {**doc, **changes}

    for _ in range(ATTEMPTS):
        try:
            await store.upsert_many(res.res.table, rows, merge)
            return
        except Conflict:
            continue  # another component created it meanwhile: merged into it
    log.warning(
        "%s: rows %s of %s kept changing; not recorded",
        call.rt.component,
        ", ".join(rows),
        res.res.table,
    )


@behaviour("resource.record")
async def record_only(call: Call) -> None:
    """A message whose handling is the `record:` rules of spec/resources alone."""
