"""One item of a server's metadata (GET, PUT, DELETE /v2.1/servers/{id}/metadata/{key}):
nova's `{"meta": {KEY: VALUE}}`. The whole metadata is the spec's (spec/resources/compute.yaml
`server_metadata`); an item is a compare-and-set on that resource's column."""

from __future__ import annotations

from typing import Any

from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import BadRequest, Conflict, NotFound
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import access, guards
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.resources.serve import engine_call

NOT_FOUND = "Metadata item was not found"


async def _item_call(call: Call) -> tuple[ResourceCall, dict[str, Any], str]:
    rc = engine_call(call)
    return rc, await access.lookup(rc), str(call.path_params["key"])


async def _write(rc: ResourceCall, old: dict[str, Any], metadata: dict[str, Any]) -> None:
    """The changed items, if the row still holds what was read (a racing write: 409)."""
    guards.check(rc, "update", old, {"metadata": metadata})
    stored = old.get("metadata") or {}
    if await rc.store.update(rc.res.res.table, str(old["id"]), {"metadata": metadata},
                             expect={"metadata": stored}) is None:  # fmt: skip
        raise Conflict(f"Instance {old['id']} changed meanwhile; try again.")


@behaviour("compute.show_server_metadata_item")
async def show_server_metadata_item(call: Call) -> Reply:
    """GET .../metadata/{key}: the item, or 404."""
    _, server, key = await _item_call(call)
    metadata = server.get("metadata") or {}
    if key not in metadata:
        raise NotFound(NOT_FOUND)
    return Reply(200, {"meta": {key: metadata[key]}})


@behaviour("compute.update_server_metadata_item")
async def update_server_metadata_item(call: Call) -> Reply:
    """PUT .../metadata/{key}: the body's one item, named as the path names it."""
    meta = dict(call.body["meta"])
    rc, server, key = await _item_call(call)
    if len(meta) > 1:
        raise BadRequest("Request body contains too many items")
    if key not in meta:
        raise BadRequest("Request body and URI mismatch")
    await _write(rc, server, {**(server.get("metadata") or {}), **meta})
    return Reply(200, {"meta": meta})


@behaviour("compute.delete_server_metadata_item")
async def delete_server_metadata_item(call: Call) -> Reply:
    """DELETE .../metadata/{key}: 204, or 404 for an item the server lacks."""
    rc, server, key = await _item_call(call)
    metadata = dict(server.get("metadata") or {})
    if metadata.pop(key, None) is None and key not in (server.get("metadata") or {}):
        raise NotFound(NOT_FOUND)
    await _write(rc, server, metadata)
    return Reply(204, None)
