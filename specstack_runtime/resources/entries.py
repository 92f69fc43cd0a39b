"""One entry of a mapping field (nova's `GET|PUT|DELETE /servers/{id}/metadata/{key}`):
`show_entry`, `set_entry` and `remove_entry`, bound with the field and the path parameter
naming the key (`item`). The answer is `{ENVELOPE: {KEY: VALUE}}`, the resource's `one`
envelope; a key the row lacks is `item_missing` (404).

A set's request is judged by the resource's `refuse` rules `on: set_entry` (`changes`: the
entries the body gives, `path`: the key the path names) before anything is read; then the
whole field as it would be is an update's (`on: update` rules), written compare-and-set on
the field (a racing write: `changed`, 409).
"""

from __future__ import annotations

from typing import Any

from specstack_runtime.context import Reply
from specstack_runtime.resources import access, guards
from specstack_runtime.resources.context import Doc, ResourceCall


def _names(rc: ResourceCall) -> tuple[str, str]:
    """The field and the key the path names."""
    key = str(rc.call.path_params.get(str(rc.call.args.get("item")), ""))
    return str(rc.call.args.get("field")), key


def _answer(rc: ResourceCall, entries: dict[str, Any]) -> Reply:
    envelope = rc.res.res.envelope_one
    return Reply(rc.success(200), {envelope: entries} if envelope else entries)


async def show_entry(rc: ResourceCall) -> Reply:
    doc = await access.lookup(rc)
    field, key = _names(rc)
    entries = doc.get(rc.res.key(field)) or {}
    if key not in entries:
        raise rc.res.fail("item_missing", id=doc["id"], field=field, value=key)
    return _answer(rc, {key: entries[key]})


async def set_entry(rc: ResourceCall) -> Reply:
    old = await access.modifiable(rc)
    body = rc.call.body if isinstance(rc.call.body, dict) else {}
    given = body.get(rc.res.res.envelope_one) if rc.res.res.envelope_one else body
    given = dict(given) if isinstance(given, dict) else {}
    guards.check(rc, "set_entry", old, changes=given)  # the request as the spec judges it
    field, _ = _names(rc)
    await _write(rc, old, field, {**(old.get(rc.res.key(field)) or {}), **given})
    return _answer(rc, given)


async def remove_entry(rc: ResourceCall) -> Reply:
    old = await access.modifiable(rc)
    field, key = _names(rc)
    entries = dict(old.get(rc.res.key(field)) or {})
    if key not in entries:
        raise rc.res.fail("item_missing", id=old["id"], field=field, value=key)
    del entries[key]
    await _write(rc, old, field, entries)
    return Reply(rc.success(204, 200))


async def _write(rc: ResourceCall, old: Doc, field: str, entries: dict[str, Any]) -> None:
    """The field as it now is, if the row still holds what was read."""
    column = rc.res.key(field)
    guards.check(rc, "update", old, {field: entries})
    stored = old.get(column) or {}
    table, row_id = rc.res.res.table, str(old["id"])
    if await rc.store.update(table, row_id, {column: entries}, expect={column: stored}) is None:
        gone = await rc.store.get(table, row_id) is None
        raise rc.res.fail("not_found" if gone else "changed", id=row_id)
