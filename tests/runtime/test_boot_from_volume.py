"""Booting from a volume made from an image (block device source image, destination volume):
nova-api's checks and row, nova-compute's boot-vm 12.1-12.2 (cinder makes the volume, the
flow waits for it) and 15 (it is attached as the root disk, vda)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import nova_api, nova_build, nova_delete, nova_host
from specstack_runtime.errors import BadRequest, StepFailed
from specstack_runtime.messaging import check
from tests.aio import arun
from tests.runtime.test_compute_api import Api
from tests.runtime.test_compute_flow import build_payload, new_instance
from tests.runtime.test_compute_kit import (
    IMAGE_ID,
    Recorder,
    add_compute_node,
    boot_body,
    make_runtime,
    msg_call,
    nova_store,
    op_call,
    response,
    run_spec_step,
    seed_flavors,
    stack_info,
)

ROOT = {
    "uuid": IMAGE_ID,
    "boot_index": 0,
    "source_type": "image",
    "destination_type": "volume",
    "volume_size": 2,
    "delete_on_termination": True,
}
# what `openstack server create --boot-from-volume 2 --image IMAGE` sends
BFV = {"imageRef": "", "block_device_mapping_v2": [ROOT]}


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return Api(tmp_path)


@arun
async def test_create_server_from_an_image_volume_has_no_image(api: Api) -> None:
    await seed_flavors(api.store)
    call = op_call(api.rt, "createServer", body=boot_body(**BFV))
    reply = await nova_api.create_server(call)
    row = await api.store.get("instances", reply.body["server"]["id"])
    assert row is not None and row["image_ref"] == ""
    assert row["block_device_mapping"] == [ROOT]
    view = (await api.run("showServer", path_params={"server_id": row["id"]})).body["server"]
    assert view["image"] == ""
    assert call.vars["request_spec"]["image_id"] is None
    # without delete_on_termination the volume outlives the server (nova's default)
    plain = {k: v for k, v in ROOT.items() if k != "delete_on_termination"}
    body = boot_body(imageRef="", block_device_mapping_v2=[plain])
    reply = await nova_api.create_server(op_call(api.rt, "createServer", body=body))
    row = await api.store.get("instances", reply.body["server"]["id"])
    assert row is not None
    assert row["block_device_mapping"] == [{**ROOT, "delete_on_termination": False}]
    # the volume's size is needed
    no_size = {**ROOT, "volume_size": None}
    call = op_call(
        api.rt,
        "createServer",
        body=boot_body(imageRef="", block_device_mapping_v2=[no_size]),
    )
    with pytest.raises(BadRequest, match=re.escape("need to have a non-zero size specified")):
        await nova_api.create_server(call)


def _cinder(states: list[str]) -> Recorder:
    """cinder-api as boot-vm 12.1 and 12.2 call it: createVolume makes vol-1, showVolume
    answers the states in turn (the last again)."""

    def answer(**kw: Any) -> Any:
        if "body" in kw:
            return response(202, {"volume": {"id": "vol-1", "status": "creating"}})
        status = states.pop(0) if len(states) > 1 else states[0]
        return response(200, {"volume": {"id": kw["volume_id"], "status": status}})

    return Recorder(fn=answer)


async def _build(tmp_path: Path) -> Any:
    info = stack_info()
    row = await new_instance(nova_store(info))
    rt = make_runtime(info, "nova-compute", host="compute-1", data_dir=tmp_path)
    payload = {**build_payload(row, volume=False), "image_id": "", "block_device_mapping": [ROOT]}
    call = msg_call(rt, "build_and_run_instance", payload)
    await nova_build.begin_build(call)
    return call, row


@arun
async def test_build_makes_the_volume_from_the_image_waits_and_attaches_it_as_vda(
    tmp_path: Path,
) -> None:
    call, row = await _build(tmp_path)
    cinder = _cinder(["creating", "downloading", "available"])
    await run_spec_step(call, "boot-vm", "12.1", cinder)
    await run_spec_step(call, "boot-vm", "12.2", cinder)
    (_, made), *shows = cinder.calls
    assert made["body"] == {"volume": {"size": 2, "imageRef": IMAGE_ID, "name": ""}}
    assert made["project_id"] == row["project_id"]
    assert [kw["volume_id"] for _, kw in shows] == ["vol-1"] * 3  # until it was available
    # the mapping names the volume made (as the instance keeps it once ACTIVE)
    assert call.vars["block_device_mapping"] == [
        {**ROOT, "source_type": "volume", "uuid": "vol-1", "image_id": IMAGE_ID}
    ]
    attach = Recorder(response(200, {"attachment": {"id": "att-1"}}))
    await run_spec_step(call, "boot-vm", "15", attach)
    ((_, kw),) = attach.calls
    assert kw["body"]["attachment"]["volume_uuid"] == "vol-1"
    assert kw["body"]["attachment"]["connector"]["mountpoint"] == "/dev/vda"


@arun
async def test_build_fails_when_the_volume_from_the_image_ends_in_error(tmp_path: Path) -> None:
    call, _ = await _build(tmp_path)
    cinder = _cinder(["creating", "error"])
    await run_spec_step(call, "boot-vm", "12.1", cinder)
    await run_spec_step(call, "boot-vm", "12.2", cinder)
    attach = Recorder()
    with pytest.raises(StepFailed, match="did not become available"):
        await run_spec_step(call, "boot-vm", "15", attach)
    assert attach.calls == []


@arun
async def test_deleting_the_server_deletes_its_delete_on_termination_volumes(
    api: Api, tmp_path: Path
) -> None:
    """delete-vm 6 tells compute which attached volumes go with the server (their mapping's
    delete_on_termination); 7.4 deletes those, after their attachments, and no other."""
    await seed_flavors(api.store)
    await add_compute_node(api.store, "compute-1")
    reply = await nova_api.create_server(op_call(api.rt, "createServer", body=boot_body(**BFV)))
    kept = {"uuid": "vol-kept", "source_type": "volume", "destination_type": "volume",
            "boot_index": 1, "delete_on_termination": False}  # fmt: skip
    made = {**ROOT, "source_type": "volume", "uuid": "vol-root", "image_id": IMAGE_ID}
    attachments = [
        {"attachment_id": f"a-{v}", "volume_id": v, "device": d}
        for v, d in (("vol-root", "/dev/vda"), ("vol-kept", "/dev/vdb"))
    ]
    await api.store.update(
        "instances",
        reply.body["server"]["id"],
        {"vm_state": "active", "task_state": None, "host": "compute-1",
         "block_device_mapping": [made, kept], "attachments": attachments},
    )  # fmt: skip
    call = op_call(api.rt, "deleteServer", path_params={"server_id": reply.body["server"]["id"]})
    await nova_delete.delete_server(call)
    cast = Recorder()
    await run_spec_step(call, "delete-vm", "6", cast)
    (((payload,), _),) = cast.calls
    check(api.info, "terminate_instance", "payload", payload)
    assert [(a["volume_id"], a["delete_on_termination"]) for a in payload["attachments"]] == [
        ("vol-root", True),
        ("vol-kept", False),
    ]
    rt = make_runtime(api.info, "nova-compute", host="compute-1", data_dir=tmp_path)
    terminate = msg_call(rt, "terminate_instance", payload)
    await nova_host.begin_terminate(terminate)
    deleted = Recorder(response(202, None), response(404, {}))
    await run_spec_step(terminate, "delete-vm", "7.4", deleted)
    assert [kw["volume_id"] for _, kw in deleted.calls] == ["vol-root"]


@arun
async def test_deleting_a_failed_builds_server_deletes_the_volume_made_for_it(
    api: Api, tmp_path: Path
) -> None:
    """A build failed after 12.1 made the root volume (its attachment already deleted): the
    server in ERROR keeps the volume in its mapping, and deleting the server deletes it
    (delete_on_termination) with no attachment to delete; the user's volume stays."""
    await seed_flavors(api.store)
    await add_compute_node(api.store, "compute-1")
    reply = await nova_api.create_server(op_call(api.rt, "createServer", body=boot_body(**BFV)))
    sid = reply.body["server"]["id"]
    made = {**ROOT, "source_type": "volume", "uuid": "vol-root", "image_id": IMAGE_ID}
    kept = {"uuid": "vol-kept", "source_type": "volume", "destination_type": "volume",
            "boot_index": 1, "delete_on_termination": False}  # fmt: skip
    await api.store.update(
        "instances",
        sid,
        {"vm_state": "error", "task_state": None, "host": "compute-1",
         "block_device_mapping": [made, kept], "attachments": []},
    )  # fmt: skip
    view = (await api.run("showServer", path_params={"server_id": sid})).body["server"]
    assert [v["id"] for v in view["os-extended-volumes:volumes_attached"]] == [
        "vol-root",
        "vol-kept",
    ]
    call = op_call(api.rt, "deleteServer", path_params={"server_id": sid})
    await nova_delete.delete_server(call)
    cast = Recorder()
    await run_spec_step(call, "delete-vm", "6", cast)
    (((payload,), _),) = cast.calls
    check(api.info, "terminate_instance", "payload", payload)
    assert payload["attachments"] == [
        {"attachment_id": "", "volume_id": "vol-root", "delete_on_termination": True}
    ]
    rt = make_runtime(api.info, "nova-compute", host="compute-1", data_dir=tmp_path)
    terminate = msg_call(rt, "terminate_instance", payload)
    await nova_host.begin_terminate(terminate)
    detached = Recorder(response(200, {}))
    await run_spec_step(terminate, "delete-vm", "7.1", detached)
    assert detached.calls == []  # nothing attached to undo
    deleted = Recorder(response(202, None))
    await run_spec_step(terminate, "delete-vm", "7.4", deleted)
    assert [kw["volume_id"] for _, kw in deleted.calls] == ["vol-root"]


