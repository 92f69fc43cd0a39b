from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from jsonschema import Draft202012Validator

from specstack_runtime import registry
from specstack_runtime.behaviours.image import RangeNotSatisfiable
from specstack_runtime.context import AuthContext, Reply
from specstack_runtime.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound
from specstack_runtime.policy import parse
from tests.aio import arun
from tests.runtime.fakes import Stack, openapi

DATA = b"\x00cirros-disk-image\xff" * 4096


async def started(tmp_path: Path) -> tuple[Stack, AuthContext, AuthContext]:
    stack = await Stack(tmp_path).start()
    return stack, await stack.login(), await stack.login("demo", project="demo")


async def create(stack: Stack, auth: AuthContext, **fields: Any) -> dict[str, Any]:
    body = {"name": "cirros", "disk_format": "qcow2", "container_format": "bare", **fields}
    reply = await stack.invoke("image", "createImage", auth=auth, body=body)
    assert reply.status == 201
    return reply.body  # type: ignore[no-any-return]


async def op(stack: Stack, name: str, auth: AuthContext, image_id: str, **kw: Any) -> Reply:
    return await stack.invoke("image", name, auth=auth, path_params={"image_id": image_id}, **kw)


async def listing(stack: Stack, auth: AuthContext, **query: Any) -> dict[str, Any]:
    reply = await stack.invoke("image", "listImages", auth=auth, query=query)
    assert reply.status == 200
    return reply.body  # type: ignore[no-any-return]


def test_every_image_operation_is_served_once() -> None:
    """Records by the resource engine, the data stream and versions by behaviours."""
    served = {
        o["operationId"]: o.get("x-specstack-behaviour")
        for item in openapi("image")["paths"].values()
        for o in item.values()
        if isinstance(o, dict) and "operationId" in o
    }
    assert len(served) == 14
    own = {op: name for op, name in served.items() if name}
    assert own == {
        "getImageVersions": "documents.constant",
        "listImageVersions": "documents.constant",
        "showImageSchema": "documents.json_schema",
        "downloadImageData": "image.download_image_data",
    }
    for name in (*own.values(), "image.store_data", "image.delete_data"):
        assert registry.get(name) is not None


@arun
async def test_versions(tmp_path: Path) -> None:
    stack = await Stack(tmp_path).start()
    reply = await stack.invoke("image", "getImageVersions")
    assert reply.status == 300
    versions = reply.body["versions"]
    assert versions[0] == {
        "id": "v2.16",
        "status": "CURRENT",
        "links": [{"rel": "self", "href": stack.info.endpoint("image", stack.config) + "/v2/"}],
    }
    assert versions[-1]["id"] == "v2.0" and all(v["status"] == "SUPPORTED" for v in versions[1:])
    # /versions: the same document, 200 (glance's own client asks there)
    again = await stack.invoke("image", "listImageVersions")
    assert again.status == 200 and again.body == reply.body


@arun
async def test_create_with_glance_defaults(tmp_path: Path) -> None:
    stack, _admin, demo = await started(tmp_path)
    reply = await stack.invoke(
        "image", "createImage", auth=demo, body={"name": "x", "hw_disk_bus": "virtio"}
    )
    image = reply.body
    assert uuid.UUID(image["id"])
    assert reply.headers["Location"].endswith(f"/v2/images/{image['id']}")
    assert image["status"] == "queued" and image["visibility"] == "shared"
    assert image["owner"] == demo.project_id and image["protected"] is False
    assert image["size"] is None and image["checksum"] is None and image["tags"] == []
    assert image["hw_disk_bus"] == "virtio"
    assert image["self"] == f"/v2/images/{image['id']}" and image["file"].endswith("/file")
    assert "direct_url" not in image
    fixed = str(uuid.uuid4())
    assert (await create(stack, demo, id=fixed))["id"] == fixed
    with pytest.raises(Conflict):
        await create(stack, demo, id=fixed)


