from __future__ import annotations

import hashlib
import re
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime import registry
from specstack_runtime.behaviours.objects import object_store
from specstack_runtime.context import AuthContext, Reply
from specstack_runtime.errorformat import render
from specstack_runtime.errors import ApiError
from tests.aio import arun
from tests.runtime.fakes import Stack, openapi

DATA = b"swift object data " * 100
MD5 = hashlib.md5(DATA).hexdigest()


class Swift:
    """Calls of the object-store behaviours as one caller, on one account."""

    def __init__(self, stack: Stack, auth: AuthContext | None, account: str) -> None:
        self.stack, self.auth, self.account = stack, auth, account

    async def __call__(
        self, operation: str, container: str | None = None, obj: str | None = None, **kw: Any
    ) -> Reply:
        params = {"account": self.account}
        if container is not None:
            params["container"] = container
        if obj is not None:
            params["object"] = obj
        try:
            return await self.stack.invoke(
                "object-store", operation, auth=self.auth, path_params=params, **kw
            )
        except ApiError as exc:  # a refusal, as the app renders it for swift
            if operation.startswith("head"):  # a HEAD answer has no body
                return Reply(exc.status, None, exc.headers, content_type="text/html")
            body, ctype = render("swift", exc)
            return Reply(exc.status, body, exc.headers, content_type=ctype)


async def started(tmp_path: Path) -> tuple[Stack, Swift, Swift, AuthContext, AuthContext]:
    stack = await Stack(tmp_path).start()
    admin = await stack.login()
    demo = await stack.login("demo", project="demo")
    return (
        stack,
        Swift(stack, demo, f"AUTH_{demo.project_id}"),
        Swift(stack, admin, f"AUTH_{admin.project_id}"),
        admin,
        demo,
    )


def test_every_object_store_operation_has_its_behaviour() -> None:
    ops = {
        o["operationId"]: o.get("x-specstack-behaviour")
        for item in openapi("object-store")["paths"].values()
        for o in item.values()
        if isinstance(o, dict) and "operationId" in o
    }
    assert len(ops) == 10
    # the engine serves what spec/resources/object-store.yaml binds; behaviours the rest
    assert {op for op, name in ops.items() if name is None} == {
        "createContainer",
        "deleteContainer",
        "deleteObject",
    }
    for name in ops:
        if ops[name] is not None:
            snake = "objects." + re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
            assert ops[name] == snake and registry.get(snake) is not None


