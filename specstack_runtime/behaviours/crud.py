"""Generic resource CRUD with OpenStack's list conventions, for APIs that need nothing more.

The spec points an operation at one of these and says, in `x-specstack-args`,
which table it works on and how the body wraps the resource:

    x-specstack-behaviour: crud.create
    x-specstack-args: {table: registrations, key: registration}

`key` wraps single resources ({"registration": {...}}), `collection` wraps lists
(default: `table`), `id_param` names the path parameter holding the id
(default: `<key>_id`). Resources belong to the caller's project; admins see all.
"""

from __future__ import annotations

import uuid
from typing import Any

from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import BadRequest, NotFound
from specstack_runtime.registry import behaviour
from specstack_runtime.store import Store

PAGING = {"limit", "marker", "sort_key", "sort_dir", "fields", "all_tenants"}


def _args(call: Call) -> tuple[Store, str, str]:
    table = call.args.get("table")
    if not table:
        raise RuntimeError(f"{call.trigger}: x-specstack-args must name a table")
    key = call.args.get("key") or table.rstrip("s")
    return call.rt.require_store(), table, key


def _id(call: Call, key: str) -> str:
    name = call.args.get("id_param") or f"{key}_id"
    if name not in call.path_params:
        raise RuntimeError(f"{call.trigger}: no path parameter {name}")
    return call.path_params[name]


async def _visible(call: Call, table: str, id_: str, key: str) -> dict[str, Any]:
    store = call.rt.require_store()
    doc = await store.get(table, id_)
    auth = call.require_auth()
    if doc is None or (not auth.is_admin and doc.get("project_id") != auth.project_id):
        raise NotFound(f"{key.replace('_', ' ').capitalize()} {id_} could not be found.")
    return doc


@behaviour("crud.create")
async def create(call: Call) -> Reply:
    store, table, key = _args(call)
    auth = call.require_auth()
    body = call.body if isinstance(call.body, dict) else None
    if body is None or not isinstance(body.get(key), dict):
        raise BadRequest(f"The request body must be an object with a '{key}' object.")
    doc = dict(body[key])
    doc["id"] = str(doc.get("id") or uuid.uuid4())
    doc.setdefault("project_id", auth.project_id)
    created = await store.create(table, doc)
    return Reply(201, {key: created})


@behaviour("crud.show")
async def show(call: Call) -> Reply:
    _, table, key = _args(call)
    return Reply(200, {key: await _visible(call, table, _id(call, key), key)})


@behaviour("crud.list")
async def list_(call: Call) -> Reply:
    store, table, _ = _args(call)
    auth = call.require_auth()
    where: dict[str, Any] = {
        k: (v if len(v) > 1 else v[0]) for k, v in call.query.items() if k not in PAGING
    }
    if not auth.is_admin or call.q("all_tenants") is None:
        where["project_id"] = auth.project_id
    limit = call.q("limit")
    if limit is not None and not limit.isdigit():
        raise BadRequest(f"limit must be a non-negative integer, not {limit!r}")
    docs = await store.list(
        table, where, limit=int(limit) if limit else None, marker=call.q("marker")
    )
    return Reply(200, {call.args.get("collection") or table: docs})


@behaviour("crud.update")
async def update(call: Call) -> Reply:
    store, table, key = _args(call)
    doc = await _visible(call, table, _id(call, key), key)
    body = call.body if isinstance(call.body, dict) else None
    if body is None or not isinstance(body.get(key), dict):
        raise BadRequest(f"The request body must be an object with a '{key}' object.")
    changes = {k: v for k, v in body[key].items() if k not in ("id", "project_id")}
    updated = await store.update(table, doc["id"], changes)
    return Reply(200, {key: updated})


@behaviour("crud.delete")
async def delete(call: Call) -> Reply:
    store, table, key = _args(call)
    doc = await _visible(call, table, _id(call, key), key)
    await store.delete(table, doc["id"])
    return Reply(204)
