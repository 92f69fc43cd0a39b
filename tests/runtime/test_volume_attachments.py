"""Cinder's attachments (create, update with the connector, complete, delete), its scheduler,
and no client input giving a 500."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import volume_attach as attach
from specstack_runtime.behaviours import volume_backend as volbackend
from specstack_runtime.context import Call, Interaction, Reply
from specstack_runtime.errors import ApiError, StepFailed
from tests.runtime.netvol_fakes import (
    ADMIN,
    OTHER,
    PROJECT,
    check_reply,
    expect_error,
    interaction,
    make_call,
    stack_info,
)
from tests.runtime.test_volume import API, CONNECTOR, GIB, SERVER, Cinder, cinder, run, served

# -- attachments ---------------------------------------------------------------------------------


async def _refused(
    c: Cinder, attachment_id: str, operation_id: str, body: Any, status: int, *expected: str
) -> None:
    """`operation_id` on the attachment with `body` answered `status` (and `expected`:
    the error's kind, its message)."""
    call = make_call(c.api, operation_id, body=body, path_params=c.pp(attachment_id=attachment_id))
    await expect_error(served(call), status, *expected)


def test_boot_flow_attachment_export_complete_and_delete(tmp_path: Path) -> None:
    """Step 15 (create with a connector, export step, complete) and delete-vm step 7."""

    async def scenario(c: Cinder) -> None:
        vid = await c.available()
        body = {
            "attachment": {
                "volume_uuid": vid,
                "instance_uuid": SERVER,
                "connector": CONNECTOR,
                "mode": "rw",
            }
        }
        created, call = await c.op(served, "createAttachment", 200, body=body, sequence="boot-vm")
        att = created["attachment"]
        assert att["status"] == "attaching" and att["connection_info"] is None
        assert call.vars["attachment"]["id"] == att["id"] and call.vars["volume"]["id"] == vid
        assert (await c.row(vid) or {})["status"] == "attaching"

        # 15.2: the export step; it rewrites the HTTP answer the trigger returned
        call.reply = Reply(200, created)
        await attach.export_attachment(interaction(call, "attachment_update", "15.2"))
        assert call.reply is not None
        info = call.reply.body["attachment"]["connection_info"]
        path = c.volume_file(vid)
        assert info == {
            "driver_volume_type": "file",
            "data": {
                "device_path": str(path.resolve()),
                "volume_id": vid,
                "serial": vid,
                "access_mode": "rw",
                "format": "raw",
            },
        }
        check_reply(API, "createAttachment", call.reply, 200)
        await attach.export_attachment(interaction(call, "attachment_update"))  # idempotent

        shown, _ = await c.op(
            served, "showAttachment", 200, path_params=c.pp(attachment_id=att["id"])
        )
        assert shown["attachment"]["connection_info"] == info

        # 15.4: complete → attached, volume in-use with its attachment entry
        await c.op(
            served,
            "completeAttachment",
            204,
            path_params=c.pp(attachment_id=att["id"]),
            body={"os-complete": None},
        )
        shown_volume, _ = await c.op(served, "showVolume", 200, path_params=c.pp(volume_id=vid))
        volume = shown_volume["volume"]
        assert volume["status"] == "in-use"
        entry = volume["attachments"][0]
        assert entry["id"] == vid and entry["attachment_id"] == att["id"]
        assert entry["server_id"] == SERVER and entry["device"] == "/dev/vdb"
        assert entry["host_name"] is None  # administrators and services only
        # cinder's naive UTC time with microseconds
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", entry["attached_at"])
        admin_view, _ = await c.op(
            served, "showVolume", 200, who=ADMIN, path_params=c.pp(volume_id=vid)
        )
        assert admin_view["volume"]["attachments"][0]["host_name"] == "compute-1"
        shown, _ = await c.op(
            served, "showAttachment", 200, path_params=c.pp(attachment_id=att["id"])
        )
        assert shown["attachment"]["status"] == "attached"
        assert shown["attachment"]["attached_at"] != ""

        # an in-use volume is neither deletable nor attachable again
        await expect_error(
            served(make_call(c.api, "deleteVolume", path_params=c.pp(volume_id=vid))),
            400,
        )
        await expect_error(
            served(make_call(c.api, "createAttachment", body=body, path_params=c.pp())),
            400,
            "InvalidVolume",
        )

        # delete-vm 7.1/7.3: delete the attachment, then the unexport step
        deleted, dcall = await c.op(
            attach.delete_attachment,
            "deleteAttachment",
            200,
            sequence="delete-vm",
            path_params=c.pp(attachment_id=att["id"]),
        )
        assert deleted == {"attachments": []}
        assert dcall.vars["attachment"]["id"] == att["id"]
        await attach.unexport_attachment(interaction(dcall, "attachment_delete", "7.3"))
        row = await c.row(vid) or {}
        assert row["status"] == "available" and row["attachments"] == []
        await expect_error(
            served(make_call(c.api, "showAttachment", path_params=c.pp(attachment_id=att["id"]))),
            404,
            "VolumeAttachmentNotFound",
        )
        await c.op(served, "deleteVolume", 202, path_params=c.pp(volume_id=vid))
        await c.wait_gone(vid)

    run(tmp_path, scenario)


def test_nova_style_attachment_outside_a_flow(tmp_path: Path) -> None:
    """POST without connector → reserved; PUT with it → exported; complete; DELETE."""

    async def scenario(c: Cinder) -> None:
        vid = await c.available()
        created, _ = await c.op(
            served,
            "createAttachment",
            200,
            who=ADMIN,  # nova, for the volume's owner: the attachment is the volume's project's
            body={"attachment": {"volume_uuid": vid, "instance_uuid": SERVER}},
        )
        att_id = created["attachment"]["id"]
        assert (await c.store.get("attachments", att_id) or {})["project_id"] == PROJECT
        assert created["attachment"]["status"] == "reserved"
        assert (await c.row(vid) or {})["status"] == "reserved"
        # not exported yet: cannot complete
        await _refused(c, att_id, "completeAttachment", {"os-complete": None}, 400)
        bad: dict[str, Any]
        for bad in (
            {"attachment": {}},
            {"attachment": {"connector": "x"}},
            {},
            {"attachment": {"connector": {"ip": "1.2.3.4"}}},
            {"attachment": {"connector": {"host": "h", "multipath": "yes"}}},
        ):
            await _refused(c, att_id, "updateAttachment", bad, 400)
        for bad in ({"attachment": {}}, {"attachment": {"connector": None}}):
            await _refused(
                c,
                att_id,
                "updateAttachment",
                bad,
                400,
                "InvalidInput",
                "Invalid connector: an object with at least 'host' is expected.",
            )
        updated, ucall = await c.op(
            served,
            "updateAttachment",
            200,
            path_params=c.pp(attachment_id=att_id),
            body={"attachment": {"connector": CONNECTOR}},
        )
        assert updated["attachment"]["connection_info"]["data"]["volume_id"] == vid
        assert ucall.vars["attachment"]["id"] == att_id
        stored = ucall.vars["attachment"]  # the export's row: host, mountpoint, state
        assert stored["attached_host"] == CONNECTOR["host"] and stored["connector"] == CONNECTOR
        assert stored["mountpoint"] == CONNECTOR.get("mountpoint")
        assert stored["attach_status"] == "attaching"
        assert (await c.row(vid) or {})["status"] == "attaching"
        await _refused(c, att_id, "completeAttachment", {"nope": None}, 400)
        await c.op(
            served,
            "completeAttachment",
            204,
            path_params=c.pp(attachment_id=att_id),
            body={"os-complete": None},
        )
        assert (await c.row(vid) or {})["status"] == "in-use"
        await _refused(c, att_id, "updateAttachment", {"attachment": {"connector": CONNECTOR}}, 409)
        # another project cannot see or delete it
        await expect_error(
            attach.delete_attachment(
                make_call(
                    c.api,
                    "deleteAttachment",
                    who=OTHER,
                    path_params={"project_id": OTHER.project_id or "", "attachment_id": att_id},
                )
            ),
            404,
        )
        deleted, dcall = await c.op(
            attach.delete_attachment,
            "deleteAttachment",
            200,
            path_params=c.pp(attachment_id=att_id),
        )
        assert deleted == {"attachments": []}
        assert (await c.row(vid) or {})["status"] == "available"
        # the operation unexported it already: the spec's step that follows does nothing
        await attach.unexport_attachment(no_backend(dcall))

        # a connector on create outside a flow: exported by the operation itself
        created, ccall = await c.op(
            served,
            "createAttachment",
            200,
            body={
                "attachment": {
                    "volume_uuid": vid,
                    "instance_uuid": SERVER,
                    "connector": CONNECTOR,
                    "mode": "ro",
                }
            },
        )
        assert created["attachment"]["connection_info"]["data"]["access_mode"] == "ro"
        await attach.export_attachment(no_backend(ccall))  # already exported: nothing to do

    run(tmp_path, scenario)


def no_backend(call: Call) -> Interaction:
    """A step whose transport must not be used."""

    async def invoke(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"unexpected back-end call {args} {kwargs}")

    return Interaction(call, "x", "cinder-api", "cinder-volume", "amqp-call", None, invoke)


def test_attachment_create_rejects_bad_input(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        vid = await c.available()
        creating = "6b0a6e3c-0d8e-4e86-8c55-0c1f1c2b9a77"
        await c.store.create(
            "volumes",
            {
                "id": creating,
                "project_id": PROJECT,
                "size": 1,
                "status": "creating",
                "host": None,
                "attachments": [],
            },
        )
        unknown = "7c1b7f4d-1e9f-4f97-9d66-1d2c3b4a5f68"
        ok = {"volume_uuid": vid, "instance_uuid": SERVER}
        cases: list[tuple[Any, int, str, str]] = [
            (None, 400, "BadRequest", "Missing required element 'attachment'"),
            ({"attachment": {}}, 400, "InvalidInput", "Must specify 'volume_uuid'"),
            ({"attachment": {"volume_uuid": vid}}, 400, "InvalidInput", "'instance_uuid'"),
            ({"attachment": {**ok, "mode": "rx"}}, 400, "ValidationError", "attribute mode"),
            ({"attachment": {**ok, "connector": 3}}, 400, "ValidationError", "connector"),
            # not a UUID (cinder's schema: 400); a UUID naming no volume: 404
            ({"attachment": {**ok, "volume_uuid": "nope"}}, 400, "ValidationError", "volume_uuid"),
            (
                {"attachment": {**ok, "volume_uuid": unknown}},
                404,
                "VolumeNotFound",
                f"Volume {unknown} could not be found.",
            ),
            (
                {"attachment": {**ok, "volume_uuid": creating}},
                400,
                "InvalidVolume",
                "must be available to reserve, but the current status is creating",
            ),
            # a connector needs the volume's back end (checked before the volume's state)
            (
                {"attachment": {**ok, "volume_uuid": creating, "connector": CONNECTOR}},
                400,
                "InvalidVolume",
                f"Invalid volume: Volume {creating} has no back-end host yet (status creating);"
                " it cannot be exported.",
            ),
        ]
        for body, status, kind, match in cases:
            await expect_error(
                served(make_call(c.api, "createAttachment", body=body, path_params=c.pp())),
                status,
                kind,
                match,
            )
        assert (await c.row(vid) or {})["status"] == "available"
        assert await c.store.count("attachments") == 0

        # two racing reservations of one volume: one wins, the other is refused
        body = {"attachment": {"volume_uuid": vid, "instance_uuid": SERVER}}
        results = await asyncio.gather(
            *(
                served(make_call(c.api, "createAttachment", body=body, path_params=c.pp()))
                for _ in range(2)
            ),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["BadRequest", "Reply"]

    run(tmp_path, scenario)


def test_export_step_without_attachment_fails_cleanly(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        call = make_call(c.api, "createAttachment", path_params=c.pp())
        with pytest.raises(StepFailed):
            await attach.export_attachment(interaction(call, "attachment_update"))
        call.vars["attachment"] = {"id": "a", "volume_id": "v", "connector": None}
        await attach.export_attachment(interaction(call, "attachment_update"))  # nothing to export

    run(tmp_path, scenario)


# -- scheduler ---------------------------------------------------------------------------------


def test_scheduler_spreads_volumes_over_backends_by_allocated_size(tmp_path: Path) -> None:
    def two_storage_nodes(ir: dict[str, Any]) -> None:
        for node in ir["topology"]:
            if node["name"] == "storage":
                node["count"] = 2

    async def main() -> None:
        async with cinder(tmp_path, stack_info(two_storage_nodes)) as c:
            assert [b.host for b in c.backends] == ["storage-1", "storage-2"]
            big = await c.available(size=5)
            small = await c.available(size=1)
            third = await c.available(size=1)
            hosts = [(await c.row(v) or {})["host"] for v in (big, small, third)]
            assert hosts[0] != hosts[1] and hosts[2] == hosts[1]
            for vid, host in zip((big, small, third), hosts, strict=True):
                assert (
                    c.volume_file(vid, host).stat().st_size
                    == (await c.row(vid) or {})["size"] * GIB
                )

    asyncio.run(main())


def test_scheduler_without_backends_marks_the_volume_error(tmp_path: Path) -> None:
    def no_backend(ir: dict[str, Any]) -> None:
        for comp in ir["components"]:
            if comp["name"] == "cinder-volume":
                comp["consumes"] = []

    async def main() -> None:
        async with cinder(tmp_path, stack_info(no_backend)) as c:
            body, _ = await c.op(served, "createVolume", 202, body={"volume": {"size": 1}})
            await c.wait_status(body["volume"]["id"], "error")
            # an errored volume without a host is deleted at once
            await c.op(
                served,
                "deleteVolume",
                202,
                path_params=c.pp(volume_id=body["volume"]["id"]),
            )
            assert await c.row(body["volume"]["id"]) is None

    asyncio.run(main())


def test_backend_handlers_directly(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        backend = c.backends[0]
        vid = await c.available(size=2)
        call = make_call(backend, "m", who=None)
        call.payload = {"volume_id": vid, "attachment_id": "a1", "connector": CONNECTOR}
        consumes = backend.info.components[backend.component]["consumes"]
        call.args = next(dict(c["args"]) for c in consumes if c["message"] == "attachment_update")
        reply = await volbackend.backend_export(call)
        assert reply["connection_info"] == {
            "driver_volume_type": "file",
            "data": {
                "device_path": str(c.volume_file(vid).resolve()),
                "volume_id": vid,
                "serial": vid,
                "access_mode": "rw",
                "format": "raw",
            },
        }
        assert await volbackend.backend_unexport(call) == {"volume_id": vid}
        call.payload = {
            "volume_id": "7b0a6e3c-0d8e-4e86-8c55-0c1f1c2b9a77",
            "attachment_id": "a",
            "connector": CONNECTOR,
        }
        with pytest.raises(ApiError):
            await volbackend.backend_export(call)
        call.payload = {"volume_id": vid}
        await volbackend.backend_delete(call)
        assert not c.volume_file(vid).exists() and await c.row(vid) is None
        call.payload = {"volume_id": "../../etc", "size": 1}
        with pytest.raises(ValueError):
            volbackend.volume_path(backend, "../../etc")
        await volbackend.backend_create(call)  # no such row: nothing happens
        assert os.listdir(tmp_path / "volumes" / "storage") == []

    run(tmp_path, scenario)


def test_deleting_one_of_two_attachments_answers_the_other(tmp_path: Path) -> None:
    """deleteAttachment answers the attachments left (the spec's summary view); the volume
    stays in-use while an attached one is left."""

    async def scenario(c: Cinder) -> None:
        vid = await c.available()
        body = {"attachment": {"volume_uuid": vid, "instance_uuid": SERVER}}
        created, _ = await c.op(served, "createAttachment", 200, body=body)
        reserved = created["attachment"]["id"]
        old_api = {"os-attach": {"instance_uuid": SERVER, "mountpoint": "/dev/vdc"}}
        await c.op(served, "volumeAction", 202, body=old_api, path_params=c.pp(volume_id=vid))
        (other,) = [a for a in await c.store.list("attachments") if a["id"] != reserved]
        left, _ = await c.op(
            served, "deleteAttachment", 200, path_params=c.pp(attachment_id=reserved)
        )
        assert left == {
            "attachments": [
                {"id": other["id"], "status": "attached", "instance": SERVER, "volume_id": vid}
            ]
        }
        row = await c.row(vid) or {}
        assert row["status"] == "in-use"
        assert [a["attachment_id"] for a in row["attachments"]] == [other["id"]]
        left, _ = await c.op(
            served, "deleteAttachment", 200, path_params=c.pp(attachment_id=other["id"])
        )
        assert left == {"attachments": []}
        row = await c.row(vid) or {}
        assert row["status"] == "available" and row["attachments"] == []

    run(tmp_path, scenario)


# -- no client input gives a 500 -----------------------------------------------------------------

JUNK: list[Any] = [None, 0, "x", [], {}, {"a": None}, [{}], True, -1, 10**9, {"host": 5}]


def test_junk_input_never_escapes_as_anything_but_an_api_error(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        vid = await c.available()
        created, _ = await c.op(
            served,
            "createAttachment",
            200,
            body={"attachment": {"volume_uuid": vid, "instance_uuid": SERVER}},
        )
        att = created["attachment"]["id"]
        targets: list[
            tuple[Callable[[Call], Awaitable[Reply]], str, Callable[[Any], Any], dict[str, str]]
        ] = [
            (served, "createVolume", lambda v: {"volume": {"size": 1, "name": v}}, {}),
            (served, "createVolume", lambda v: {"volume": {"size": v}}, {}),
            (served, "createVolume", lambda v: {"volume": v}, {}),
            (
                served,
                "updateVolume",
                lambda v: {"volume": {"metadata": v}},
                {"volume_id": vid},
            ),
            (served, "volumeAction", lambda v: {"os-extend": v}, {"volume_id": vid}),
            (served, "volumeAction", lambda v: {"os-attach": v}, {"volume_id": vid}),
            (served, "volumeAction", lambda v: {"os-detach": v}, {"volume_id": vid}),
            (
                served,
                "volumeAction",
                lambda v: {"os-initialize_connection": v},
                {"volume_id": vid},
            ),
            (
                served,
                "createAttachment",
                lambda v: {"attachment": {"volume_uuid": v, "instance_uuid": v}},
                {},
            ),
            (
                served,
                "updateAttachment",
                lambda v: {"attachment": {"connector": v}},
                {"attachment_id": att},
            ),
            (served, "completeAttachment", lambda v: v, {"attachment_id": att}),
        ]
        for fn, op, make_body, params in targets:
            for value in JUNK:
                call = make_call(c.api, op, body=make_body(value), path_params=c.pp(**params))
                try:
                    reply = await fn(call)
                except ApiError as exc:
                    assert 400 <= exc.status < 500, (op, value, exc.message)
                else:
                    assert reply.status < 300, (op, value)
                    if op == "createVolume":
                        await c.wait_status(reply.body["volume"]["id"], "available")

    run(tmp_path, scenario)


def test_attachment_refusals_read_its_volume_as_it_is_now(tmp_path: Path) -> None:
    """updateAttachment exports from the volume's back end, deleteAttachment does not
    forget an attachment of a volume being deleted, and both need the volume."""

    async def scenario(c: Cinder) -> None:
        vid = await c.available()
        body = {"attachment": {"volume_uuid": vid, "instance_uuid": SERVER}}
        made = await served(make_call(c.api, "createAttachment", body=body, path_params=c.pp()))
        assert isinstance(made, Reply)
        att_id = made.body["attachment"]["id"]
        path = c.pp(attachment_id=att_id)
        update = {"attachment": {"connector": CONNECTOR}}

        await c.store.update("volumes", vid, {"host": None})
        await expect_error(
            served(make_call(c.api, "updateAttachment", body=update, path_params=path)),
            400,
            "InvalidVolume",
            f"Invalid volume: Volume {vid} has no back-end host yet (status reserved);"
            " it cannot be exported.",
        )
        await c.store.update("volumes", vid, {"status": "deleting"})
        await expect_error(
            served(make_call(c.api, "deleteAttachment", path_params=path)),
            409,
            "ConflictingRequest",
            f"Volume {vid} is being deleted.",
        )
        await c.store.delete("volumes", vid)
        for op, sent in (("updateAttachment", update), ("deleteAttachment", None)):
            await expect_error(
                served(make_call(c.api, op, path_params=path, body=sent)),
                404,
                "VolumeNotFound",
                f"Volume {vid} could not be found.",
            )
        assert await c.store.get("attachments", att_id) is not None

    run(tmp_path, scenario)
