"""The engine's two behaviours: `resource.serve` (every bound operation) and `resource.query`.

The spec binds operations to a resource (`operations: {list: ..., create: ...}`
in spec/resources); build_ir turns that into these behaviours with the resource
and the action as arguments. Each action is a few lines here; the work is in
the modules named for it.
"""

from __future__ import annotations

from typing import Any

from specstack_runtime import jsoncodec
from specstack_runtime.context import Call, Reply
from specstack_runtime.expr import compile_expr
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import (
    access,
    actions,
    collects,
    deleting,
    entries,
    guards,
    headerfields,
    hooks,
    joins,
    listing,
    relations,
    views,
    writes,
)
from specstack_runtime.resources import queries as computed
from specstack_runtime.resources.context import ResourceCall


def engine_call(call: Call, resource: str | None = None) -> ResourceCall:
    info = call.rt.info
    cat = info.resources
    name = resource or call.args.get("resource")
    if not name:
        raise RuntimeError(f"{call.trigger}: no resource named for the engine")
    return ResourceCall(call, cat.resource(str(name)), cat, info.policy)


async def list_(rc: ResourceCall) -> Reply:
    await computed.required(rc, rc.res.res.require)  # a nested collection's parent: 404
    await hooks.run(rc, "before_list", {}, None)  # neutron's default group made on first use
    return Reply(rc.success(200), await listing.answer(rc))


async def show(rc: ResourceCall) -> Reply:
    await computed.required(rc, rc.res.res.require)
    doc = await access.lookup(rc)
    rc.call.vars[rc.res.name] = doc
    status = rc.success(200)
    await joins.load(rc, [doc])
    return Reply(status, None if status == 204 else views.one(rc, doc))


async def create(
    rc: ResourceCall, attrs: dict[str, Any] | None = None, id_: str | None = None
) -> Reply:
    doc = await writes.for_create(rc, writes.attributes(rc) if attrs is None else attrs, id_)
    await relations.load_for(rc, "create", doc)
    guards.check(rc, "create", doc, doc)
    await hooks.run(rc, "before_create", doc, None)
    try:
        created = await writes.store_new(rc, doc)
    except BaseException:
        await hooks.run(rc, "undo_create", doc, None)  # what before_create took, given back
        raise
    await collects.added(rc, created)
    await hooks.run(rc, "after_create", created, None)
    rc.call.vars[rc.res.name] = created
    # the rows its references named (by field), as the checks read them: later steps of the
    # flow need not read them again (a name no expression or step uses otherwise)
    rc.call.vars[f"{rc.res.name}.refs"] = dict(rc.refs)
    status = rc.success(201, 200, 202)
    headers = {}
    if rc.res.res.location:
        where = compile_expr(rc.res.res.location).evaluate(**rc.variables(doc=created))
        headers["Location"] = str(where)
    await joins.load(rc, [created])
    body = None if status == 204 else views.one(rc, created)
    if body is not None and rc.revealed:  # shown_once values: this answer only
        (body.get(rc.res.res.envelope_one) if rc.res.res.envelope_one else body).update(rc.revealed)
    return Reply(status, body, headers)


async def update(rc: ResourceCall, attrs: dict[str, Any] | None = None) -> Reply:
    old = await access.modifiable(rc)
    changes = await writes.for_update(rc, old, writes.attributes(rc) if attrs is None else attrs)
    guards.check(rc, "update", old, changes)
    await hooks.run(rc, "before_update", changes, old)
    doc = old
    if changes:
        rev = rc.res.res.revision
        expect = {rev: old.get(rev)} if rev else None
        updated = await rc.store.update(rc.res.res.table, old["id"], changes, expect=expect)
        if updated is None:
            await hooks.run(rc, "undo_update", changes, old)
            gone = await rc.store.get(rc.res.res.table, old["id"]) is None
            raise rc.res.fail("not_found" if gone else "changed", id=old["id"])
        doc = updated
        await hooks.run(rc, "after_update", doc, old)
    rc.call.vars[rc.res.name] = doc
    status = rc.success(200, 202, 204)
    await joins.load(rc, [doc])
    return Reply(status, None if status == 204 else views.one(rc, doc))


