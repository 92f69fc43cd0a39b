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
from specstack_runtime.expr import Bound, auth_vars, compile_expr, reads_of
from specstack_runtime.grouped import values_in
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
    `rowless` (their value is the same over any row: all of them over `row`, in one
    evaluation; one by one when one fails, for its own error in order)."""
    found = values_in(tuple(entries.values()), row if row is not None else rowless)
    if found is not None:
        return dict(zip(entries, found, strict=True))
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
        if rule.append is None:
            changes = {**row["fixed"], **_over(over_row, empty, bound)}
        else:  # the fields and the appended item's in one evaluation (keys kept apart)
            name, item = rule.append
            both = _over({**over_row, **{_ITEM + k: v for k, v in item.items()}}, empty, bound)
            changes = {**row["fixed"], **{k: v for k, v in both.items() if k in over_row}}
            added = {k[len(_ITEM) :]: v for k, v in both.items() if k.startswith(_ITEM)}
            changes[name] = [*(doc.get(name) or []), added]
        return {**doc, **changes}

    for _ in range(ATTEMPTS):
        try:
            # an appended item most often joins a row another handling began
            await store.upsert_many(res.res.table, rows, merge, likely_new=rule.append is None)
            return
        except Conflict:
            continue  # another component created it meanwhile: merged into it
    log.warning(
        "%s: rows %s of %s kept changing; not recorded",
        call.rt.component,
        ", ".join(rows),
        res.res.table,
    )


_ITEM = "\0item:"  # an appended item's entry, beside the row's fields (no field's name)


@behaviour("resource.record")
async def record_only(call: Call) -> None:
    """A message whose handling is the `record:` rules of spec/resources alone."""
