"""The libvirt driver against libvirt's built-in test:///default driver (no daemon needed).

The test driver keeps its state per process and already holds a domain named
`test`: every test uses its own host name, so it sees only its own domains.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.virt import (
    DeviceBusy,
    DiskNotFound,
    InstanceExists,
    InstanceNotFound,
    VirtError,
)

from .conftest import blank_disk, file_volume, new_instance

pytestmark = pytest.mark.usefixtures("libvirt_python")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def domain_xml(h: Any, uuid: str) -> ET.Element:
    return ET.fromstring(h._domain(uuid).XMLDesc(0))


def test_spawn_lists_and_destroys_only_its_own_guests(test_driver: Any, tmp_path: Path) -> None:
    h = test_driver
    assert "test" in [d.name() for d in h._connect().listAllDomains(0)]  # the driver's own
    assert run(h.list_instances()) == []
    inst = new_instance()
    image = {"id": "img", "path": str(blank_disk(tmp_path / "img.raw"))}
    vif = {"id": "p1", "address": "FA:16:3E:00:00:01", "ip_addresses": ["10.0.0.3"]}
    run(h.spawn(inst, image, [vif], []))
    assert run(h.list_instances()) == [inst["name"]]
    assert run(h.get_power_state(inst)) == 1
    root = domain_xml(h, inst["uuid"])
    assert root.findtext("name") == f"instance-{inst['uuid']}"
    assert root.get("type") == "test"
    assert root.find("devices/interface/mac").get("address") == "fa:16:3e:00:00:01"  # type: ignore[union-attr]
    disk = root.find("devices/disk")
    assert disk is not None and disk.find("target").get("dev") == "vda"  # type: ignore[union-attr]
    # the root disk is the instance's own overlay on the image, in its directory
    assert disk.find("source").get("file") == str(h.instance_dir(inst["uuid"]) / "disk")  # type: ignore[union-attr]
    assert (h.instance_dir(inst["uuid"]) / "disk").is_file()
    # another compute host on the same libvirt does not see it
    from specstack_runtime.virt.libvirt import LibvirtHypervisor

    other = LibvirtHypervisor(uri="test:///default", hostname=h.hostname + "-other")
    assert run(other.list_instances()) == []
    with pytest.raises(InstanceNotFound):
        run(other.destroy(inst))
    # nor does the same host name of another stack (another instance directory)
    twin = LibvirtHypervisor(
        uri="test:///default", hostname=h.hostname, instances_path=tmp_path / "other-stack"
    )
    assert run(twin.list_instances()) == []
    run(h.destroy(inst))
    assert run(h.list_instances()) == []
    assert not h.instance_dir(inst["uuid"]).exists()
    with pytest.raises(InstanceNotFound):
        run(h.get_power_state(inst))


def test_resources_count_the_guests(test_driver: Any, tmp_path: Path) -> None:
    h = test_driver
    before = run(h.get_available_resource())
    assert before["running_vms"] == 0 and before["vcpus_used"] == 0
    assert before["vcpus"] >= 1 and before["memory_mb"] >= 1 and before["local_gb"] >= 1
    assert before["hypervisor_hostname"] == h.hostname
    run(h.spawn(new_instance(vcpus=2, memory_mb=128, root_gb=3), {"id": "none"}, [], []))
    after = run(h.get_available_resource())
    assert after["running_vms"] == 1
    assert after["vcpus_used"] == 2
    assert after["memory_mb_used"] == 128
    assert after["local_gb_used"] == 3


def test_volume_attach_and_detach(test_driver: Any, tmp_path: Path) -> None:
    h = test_driver
    inst = new_instance()
    run(h.spawn(inst, {"id": "none"}, [], []))
    ci = file_volume(tmp_path / "v.raw")
    run(h.attach_volume(inst, ci, "/dev/vdb"))
    disk = domain_xml(h, inst["uuid"]).find("devices/disk")
    assert disk is not None
    assert disk.find("source").get("file") == ci["data"]["device_path"]  # type: ignore[union-attr]
    assert disk.findtext("serial") == ci["data"]["volume_id"]
    with pytest.raises(DeviceBusy):
        run(h.attach_volume(inst, file_volume(tmp_path / "w.raw"), "/dev/vdb"))
    run(h.detach_volume(inst, ci, "/dev/vdb"))
    assert domain_xml(h, inst["uuid"]).find("devices/disk") is None
    assert run(h.get_power_state(inst)) == 1
    with pytest.raises(DiskNotFound):
        run(h.detach_volume(inst, ci, "/dev/vdb"))


def test_plug_vifs_adds_only_new_ports_and_unplug_vifs_removes(test_driver: Any) -> None:
    h = test_driver
    inst = new_instance()
    a = {"id": "a", "address": "fa:16:3e:00:00:0a"}
    b = {"id": "b", "address": "fa:16:3e:00:00:0b"}
    run(h.spawn(inst, {"id": "none"}, [a], []))
    run(h.plug_vifs(inst, [a, b]))
    run(h.plug_vifs(inst, [a, b]))
    macs = [m.get("address") for m in domain_xml(h, inst["uuid"]).findall("devices/interface/mac")]
    assert macs == [a["address"], b["address"]]
    run(h.unplug_vifs(inst, [b]))
    run(h.unplug_vifs(inst, [b]))  # gone already: nothing to do
    macs = [m.get("address") for m in domain_xml(h, inst["uuid"]).findall("devices/interface/mac")]
    assert macs == [a["address"]]


def test_boot_from_volume_and_kernel_boot(test_driver: Any, tmp_path: Path) -> None:
    h = test_driver
    inst = new_instance()
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    ramdisk = tmp_path / "initrd"
    ramdisk.write_bytes(b"initrd")
    image = {
        "id": "aki",
        "kernel_path": str(kernel),
        "ramdisk_path": str(ramdisk),
        "properties": {"os_command_line": "console=ttyS0 quiet"},
    }
    ci = file_volume(tmp_path / "root.raw")
    run(h.spawn(inst, image, [], [{"mountpoint": "/dev/vda", "connection_info": ci}]))
    root = domain_xml(h, inst["uuid"])
    d = h.instance_dir(inst["uuid"])
    assert root.findtext("os/kernel") == str(d / "kernel")
    assert root.findtext("os/initrd") == str(d / "ramdisk")
    assert root.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert (d / "kernel").read_bytes() == b"kernel"
    disks = root.findall("devices/disk")
    assert len(disks) == 1 and disks[0].findtext("serial") == ci["data"]["volume_id"]


def test_spawn_before_the_image_arrives_boots_when_it_does(
    test_driver: Any, tmp_path: Path
) -> None:
    """nova's step 9 (spawn) comes before step 12 (the image download)."""
    h = test_driver
    inst = new_instance()
    image_file = tmp_path / "cache" / "img"
    ci = file_volume(tmp_path / "v.raw")

    async def scenario() -> None:
        await h.spawn(inst, {"id": "img", "path": str(image_file), "pending": True}, [], [])
        assert await h.get_power_state(inst) == 0  # NOSTATE: defined, waiting for the image
        assert not h._domain(inst["uuid"]).isActive()
        await h.attach_volume(inst, ci, "/dev/vdb")  # step 15 may come first too
        image_file.parent.mkdir()
        blank_disk(image_file)
        for _ in range(200):  # a bound on waiting, not a speed check
            if await h.get_power_state(inst) == 1:
                break
            await asyncio.sleep(0.05)
        assert await h.get_power_state(inst) == 1

    run(scenario())
    assert (h.instance_dir(inst["uuid"]) / "disk").is_file()
    disks = domain_xml(h, inst["uuid"]).findall("devices/disk")
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb"]  # type: ignore[union-attr]