@arun
async def test_containers(tmp_path: Path) -> None:
    _stack, swift, _, _, _ = await started(tmp_path)
    empty = await swift("getAccount")
    assert empty.status == 204 and empty.headers["X-Account-Container-Count"] == "0"
    assert (await swift("getAccount", query={"format": "json"})).body == []
    assert (
        await swift("createContainer", "photos", headers={"X-Container-Meta-Color": "blue"})
    ).status == 201
    assert (await swift("createContainer", "photos")).status == 202
    assert (
        await swift("createContainer", "docs", headers={"X-Container-Read": ".r:*"})
    ).status == 201
    head = await swift("headContainer", "photos")
    assert head.status == 204 and head.body is None
    assert (
        head.headers["X-Container-Object-Count"] == "0"
        and head.headers["X-Container-Meta-Color"] == "blue"
    )
    assert head.headers["X-Storage-Policy"] == "Policy-0" and float(head.headers["X-Timestamp"]) > 0
    await swift("createContainer", "photos", headers={"X-Container-Meta-Size": "big"})
    head = await swift("headContainer", "photos")
    assert (
        head.headers["X-Container-Meta-Color"] == "blue"
        and head.headers["X-Container-Meta-Size"] == "big"
    )
    await swift("createContainer", "photos", headers={"X-Remove-Container-Meta-Color": "x"})
    assert "X-Container-Meta-Color" not in (await swift("headContainer", "photos")).headers
    text = await swift("getAccount")
    assert (
        text.status == 200
        and text.body == b"docs\nphotos\n"
        and (text.content_type or "").startswith("text/plain")
    )
    listed = await swift("getAccount", headers={"Accept": "application/json"})
    assert [c["name"] for c in listed.body] == ["docs", "photos"]
    assert set(listed.body[0]) == {"name", "count", "bytes", "last_modified"}
    assert (await swift("getAccount", query={"limit": "1", "reverse": "true"})).body == b"photos\n"
    assert (await swift("getAccount", query={"marker": "docs"})).body == b"photos\n"
    assert (await swift("getAccount", query={"prefix": "ph", "format": "json"})).body[0][
        "name"
    ] == "photos"
    xml = await swift("getAccount", query={"format": "xml"})
    assert b"<name>photos</name>" in xml.body and (xml.content_type or "").startswith(
        "application/xml"
    )
    # X-Remove- empties any metadata header, ACLs included
    await swift("createContainer", "docs", headers={"X-Remove-Container-Read": "x"})
    assert "X-Container-Read" not in (await swift("headContainer", "docs")).headers
    assert (await swift("deleteContainer", "docs")).status == 204
    missing = await swift("deleteContainer", "docs")
    assert (
        missing.status == 404
        and b"Not Found" in missing.body
        and (missing.content_type or "").startswith("text/html")
    )
    assert (await swift("headContainer", "docs")).status == 404
    assert (await swift("headContainer", "docs")).body is None
    assert (await swift("listObjects", "docs")).status == 404
    bad = await swift("createContainer", "a" * 300)
    assert bad.status == 400 and b"longer" in bad.body
    longest = "é" * 128  # 256 bytes: swift's longest container name
    assert (await swift("createContainer", longest)).status == 201
    assert (await swift("putObject", longest, "o" * 1024, raw_body=b"x")).status == 201
    assert (await swift("listObjects", longest)).body == b"o" * 1024 + b"\n"
    assert (await swift("putObject", longest, "o" * 1025, raw_body=b"x")).status == 400
    assert (await swift("deleteContainer", longest)).status == 409
    assert (await swift("deleteObject", longest, "o" * 1024)).status == 204
    assert (await swift("deleteContainer", longest)).status == 204
    assert (await swift("createContainer", "x", headers={"X-Storage-Policy": "gold"})).status == 400
    for name in ("ph-1", "ph-2"):
        await swift("createContainer", name)
    rolled = await swift("getAccount", query={"format": "json", "delimiter": "-"})
    assert [c.get("name", c.get("subdir")) for c in rolled.body] == ["ph-", "photos"]
    assert rolled.body[0] == {"subdir": "ph-"}


