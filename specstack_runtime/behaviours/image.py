"""Image behaviours (glance v2): the image data (the versions document is the spec's).

The records themselves (create, list, show, JSON-Patch update, delete, visibility,
the status state machine) are served by the resource engine from
spec/resources/image.yaml. What stays here is the algorithm: the data stream to
and from the object store and its size and checksums.

The data lives in container `glance` of the account of the image service's own
project (`AUTH_<service project id>`), one object per image named by its id,
written and read with the image service's own token through
`rt.clients.call(<object-store API>, ...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import httpx

from specstack_runtime.behaviours.swift_http import byte_range
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import RangeNotSatisfiable, ServiceUnavailable
from specstack_runtime.http import error_message
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import access, guards
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.resources.serve import engine_call

Doc = dict[str, Any]

#: The resource of spec/resources/image.yaml whose data these behaviours move (its `data`
#: names the container and the checksum's algorithm, its template `stored` the row after).
RESOURCE = "image"
THREAD_HASH_BYTES = 1 << 20  # hash larger bodies in a worker thread


# -- the object store ----------------------------------------------------------------


async def _object_store(call: Call) -> tuple[str, str]:
    """(account of this service's project, this service's token)."""
    rt = call.rt
    if rt.auth is None:
        raise ServiceUnavailable(
            "The image service has no identity client to reach the object store."
        )
    auth = await rt.auth.service_auth()
    if not auth.project_id:
        raise ServiceUnavailable("The image service's own token has no project.")
    return f"AUTH_{auth.project_id}", await rt.service_token()


async def _swift(
    call: Call, operation: str, params: dict[str, str], **kwargs: Any
) -> httpx.Response:
    api = call.rt.info.api_of_type("object-store")
    try:
        return await call.rt.clients.call(
            api, operation, params, context=call.flow_context(), **kwargs
        )
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"The object store is unreachable: {exc}") from exc


def _store_failed(resp: httpx.Response, what: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The object store could not {what} ({resp.status_code}: {error_message(resp)})."
    )


async def _ensure_container(call: Call, account: str, container: str, token: str) -> None:
    params = {"account": account, "container": container}
    resp = await _swift(call, "createContainer", params, token=token)
    if resp.status_code not in (201, 202, 204):
        raise _store_failed(resp, f"create container {container}")
    call.rt.local.setdefault("image.containers", set()).add(account)


async def _put_data(call: Call, container: str, image_id: str, data: bytes, md5: str) -> Doc:
    account, token = await _object_store(call)
    if account not in call.rt.local.get("image.containers", ()):
        await _ensure_container(call, account, container, token)
    params = {"account": account, "container": container, "object": image_id}
    headers = {"ETag": md5, "Content-Type": "application/octet-stream"}
    resp = await _swift(call, "putObject", params, body=data, headers=headers, token=token)
    if resp.status_code == 404:  # the container went away meanwhile
        await _ensure_container(call, account, container, token)
        resp = await _swift(call, "putObject", params, body=data, headers=headers, token=token)
    if resp.status_code != 201:
        raise _store_failed(resp, "store the image data")
    return params


async def _delete_data(call: Call, location: Doc) -> None:
    _, token = await _object_store(call)
    params = {k: str(location[k]) for k in ("account", "container", "object")}
    resp = await _swift(call, "deleteObject", params, token=token)
    if resp.status_code not in (204, 404):
        raise _store_failed(resp, "delete the image data")


def _digests(data: bytes, algo: str) -> tuple[str, str]:
    return hashlib.md5(data, usedforsecurity=False).hexdigest(), hashlib.new(algo, data).hexdigest()


# -- hooks of the image resource -----------------------------------------------------


@behaviour("image.store_data", needs=("object-store",))
async def store_data(event: ResourceEvent) -> None:
    """Upload (queued -> saving): the data into the object store, its size and checksums.

    The image becomes active; it goes back to queued if storing fails, and the stored
    object goes again if the image was deleted meanwhile (410)."""
    rc, call, iid = event.engine, event.call, str(event.doc["id"])
    store, table, data_ = rc.store, rc.res.res.table, rc.res.res.data
    try:
        data = bytes(call.raw_body or b"")
        if len(data) > THREAD_HASH_BYTES:
            md5, digest = await asyncio.to_thread(_digests, data, data_["hash_algo"])
        else:
            md5, digest = _digests(data, data_["hash_algo"])
        location = await _put_data(call, data_["container"], iid, data, md5)
    except BaseException:
        await store.update(table, iid, {"status": "queued"}, expect={"status": "saving"})
        raise
    done_with = {"size": len(data), "md5": md5, "digest": digest, "location": location}
    stored = rc.template("stored", params=done_with)
    done = await store.update(table, iid, stored, expect={"status": "saving"})
    if done is None:
        with contextlib.suppress(ServiceUnavailable):  # else the object stays behind
            await _delete_data(call, location)
        raise event.engine.res.fail("deleted_during_upload", id=iid)


@behaviour("image.delete_data", needs=("object-store",))
async def delete_data(event: ResourceEvent) -> None:
    """Before an image's record goes: its data in the object store goes."""
    location = event.doc.get("location")
    if isinstance(location, dict):
        await _delete_data(event.call, location)


# -- download ------------------------------------------------------------------------


@behaviour("image.download_image_data", needs=("object-store",))
async def download_image_data(call: Call) -> Reply:
    """The image's data from the object store, a single byte range honoured.

    The record is looked up, and a download refused, as the image resource's model says."""
    rc = engine_call(call, RESOURCE)
    image = await access.lookup(rc)
    guards.check(rc, "download", image)
    location = image.get("location")
    if not isinstance(location, dict):  # no data stored yet
        return Reply(204)
    _, token = await _object_store(call)
    params = {k: str(location[k]) for k in ("account", "container", "object")}
    resp = await _swift(call, "getObject", params, token=token)
    if resp.status_code == 404:
        raise rc.res.fail("data_missing", id=image["id"])
    if resp.status_code != 200:
        raise _store_failed(resp, "read the image data")
    data = resp.content
    headers = {"Content-MD5": str(image.get("checksum") or "")}
    if (
        data
        and (rng := byte_range(call.header("Range"), len(data), RangeNotSatisfiable)) is not None
    ):
        first, last = rng
        headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        return Reply(206, data[first : last + 1], headers, content_type="application/octet-stream")
    return Reply(200, data, headers, content_type="application/octet-stream")
