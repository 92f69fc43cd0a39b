"""Start-up recovery: rows a crash left in the middle of a transition (`states.recover`).

A resource's state machine may say what a component does, when it starts, with the
rows only a lost request could have left where they are: nova's servers accepted but
never scheduled, builds or deletes a compute host had not finished
(spec/resources/compute.yaml). Each rule names the component that applies it (`by`),
the rows (`when`: CEL over `doc`, `host`, the starting instance's host, and
`bus.durable`, whether the bus kept the unhandled messages through the crash), an
algorithm to run first (`hook`: a half-made guest destroyed), the changes (`set`,
compare-and-set on the row's state and the fields it changes) and a message to send
(`send`, `host`, `payload`: the delete handed back to the compute host). The first rule
that matches a row applies. A component applies its rules before it serves, as
nova-compute's init_host does before it consumes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from specstack_runtime import ir, registry
from specstack_runtime.context import Call
from specstack_runtime.expr import compile_expr
from specstack_runtime.messaging import send
from specstack_runtime.resources.context import Doc, ResourceCall
from specstack_runtime.resources.hooks import ResourceEvent

if TYPE_CHECKING:
    from specstack_runtime.services import ServiceRuntime

log = logging.getLogger("specstack.recovery")


def _value(rc: ResourceCall, spec: Any, names: dict[str, Any]) -> Any:
    """A literal, or {expr: CEL} over the rule's variables (nested maps of both)."""
    if isinstance(spec, dict) and set(spec) == {"expr"}:
        return compile_expr(str(spec["expr"])).evaluate(**names)
    if isinstance(spec, dict):
        return {k: _value(rc, v, names) for k, v in spec.items()}
    return spec


def rules_of(rt: ServiceRuntime) -> list[tuple[str, list[ir.RecoveryRule]]]:
    """(resource, its rules this component applies), in the spec's order."""
    out = []
    for name, compiled in rt.info.resources.resources.items():
        states = compiled.res.states
        mine = [r for r in (states.recover if states else ()) if r.by == rt.component]
        if mine:
            out.append((name, mine))
    return out


async def recover(rt: ServiceRuntime) -> int:
    """Apply the component's recovery rules to every row they match; how many rows changed."""
    return (await recover_all([rt]))[rt.host]


async def recover_all(rts: Sequence[ServiceRuntime]) -> dict[str, int]:
    """`recover` for instances of one component (a process's compute hosts): each table
    read once, each instance handed the rows its rules can match (those of its host, for
    rules with `of_host`); rows changed by host."""
    done = dict.fromkeys((rt.host for rt in rts), 0)
    for resource, rules in rules_of(rts[0]) if rts else ():
        table = rts[0].info.resources.resource(resource).res.table
        rows = await rts[0].require_store().list(table)
        everyone = rows if any(r.of_host is None for r in rules) else []
        by_host: dict[str, list[Doc]] = {}
        for field in {r.of_host for r in rules} - {None}:
            for doc in rows:
                by_host.setdefault(str(doc.get(str(field))), []).append(doc)
        for rt in rts:
            mine = everyone or by_host.get(rt.host, [])
            if mine:
                done[rt.host] += await _recover_rows(rt, resource, rules, mine)
    for rt in rts:
        await rt.settle()  # what a hook did to the driver (a guest destroyed), before it serves
    return done


async def _recover_rows(
    rt: ServiceRuntime, resource: str, rules: list[ir.RecoveryRule], rows: list[Doc]
) -> int:
    done = 0
    request_id = f"req-{uuid.uuid4()}"
    call = Call(rt, "recover", "startup", request_id, request_id)
    catalog = rt.info.resources
    rc = ResourceCall(call, catalog.resource(resource), catalog, rt.info.policy)
    for doc in rows:
        rule = _first(rc, rules, doc)
        if rule is not None:
            try:
                done += await _apply(rc, rule, doc)
            except Exception:
                log.exception("%s: recovery of %s %s failed", rt.component, resource, doc["id"])
    return done


def _names(rc: ResourceCall, doc: Doc) -> dict[str, Any]:
    rt = rc.call.rt
    return rc.variables(doc=doc, host=rt.host, bus={"durable": bool(rt.bus.durable)})


def _first(rc: ResourceCall, rules: list[ir.RecoveryRule], doc: Doc) -> ir.RecoveryRule | None:
    names = _names(rc, doc)
    host = rc.call.rt.host
    mine = (r for r in rules if r.of_host is None or str(doc.get(r.of_host)) == host)
    return next((r for r in mine if compile_expr(r.when).evaluate(**names) is True), None)


async def _apply(rc: ResourceCall, rule: ir.RecoveryRule, doc: Doc) -> int:
    states = rc.res.res.states
    assert states is not None
    rt = rc.call.rt
    if rule.hook:
        event = ResourceEvent(rc.call, rc.res.name, "recover", doc, None, rc)
        await registry.get(rule.hook)(event)
    names = _names(rc, doc)
    changes: Doc = {k: _value(rc, v, names) for k, v in rule.set.items()}
    if changes:
        expect = {states.field: doc.get(states.field), **{k: doc.get(k) for k in changes}}
        updated = await rt.require_store().update(
            rc.res.res.table, doc["id"], changes, expect=expect
        )
        if updated is None:
            return 0  # changed since it was read: not what the rule was about any more
        doc = updated
    if rule.send:
        names = _names(rc, doc)
        host = compile_expr(rule.host).evaluate(**names) if rule.host else None
        payload = {k: _value(rc, v, names) for k, v in rule.payload.items()}
        await send(rc.call, rule.send, payload, host=host or None)
    log.warning("%s on %s: %s %s: %s", rt.component, rt.host, rc.res.name, doc["id"], rule.title)
    return 1