@arun
async def test_objects(tmp_path: Path) -> None:
    _stack, swift, _, _, _ = await started(tmp_path)
    await swift("createContainer", "c")
    put = await swift(
        "putObject",
        "c",
        "dir/obj.txt",
        raw_body=DATA,
        headers={"ETag": MD5, "X-Object-Meta-Owner": "me", "Content-Type": "text/plain"},
    )
    assert put.status == 201 and put.headers["ETag"] == MD5 and "Last-Modified" in put.headers
    got = await swift("getObject", "c", "dir/obj.txt")
    assert got.status == 200 and got.body == DATA and got.content_type == "text/plain"
    assert got.headers["ETag"] == MD5 and got.headers["Content-Length"] == str(len(DATA))
    assert got.headers["X-Object-Meta-Owner"] == "me" and got.headers["Accept-Ranges"] == "bytes"
    assert float(got.headers["X-Timestamp"]) == pytest.approx(time.time(), abs=60)
    assert got.headers["Last-Modified"].endswith("GMT")
    head = await swift("headObject", "c", "dir/obj.txt")
    assert (
        head.status == 200
        and head.body is None
        and head.headers["Content-Length"] == str(len(DATA))
    )
    # No content type given: guessed from the name, else octet-stream.
    await swift("putObject", "c", "pic.png", raw_body=b"png")
    assert (await swift("headObject", "c", "pic.png")).content_type == "image/png"
    await swift("putObject", "c", "blob", raw_body=b"")
    assert (await swift("getObject", "c", "blob")).content_type == "application/octet-stream"
    # A wrong ETag is refused and leaves the object as it was.
    bad = await swift(
        "putObject", "c", "dir/obj.txt", raw_body=b"other", headers={"ETag": '"' + "0" * 32 + '"'}
    )
    assert bad.status == 422
    assert (await swift("getObject", "c", "dir/obj.txt")).body == DATA
    assert (
        await swift("putObject", "c", "dir/obj.txt", raw_body=b"x", headers={"If-None-Match": "*"})
    ).status == 412
    assert (
        await swift("putObject", "c", "new", raw_body=b"x", headers={"If-None-Match": "*"})
    ).status == 201
    assert (
        await swift("putObject", "c", "new", raw_body=b"x", headers={"If-None-Match": "abc"})
    ).status == 400
    assert (await swift("putObject", "nope", "o", raw_body=b"x")).status == 404
    # Listings.
    names = await swift("listObjects", "c")
    assert (
        names.body == b"blob\ndir/obj.txt\nnew\npic.png\n"
        and names.headers["X-Container-Object-Count"] == "4"
    )
    rows = (await swift("listObjects", "c", query={"format": "json"})).body
    row = next(r for r in rows if r["name"] == "dir/obj.txt")
    assert row["hash"] == MD5 and row["bytes"] == len(DATA) and row["content_type"] == "text/plain"
    folded = (await swift("listObjects", "c", query={"format": "json", "delimiter": "/"})).body
    assert {"subdir": "dir/"} in folded and len(folded) == 4
    assert (await swift("listObjects", "c", query={"prefix": "dir/"})).body == b"dir/obj.txt\n"
    assert (await swift("listObjects", "c", query={"path": "dir"})).body == b"dir/obj.txt\n"
    assert (
        await swift("listObjects", "c", query={"limit": "2", "marker": "blob"})
    ).body == b"dir/obj.txt\nnew\n"
    assert (
        await swift("listObjects", "c", query={"reverse": "on", "limit": "2"})
    ).body == b"pic.png\nnew\n"
    assert (await swift("listObjects", "c", query={"end_marker": "dir"})).body == b"blob\n"
    assert (await swift("listObjects", "c", query={"prefix": "zzz"})).status == 204
    assert (await swift("listObjects", "c", query={"limit": "x"})).status == 400
    # Account counters.
    head = await swift("headAccount")
    assert head.status == 204
    assert (
        head.headers["X-Account-Container-Count"] == "1"
        and head.headers["X-Account-Object-Count"] == "4"
    )
    assert head.headers["X-Account-Bytes-Used"] == str(len(DATA) + 3 + 0 + 1)
    # Deleting: a container with objects is a conflict.
    conflict = await swift("deleteContainer", "c")
    assert conflict.status == 409 and b"Conflict" in conflict.body
    for name in ("dir/obj.txt", "pic.png", "blob", "new"):
        assert (await swift("deleteObject", "c", name)).status == 204
    assert (await swift("deleteObject", "c", "new")).status == 404
    assert (await swift("getObject", "c", "new")).status == 404
    assert (await swift("headObject", "c", "new")).body is None
    assert (await swift("deleteContainer", "c")).status == 204


@arun
async def test_conditional_and_range_requests(tmp_path: Path) -> None:
    _, swift, _, _, _ = await started(tmp_path)
    await swift("createContainer", "c")
    await swift("putObject", "c", "o", raw_body=DATA)
    assert (await swift("getObject", "c", "o", headers={"If-None-Match": f'"{MD5}"'})).status == 304
    assert (await swift("getObject", "c", "o", headers={"If-Match": '"abc"'})).status == 412
    assert (await swift("getObject", "c", "o", headers={"If-Match": MD5})).status == 200
    future = formatdate(time.time() + 3600, usegmt=True)
    past = formatdate(time.time() - 3600, usegmt=True)
    assert (await swift("getObject", "c", "o", headers={"If-Modified-Since": future})).status == 304
    assert (await swift("getObject", "c", "o", headers={"If-Modified-Since": past})).status == 200
    assert (await swift("getObject", "c", "o", headers={"If-Unmodified-Since": past})).status == 412
    assert (
        await swift("getObject", "c", "o", headers={"If-Modified-Since": "garbage"})
    ).status == 200
    part = await swift("getObject", "c", "o", headers={"Range": "bytes=0-4"})
    assert (
        part.status == 206
        and part.body == DATA[:5]
        and part.headers["Content-Range"] == f"bytes 0-4/{len(DATA)}"
    )
    assert (await swift("getObject", "c", "o", headers={"Range": "bytes=-3"})).body == DATA[-3:]
    assert (
        await swift("getObject", "c", "o", headers={"Range": f"bytes={len(DATA)}-"})
    ).status == 416
    assert (await swift("getObject", "c", "o", headers={"Range": "lines=1-2"})).status == 200


