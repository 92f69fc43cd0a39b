"""Object-store behaviours (swift semantics) on the stack's shared ObjectStore.

The store is `rt.shared["objectstore"]`, created on first use under
`rt.data_dir / "swift"`. Accounts are "AUTH_" plus a keystone project id; a
token may use an account when it is scoped to that project, or when it has the
admin role (the service users have it).

Errors are raised as ApiErrors: the app answers them as swift does, with short HTML
pages (HEAD answers carry no body), and adds X-Trans-Id (the spec's request-id header).
What the spec states is served by the engine: listings (`listing:`), the headers
answered (`headers:`) and the metadata headers kept, under their lower-cased names
(`metadata:`), all in each operation's `x-specstack-args`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import mimetypes
import time

from specstack_runtime.behaviours.objectstore import NotFound as StoreNotFound
from specstack_runtime.behaviours.objectstore import ObjectInfo, ObjectStore
from specstack_runtime.behaviours.swift_http import byte_range, etags, http_time
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import BadRequest, Forbidden, PreconditionFailed, UnprocessableEntity
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.headerfields import (
    check_values,
    request_metadata,
    response_headers,
)
from specstack_runtime.resources.namelists import NameQuery, serve_listing
from specstack_runtime.services import ServiceRuntime

ACCOUNT_PREFIX = "AUTH_"
PRECONDITION = "A precondition for this request was not met."
THREAD_HASH_BYTES = 1 << 20


def object_store(rt: ServiceRuntime) -> ObjectStore:
    store = rt.shared.get("objectstore")
    if store is None:
        store = rt.shared.setdefault("objectstore", ObjectStore(rt.data_dir / "swift"))
    assert isinstance(store, ObjectStore)
    return store


def _path(call: Call) -> tuple[str, str, str]:
    """Account, container and object of the path (the operation's policy has allowed the
    caller to use the account)."""
    call.require_auth()
    account = call.path_params.get("account", "")
    if not account.startswith(ACCOUNT_PREFIX) or len(account) == len(ACCOUNT_PREFIX):
        raise Forbidden(f"Account {account!r} is not an {ACCOUNT_PREFIX}<project id> account.")
    return account, call.path_params.get("container", ""), call.path_params.get("object", "")


# -- accounts and containers ---------------------------------------------------------


@behaviour("objects.get_account")
async def get_account(call: Call) -> Reply:
    containers = await object_store(call.rt).list_containers(_path(call)[0])
    return serve_listing(
        call, containers, response_headers(call, rows=containers), NameQuery.of(call)
    )


@behaviour("objects.head_account")
async def head_account(call: Call) -> Reply:
    containers = await object_store(call.rt).list_containers(_path(call)[0])
    return Reply(204, None, response_headers(call, rows=containers))


@behaviour("objects.create_container")
async def create_container(call: Call) -> Reply:
    account, container, _ = _path(call)
    check_values(call)
    given, removed = request_metadata(call)
    created = await object_store(call.rt).create_container(account, container, given, removed)
    return Reply(201 if created else 202)


@behaviour("objects.head_container")
async def head_container(call: Call) -> Reply:
    account, container, _ = _path(call)
    info = await object_store(call.rt).head_container(account, container)
    return Reply(204, None, response_headers(call, info))


@behaviour("objects.list_objects")
async def list_objects(call: Call) -> Reply:
    account, container, _ = _path(call)
    store = object_store(call.rt)
    info = await store.head_container(account, container)
    entries = await store.list_objects(account, container, NameQuery.of(call))
    return serve_listing(call, entries, response_headers(call, info))


@behaviour("objects.delete_container")
async def delete_container(call: Call) -> Reply:
    account, container, _ = _path(call)
    await object_store(call.rt).delete_container(account, container)
    return Reply(204)


# -- objects -------------------------------------------------------------------------


def _expired(info: ObjectInfo) -> bool:
    delete_at = info.metadata.get("x-delete-at")
    try:
        return delete_at is not None and int(delete_at) <= time.time()
    except ValueError:
        return False


async def _live_object(store: ObjectStore, account: str, container: str, name: str) -> ObjectInfo:
    info = await store.head_object(account, container, name)
    if _expired(info):
        with contextlib.suppress(StoreNotFound):
            await store.delete_object(account, container, name)
        raise StoreNotFound(f"object {name!r} has expired")
    return info


def _preconditions(call: Call, info: ObjectInfo) -> Reply | None:
    """304 for a satisfied If-None-Match/If-Modified-Since; 412 for a failed If-Match/..."""
    modified = math.ceil(info.last_modified)
    if_match = call.header("If-Match")
    if if_match is not None:
        tags = etags(if_match)
        if "*" not in tags and info.etag not in tags:
            raise PreconditionFailed(PRECONDITION)
    since = http_time(call.header("If-Unmodified-Since"))
    if since is not None and modified > since:
        raise PreconditionFailed(PRECONDITION)
    if_none = call.header("If-None-Match")
    if if_none is not None:
        tags = etags(if_none)
        if "*" in tags or info.etag in tags:
            return Reply(304, None, response_headers(call, info))
    elif (since := http_time(call.header("If-Modified-Since"))) is not None and modified <= since:
        return Reply(304, None, response_headers(call, info))
    return None


@behaviour("objects.get_object")
async def get_object(call: Call) -> Reply:
    account, container, name = _path(call)
    store = object_store(call.rt)
    info = await _live_object(store, account, container, name)
    if (early := _preconditions(call, info)) is not None:
        return early
    info, data = await store.get_object(account, container, name)
    headers = response_headers(call, info)
    if (rng := byte_range(call.header("Range"), len(data))) is not None:
        headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{len(data)}"
        data = data[rng[0] : rng[1] + 1]
    headers["Content-Length"] = str(len(data))
    return Reply(200 if rng is None else 206, data, headers, content_type=info.content_type)


@behaviour("objects.head_object")
async def head_object(call: Call) -> Reply:
    account, container, name = _path(call)
    info = await _live_object(object_store(call.rt), account, container, name)
    return Reply(200, None, response_headers(call, info), content_type=info.content_type)


def _delete_at(call: Call) -> str | None:
    """When the object expires: X-Delete-At, or X-Delete-After seconds from now."""
    now = time.time()
    for header, base in (("X-Delete-At", 0.0), ("X-Delete-After", now)):
        raw = call.header(header)
        if raw is None:
            continue
        try:
            when = base + int(raw)
        except ValueError:
            raise BadRequest(f"Non-integer {header}") from None
        if when <= now:
            raise BadRequest(f"{header} in past")
        return str(math.ceil(when))
    return None


@behaviour("objects.put_object")
async def put_object(call: Call) -> Reply:
    account, container, name = _path(call)
    store = object_store(call.rt)
    data = bytes(call.raw_body or b"")
    if_none = call.header("If-None-Match")
    if if_none is not None:
        if if_none.strip() != "*":
            raise BadRequest("If-None-Match only supports *")
        with contextlib.suppress(StoreNotFound):
            await _live_object(store, account, container, name)
            raise PreconditionFailed(PRECONDITION)
    expected = call.header("ETag")
    if expected:
        md5 = await asyncio.to_thread(_md5, data) if len(data) > THREAD_HASH_BYTES else _md5(data)
        if expected.strip().strip('"').lower() != md5:
            raise UnprocessableEntity("Unable to process the contained instructions")
    metadata = {k: v for k, v in request_metadata(call)[0].items() if k != "x-delete-at"}
    if (delete_at := _delete_at(call)) is not None:
        metadata["x-delete-at"] = delete_at
    content_type = call.header("Content-Type") or mimetypes.guess_type(name)[0]
    info = await store.put_object(account, container, name, data, content_type, metadata)
    return Reply(201, None, response_headers(call, info))


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@behaviour("objects.delete_object")
async def delete_object(call: Call) -> Reply:
    account, container, name = _path(call)
    store = object_store(call.rt)
    await _live_object(store, account, container, name)
    await store.delete_object(account, container, name)
    return Reply(204)
