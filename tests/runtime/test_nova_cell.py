"""The whole nova cell (nova-api, scheduler, conductor, computes on one bus): boot, server
actions and delete end to end."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from generated.drivers.types import Instance
from specstack_runtime import registry
from specstack_runtime.behaviours import conductor, nova_host
from specstack_runtime.errors import StepFailed
from specstack_runtime.messaging import check
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun, settle
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_kit import (
    IMAGE_BDM,
    IMAGE_DATA,
    VOLUME_BDM,
    VOLUME_ID,
    FakeServices,
    Recorder,
    RecordingBus,
    boot_body,
    interaction,
    make_runtime,
    msg_call,
    nova_store,
    response,
    run_spec_step,
    seed_flavors,
    stack_info,
)

# -- the whole cell: boot, actions, delete ------------------------------------------------------


async def boot_through_the_cell(cell: NovaCell, **server: Any) -> dict[str, Any]:
    reply, _ = await cell.operation("createServer", sequence="boot-vm", body=boot_body(**server))
    assert reply.status == 202
    server_id = reply.body["server"]["id"]
    return await cell.wait_for(server_id, lambda r: r["vm_state"] in ("active", "error"))


@contextlib.asynccontextmanager
async def booted_cell(
    tmp_path: Path, **server: Any
) -> AsyncIterator[tuple[NovaCell, dict[str, Any]]]:
    """A cell of one compute host, its flavors seeded and a server booted through it (active
    or in error), stopped after."""
    cell = await NovaCell(tmp_path, computes=1).start()
    try:
        await seed_flavors(cell.store)
        yield cell, await boot_through_the_cell(cell, **server)
    finally:
        await cell.stop()


@arun
async def test_boot_and_delete_through_the_cell(tmp_path: Path) -> None:
    cell = await NovaCell(tmp_path, computes=2).start()
    try:
        await seed_flavors(cell.store)
        nodes = await cell.store.list("compute_nodes")
        assert sorted(n["host"] for n in nodes) == ["compute-1", "compute-2"]
        block = [dict(IMAGE_BDM), dict(VOLUME_BDM)]
        row = await boot_through_the_cell(cell, block_device_mapping_v2=block)
        assert row["vm_state"] == "active", (row["fault"], cell.errors)
        assert row["power_state"] == 1 and row["task_state"] is None
        assert list(row["addresses"]) == ["private"]
        assert row["attachments"][0]["device"] == "/dev/vdb"
        declared = [label for comp, label, _ in cell.steps]
        # The labels of boot-vm.yaml: 15.1/15.2 are cinder's, so nova's are 15.3-15.5.
        assert declared == [
            "4.1",
            "4.2",  # the security groups named (none here: nothing asked of neutron)
            "6",
            "7.1",
            "8",
            "9",
            "10",
            "12",
            "12.1",  # no volume to make from the image: nothing asked of cinder
            "12.2",
            "13",
            "14.3",
            "15",
            "15.3",
            "15.4",
            "15.5",
        ]
        host = row["host"]
        driver: FakeHypervisor = cell.computes[host].driver
        assert "disks: vda vdb" in await driver.get_console_output(
            {"uuid": row["id"], "name": "vm1"}
        )
        assert cell.services.volume_status == "in-use" and len(cell.services.ports) == 1
        view = (await cell.operation("showServer", path_params={"server_id": row["id"]}))[0].body[
            "server"
        ]
        assert view["status"] == "ACTIVE"
        # no microversion negotiated (not over HTTP): 2.3's shape
        assert view["os-extended-volumes:volumes_attached"] == [
            {"id": VOLUME_ID, "delete_on_termination": False}
        ]

        cell.steps.clear()
        reply, _ = await cell.operation(
            "deleteServer", sequence="delete-vm", path_params={"server_id": row["id"]}
        )
        assert reply.status == 204
        gone = await cell.wait_for(row["id"], lambda r: r["vm_state"] == "deleted")
        assert gone["task_state"] is None and gone["deleted_at"]

        async def mappings_gone() -> bool:
            return await cell.store.list("block_device_mappings") == []

        # The delete's last writes follow the deleted state (each store call awaits).
        await settle(mappings_gone)
        assert [label for _, label, _ in cell.steps] == [
            "5.1",
            "5.2",
            "6",
            "7",
            "7.1",
            "7.4",
            "8",
            "10",
            "11",
        ]
        assert driver.guests == {} and cell.services.ports == {}
        assert cell.services.volume_status == "available"
        node = await cell.store.get("compute_nodes", host)
        assert node is not None and node["claims"] == {} and node["memory_mb_used"] == 0
        assert await cell.store.list("block_device_mappings") == []
    finally:
        await cell.stop()


@arun
async def test_build_failure_cleans_up_and_sets_error(tmp_path: Path) -> None:
    cell = await NovaCell(tmp_path, computes=1).start()
    try:
        await seed_flavors(cell.store)
        cell.services.image_data = b"corrupted"
        row = await boot_through_the_cell(cell)
        assert row["vm_state"] == "error"
        assert "corrupt" in row["fault"]["message"]
        driver: FakeHypervisor = cell.computes["compute-1"].driver
        assert driver.guests == {}

        async def claim_released() -> bool:
            node = await cell.store.get("compute_nodes", "compute-1")
            return node is not None and node["claims"] == {}

        # The claim goes after the error is recorded (each store call awaits).
        await settle(claim_released)
        # An instance in ERROR can still be deleted.
        await cell.operation(
            "deleteServer", sequence="delete-vm", path_params={"server_id": row["id"]}
        )
        await cell.wait_for(row["id"], lambda r: r["vm_state"] == "deleted")
    finally:
        await cell.stop()


class DetachRecorder(FakeHypervisor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.detached: list[str] = []

    async def detach_volume(
        self, instance: Instance, connection_info: Any, mountpoint: str
    ) -> None:
        self.detached.append(mountpoint)
        await super().detach_volume(instance, connection_info, mountpoint)


@arun
async def test_a_build_failing_late_undoes_all_it_made_by_the_specs_on_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The volume attached and the port made when cinder refuses os-complete (boot-vm 15.4):
    the spec's on_failure steps detach the disk, destroy the guest, delete the attachment and
    the port, and put the instance into ERROR with the failure as its fault."""
    cell = await NovaCell(tmp_path, computes=1).start()
    try:
        await seed_flavors(cell.store)
        driver = DetachRecorder(None, hostname="compute-1")
        cell.computes["compute-1"].driver = driver
        cell.services.fail["completeAttachment"] = 500
        volume = {"uuid": VOLUME_ID, "boot_index": -1, "source_type": "volume",
                  "destination_type": "volume", "delete_on_termination": False}  # fmt: skip
        row = await boot_through_the_cell(cell, block_device_mapping_v2=[volume])
        assert row["vm_state"] == "error" and row["task_state"] is None
        fault = row["fault"]
        assert "completeAttachment failed" in fault["message"], fault
        assert fault["details"].startswith("StepFailed: ") and fault["created"].endswith("Z")
        assert driver.detached == ["/dev/vdb"] and driver.guests == {}
        assert cell.services.attachments == {} and cell.services.volume_status == "available"
        assert cell.services.ports == {}
        assert "on_failure step" not in caplog.text  # each step did its work
    finally:
        await cell.stop()


