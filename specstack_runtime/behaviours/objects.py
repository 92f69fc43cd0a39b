"""Object-store behaviours (swift semantics) on the stack's shared ObjectStore.

The store is `rt.shared["objectstore"]`, created on first use under
`rt.data_dir / "swift"`. Accounts are "AUTH_" plus a keystone project id; a
token may use an account when it is scoped to that project, or when it has the
admin role (the service users have it).

Errors are raised as ApiErrors: the app answers them as swift does, with short HTML
pages (HEAD answers carry no body), and adds X-Trans-Id (the spec's request-id header).
Listings are plain text (one name a line; 204 when
empty) unless `format=json`/`xml` or the Accept header asks for JSON or XML.
Container and object metadata are kept under their lower-cased header names
(`x-container-meta-*`, `x-container-read`, `x-object-meta-*`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import mimetypes
import time
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from specstack_runtime.behaviours.objectstore import (
    LISTING_LIMIT,
    ContainerInfo,
    ObjectInfo,
    ObjectStore,
    Subdir,
)
from specstack_runtime.behaviours.objectstore import NotFound as StoreNotFound
from specstack_runtime.behaviours.swift_http import (
    Listing,
    byte_range,
    etags,
    http_date,
    http_time,
    listing_reply,
    naive_time,
    rollup,
    title_case,
    x_timestamp,
)
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import BadRequest, Forbidden, PreconditionFailed, UnprocessableEntity
from specstack_runtime.registry import behaviour
from specstack_runtime.services import ServiceRuntime

ACCOUNT_PREFIX = "AUTH_"
STORAGE_POLICY = "Policy-0"
PRECONDITION = "A precondition for this request was not met."
CONTAINER_META = (
    "x-container-meta-",
    "x-container-read",
    "x-container-write",
    "x-versions-location",
)
OBJECT_META = ("x-object-meta-", "content-disposition", "content-encoding", "x-delete-at")
THREAD_HASH_BYTES = 1 << 20


def object_store(rt: ServiceRuntime) -> ObjectStore:
    store = rt.shared.get("objectstore")
    if store is None:
        store = rt.shared.setdefault("objectstore", ObjectStore(rt.data_dir / "swift"))
    assert isinstance(store, ObjectStore)
    return store


def _account(call: Call) -> str:
    """The account of the path (the operation's policy has allowed the caller to use it)."""
    call.require_auth()
    account = call.path_params.get("account", "")
    if not account.startswith(ACCOUNT_PREFIX) or len(account) == len(ACCOUNT_PREFIX):
        raise Forbidden(f"Account {account!r} is not an {ACCOUNT_PREFIX}<project id> account.")
    return account


# -- listings ------------------------------------------------------------------------


def _account_headers(containers: list[ContainerInfo]) -> dict[str, str]:
    created = min((c.created_at for c in containers), default=time.time())
    return {
        "X-Account-Container-Count": str(len(containers)),
        "X-Account-Object-Count": str(sum(c.object_count for c in containers)),
        "X-Account-Bytes-Used": str(sum(c.bytes_used for c in containers)),
        "X-Timestamp": x_timestamp(created),
    }


def _container_headers(info: ContainerInfo) -> dict[str, str]:
    headers = {
        "X-Container-Object-Count": str(info.object_count),
        "X-Container-Bytes-Used": str(info.bytes_used),
        "X-Timestamp": x_timestamp(info.created_at),
        "X-Storage-Policy": STORAGE_POLICY,
    }
    headers.update({title_case(k): v for k, v in info.metadata.items()})
    return headers


@behaviour("objects.get_account")
async def get_account(call: Call) -> Reply:
    account = _account(call)
    listing = Listing(call)
    store = object_store(call.rt)
    containers = await store.list_containers(account, limit=LISTING_LIMIT * 10)
    by_name = {c.name: c for c in containers}
    names = [c.name for c in containers if c.name.startswith(listing.prefix)]
    rolled = rollup(names, listing.prefix, listing.delimiter)
    shown = [rolled[i] for i in listing.window([n for n, _ in rolled])]
    items: list[dict[str, Any]] = []
    for name, is_subdir in shown:
        if is_subdir:
            items.append({"subdir": name})
        else:
            c = by_name[name]
            items.append(
                {
                    "name": c.name,
                    "count": c.object_count,
                    "bytes": c.bytes_used,
                    "last_modified": naive_time(c.created_at),
                }
            )
    return listing_reply(
        listing.format,
        [n for n, _ in shown],
        items,
        f'account name="{xml_escape(account)}"',
        _account_headers(containers),
    )


@behaviour("objects.head_account")
async def head_account(call: Call) -> Reply:
    account = _account(call)
    containers = await object_store(call.rt).list_containers(account, limit=LISTING_LIMIT * 10)
    return Reply(204, None, _account_headers(containers))


# -- containers ----------------------------------------------------------------------


def _metadata_headers(call: Call, prefixes: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in call.headers.items():
        low = key.lower()
        if any(low == p or (p.endswith("-") and low.startswith(p)) for p in prefixes):
            out[low] = value
    return out


@behaviour("objects.create_container")
async def create_container(call: Call) -> Reply:
    account = _account(call)
    container = call.path_params.get("container", "")
    policy = call.header("X-Storage-Policy")
    if policy and policy != STORAGE_POLICY:
        raise BadRequest(f'Invalid X-Storage-Policy "{policy}"')
    store = object_store(call.rt)
    given = _metadata_headers(call, CONTAINER_META)
    removed = {
        "x-container-meta-" + k.lower()[len("x-remove-container-meta-") :]
        for k in call.headers
        if k.lower().startswith("x-remove-container-meta-")
    }
    metadata: dict[str, str] | None = None
    if given or removed:
        try:
            metadata = dict((await store.head_container(account, container)).metadata)
        except StoreNotFound:
            metadata = {}
        metadata.update(given)
        metadata = {k: v for k, v in metadata.items() if v and k not in removed}
    created = await store.create_container(account, container, metadata)
    return Reply(201 if created else 202)


@behaviour("objects.head_container")
async def head_container(call: Call) -> Reply:
    account = _account(call)
    info = await object_store(call.rt).head_container(
        account, call.path_params.get("container", "")
    )
    return Reply(204, None, _container_headers(info))


@behaviour("objects.list_objects")
async def list_objects(call: Call) -> Reply:
    account = _account(call)
    container = call.path_params.get("container", "")
    listing = Listing(call)
    store = object_store(call.rt)
    info = await store.head_container(account, container)
    path = call.q("path")
    prefix, delimiter = listing.prefix, listing.delimiter
    if path is not None:
        prefix, delimiter = (path.rstrip("/") + "/" if path else ""), "/"
    if listing.reverse:
        entries = await store.list_objects(
            account, container, prefix=prefix, limit=LISTING_LIMIT * 10, delimiter=delimiter
        )
        names = [e.subdir if isinstance(e, Subdir) else e.name for e in entries]
        entries = [entries[i] for i in listing.window(names)]
    else:
        entries = await store.list_objects(
            account,
            container,
            prefix=prefix,
            marker=listing.marker,
            end_marker=listing.end_marker,
            limit=listing.limit,
            delimiter=delimiter,
        )
    if path is not None:
        entries = [e for e in entries if isinstance(e, ObjectInfo)]
    items: list[dict[str, Any]] = []
    names = []
    for e in entries:
        if isinstance(e, Subdir):
            items.append({"subdir": e.subdir})
            names.append(e.subdir)
        else:
            items.append(
                {
                    "name": e.name,
                    "hash": e.etag,
                    "bytes": e.size,
                    "content_type": e.content_type,
                    "last_modified": naive_time(e.last_modified),
                }
            )
            names.append(e.name)
    return listing_reply(
        listing.format,
        names,
        items,
        f'container name="{xml_escape(container)}"',
        _container_headers(info),
    )


@behaviour("objects.delete_container")
async def delete_container(call: Call) -> Reply:
    account = _account(call)
    await object_store(call.rt).delete_container(account, call.path_params.get("container", ""))
    return Reply(204)


# -- objects -------------------------------------------------------------------------


def _object_path(call: Call) -> tuple[str, str, str]:
    account = _account(call)
    return account, call.path_params.get("container", ""), call.path_params.get("object", "")


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


def _object_headers(info: ObjectInfo) -> dict[str, str]:
    headers = {
        "ETag": info.etag,
        "Last-Modified": http_date(info.last_modified),
        "X-Timestamp": x_timestamp(info.last_modified),
        "Accept-Ranges": "bytes",
    }
    headers.update({title_case(k): v for k, v in info.metadata.items()})
    return headers


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
            return Reply(304, None, _object_headers(info))
    elif (since := http_time(call.header("If-Modified-Since"))) is not None and modified <= since:
        return Reply(304, None, _object_headers(info))
    return None


@behaviour("objects.get_object")
async def get_object(call: Call) -> Reply:
    account, container, name = _object_path(call)
    store = object_store(call.rt)
    info = await _live_object(store, account, container, name)
    if (early := _preconditions(call, info)) is not None:
        return early
    info, data = await store.get_object(account, container, name)
    headers = _object_headers(info)
    rng = byte_range(call.header("Range"), len(data))
    if rng is not None:
        first, last = rng
        headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        headers["Content-Length"] = str(last - first + 1)
        return Reply(206, data[first : last + 1], headers, content_type=info.content_type)
    headers["Content-Length"] = str(len(data))
    return Reply(200, data, headers, content_type=info.content_type)


@behaviour("objects.head_object")
async def head_object(call: Call) -> Reply:
    account, container, name = _object_path(call)
    info = await _live_object(object_store(call.rt), account, container, name)
    headers = {**_object_headers(info), "Content-Length": str(info.size)}
    return Reply(200, None, headers, content_type=info.content_type)


def _delete_at(call: Call) -> str | None:
    now = time.time()
    at, after = call.header("X-Delete-At"), call.header("X-Delete-After")
    if at is not None:
        try:
            when = int(at)
        except ValueError:
            raise BadRequest("Non-integer X-Delete-At") from None
        if when <= now:
            raise BadRequest("X-Delete-At in past")
        return str(when)
    if after is not None:
        try:
            delay = int(after)
        except ValueError:
            raise BadRequest("Non-integer X-Delete-After") from None
        if delay <= 0:
            raise BadRequest("X-Delete-After in past")
        return str(math.ceil(now + delay))
    return None


@behaviour("objects.put_object")
async def put_object(call: Call) -> Reply:
    account, container, name = _object_path(call)
    store = object_store(call.rt)
    data = bytes(call.raw_body or b"")
    if_none = call.header("If-None-Match")
    if if_none is not None:
        if if_none.strip() != "*":
            raise BadRequest("If-None-Match only supports *")
        try:
            await _live_object(store, account, container, name)
        except StoreNotFound:
            pass
        else:
            raise PreconditionFailed(PRECONDITION)
    expected = call.header("ETag")
    if expected:
        md5 = await asyncio.to_thread(_md5, data) if len(data) > THREAD_HASH_BYTES else _md5(data)
        if expected.strip().strip('"').lower() != md5:
            raise UnprocessableEntity("Unable to process the contained instructions")
    metadata = {k: v for k, v in _metadata_headers(call, OBJECT_META).items() if k != "x-delete-at"}
    if (delete_at := _delete_at(call)) is not None:
        metadata["x-delete-at"] = delete_at
    content_type = call.header("Content-Type") or mimetypes.guess_type(name)[0]
    info = await store.put_object(account, container, name, data, content_type, metadata)
    headers = {"ETag": info.etag, "Last-Modified": http_date(info.last_modified)}
    return Reply(201, None, headers)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@behaviour("objects.delete_object")
async def delete_object(call: Call) -> Reply:
    account, container, name = _object_path(call)
    store = object_store(call.rt)
    await _live_object(store, account, container, name)
    await store.delete_object(account, container, name)
    return Reply(204)
