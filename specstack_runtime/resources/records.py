"""Rows the engine records by itself as a component handles an operation or a message.

A resource's `record:` rules (spec/resources) name the triggers: an operation the
component answered with a 2xx, or a queue message it consumed (`error` is '' when
its handler succeeded, else the failure). Each rule's `set` gives fields of the row
(whose id is a stable one of its `key` fields) and `append` an item of a list field; the row is
created by the first rule that reaches it, whichever of the components runs first
(the compute host's event may come before the API's own row), and merged after.
nova's instance actions and their events are such rows.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from specstack_runtime import ir
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import Conflict
from specstack_runtime.expr import auth_vars, compile_expr
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
        "error": "" if error is None else f"{type(error).__name__}: {error}",
        "started": stamp(started),
        "finished": stamp(datetime.now(UTC).timestamp()),
    }
    for res, rule in rules:
        owner = rt.info.components.get(res.res.component, {}).get("database")
        if owner != database:
            continue  # the table is not in this component's database
        try:
            await _record(call, res, rule, {**names, "data": res.res.data})
        except Exception:
            log.exception("%s: recording %s of %s failed", rt.component, res.res.name, call.trigger)


def _eval(text: str, names: dict[str, Any], doc: dict[str, Any]) -> Any:
    return compile_expr(text).evaluate(**names, doc=doc)


async def _record(call: Call, res: Compiled, rule: ir.Record, names: dict[str, Any]) -> None:
    if rule.when and not _eval(rule.when, names, {}):
        return
    store = call.rt.require_store()
    table = res.res.table
    row_id: str | None = None
    old: dict[str, Any] | None = None
    read = False  # `old` is the row as just read: no need to read it again
    for _ in range(ATTEMPTS):
        if row_id is not None and not read:
            old = await store.get(table, row_id)
        read = False
        doc = dict(old or {})
        changes = {k: _eval(v, names, doc) for k, v in rule.set.items()}
        if row_id is None:
            row_id = stable_id(res.res.name, ({**doc, **changes}.get(f, "") for f in rule.key))
            old = await store.get(table, row_id)
            if old is not None:
                read = True
                continue  # evaluated again over the row found
        if rule.append is not None:
            name, item = rule.append
            entry = {k: _eval(v, names, doc) for k, v in item.items()}
            changes[name] = [*(doc.get(name) or []), entry]
        if old is None:
            try:
                await store.create(table, {"id": row_id, **changes})
                return
            except Conflict:
                continue  # another component created it meanwhile: merged into it
        guard = rule.append[0] if rule.append is not None else None
        expect = {guard: old.get(guard)} if guard else None
        if await store.update(table, row_id, changes, expect=expect):
            return
    log.warning("%s: row %s of %s kept changing; not recorded", call.rt.component, row_id, table)
