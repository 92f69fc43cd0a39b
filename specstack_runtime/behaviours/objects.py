"""Object-store behaviours (swift semantics): the data streams and the listings.

Containers and objects are rows of the resource model (spec/resources/object-store.yaml):
the engine serves createContainer and deleteContainer, and finds the rows these
behaviours read (404 in the spec's words). What stays here: an object's bytes to and
from the proxy's disk (`rt.shared["objectstore"]`, created on first use under
`rt.data_dir / "swift"`), their ETag, expiry, conditional and range reads, and the
listings and headers of each operation's `x-specstack-args` (`listing:`, `headers:`,
`metadata:`), which the engine's helpers answer.
"""

from __future__ import annotations

import math
import mimetypes
import time
from typing import Any

from specstack_runtime.behaviours.objectstore import ObjectStore
from specstack_runtime.behaviours.swift_http import byte_range, etags, http_time
from specstack_runtime.context import Call, Reply
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import access, guards
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.resources.headerfields import (
    request_metadata,
    response_headers,
)
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.resources.namelists import NameQuery, serve_listing
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.services import ServiceRuntime

Doc = dict[str, Any]


def object_store(rt: ServiceRuntime) -> ObjectStore:
    store = rt.shared.get("objectstore")
    if store is None:
        store = rt.shared.setdefault("objectstore", ObjectStore(rt.data_dir / "swift"))
    assert isinstance(store, ObjectStore)
    return store


async def _with_totals(rc: ResourceCall, containers: list[Doc]) -> list[Doc]:
    """Each container with its object count and bytes used (the account's listing)."""
    table = rc.of("object").res.res.table
    out = []
    for c in containers:
        objects = await rc.store.list(table, {"container_id": c["id"]})
        sizes = [int(o["size"]) for o in objects]
        out.append({**c, "object_count": len(sizes), "bytes_used": sum(sizes)})
    return out


async def _container_row(call: Call) -> tuple[ResourceCall, Doc]:
    """The path's container (404 unless the caller sees it); its objects are not read."""
    call.require_auth()
    rc = engine_call(call, "container")
    return rc, await access.lookup(rc)


async def _container(call: Call) -> tuple[ResourceCall, Doc]:
    rc, row = await _container_row(call)
    return rc, (await _with_totals(rc, [row]))[0]


async def _account(call: Call) -> list[Doc]:
    call.require_auth()
    rc = engine_call(call, "container")
    rows = await rc.store.list(rc.res.res.table, {"account": call.path_params["account"]})
    return await _with_totals(rc, rows)


# -- accounts and containers ---------------------------------------------------------


@behaviour("objects.get_account")
async def get_account(call: Call) -> Reply:
    rows = await _account(call)
    return serve_listing(call, rows, response_headers(call, rows=rows), NameQuery.of(call))


@behaviour("objects.head_account")
async def head_account(call: Call) -> Reply:
    return Reply(204, None, response_headers(call, rows=await _account(call)))


@behaviour("objects.head_container")
async def head_container(call: Call) -> Reply:
    return Reply(204, None, response_headers(call, (await _container(call))[1]))


@behaviour("objects.list_objects")
async def list_objects(call: Call) -> Reply:
    rc, container = await _container(call)
    objects = rc.of("object")
    rows = await objects.store.list(objects.res.res.table, {"container_id": container["id"]})
    live = [o for o in rows if not await _reaped(objects, o)]
    return serve_listing(call, live, response_headers(call, container), NameQuery.of(call))


# -- objects -------------------------------------------------------------------------


async def _reaped(rc: ResourceCall, doc: Doc) -> bool:
    """An object the spec's `live` no longer holds (past its X-Delete-At) goes, row and bytes."""
    if rc.res.live is None or rc.res.live.evaluate(**rc.variables(doc=doc)):
        return False
    await rc.store.delete(rc.res.res.table, doc["id"])
    object_store(rc.call.rt).remove(str(doc["data"]))
    return True


async def _object(call: Call) -> tuple[ResourceCall, Doc]:
    await _container_row(call)  # the container's 404 first
    rc = engine_call(call, "object")
    return rc, await access.lookup(rc)  # an expired one is not `live`: 404