def test_an_image_that_never_arrives_fails_the_guest(tmp_path: Path) -> None:
    from specstack_runtime.virt.libvirt import LibvirtHypervisor

    h = LibvirtHypervisor(
        uri="test:///default",
        hostname=f"t-{tmp_path.name}",
        instances_path=tmp_path,
        image_wait_s=0.1,
    )
    inst = new_instance()

    async def scenario() -> None:
        await h.spawn(inst, {"id": "img", "path": str(tmp_path / "never"), "pending": True}, [], [])
        for _ in range(200):
            if await h.get_power_state(inst) != 0:
                break
            await asyncio.sleep(0.05)
        assert await h.get_power_state(inst) == 6  # CRASHED: it could not start
        assert "never arrived" in await h.get_console_output(inst)
        await h.destroy(inst)

    run(scenario())
    assert run(h.list_instances()) == []
    assert not (tmp_path / inst["uuid"]).exists()


def test_power_off_and_on(test_driver: Any) -> None:
    h = test_driver
    inst = new_instance()
    run(h.spawn(inst, {"id": "none"}, [], []))
    run(h.power_off(inst))
    assert run(h.get_power_state(inst)) == 4
    run(h.power_on(inst))
    assert run(h.get_power_state(inst)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"image": {"id": "i", "path": "/nonexistent/img"}}, "has no file"),
        ({"network_info": [{"id": "p", "address": "not-a-mac"}]}, "invalid MAC"),
        ({"network_info": [{"id": "p"}]}, "needs an id and an address"),
        (
            {
                "block_device_info": [
                    {
                        "mountpoint": "/dev/vdb",
                        "connection_info": {"driver_volume_type": "iscsi", "data": {}},
                    }
                ]
            },
            "volume type 'iscsi' is not supported",
        ),
        (
            {
                "block_device_info": [
                    {
                        "mountpoint": "/dev/vdb",
                        "connection_info": {
                            "driver_volume_type": "file",
                            "data": {"device_path": "/nonexistent"},
                        },
                    }
                ]
            },
            "does not exist",
        ),
        (
            {
                "block_device_info": [
                    {
                        "mountpoint": "/dev/nope",
                        "connection_info": {
                            "driver_volume_type": "file",
                            "data": {"device_path": "/"},
                        },
                    }
                ]
            },
            "device path",
        ),
    ],
)
def test_bad_spawn_input_is_refused_and_leaves_nothing(
    test_driver: Any, args: dict[str, Any], message: str
) -> None:
    h = test_driver
    inst = new_instance()
    call = {"image": {"id": "none"}, "network_info": [], "block_device_info": [], **args}
    with pytest.raises(VirtError, match=message):
        run(h.spawn(inst, call["image"], call["network_info"], call["block_device_info"]))
    assert run(h.list_instances()) == []
    assert not h.instance_dir(inst["uuid"]).exists()
    with pytest.raises(InstanceNotFound):
        run(h.get_power_state(inst))