@arun
async def test_no_valid_host_through_the_cell(tmp_path: Path) -> None:
    async with booted_cell(tmp_path, flavorRef="5") as (_, row):  # 64 GB: fits nowhere
        assert row["vm_state"] == "error" and row["host"] is None
        assert row["fault"]["message"].startswith("No valid host was found")


@arun
async def test_server_actions_through_the_cell(tmp_path: Path) -> None:
    async with booted_cell(tmp_path) as (cell, row):
        sid = {"server_id": row["id"]}
        driver: FakeHypervisor = cell.computes["compute-1"].driver
        guest: Instance = {"uuid": row["id"], "name": "vm1"}

        await cell.operation("serverAction", path_params=sid, body={"os-stop": None})
        stopped = await cell.wait_for(row["id"], lambda r: r["vm_state"] == "stopped")
        assert stopped["power_state"] == 4 and await driver.get_power_state(guest) == 4
        await cell.operation("serverAction", path_params=sid, body={"os-start": None})
        await cell.wait_for(
            row["id"], lambda r: r["vm_state"] == "active" and r["task_state"] is None
        )
        assert await driver.get_power_state(guest) == 1
        await cell.operation("serverAction", path_params=sid, body={"reboot": {"type": "SOFT"}})
        await cell.wait_for(row["id"], lambda r: r["task_state"] is None)

        reply, _ = await cell.operation(
            "serverAction", path_params=sid, body={"os-getConsoleOutput": {"length": 1}}
        )
        assert reply.body["output"].startswith("fake-guest vm1: booted")
        assert len(reply.body["output"].splitlines()) == 1

        body = {"volumeAttachment": {"volumeId": VOLUME_ID, "device": None}}
        reply, _ = await cell.operation("attachVolume", path_params=sid, body=body)
        assert reply.body["volumeAttachment"]["device"] == "/dev/vdb"
        assert cell.services.volume_status == "in-use"
        assert "disks: vda vdb" in await driver.get_console_output(guest)
        listing = (await cell.operation("listVolumeAttachments", path_params=sid))[0].body
        assert [a["volumeId"] for a in listing["volumeAttachments"]] == [VOLUME_ID]
        reply, _ = await cell.operation("detachVolume", path_params={**sid, "volume_id": VOLUME_ID})
        assert reply.status == 202 and cell.services.volume_status == "available"
        assert (await driver.get_console_output(guest)).splitlines()[-1].endswith("disks: vda")
        saved = await cell.store.get("instances", row["id"])
        assert saved is not None and saved["attachments"] == []