async def patch(rc: ResourceCall) -> Reply:
    """JSON Patch (RFC 6902) on the answer's representation; the result is checked as an
    update would be. A path that does not exist answers 409 (`patch_conflict`), removing a
    field the answer always has `not_removable`, an op the API does not take 400."""
    import jsonpatch

    ops = rc.call.body
    if ops is None and rc.call.raw_body:
        try:
            ops = jsoncodec.loads(rc.call.raw_body)
        except ValueError:
            raise rc.res.fail("bad_request", reason="the JSON Patch is not valid JSON") from None
    if not isinstance(ops, list):
        raise rc.res.fail("bad_request", reason="a JSON Patch is a list of operations")
    allowed = rc.res.conventions.patch_ops
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in allowed:
            raise rc.res.fail(
                "bad_request", reason=f"each operation's op is one of {', '.join(allowed)}"
            )
    old = await access.modifiable(rc)
    rep = views.render(rc, old)
    try:
        patched = jsonpatch.JsonPatch(ops).apply(rep)
    except jsonpatch.JsonPatchConflict as exc:
        raise rc.res.fail("patch_conflict", reason=str(exc)) from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        raise rc.res.fail("bad_request", reason=str(exc)) from None
    attrs = {k: v for k, v in patched.items() if rep.get(k, _MISSING) != v}
    for key in (k for k in rep if k not in patched):
        f = rc.res.fields.get(key)
        if f is not None and f.always:
            raise rc.res.fail("not_removable", field=key)
        attrs[key] = None
    return await update(rc, attrs)


_MISSING = object()


async def upsert(rc: ResourceCall) -> Reply:
    """PUT on a member: create it with the path's id, or replace what it holds."""
    row_id = rc.row_id()
    existing = await rc.store.get(rc.res.res.table, row_id) if row_id else None
    attrs = writes.attributes(rc) if rc.call.body is not None else {}
    attrs.update(headerfields.metadata_change(rc.call, existing))  # swift's headers
    if existing is None:
        reply = await create(rc, attrs, row_id)
        return _bare(rc, reply, rc.success(201, 204, 200))
    if not await access.sees(rc, existing):
        raise rc.res.fail("not_found", id=row_id)
    return _bare(rc, await update(rc, attrs), rc.success(200, 204, 202, 201))


def _bare(rc: ResourceCall, reply: Reply, status: int) -> Reply:
    """The reply with that status, and no body where the operation declares none for it
    (a 204; swift's 201 and 202 of a container)."""
    reply.status = status
    op = rc.catalog.operations.get((rc.res.res.api, rc.call.trigger))
    answers = {r.status: r.content_type for r in op.responses} if op is not None else {}
    if status == 204 or (str(status) in answers and answers[str(status)] is None):
        reply.body = None
    return reply


async def add_item(rc: ResourceCall) -> Reply:
    """PUT on an item of a list field (glance's image tags): added once, checked as an
    update's value would be. An operation that declares 201 answers it (with the resource's
    `location`, which sees `path`) when the item is new, and 204 when it was there (nova's
    server tags)."""
    old, field, item = await _item(rc)
    items = list(old.get(rc.res.key(field)) or [])
    if item in items:
        return _answer(rc, await update(rc, {}), 204)
    reply = _answer(rc, await update(rc, {field: [*items, item]}), 201, 204)
    if reply.status == 201:
        reply.body = None
        if rc.res.res.location:
            where = compile_expr(rc.res.res.location).evaluate(**rc.variables(doc=old))
            reply.headers = {**(reply.headers or {}), "Location": str(where)}
    return reply