def test_spawn_twice_and_unknown_instances(test_driver: Any) -> None:
    h = test_driver
    inst = new_instance()
    run(h.spawn(inst, {"id": "none"}, [], []))
    with pytest.raises(InstanceExists):
        run(h.spawn(inst, {"id": "none"}, [], []))
    nobody = new_instance()
    for call in (
        h.destroy(nobody),
        h.get_console_output(nobody),
        h.plug_vifs(nobody, []),
        h.attach_volume(
            nobody, {"driver_volume_type": "file", "data": {"device_path": "/"}}, "/dev/vdb"
        ),
    ):
        with pytest.raises(InstanceNotFound):
            run(call)
    with pytest.raises(VirtError, match="must be a dict with a uuid"):
        run(h.destroy({"name": "x"}))


def test_bad_configuration_is_refused() -> None:
    from specstack_runtime.virt.libvirt import LibvirtHypervisor

    with pytest.raises(VirtError, match="unknown libvirt virt type 'vmware'"):
        LibvirtHypervisor(uri="test:///default", virt_type="vmware")
    with pytest.raises(VirtError, match="needs vif_source"):
        LibvirtHypervisor(uri="test:///default", vif_type="bridge")
    with pytest.raises(VirtError, match="cannot connect to libvirt at test:///nonexistent-file"):
        LibvirtHypervisor(uri="test:///nonexistent-file")


