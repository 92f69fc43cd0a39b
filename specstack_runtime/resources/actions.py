"""Actions (`POST .../action {"pause": null}`) as transitions of a resource's state machine."""

from __future__ import annotations

from typing import Any

from specstack_runtime import ir, registry
from specstack_runtime.context import Reply
from specstack_runtime.errors import ApiError
from specstack_runtime.expr import compile_expr
from specstack_runtime.messaging import send
from specstack_runtime.resources import access, hooks, views
from specstack_runtime.resources.compiled import error, fill
from specstack_runtime.resources.context import Doc, ResourceCall


def _value(rc: ResourceCall, spec: Any, doc: Doc, arg: Any) -> Any:
    """A literal, or {expr: CEL} over the row and the action's argument (`params`)."""
    if isinstance(spec, dict) and set(spec) == {"expr"}:
        return compile_expr(str(spec["expr"])).evaluate(**rc.variables(doc=doc, params=arg))
    if isinstance(spec, dict):
        return {k: _value(rc, v, doc, arg) for k, v in spec.items()}
    return spec


def _pick(rc: ResourceCall) -> tuple[ir.ResourceAction, Any]:
    states = rc.res.res.states
    body = rc.call.body
    if not isinstance(body, dict) or len(body) != 1:
        raise rc.res.fail("action", action="(none)" if not body else ", ".join(map(str, body)))
    name, arg = next(iter(body.items()))
    found = next((a for a in (states.actions if states else ()) if a.name == name), None)
    if found is None:
        raise rc.res.fail("action", action=name)
    return found, arg


def _refused(
    rc: ResourceCall, states: ir.StateMachine, action: ir.ResourceAction, doc: Doc, state: Any
) -> ApiError:
    """409 in the state machine's words (its `conflict`; the resource's `state` error if set)."""
    values = {
        **doc,
        "action": action.name,
        "id": doc["id"],
        "field": states.field,
        "state": state,
        "resource": rc.res.name.replace("_", " "),
    }
    if "state" in rc.res.res.errors:
        return rc.res.fail("state", **values)
    return error(409, fill(states.conflict, values))


async def run(rc: ResourceCall) -> Reply:
    action, arg = _pick(rc)
    states = rc.res.res.states
    assert states is not None
    doc = await access.modifiable(rc)
    state = doc.get(states.field)
    allowed = not action.from_states or state in action.from_states
    if allowed and action.when:
        allowed = bool(compile_expr(action.when).evaluate(**rc.variables(doc=doc, params=arg)))
    if not allowed:
        raise _refused(rc, states, action, doc, state)
    changes: Doc = {k: _value(rc, v, doc, arg) for k, v in action.set.items()}
    if action.has_to:
        changes[states.field] = action.to
    if changes:
        await hooks.run(rc, "before_update", changes, doc)
        updated = await rc.store.update(
            rc.res.res.table, doc["id"], changes, expect={states.field: state}
        )
        if updated is None:  # changed under us: the state it was in is gone
            current = await rc.store.get(rc.res.res.table, doc["id"]) or doc
            raise _refused(rc, states, action, current, current.get(states.field))
        doc = updated
    if action.hook:
        await registry.get(action.hook)(
            hooks.ResourceEvent(rc.call, rc.res.name, action.name, doc, None, rc)
        )
    if action.send:
        host = None
        if action.host:
            host = compile_expr(action.host).evaluate(**rc.variables(doc=doc, params=arg))
        payload = {k: _value(rc, v, doc, arg) for k, v in action.payload.items()}
        await send(rc.call, action.send, payload, host=host or None)
    status = action.status
    return Reply(status, views.one(rc, doc) if status == 200 else None)