async def has_item(rc: ResourceCall) -> Reply:
    """GET on an item of a list field: 204 when the row has it, 404 (`item_missing`) when not."""
    doc = await access.lookup(rc)
    field = str(rc.call.args.get("field"))
    item = str(rc.call.path_params.get(str(rc.call.args.get("item")), ""))
    if item not in list(doc.get(rc.res.key(field)) or []):
        raise rc.res.fail("item_missing", id=doc["id"], field=field, value=item)
    return Reply(rc.success(204, 200))


async def clear_items(rc: ResourceCall) -> Reply:
    """DELETE on a whole list field: emptied (the row stays)."""
    await access.modifiable(rc)
    reply = await update(rc, {str(rc.call.args.get("field")): []})
    return _answer(rc, reply, 204)


async def remove_item(rc: ResourceCall) -> Reply:
    """DELETE on an item of a list field: 404 (`item_missing`) when it is not there."""
    old, field, item = await _item(rc)
    items = list(old.get(rc.res.key(field)) or [])
    if item not in items:
        raise rc.res.fail("item_missing", id=old["id"], field=field, value=item)
    reply = await update(rc, {field: [i for i in items if i != item]})
    return _answer(rc, reply, 204)


async def _item(rc: ResourceCall) -> tuple[dict[str, Any], str, str]:
    old = await access.modifiable(rc)
    field = str(rc.call.args.get("field"))
    return old, field, str(rc.call.path_params.get(str(rc.call.args.get("item")), ""))


def _answer(rc: ResourceCall, reply: Reply, *preferred: int) -> Reply:
    reply.status = rc.success(*preferred, 200)
    if reply.status == 204:
        reply.body = None
    return reply


async def delete(rc: ResourceCall) -> Reply:
    doc = await access.modifiable(rc)
    await relations.load_for(rc, "delete", doc)
    guards.check(rc, "delete", doc)
    handed = await deleting.hand_off(rc, doc) if rc.res.res.handoff else None
    if handed is None:
        await deleting.delete(rc, doc)
    rc.call.vars[rc.res.name] = handed or doc
    return Reply(rc.success(204, 202, 200))


async def reset(rc: ResourceCall) -> Reply:
    """DELETE of a row that may not exist: what the path names goes if the caller may see
    and change it, and the answer is the same either way (a project's quota overrides
    reverted to the defaults: nova, cinder and neutron answer so for a project that has none)."""
    row_id = rc.row_id()
    doc = await access.find(rc, row_id) if row_id else None
    if doc is not None and await access.sees(rc, doc):
        if not access.may_modify(rc, doc):
            raise rc.res.fail("forbidden", id=doc.get("id"), action="reset")
        guards.check(rc, "delete", doc)
        await deleting.delete(rc, doc)
    return Reply(rc.success(204, 202, 200))


ACTIONS = {
    "list": list_,
    "show": show,
    "create": create,
    "update": update,
    "patch": patch,
    "upsert": upsert,
    "delete": delete,
    "reset": reset,
    "action": actions.run,
    "add_item": add_item,
    "remove_item": remove_item,
    "has_item": has_item,
    "clear_items": clear_items,
    "show_entry": entries.show_entry,
    "set_entry": entries.set_entry,
    "remove_entry": entries.remove_entry,
}


@behaviour("resource.serve")
async def serve(call: Call) -> Reply:
    """Serve the operation as the spec's resource model declares it."""
    rc = engine_call(call)
    handler = ACTIONS.get(str(call.args.get("action")))
    if handler is None:
        raise RuntimeError(f"{call.trigger}: the engine has no action {call.args.get('action')!r}")
    return await handler(rc)


@behaviour("resource.query")
async def query(call: Call) -> Reply:
    """Answer a computed query of the spec (spec/resources `queries`)."""
    name = str(call.args.get("query"))
    q = call.rt.info.resources.queries[name]
    return await computed.answer(engine_call(call, q.source), q)