@arun
async def test_report_resources_records_the_node(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    conductor_rt = make_runtime(info, "nova-conductor", store=store)

    async def record(payload: dict[str, Any]) -> dict[str, Any]:
        return await conductor.compute_node_update(
            msg_call(conductor_rt, "compute_node_update", payload)
        )

    bus = RecordingBus({"compute_node_update": record})
    rt = make_runtime(
        info,
        "nova-compute",
        host="compute-2",
        bus=bus,
        data_dir=tmp_path,
        driver=FakeHypervisor(None, vcpus=4, memory_mb=2048, local_gb=20, hostname="compute-2"),
    )
    await nova_host.report_resources(rt)
    try:
        ((_, _, payload, _),) = bus.sent
        check(info, "compute_node_update", "payload", payload)
        assert payload["nodes"][0]["availability_zone"] == "nova"
        node = await store.get("compute_nodes", "compute-2")
        assert node is not None and node["memory_mb"] == 2048 and node["heartbeat"]
        assert rt.local["compute.heartbeat"] is not None
    finally:
        rt.local["compute.heartbeat"].cancel()


def test_the_image_checksum_is_md5() -> None:
    assert FakeServices().image["checksum"] == hashlib.md5(IMAGE_DATA).hexdigest()


@arun
async def test_terminate_steps_tolerate_what_is_already_gone(tmp_path: Path) -> None:
    info = stack_info()
    rt = make_runtime(
        info, "nova-compute", host="compute-1", data_dir=tmp_path, driver=FakeHypervisor(None)
    )
    call = msg_call(
        rt,
        "terminate_instance",
        {
            "instance": {"uuid": "66666666-6666-4666-8666-666666666666", "project_id": "p"},
            "ports": ["p1"],
            "attachments": [
                {
                    "attachment_id": "a1",
                    "volume_id": VOLUME_ID,
                    "device": "/dev/vdb",
                    "connection_info": {"driver_volume_type": "iscsi", "data": {}},
                }
            ],
        },
    )
    await nova_host.begin_terminate(call)

    async def native_gone(**kw: Any) -> None:
        from specstack_runtime.virt import InstanceNotFound

        raise InstanceNotFound(kw["instance"]["uuid"])

    await run_spec_step(call, "delete-vm", "7", native_gone)
    await run_spec_step(call, "delete-vm", "7.1", Recorder(response(404, {})))
    await nova_host.delete_ports(interaction(call, Recorder(response(404, {}))))
    await run_spec_step(call, "delete-vm", "10", native_gone)
    update = Recorder({"instance": {}})
    step = next(s for s in info.sequences["delete-vm"]["steps"] if s["number"] == 11)["main"]
    marked = interaction(call, update)
    marked.bindings = step["bindings"]  # the spec's `with:` (delete-vm 11)
    await registry.get("flow.amqp-call")(marked)
    (((sent,), _),) = update.calls
    check(info, "instance_update", "payload", sent)
    assert sent["expected_task_state"] == "deleting" and sent["updates"]["vm_state"] == "deleted"
    with pytest.raises(StepFailed):
        await nova_host.delete_ports(interaction(call, Recorder(response(500, {}))))
    bus = RecordingBus({"instance_update": {"instance": {}}})
    rt.bus = bus  # type: ignore[assignment]
    await nova_host.terminate_failed(call, StepFailed("neutron is down", code=503))
    ((_, method, payload, _),) = bus.sent
    assert method == "instance_update" and payload["updates"]["vm_state"] == "error"
    assert payload["updates"]["fault"]["code"] == 503


class BrokenHypervisor(FakeHypervisor):
    async def spawn(
        self, instance: Any, image: Any, network_info: Any, block_device_info: Any
    ) -> None:
        raise RuntimeError("libvirt said no")


@arun
async def test_a_hypervisor_failure_reschedules_to_another_host(tmp_path: Path) -> None:
    cell = await NovaCell(tmp_path, computes=2).start()
    try:
        await seed_flavors(cell.store)
        cell.computes["compute-1"].driver = BrokenHypervisor(None, hostname="compute-1")
        row = await boot_through_the_cell(cell)
        assert row["vm_state"] == "active" and row["host"] == "compute-2", row["fault"]
        node1 = await cell.store.get("compute_nodes", "compute-1")
        node2 = await cell.store.get("compute_nodes", "compute-2")
        assert node1 is not None and node1["claims"] == {}
        assert node2 is not None and list(node2["claims"]) == [row["id"]]
        assert len(cell.services.ports) == 1  # only the port of the build that worked
    finally:
        await cell.stop()


@arun
async def test_when_every_host_fails_the_instance_goes_to_error(tmp_path: Path) -> None:
    cell = await NovaCell(tmp_path, computes=2).start()
    try:
        await seed_flavors(cell.store)
        for host, rt in cell.computes.items():
            rt.driver = BrokenHypervisor(None, hostname=host)
        row = await boot_through_the_cell(cell)
        assert row["vm_state"] == "error"
        assert row["fault"]["message"].startswith("No valid host was found")
        for host in cell.computes:
            node = await cell.store.get("compute_nodes", host)
            assert node is not None and node["claims"] == {}
        assert cell.services.ports == {}
    finally:
        await cell.stop()