@arun
async def test_deleting_a_server_no_host_has_deletes_its_delete_on_termination_volumes(
    api: Api,
) -> None:
    """A server that never got a host (in ERROR before scheduling, or still in BUILD) is
    deleted by nova-api at once: its attachments deleted there, then (5.2) the volumes of
    its mapping marked delete_on_termination (nova's _local_cleanup_bdm_volumes), no other."""
    await seed_flavors(api.store)
    gone = {"uuid": "vol-gone", "source_type": "volume", "destination_type": "volume",
            "boot_index": 0, "delete_on_termination": True}  # fmt: skip
    kept = {**gone, "uuid": "vol-kept", "boot_index": 1, "delete_on_termination": False}
    image = {**ROOT, "boot_index": 2}  # (its volume was never made: nothing to delete)
    for state in ("error", "building"):
        reply = await nova_api.create_server(op_call(api.rt, "createServer", body=boot_body(**BFV)))
        sid = reply.body["server"]["id"]
        await api.store.update(
            "instances",
            sid,
            {"vm_state": state, "task_state": None if state == "error" else "scheduling",
             "host": None, "block_device_mapping": [gone, kept, image],
             "attachments": [{"attachment_id": f"a-{state}", "volume_id": "vol-kept"}]},
        )  # fmt: skip
        api.services.attachments[f"a-{state}"] = {"id": f"a-{state}"}
        call = op_call(api.rt, "deleteServer", path_params={"server_id": sid})
        assert (await nova_delete.delete_server(call)).status == 204
        assert call.vars["instance"]["vm_state"] == "deleted" and not call.vars["terminate"]
        assert f"a-{state}" not in api.services.attachments  # deleted by nova-api
        cast, deleted = Recorder(), Recorder(response(202, None))
        await run_spec_step(call, "delete-vm", "6", cast)
        await run_spec_step(call, "delete-vm", "5.2", deleted)
        assert cast.calls == []  # no host to tell
        assert [(kw["project_id"], kw["volume_id"]) for _, kw in deleted.calls] == [
            (call.vars["instance"]["project_id"], "vol-gone")
        ]
    # a server its host deletes: none from nova-api (its host's 7.4 does it)
    reply = await nova_api.create_server(op_call(api.rt, "createServer", body=boot_body(**BFV)))
    await add_compute_node(api.store, "compute-1")
    await api.store.update(
        "instances",
        reply.body["server"]["id"],
        {"vm_state": "active", "host": "compute-1", "block_device_mapping": [gone]},
    )
    call = op_call(api.rt, "deleteServer", path_params={"server_id": reply.body["server"]["id"]})
    await nova_delete.delete_server(call)
    deleted = Recorder()
    await run_spec_step(call, "delete-vm", "5.2", deleted)
    assert deleted.calls == []