@arun
async def test_create_rejects_bad_input(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    for body, error in (
        ({"id": "not-a-uuid"}, BadRequest),
        ({"disk_format": "floppy"}, BadRequest),
        ({"container_format": "zip"}, BadRequest),
        ({"min_disk": -1}, BadRequest),
        ({"min_ram": True}, BadRequest),
        ({"protected": "yes"}, BadRequest),
        ({"tags": "a"}, BadRequest),
        ({"name": "n" * 256}, BadRequest),
        ({"custom": 5}, BadRequest),
        ({"status": "active"}, Forbidden),
        ({"size": 5}, Forbidden),
        ({"locations": []}, Forbidden),
        ({"visibility": "public"}, Forbidden),  # publicizing needs admin
        ({"owner": "someone"}, Forbidden),
    ):
        with pytest.raises(error):
            await stack.invoke("image", "createImage", auth=demo, body=body)
    with pytest.raises(BadRequest):
        await stack.invoke("image", "createImage", auth=demo, body=["x"])
    assert (await create(stack, admin, visibility="public"))["visibility"] == "public"


@arun
async def test_upload_lands_in_swift_and_download_reads_it(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    image = await create(stack, demo)
    iid = image["id"]
    assert (await op(stack, "downloadImageData", demo, iid)).status == 204  # queued: no data yet
    reply = await op(
        stack,
        "uploadImageData",
        demo,
        iid,
        raw_body=DATA,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert reply.status == 204
    shown = (await op(stack, "showImage", demo, iid)).body
    service = await stack.glance.auth.service_auth()  # type: ignore[union-attr]
    account = f"AUTH_{service.project_id}"
    assert shown["status"] == "active" and shown["size"] == len(DATA)
    assert shown["checksum"] == hashlib.md5(DATA).hexdigest()
    assert (
        shown["os_hash_algo"] == "sha512"
        and shown["os_hash_value"] == hashlib.sha512(DATA).hexdigest()
    )
    assert shown["direct_url"] == f"swift://{account}/glance/{iid}"
    # The bytes are in the object store, in the service project's account.
    where = {"account": account, "container": "glance", "object": iid}
    stored = await stack.invoke("object-store", "getObject", auth=admin, path_params=where)
    assert stored.body == DATA and stored.headers["ETag"] == shown["checksum"]
    calls = [(o, p.get("container")) for api, o, p in stack.clients.calls if api == "object-store"]
    assert calls == [("createContainer", "glance"), ("putObject", "glance")]
    # Download through glance.
    got = await op(stack, "downloadImageData", admin, iid)
    assert (
        got.status == 200 and got.body == DATA and got.headers["Content-MD5"] == shown["checksum"]
    )
    part = await op(stack, "downloadImageData", demo, iid, headers={"Range": "bytes=1-6"})
    assert part.status == 206 and part.body == DATA[1:7]
    assert part.headers["Content-Range"] == f"bytes 1-6/{len(DATA)}"
    with pytest.raises(RangeNotSatisfiable):
        await op(stack, "downloadImageData", demo, iid, headers={"Range": f"bytes={len(DATA)}-"})
    # Data is uploaded once only.
    with pytest.raises(Conflict):
        await op(stack, "uploadImageData", demo, iid, raw_body=b"again")
    # A second upload reuses the container.
    other = await create(stack, demo)
    await op(stack, "uploadImageData", demo, other["id"], raw_body=b"")
    ops = [o for api, o, _ in stack.clients.calls if api == "object-store"]
    assert ops.count("createContainer") == 1
    assert (await op(stack, "showImage", demo, other["id"])).body["size"] == 0


@arun
async def test_upload_rules(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    bare = (await stack.invoke("image", "createImage", auth=demo, body={"name": "noformat"})).body
    with pytest.raises(BadRequest, match="disk_format"):
        await op(stack, "uploadImageData", demo, bare["id"], raw_body=b"x")
    assert (await op(stack, "showImage", demo, bare["id"])).body["status"] == "queued"
    theirs = await create(stack, admin)
    with pytest.raises(Forbidden):
        await op(stack, "uploadImageData", demo, theirs["id"], raw_body=b"x")
    with pytest.raises(ApiError, match="Content-Type 'text/plain' is not supported") as unsupported:
        await op(
            stack,
            "uploadImageData",
            admin,
            theirs["id"],
            raw_body=b"x",
            headers={"content-type": "text/plain"},
        )
    assert unsupported.value.status == 415


@arun
async def test_store_failure_puts_the_image_back_in_queued(tmp_path: Path) -> None:
    stack, _, demo = await started(tmp_path)
    image = await create(stack, demo)
    original = stack.clients.call

    async def unreachable(api: str, operation_id: str, *args: Any, **kwargs: Any) -> Any:
        if operation_id == "createContainer":  # the glance container cannot be created
            raise httpx.ConnectError("refused")
        return await original(api, operation_id, *args, **kwargs)

    stack.clients.call = unreachable  # type: ignore[method-assign]
    from specstack_runtime.errors import ServiceUnavailable

    with pytest.raises(ServiceUnavailable):
        await op(stack, "uploadImageData", demo, image["id"], raw_body=b"data")
    assert (await op(stack, "showImage", demo, image["id"])).body["status"] == "queued"


@arun
async def test_image_deleted_during_upload_is_gone(tmp_path: Path) -> None:
    stack, _, demo = await started(tmp_path)
    image = await create(stack, demo)
    original = stack.clients.call

    async def delete_while_storing(api: str, operation_id: str, *args: Any, **kwargs: Any) -> Any:
        if operation_id == "putObject":
            await stack.glance.require_store().delete("images", image["id"])
        return await original(api, operation_id, *args, **kwargs)

    stack.clients.call = delete_while_storing  # type: ignore[method-assign]
    with pytest.raises(ApiError, match="may have been deleted during the upload") as gone:
        await op(stack, "uploadImageData", demo, image["id"], raw_body=b"data")
    assert gone.value.status == 410
    assert [o for _, o, _ in stack.clients.calls][-1] == "deleteObject"


@arun
async def test_visibility_rules(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    private = await create(stack, admin, name="private", visibility="private")
    shared = await create(stack, admin, name="shared")
    public = await create(stack, admin, name="public", visibility="public")
    community = await create(stack, admin, name="community", visibility="community")
    mine = await create(stack, demo, name="mine", visibility="private")
    with pytest.raises(NotFound):
        await op(stack, "showImage", demo, private["id"])
    for image in (shared, public, community, mine):
        assert (await op(stack, "showImage", demo, image["id"])).status == 200
    assert (await op(stack, "showImage", admin, mine["id"])).status == 200  # admins see everything
    names = {i["name"] for i in (await listing(stack, demo))["images"]}
    assert names == {"shared", "public", "mine"}
    assert {i["name"] for i in (await listing(stack, demo, visibility="community"))["images"]} == {
        "community"
    }
    assert {i["name"] for i in (await listing(stack, demo, visibility="all"))["images"]} == {
        "shared",
        "public",
        "community",
        "mine",
    }
    assert {i["name"] for i in (await listing(stack, admin))["images"]} == {
        "private",
        "shared",
        "public",
        "community",
        "mine",
    }
    for name, kw in (
        ("updateImage", {"body": [{"op": "replace", "path": "/name", "value": "x"}]}),
        ("deleteImage", {}),
    ):
        with pytest.raises(Forbidden):
            await op(stack, name, demo, shared["id"], **kw)
        with pytest.raises(NotFound):
            await op(stack, name, demo, private["id"], **kw)


@arun
async def test_show_and_name_lookup(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    image = await create(stack, admin)
    reply = await op(stack, "showImage", demo, image["id"])
    assert reply.body == image
    # The CLI tries a name first and expects 404, then lists by name.
    with pytest.raises(NotFound):
        await op(stack, "showImage", demo, "cirros")
    assert [i["id"] for i in (await listing(stack, demo, name="cirros"))["images"]] == [image["id"]]


@arun
async def test_list_filters_and_paging(tmp_path: Path) -> None:
    stack, _admin, demo = await started(tmp_path)
    made = [
        await create(stack, demo, name=f"img{i}", tags=["even"] if i % 2 == 0 else [])
        for i in range(5)
    ]
    await op(stack, "uploadImageData", demo, made[0]["id"], raw_body=b"12345")
    ids = [m["id"] for m in made]
    assert (await listing(stack, demo, id=f"in:{ids[1]},{ids[3]}"))["images"].__len__() == 2
    assert {
        i["id"] for i in (await listing(stack, demo, id=f'in:"{ids[1]}",{ids[3]}'))["images"]
    } == {ids[1], ids[3]}
    assert [
        i["name"]
        for i in (await listing(stack, demo, name="in:img2,img4", sort="name:asc"))["images"]
    ] == ["img2", "img4"]
    assert [i["id"] for i in (await listing(stack, demo, status="active"))["images"]] == [ids[0]]
    assert len((await listing(stack, demo, status="in:queued,saving"))["images"]) == 4
    assert len((await listing(stack, demo, owner=demo.project_id))["images"]) == 5
    assert (await listing(stack, demo, owner="someone-else"))["images"] == []
    assert len((await listing(stack, demo, tag="even"))["images"]) == 3
    assert [i["id"] for i in (await listing(stack, demo, size_min="1"))["images"]] == [ids[0]]
    assert len((await listing(stack, demo, visibility="shared"))["images"]) == 5
    assert (await listing(stack, demo, visibility="private"))["images"] == []
    assert len((await listing(stack, demo, created_at="lte:2999-01-01T00:00:00Z"))["images"]) == 5
    # Paging: a next link only while more remain, never to the same page.
    seen: list[str] = []
    query: dict[str, Any] = {"limit": "2", "sort_key": "name", "sort_dir": "asc"}
    pages = 0
    while True:
        body = await listing(stack, demo, **query)
        pages += 1
        seen += [i["name"] for i in body["images"]]
        assert body["first"] == "/v2/images" and body["schema"] == "/v2/schemas/images"
        if "next" not in body:
            break
        nxt = parse_qs(urlsplit(body["next"]).query)
        assert nxt["marker"] == [body["images"][-1]["id"]] and nxt["sort_key"] == ["name"]
        query = {k: v[0] for k, v in nxt.items()}
    assert seen == [f"img{i}" for i in range(5)] and pages == 3
    # Exactly one page: no next link.
    assert "next" not in await listing(stack, demo, limit="5")
    for bad in (
        {"marker": str(uuid.uuid4())},
        {"limit": "-1"},
        {"limit": "x"},
        {"sort_key": "bogus"},
        {"sort_dir": "up"},
        {"sort": "name:asc", "sort_key": "name"},
        {"visibility": "secret"},
        {"protected": "maybe"},
        {"created_at": "soon:2020-01-01"},
        {"created_at": "gt:yesterday"},
        {"size_max": "big"},
        {"member_status": "odd"},
    ):
        with pytest.raises(BadRequest):
            await stack.invoke("image", "listImages", auth=demo, query=bad)


@arun
async def test_patch(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    image = await create(stack, demo, os_distro="cirros")
    iid = image["id"]

    async def patch(*ops: dict[str, Any], auth: AuthContext = demo) -> dict[str, Any]:
        reply = await op(stack, "updateImage", auth, iid, body=list(ops))
        assert reply.status == 200
        return reply.body  # type: ignore[no-any-return]

    out = await patch(
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "add", "path": "/hw_qemu_guest_agent", "value": "yes"},
        {"op": "remove", "path": "/os_distro"},
        {"op": "add", "path": "/tags", "value": ["a", "b"]},
        {"op": "add", "path": "/tags/-", "value": "c"},
        {"op": "replace", "path": "/min_disk", "value": 2},
        {"op": "replace", "path": "/min_ram", "value": 512},
        {"op": "replace", "path": "/visibility", "value": "private"},
        {"op": "replace", "path": "/protected", "value": True},
    )
    assert (
        out["name"] == "renamed" and out["hw_qemu_guest_agent"] == "yes" and "os_distro" not in out
    )
    assert out["tags"] == ["a", "b", "c"] and out["min_disk"] == 2 and out["min_ram"] == 512
    assert out["visibility"] == "private" and out["protected"] is True
    out = await patch(
        {"op": "remove", "path": "/tags/0"},
        {"op": "replace", "path": "/hw_qemu_guest_agent", "value": "no"},
    )
    assert out["tags"] == ["b", "c"] and out["hw_qemu_guest_agent"] == "no"
    assert (await patch()) == out  # an empty patch changes nothing
    for ops, error in (
        ([{"op": "replace", "path": "/missing", "value": "x"}], Conflict),
        ([{"op": "remove", "path": "/missing"}], Conflict),
        ([{"op": "replace", "path": "/status", "value": "active"}], Forbidden),
        ([{"op": "replace", "path": "/checksum", "value": "x"}], Forbidden),
        ([{"op": "remove", "path": "/name"}], Forbidden),
        ([{"op": "replace", "path": "/visibility", "value": "public"}], Forbidden),
        ([{"op": "replace", "path": "/min_disk", "value": "big"}], BadRequest),
        ([{"op": "replace", "path": "/visibility", "value": "everyone"}], BadRequest),
        ([{"op": "replace", "path": "/name"}], BadRequest),
        ([{"op": "move", "path": "/name", "value": "x"}], BadRequest),
        ([{"op": "replace", "path": "name", "value": "x"}], BadRequest),
        ([{"op": "replace", "path": "/a/b", "value": "x"}], BadRequest),
        ([{"op": "add", "path": "/prop", "value": 5}], BadRequest),
        ([{"op": "remove", "path": "/tags/9"}], Conflict),
        ({"op": "replace"}, BadRequest),
    ):
        with pytest.raises(error):
            await op(stack, "updateImage", demo, iid, body=ops)
    await op(stack, "uploadImageData", demo, iid, raw_body=b"x")
    with pytest.raises(Forbidden):
        await patch({"op": "replace", "path": "/disk_format", "value": "raw"})
    # The patch may also arrive unparsed.
    reply = await op(
        stack,
        "updateImage",
        demo,
        iid,
        raw_body=b'[{"op": "replace", "path": "/name", "value": "raw"}]',
    )
    assert reply.body["name"] == "raw"
    assert (await patch({"op": "replace", "path": "/visibility", "value": "public"}, auth=admin))[
        "visibility"
    ] == "public"


@arun
async def test_delete(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    image = await create(stack, demo, protected=True)
    iid = image["id"]
    await op(stack, "uploadImageData", demo, iid, raw_body=b"bytes")
    with pytest.raises(Forbidden, match="protected"):
        await op(stack, "deleteImage", demo, iid)
    await op(
        stack,
        "updateImage",
        demo,
        iid,
        body=[{"op": "replace", "path": "/protected", "value": False}],
    )
    assert (await op(stack, "deleteImage", demo, iid)).status == 204
    with pytest.raises(NotFound):
        await op(stack, "showImage", demo, iid)
    with pytest.raises(NotFound):
        await op(stack, "deleteImage", demo, iid)
    service = await stack.glance.auth.service_auth()  # type: ignore[union-attr]
    where = {"account": f"AUTH_{service.project_id}", "container": "glance"}
    listed = await stack.invoke(
        "object-store", "listObjects", auth=admin, path_params=where, query={"format": "json"}
    )
    assert iid not in [o["name"] for o in listed.body]
    queued = await create(stack, demo)
    assert (await op(stack, "deleteImage", admin, queued["id"])).status == 204


@arun
async def test_tags_by_path(tmp_path: Path) -> None:
    """PUT and DELETE /v2/images/{id}/tags/{tag}: what `openstack image set/unset --tag` send."""
    stack, _admin, demo = await started(tmp_path)
    iid = (await create(stack, demo, tags=["a"]))["id"]

    async def tag(name: str, value: str) -> Reply:
        return await stack.invoke(
            "image", name, auth=demo, path_params={"image_id": iid, "tag_value": value}
        )

    assert (await tag("addImageTag", "b")).status == 204
    assert (await tag("addImageTag", "b")).status == 204  # kept once
    assert (await op(stack, "showImage", demo, iid)).body["tags"] == ["a", "b"]
    assert (await tag("deleteImageTag", "a")).status == 204
    assert (await op(stack, "showImage", demo, iid)).body["tags"] == ["b"]
    with pytest.raises(NotFound, match="Tag a not found"):
        await tag("deleteImageTag", "a")
    with pytest.raises(BadRequest):
        await tag("addImageTag", "t" * 256)
    assert (await op(stack, "showImage", demo, iid)).body["tags"] == ["b"]


@arun
async def test_deactivate_and_reactivate(tmp_path: Path) -> None:
    """The status state machine: only active images deactivate (403 otherwise, as glance),
    only administrators may, and only they download a deactivated image's data."""
    stack, admin, demo = await started(tmp_path)
    iid = (await create(stack, demo))["id"]
    with pytest.raises(Forbidden, match="status 'queued'"):
        await op(stack, "deactivateImage", admin, iid)
    await op(stack, "uploadImageData", demo, iid, raw_body=b"disk")
    assert (await op(stack, "deactivateImage", admin, iid)).status == 204
    assert (await op(stack, "showImage", demo, iid)).body["status"] == "deactivated"
    with pytest.raises(Forbidden, match="deactivated"):
        await op(stack, "downloadImageData", demo, iid)
    assert (await op(stack, "downloadImageData", admin, iid)).body == b"disk"
    with pytest.raises(Conflict, match="deactivated to saving"):
        await op(stack, "uploadImageData", demo, iid, raw_body=b"again")
    assert (await op(stack, "reactivateImage", admin, iid)).status == 204
    assert (await op(stack, "downloadImageData", demo, iid)).body == b"disk"


@arun
async def test_publicize_rule_comes_from_the_spec(tmp_path: Path) -> None:
    """The refusal to make an image public follows spec/policy.yaml's publicize_image."""
    stack, _admin, demo = await started(tmp_path)
    with pytest.raises(Forbidden, match="publicize_image"):
        await create(stack, demo, visibility="public")
    stack.info.policy.rules["publicize_image"] = parse("rule:admin_or_member")
    assert (await create(stack, demo, visibility="public"))["visibility"] == "public"


@arun
async def test_community_listing_rule_comes_from_the_spec(tmp_path: Path) -> None:
    """Who lists other projects' community images unasked is spec/policy.yaml's
    image_list_community: the list's `where` reads the rule's decision, not the roles."""
    stack, admin, demo = await started(tmp_path)
    await create(stack, admin, name="community", visibility="community")
    assert "community" not in {i["name"] for i in (await listing(stack, demo))["images"]}
    stack.info.policy.rules["image_list_community"] = parse("@")
    assert "community" in {i["name"] for i in (await listing(stack, demo))["images"]}


@arun
async def test_the_image_schema_is_the_documents_own(tmp_path: Path) -> None:
    """glance's GET /v2/schemas/image: the Image schema of spec/apis/image.yaml, its
    references inlined, named and linked as glance frames it."""
    stack = await Stack(tmp_path).start()
    _, demo = await stack.login(), await stack.login("demo", project="demo")
    reply = await stack.invoke("image", "showImageSchema", auth=demo)
    assert reply.status == 200
    schema = reply.body
    assert schema["name"] == "image"
    assert [link["rel"] for link in schema["links"]] == ["self", "enclosure", "describedby"]
    spec_image = openapi("image")["components"]["schemas"]["Image"]
    assert set(schema["properties"]) == set(spec_image["properties"])
    assert "$ref" not in json.dumps(schema)  # self-contained
    assert schema["properties"]["status"]["enum"][:2] == ["queued", "saving"]
    # an image as the API answers it is valid against it
    created = await stack.invoke(
        "image", "createImage", body={"name": "s", "disk_format": "raw"}, auth=demo
    )
    Draft202012Validator(schema).validate(created.body)


@arun
async def test_answers_with_extra_properties_keep_no_memory_of_their_names(
    tmp_path: Path,
) -> None:
    """How a row's keys are answered is worked out once per field key; the names callers
    give extra properties are not kept (there is no end to them)."""
    stack, _admin, demo = await started(tmp_path)
    image = stack.info.resources.resources["image"]
    for i in range(3):
        made = await create(stack, demo, **{f"prop_{i}": f"v{i}"})
        shown = (await op(stack, "showImage", demo, made["id"])).body
        assert shown[f"prop_{i}"] == f"v{i}" and shown["id"] == made["id"]
        assert "checksum" in shown and "direct_url" not in shown  # always shown / hidden
    assert image.answer_keys["name"] == "name"
    assert not any(key.startswith("prop_") for key in image.answer_keys)