@arun
async def test_expiring_objects(tmp_path: Path) -> None:
    _, swift, _, _, _ = await started(tmp_path)
    await swift("createContainer", "c")
    assert (
        await swift("putObject", "c", "o", raw_body=b"x", headers={"X-Delete-After": "1"})
    ).status == 201
    delete_at = int((await swift("headObject", "c", "o")).headers["X-Delete-At"])
    assert time.time() < delete_at <= time.time() + 2
    assert (
        await swift("putObject", "c", "p", raw_body=b"x", headers={"X-Delete-At": "12"})
    ).status == 400
    assert (
        await swift("putObject", "c", "p", raw_body=b"x", headers={"X-Delete-After": "soon"})
    ).status == 400
    time.sleep(max(delete_at - time.time(), 0) + 0.05)
    assert (await swift("getObject", "c", "o")).status == 404
    assert (await swift("deleteObject", "c", "o")).status == 404
    assert (await swift("listObjects", "c")).status == 204  # and it is gone for good


@arun
async def test_account_access_rule(tmp_path: Path) -> None:
    stack, demo_swift, admin_swift, admin, demo = await started(tmp_path)
    await admin_swift("createContainer", "private")
    # A token of another project may not touch the account ...
    intruder = Swift(stack, demo, admin_swift.account)
    for operation, args in (
        ("getAccount", ()),
        ("listObjects", ("private",)),
        ("createContainer", ("x",)),
        ("putObject", ("private", "o")),
        ("deleteContainer", ("private",)),
    ):
        reply = await intruder(operation, *args, raw_body=b"x")
        assert reply.status == 403 and b"Forbidden" in reply.body, operation
    assert (await intruder("headAccount")).status == 403
    # ... nor an account that is not AUTH_<project>.
    assert (await Swift(stack, demo, "demo")("getAccount")).status == 403
    assert (await Swift(stack, demo, "AUTH_")("getAccount")).status == 403
    # Its own account, yes; admins (and so the service users) anywhere.
    assert (await demo_swift("createContainer", "mine")).status == 201
    assert (await Swift(stack, admin, demo_swift.account)("listObjects", "mine")).status == 204
    service = await stack.login("glance", "x", "service")
    assert (await Swift(stack, service, demo_swift.account)("headContainer", "mine")).status == 204
    anonymous = await Swift(stack, None, demo_swift.account)("getAccount")
    assert anonymous.status == 401 and b"Unauthorized" in anonymous.body


@arun
async def test_the_store_is_shared_and_created_lazily(tmp_path: Path) -> None:
    stack, swift, _, _, _ = await started(tmp_path)
    assert "objectstore" not in stack.shared
    await swift("createContainer", "c")  # a row of the swift database: no data yet
    assert "objectstore" not in stack.shared
    await swift("putObject", "c", "o", raw_body=b"x")
    store = stack.shared["objectstore"]
    assert object_store(stack.swift) is store and store.root == tmp_path / "swift"
    # Another runtime of the same process (glance, say) reaches the same store.
    assert object_store(stack.glance) is store
    # an overwritten object's bytes go, and a deleted one's
    await swift("putObject", "c", "o", raw_body=b"y")
    assert len(list(store.root.iterdir())) == 1
    assert (await swift("deleteObject", "c", "o")).status == 204
    assert list(store.root.iterdir()) == []


@arun
async def test_an_object_request_reads_its_row_not_its_containers_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET, HEAD and PUT of an object check its container exists, without listing the
    container's objects (an image download read every image's row of glance's container);
    the container's own HEAD still counts them."""
    from specstack_runtime.store import Store

    _stack, swift, _, _, _ = await started(tmp_path)
    await swift("createContainer", "c")
    for i in range(5):
        assert (await swift("putObject", "c", f"o{i}", raw_body=b"x" * i)).status == 201
    listed: list[str] = []
    original = Store.list

    async def recorded(self: Store, table: str, *args: Any, **kwargs: Any) -> Any:
        listed.append(table)
        return await original(self, table, *args, **kwargs)

    monkeypatch.setattr(Store, "list", recorded)
    assert (await swift("getObject", "c", "o3")).body == b"xxx"
    assert (await swift("headObject", "c", "o2")).headers["Content-Length"] == "2"
    assert (await swift("putObject", "c", "o5", raw_body=b"y")).status == 201
    assert (await swift("getObject", "nope", "o1")).status == 404
    assert "objects" not in listed
    head = await swift("headContainer", "c")
    assert head.headers["X-Container-Object-Count"] == "6"
    assert head.headers["X-Container-Bytes-Used"] == str(0 + 1 + 2 + 3 + 4 + 1)
    assert "objects" in listed