def test_a_move_redefines_the_guest_and_a_revert_brings_back_its_definition(
    test_driver: Any, tmp_path: Path
) -> None:
    """A resize to this same host with kernel boot (the kept files go with it) and a volume;
    the revert defines the kept domain with the ports and volumes given then."""
    h = test_driver
    inst = new_instance()
    uuid = inst["uuid"]
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    image = {
        "id": "img",
        "path": str(blank_disk(tmp_path / "img.raw")),
        "kernel_path": str(kernel),
        "properties": {"os_command_line": "console=ttyS0 quiet"},
    }
    a = {"id": "a", "address": "fa:16:3e:00:00:0a"}
    b = {"id": "b", "address": "fa:16:3e:00:00:0b"}
    vol = file_volume(tmp_path / "v.raw")
    bdm = [{"mountpoint": "/dev/vdb", "connection_info": vol, "serial": "vol-1"}]
    run(h.spawn(inst, image, [a], bdm))
    handed = run(h.migrate_disk_and_power_off(inst, h.hostname))
    kept = h.instances_path / f"{uuid}_resize"
    assert sorted(f.name for f in kept.iterdir()) == ["disk", "domain.xml", "kernel"]
    assert not h.instance_dir(uuid).exists()
    with pytest.raises(InstanceNotFound):  # undefined here until it is back
        run(h.get_power_state(inst))
    # the disk handed over is this instance's only
    with pytest.raises(InstanceNotFound):
        run(h.finish_migration(new_instance(), handed, [a], [], True))

    bigger = {**inst, "vcpus": 2, "memory_mb": 128}
    run(h.finish_migration(bigger, handed, [a], bdm, True))
    moved = domain_xml(h, uuid)
    assert (moved.findtext("vcpu"), moved.findtext("memory")) == ("2", str(128 * 1024))
    assert moved.findtext("os/kernel") == str(h.instance_dir(uuid) / "kernel")
    assert moved.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert [d.findtext("serial") for d in moved.findall("devices/disk")] == [None, "vol-1"]
    assert (h.instance_dir(uuid) / "kernel").read_bytes() == b"kernel"
    assert kept.is_dir()  # till the move is confirmed or reverted

    run(h.destroy(bigger))  # a revert: the destination's guest first
    run(h.finish_revert_migration(inst, [b], [], True))
    back = domain_xml(h, uuid)
    assert (back.findtext("vcpu"), back.findtext("memory")) == ("1", str(64 * 1024))
    assert [m.get("address") for m in back.findall("devices/interface/mac")] == [b["address"]]
    assert [d.findtext("serial") for d in back.findall("devices/disk")] == [None]  # no volume
    assert not kept.exists() and not (h.instance_dir(uuid) / "domain.xml").exists()
    assert (h.instance_dir(uuid) / "disk").is_file()
    assert run(h.get_power_state(inst)) == 1
    for undone in (h.confirm_migration(inst), h.finish_revert_migration(inst, [], [], True)):
        with pytest.raises(InstanceNotFound):  # nothing kept any more
            run(undone)


def test_a_move_whose_disk_is_gone_fails_and_leaves_nothing(
    test_driver: Any, tmp_path: Path
) -> None:
    h = test_driver
    inst = new_instance()
    run(h.spawn(inst, {"id": "img", "path": str(blank_disk(tmp_path / "img.raw"))}, [], []))
    handed = run(h.migrate_disk_and_power_off(inst, h.hostname))
    kept = h.instances_path / f"{inst['uuid']}_resize"
    (kept / "disk").unlink()
    with pytest.raises(VirtError, match="has no file at"):
        run(h.finish_migration(inst, handed, [], [], True))
    assert run(h.list_instances()) == []
    assert not h.instance_dir(inst["uuid"]).exists()
    run(h.confirm_migration(inst))
    assert not kept.exists()
