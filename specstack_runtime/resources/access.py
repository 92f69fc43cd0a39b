"""Who owns, sees and may change a row, as the resource's scope and the spec's rules say.

A caller sees its own rows (its project's or its own, by `owner`), the rows the
resource's `shared` expression makes visible, and every row if `see_all` allows;
any other row is as good as missing (404). Changing a row it sees needs `modify`
(default: owning it, or `see_all`): 403 otherwise.
"""

from __future__ import annotations

from typing import Any

from specstack_runtime.resources import seeds
from specstack_runtime.resources.context import Doc, ResourceCall


def sees_all(rc: ResourceCall) -> bool:
    return rc.allows(rc.res.res.see_all)


def owns(rc: ResourceCall, doc: Doc) -> bool:
    field = rc.res.owner_field
    if field is None:  # no owner: everyone's, unless `shared` says whose
        return rc.res.shared is None
    mine = rc.owner_id()  # the caller's, or the owner it acts for (`acts_for`)
    return bool(mine) and doc.get(field) == mine


def shared(rc: ResourceCall, doc: Doc, parent: Doc | None = None) -> bool:
    """The resource's `shared` expression; with `parent:`, over the row it names too
    (`parent`, null when that row is gone)."""
    expr = rc.res.shared
    if expr is None:
        return False
    more: dict[str, Any] = {"doc": rc.res.complete(doc)}
    if rc.res.res.parent:
        if parent is None:
            return False  # the parent is gone: nothing shares the row any more
        more["parent"] = parent
    return bool(expr.evaluate(**rc.variables(**more)))


def visible(rc: ResourceCall, doc: Doc, parent: Doc | None = None) -> bool:
    return owns(rc, doc) or sees_all(rc) or shared(rc, doc, parent)


async def parent_of(rc: ResourceCall, doc: Doc) -> Doc | None:
    """The row the resource's `parent` field names (None without one, or when gone)."""
    name = rc.res.res.parent
    if not name or doc.get(rc.res.key(name)) is None:
        return None
    f = rc.res.fields[name]
    assert f.ref is not None
    other = rc.of(f.ref.resource)
    row = await other.store.get(other.res.res.table, str(doc[rc.res.key(name)]))
    return None if row is None else other.res.complete(row)


async def sees(rc: ResourceCall, doc: Doc) -> bool:
    """`visible`, reading the parent row when the resource's visibility depends on it."""
    if owns(rc, doc) or sees_all(rc):
        return True
    return shared(rc, doc, await parent_of(rc, doc))


def may_modify(rc: ResourceCall, doc: Doc) -> bool:
    rule = rc.res.res.modify
    if rule:
        return rc.allows(rule, doc)
    return owns(rc, doc) or sees_all(rc)


async def lookup(rc: ResourceCall, id_: str | None = None, *, deleted: bool = False) -> Doc:
    """The row the path names, if the caller may see it; 404 otherwise (also when it is
    soft-deleted, unless `deleted`)."""
    row_id = rc.row_id() if id_ is None else id_
    doc = await find(rc, row_id) if row_id else None
    live = None if deleted else rc.res.live
    if doc is not None and live is not None and not live.evaluate(**rc.variables(doc=doc)):
        doc = None  # soft-deleted: as good as missing
    if doc is not None:
        for name, value in rc.parents().items():
            if str(doc.get(name)) != value:
                doc = None
                break
    if doc is None or not await sees(rc, doc):
        auth = rc.optional_auth
        who = {"user_id": auth.user_id, "project_id": auth.project_id} if auth else {}
        if rc.res.owner_field and auth:  # the owner it looked for (`acts_for`: another)
            who[rc.res.owner_field] = rc.owner_id()
        raise rc.res.fail("not_found", **{**who, **rc.call.path_params, "id": row_id})
    return doc


async def find(rc: ResourceCall, row_id: str) -> Doc | None:
    """The row of that id; else, as the resource's `lookup` says, the row a name stands for
    or the first whose `by` field has that value (cinder's volume types by name) under the
    path's parent (a multiple create's servers share their create's request id)."""
    res = rc.res.res
    if res.rows:
        await seeds.ensure(rc)
    doc = await rc.store.get(res.table, row_id)
    if doc is None and row_id in res.find_names:
        doc = await rc.store.get(res.table, res.find_names[row_id])
    parents = rc.parents().items()
    for name in res.find_by if doc is None else ():
        for row in await rc.store.list(res.table, {rc.res.key(name): row_id}):
            if all(str(row.get(field)) == value for field, value in parents):
                return row
    return doc


async def modifiable(rc: ResourceCall) -> Doc:
    doc = await lookup(rc)
    if not may_modify(rc, doc):
        raise rc.res.fail("forbidden", id=doc.get("id"), action=rc.call.args.get("action"))
    return doc


def stamp_owner(rc: ResourceCall, attrs: dict[str, Any]) -> None:
    """Set the owner fields of a new row from the token (another owner needs `see_all`)."""
    field = rc.res.owner_field
    if field is None:
        return
    auth = rc.auth
    mine = auth.project_id if field == "project_id" else auth.user_id
    alias = "tenant_id" if field == "project_id" else None
    wanted = attrs.get(field)
    if alias and attrs.get(alias) is not None:
        if wanted is not None and attrs[alias] != wanted:
            raise rc.res.fail("bad_request", reason=f"'{field}' and '{alias}' do not match")
        wanted = attrs[alias]
    # another owner: those who see all, or whom `acts_for` allows it (403 from it otherwise)
    if (
        wanted is not None
        and wanted != mine
        and not sees_all(rc)
        and rc.acting_owner(wanted) is None
    ):
        raise rc.res.fail("owner", value=wanted)
    owner = wanted or mine
    if not owner:
        raise rc.res.fail("bad_request", reason=f"a token scoped to a {field[:-3]} is required")
    attrs[field] = owner
    if alias and alias in rc.res.fields:
        attrs[alias] = owner