def _preconditions(call: Call, rc: ResourceCall, doc: Doc) -> Reply | None:
    """304 for a satisfied If-None-Match/If-Modified-Since; 412 for a failed If-Match/..."""
    modified = math.ceil(float(doc["last_modified"]))
    if_match = call.header("If-Match")
    if if_match is not None and not {"*", doc["etag"]} & etags(if_match):
        raise rc.res.fail("precondition")
    since = http_time(call.header("If-Unmodified-Since"))
    if since is not None and modified > since:
        raise rc.res.fail("precondition")
    if_none = call.header("If-None-Match")
    if if_none is not None:
        if {"*", doc["etag"]} & etags(if_none):
            return Reply(304, None, response_headers(call, doc))
    elif (since := http_time(call.header("If-Modified-Since"))) is not None and modified <= since:
        return Reply(304, None, response_headers(call, doc))
    return None


@behaviour("objects.get_object")
async def get_object(call: Call) -> Reply:
    rc, doc = await _object(call)
    if (early := _preconditions(call, rc, doc)) is not None:
        return early
    data = await object_store(call.rt).read(str(doc["data"]))
    if data is None:  # overwritten or deleted meanwhile
        raise rc.res.fail("not_found", id=doc["id"])
    headers = response_headers(call, doc)
    if (rng := byte_range(call.header("Range"), len(data))) is not None:
        headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{len(data)}"
        data = data[rng[0] : rng[1] + 1]
    headers["Content-Length"] = str(len(data))
    return Reply(200 if rng is None else 206, data, headers, content_type=doc["content_type"])


@behaviour("objects.head_object")
async def head_object(call: Call) -> Reply:
    _, doc = await _object(call)
    return Reply(200, None, response_headers(call, doc), content_type=doc["content_type"])


def _delete_at(call: Call, rc: ResourceCall) -> str | None:
    """When the object expires: X-Delete-At, or X-Delete-After seconds from now."""
    now = time.time()
    for header, base in (("X-Delete-At", 0.0), ("X-Delete-After", now)):
        raw = call.header(header)
        if raw is None:
            continue
        if not raw.strip().lstrip("-").isdigit():
            raise rc.res.fail("bad_delete_time", header=header, reason="is not an integer")
        if (when := base + int(raw)) <= now:
            raise rc.res.fail("bad_delete_time", header=header, reason="in past")
        return str(math.ceil(when))
    return None


@behaviour("objects.put_object")
async def put_object(call: Call) -> Reply:
    _, container = await _container_row(call)
    rc = engine_call(call, "object")
    name, store, table = call.path_params["object"], object_store(call.rt), rc.res.res.table
    guards.check(rc, "create", {"name": name})  # the spec's refusals of a new object
    if call.header("If-None-Match") is not None:  # "*" (the spec refuses any other)
        old = await rc.store.get(table, rc.row_id())
        if old is not None and not await _reaped(rc, old):
            raise rc.res.fail("precondition")
    metadata = {k: v for k, v in request_metadata(call)[0].items() if k != "x-delete-at"}
    if (delete_at := _delete_at(call, rc)) is not None:
        metadata["x-delete-at"] = delete_at
    blob = await store.write(bytes(call.raw_body or b""))
    expected = call.header("ETag")
    if expected and expected.strip().strip('"').lower() != blob.etag:
        store.remove(blob.data)
        raise rc.res.fail("etag_mismatch")
    doc = {
        "id": rc.row_id(),
        "account": container["account"],
        "container": container["name"],
        "container_id": container["id"],
        "name": name,
        "etag": blob.etag,
        "size": blob.size,
        "data": blob.data,
        "last_modified": time.time(),
        "content_type": call.header("Content-Type")
        or mimetypes.guess_type(name)[0]
        or "application/octet-stream",
        "metadata": metadata,
    }
    replaced: list[Doc] = []  # the row it replaces, as the write found it: its bytes go

    def replace(current: Doc | None, new: Doc) -> Doc:  # (the last call is the one written)
        replaced[:] = [current] if current is not None else []
        return new

    await rc.store.upsert_many(table, {doc["id"]: doc}, replace)
    for gone in replaced:
        store.remove(str(gone["data"]))
    return Reply(201, None, response_headers(call, doc))


@behaviour("objects.delete_data")
async def delete_data(event: ResourceEvent) -> None:
    """deleteObject, once the row is gone: the object's bytes go too."""
    object_store(event.call.rt).remove(str(event.doc["data"]))
