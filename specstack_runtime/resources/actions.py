"""Actions (`POST .../action {"pause": null}`) as transitions of a resource's state machine."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from specstack_runtime import ir, messaging, registry
from specstack_runtime.context import Reply
from specstack_runtime.errors import ApiError
from specstack_runtime.expr import compile_expr
from specstack_runtime.messaging import InvalidMessage, api_error, send
from specstack_runtime.microversions import parse
from specstack_runtime.resources import (
    access,
    effects,
    guards,
    hooks,
    joins,
    quotas,
    relations,
    views,
)
from specstack_runtime.resources.compiled import error, fill
from specstack_runtime.resources.context import Doc, ResourceCall


def _value(rc: ResourceCall, spec: Any, doc: Doc, arg: Any, reply: Any = None) -> Any:
    """A literal, or {expr: CEL} over the row, the action's argument (`params`), the rows of
    its relations and what it asked (`refs`) and what a called message answered (`reply`)."""
    if isinstance(spec, dict) and set(spec) == {"expr"}:
        names = rc.variables(doc=doc, params=arg, reply=reply, refs=rc.refs)
        return compile_expr(str(spec["expr"])).evaluate(**names)
    if isinstance(spec, dict):
        return {k: _value(rc, v, doc, arg, reply) for k, v in spec.items()}
    return spec


def _check(
    rc: ResourceCall, checks: tuple[ir.ActionCheck, ...], status: int, doc: Doc, arg: Any
) -> None:
    """The first condition that does not hold answers its status (or `status`) and message."""
    for check in checks:
        if not compile_expr(check.expr).evaluate(**rc.variables(doc=doc, params=arg, refs=rc.refs)):
            values = {**doc, **(arg if isinstance(arg, dict) else {}), "id": doc["id"]}
            raise error(check.status or status, fill(check.message, values), check.kind)


def _pick(rc: ResourceCall) -> tuple[ir.ResourceAction, Any]:
    states = rc.res.res.states
    body = rc.call.body
    named = rc.call.args.get("name")
    if named:  # the operation's path names the action (glance's POST .../actions/deactivate)
        arg = rc.call.args.get("arg")  # the body's object that is its argument, if one is
        body = {str(named): body.get(str(arg)) if arg and isinstance(body, dict) else body}
    if not isinstance(body, dict) or len(body) != 1:
        given = ", ".join(map(str, body)) if isinstance(body, dict | list) else str(body)
        raise rc.res.fail("action", action=given if body else "(none)")
    name, arg = next(iter(body.items()))
    found = next((a for a in (states.actions if states else ()) if a.name == name), None)
    version = rc.call.microversion
    if found is not None and found.named_only and not named:
        found = None  # a body may not name it (nova's attach_volume is not a server action)
    if found is None or (found.since and version is not None and version < parse(found.since)):
        raise rc.res.fail("action", action=name)
    # `{"os-stop": null}`: no argument reads as an empty one (`has(params.x)` is false)
    return found, {} if arg is None else arg


def _refused(
    rc: ResourceCall, states: ir.StateMachine, action: ir.ResourceAction, doc: Doc, state: Any
) -> ApiError:
    """409 in the state machine's words (its `conflict`; the resource's `state` error if set)."""
    values = {
        **doc,
        "action": action.title or action.name,
        "id": doc["id"],
        "field": states.field,
        "state": state,
        "resource": rc.res.name.replace("_", " "),
    }
    if action.conflict is not None:
        text = fill(action.conflict.message, values)
        return error(action.conflict.status or 409, text, action.conflict.kind)
    if "state" in rc.res.res.errors:
        return rc.res.fail("state", **values)
    return error(409, fill(states.conflict, values))


async def run(rc: ResourceCall) -> Reply:
    action, arg = _pick(rc)
    states = rc.res.res.states
    assert states is not None
    if action.policy and not rc.allows(action.policy, rc.call.path_params):
        raise rc.res.fail("action_forbidden", action=action.name, rule=_named(action.policy))
    doc = await access.modifiable(rc)
    _check(rc, action.accept, 400, doc, arg)
    state = doc.get(states.field)
    allowed = not action.from_states or state in action.from_states
    if allowed and action.when:
        allowed = bool(compile_expr(action.when).evaluate(**rc.variables(doc=doc, params=arg)))
    if not allowed:
        raise _refused(rc, states, action, doc, state)
    for ask in action.ask:  # other APIs' objects `require` and the refuse rules read
        await _ask(rc, ask, doc, arg)
    if action.relations:  # the rows `require` reads, found from the row as it would be
        made = {**doc, **{k: _value(rc, v, doc, arg) for k, v in action.set.items()}}
        await relations.load(rc, made, only=action.relations)
    _check(rc, action.require, 409, doc, arg)
    if any(action.name in g.on and "refs" in g.when for g in rc.res.res.guards):
        await relations.load(rc, doc)  # the rows its refuse rules read (cinder's revert)
    guards.check(rc, action.name, doc, arg if isinstance(arg, dict) else {})  # `changes`: arg
    changes: Doc = {k: _value(rc, v, doc, arg) for k, v in action.set.items()}
    if action.has_to:
        changes[states.field] = action.to
    if action.send:
        _check_payload(rc, action, doc, arg)
    before = doc
    async with AsyncExitStack() as held:
        for name in action.quotas:  # counted again with the changes, under the quota's lock
            quota = rc.catalog.quotas[name]
            owner = str(doc.get(rc.res.owner_field or "project_id") or "")
            await held.enter_async_context(quotas.lock(quota, owner))
            await quotas.check_change(rc, quota, doc, {**doc, **changes})
        doc = await _transition(rc, states, action, doc, changes, state)
    if action.hook:
        await registry.get(action.hook)(
            hooks.ResourceEvent(rc.call, rc.res.name, action.name, doc, before, rc)
        )
    try:
        await effects.apply(rc, action.effects, doc, before, params=arg)
    except ApiError:  # (a row it makes over its quota): the transition undone
        await _undo(rc, doc, before, changes)
        raise
    reply = await _send(rc, action, doc, before, changes, arg) if action.send else None
    status = action.status
    # a header whose value is null or "" is left out (nova's createImage Location before 2.45)
    values = {k: _value(rc, v, doc, arg, reply or {}) for k, v in action.headers.items()}
    headers = {k: str(v) for k, v in values.items() if v not in (None, "")}
    if action.answer:  # null: no body
        return Reply(status, _value(rc, action.answer, doc, arg, reply or {}), headers)
    if status != 200 and not action.view:
        return Reply(status, None, headers)
    await joins.load(rc, [doc])
    body = views.one(rc, doc)
    if action.view_adds:  # into the enveloped object (nova's rebuild: server.adminPass)
        one = body.get(rc.res.res.envelope_one) if rc.res.res.envelope_one else body
        one.update({k: _value(rc, v, doc, arg) for k, v in action.view_adds.items()})
    return Reply(status, body, headers)


async def _transition(
    rc: ResourceCall,
    states: ir.StateMachine,
    action: ir.ResourceAction,
    doc: Doc,
    changes: Doc,
    state: Any,
) -> Doc:
    """The changes stored, compare-and-set on the state and on what changes: a concurrent
    action loses (as the state it was in is gone)."""
    if not changes:
        return doc
    await hooks.run(rc, "before_update", changes, doc)
    expect = {states.field: state, **{k: doc.get(k) for k in changes}}
    updated = await rc.store.update(rc.res.res.table, doc["id"], changes, expect=expect)
    if updated is None:
        current = await rc.store.get(rc.res.res.table, doc["id"]) or doc
        raise _refused(rc, states, action, current, current.get(states.field))
    return updated


async def _ask(rc: ResourceCall, ask: ir.ActionAsk, doc: Doc, arg: Any) -> None:
    """`refs.NAME`: what the API answers the caller's token (without one, the service's own;
    `take` of it), {} for a 404, nothing when it cannot say (unreachable, another error)."""
    names = rc.variables(doc=doc, params=arg)
    if ask.when and not compile_expr(ask.when).evaluate(**names):
        return
    path = compile_expr(ask.path).evaluate(**names) if ask.path else {}
    query = compile_expr(ask.query).evaluate(**names) if ask.query else None
    rt = rc.call.rt
    try:
        api, token = rt.info.api_of_type(ask.api), rc.call.token or await rt.service_token()
        resp = await rt.clients.call(api, ask.operation, path, query=query, token=token)
        reply = resp.json() if resp.status_code == 200 else None
    except Exception:  # the other API cannot say: the rules see no `refs.NAME`
        return
    if resp.status_code == 404:
        rc.refs[ask.name] = {}
    elif reply is not None:
        take = compile_expr(ask.take).evaluate(reply=reply) if ask.take else reply
        rc.refs[ask.name] = take


def _named(rule: str) -> str:
    """`rule:NAME` as policy messages name it."""
    return rule.removeprefix("rule:")


def _check_payload(rc: ResourceCall, action: ir.ResourceAction, doc: Doc, arg: Any) -> None:
    """The message's payload, as the argument makes it, checked against the message's schema
    before anything changes: what it refuses is the caller's (400)."""
    assert action.send is not None
    payload = {k: _value(rc, v, doc, arg) for k, v in action.payload.items()}
    try:
        messaging.check(rc.call.rt.info, action.send, "payload", payload)
    except InvalidMessage as exc:
        raise rc.res.fail("bad_request", reason=str(exc)) from None


async def _send(
    rc: ResourceCall,
    action: ir.ResourceAction,
    doc: Doc,
    before: Doc,
    changes: Doc,
    arg: Any,
) -> dict[str, Any] | None:
    """The action's message (a cast, or a call whose reply is returned); if it cannot be
    sent or the callee refuses, the row goes back to what it was and the caller is told."""
    assert action.send is not None
    host = None
    if action.host:
        host = compile_expr(action.host).evaluate(**rc.variables(doc=doc, params=arg))
    payload = {k: _value(rc, v, doc, arg) for k, v in action.payload.items()}
    try:
        return await send(rc.call, action.send, payload, host=host or None)
    except Exception as exc:
        await _undo(rc, doc, before, changes)
        raise api_error(exc) from exc


async def _undo(rc: ResourceCall, doc: Doc, before: Doc, changes: Doc) -> None:
    """The row back to what it was before the action's `changes` (if they still hold)."""
    if changes:
        undo = {k: before.get(k) for k in changes}
        expect = {k: doc.get(k) for k in changes}
        await rc.store.update(rc.res.res.table, doc["id"], undo, expect=expect)
