"""The libvirt driver against a real libvirtd with QEMU (qemu:///system).

The guest boots from a blank raw disk (no OS): enough to check that QEMU runs
it, writes its serial console to the instance's file, takes a hot-plugged disk
and ends when the guest is destroyed. A guest OS that acknowledges the unplug of
a disk is the real-guest test's (tests of the qemu/guest work); here a running
guest without one must make detach fail clearly, and a stopped one detach.
"""

from __future__ import annotations

import asyncio
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.virt import VirtError
from specstack_runtime.virt.accel import libvirt_virt_type

from .conftest import blank_disk, file_volume, new_instance


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def qemu_pid(h: Any, uuid: str) -> int:
    """The guest's QEMU process, as libvirtd recorded it."""
    pidfile = Path("/run/libvirt/qemu") / f"{h.domain_name(uuid)}.pid"
    return int(pidfile.read_text().strip())


def qemu_block_files(h: Any, uuid: str) -> dict[str, str]:
    """QEMU's own view of its disks (QMP query-block through libvirt): device -> file."""
    import libvirt_qemu

    reply = json.loads(
        libvirt_qemu.qemuMonitorCommand(h._domain(uuid), '{"execute": "query-block"}', 0)
    )
    return {
        b.get("qdev") or b["device"]: b["inserted"]["file"]
        for b in reply["return"]
        if b.get("inserted")
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_guest_runs_in_qemu_with_console_hot_plug_and_destroy(
    qemu_system: Any, tmp_path: Path
) -> None:
    h = qemu_system
    inst = new_instance()
    image = {"id": "blank", "path": str(blank_disk(tmp_path / "blank.raw"))}
    vif = {"id": "p1", "address": "fa:16:3e:12:34:56"}
    run(h.spawn(inst, image, [vif], []))
    uuid = inst["uuid"]
    root = ET.fromstring(h._domain(uuid).XMLDesc(0))
    assert root.get("type") == libvirt_virt_type()  # TCG where KVM does not really work
    pid = qemu_pid(h, uuid)
    assert alive(pid)
    assert run(h.get_power_state(inst)) == 1
    assert (h.instance_dir(uuid) / "console.log").exists()  # QEMU opened the serial console file
    assert isinstance(run(h.get_console_output(inst)), str)
    assert run(h.list_instances()) == [inst["name"]]

    # hot-plug: the disk reaches the running QEMU, with the volume id as its serial
    ci = file_volume(tmp_path / "vol.raw")
    run(h.attach_volume(inst, ci, "/dev/vdb"))
    assert ci["data"]["device_path"] in qemu_block_files(h, uuid).values()
    live = ET.fromstring(h._domain(uuid).XMLDesc(0))
    vdb = [d for d in live.findall("devices/disk") if d.find("target").get("dev") == "vdb"]  # type: ignore[union-attr]
    assert len(vdb) == 1 and vdb[0].findtext("serial") == ci["data"]["volume_id"]
    assert qemu_pid(h, uuid) == pid  # the same guest, not a restart

    # no guest OS acknowledges the unplug: detach says so clearly
    with pytest.raises(VirtError, match="did not release /dev/vdb"):
        run(h.detach_volume(inst, ci, "/dev/vdb"))

    # stopped, the disk comes off the guest's definition
    run(h.power_off(inst))
    assert run(h.get_power_state(inst)) == 4
    assert not alive(pid)
    run(h.detach_volume(inst, ci, "/dev/vdb"))
    run(h.power_on(inst))
    pid = qemu_pid(h, uuid)
    assert ci["data"]["device_path"] not in qemu_block_files(h, uuid).values()

    run(h.destroy(inst))
    assert not alive(pid)
    assert run(h.list_instances()) == []
    assert not h.instance_dir(uuid).exists()
    assert Path(ci["data"]["device_path"]).exists()  # the volume's file is cinder's, not removed


def test_resources_are_the_hosts(qemu_system: Any) -> None:
    import libvirt

    res = run(qemu_system.get_available_resource())
    info = libvirt.open("qemu:///system").getInfo()
    assert res["vcpus"] == info[2] and res["memory_mb"] == info[1]
    assert res["hypervisor_type"] == "QEMU"


def running_sizes(h: Any, uuid: str) -> tuple[int, int]:
    """(vCPUs, memory MiB) of the running domain, as libvirt reports its QEMU's."""
    dom = h._domain(uuid)
    assert dom.isActive()
    _state, _max_kib, mem_kib, vcpus, _cpu_time = dom.info()
    return int(vcpus), int(mem_kib) // 1024


def test_resize_to_a_bigger_flavor_then_revert(qemu_system: Any, tmp_path: Path) -> None:
    h = qemu_system
    inst = new_instance()
    uuid = inst["uuid"]
    image = {"id": "blank", "path": str(blank_disk(tmp_path / "blank.raw"))}
    vif = {"id": "p1", "address": "fa:16:3e:12:34:57"}
    run(h.spawn(inst, image, [vif], []))
    assert running_sizes(h, uuid) == (1, 64)
    pid = qemu_pid(h, uuid)
    handed = run(h.migrate_disk_and_power_off(inst, h.hostname))
    assert not alive(pid)
    kept = h.instances_path / f"{uuid}_resize"
    assert (kept / "disk").is_file() and not h.instance_dir(uuid).exists()

    bigger = {**inst, "vcpus": 2, "memory_mb": 128, "root_gb": 1}
    run(h.finish_migration(bigger, handed, [vif], [], True))
    assert running_sizes(h, uuid) == (2, 128)
    root_disk = h.instance_dir(uuid) / "disk"
    in_qemu = qemu_block_files(h, uuid).values()
    assert str(root_disk) in in_qemu and str(kept / "disk") not in in_qemu  # its own copy
    assert h._domain(uuid).blockInfo("vda")[0] == 1 << 30  # grown to the new flavor's root_gb
    assert kept.is_dir()

    pid = qemu_pid(h, uuid)
    run(h.destroy(bigger))  # a revert: the destination's guest goes first (nova's)
    assert not alive(pid)
    run(h.finish_revert_migration(inst, [vif], [], True))
    assert running_sizes(h, uuid) == (1, 64)
    assert h._domain(uuid).blockInfo("vda")[0] == 1 << 20  # the disk it had
    assert not kept.exists()
    assert run(h.list_instances()) == [inst["name"]]


def test_migrate_a_stopped_guest_then_confirm(qemu_system: Any, tmp_path: Path) -> None:
    h = qemu_system
    inst = new_instance()
    uuid = inst["uuid"]
    image = {"id": "blank", "path": str(blank_disk(tmp_path / "blank.raw"))}
    run(h.spawn(inst, image, [], []))
    handed = run(h.migrate_disk_and_power_off(inst, h.hostname))
    run(h.finish_migration(inst, handed, [], [], False))  # a stopped server stays off
    assert run(h.get_power_state(inst)) == 4
    kept = h.instances_path / f"{uuid}_resize"
    assert kept.is_dir()
    run(h.confirm_migration(inst))
    assert not kept.exists()
    assert (h.instance_dir(uuid) / "disk").is_file()  # the moved guest's own
    run(h.power_on(inst))
    assert run(h.get_power_state(inst)) == 1


def test_a_volume_attached_while_the_deferred_start_runs_reaches_the_guest(
    qemu_system: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 15 (attach) may run while the guest defined at step 9 starts (its image arrived at
    step 12). Forced here: the attach decides its flags while the domain is still defined
    only, and the start is let go at that moment. The running QEMU must have the disk."""
    import threading

    from specstack_runtime.virt import libvirt_devices

    h = qemu_system
    inst = new_instance()
    uuid = inst["uuid"]
    image_file = tmp_path / "cache" / "img"
    ci = file_volume(tmp_path / "vol.raw")
    decided, started = threading.Event(), threading.Event()
    real_flags, real_start = libvirt_devices.live_flags, h._start_defined

    def flags_then_pause(dom: Any) -> int:
        flags = real_flags(dom)
        decided.set()
        started.wait(2.0)  # without one lock per guest the start slips in here
        return flags

    def start_once_decided(*args: Any, **kwargs: Any) -> None:
        decided.wait(10.0)
        real_start(*args, **kwargs)
        started.set()

    monkeypatch.setattr(libvirt_devices, "live_flags", flags_then_pause)
    monkeypatch.setattr(h, "_start_defined", start_once_decided)

    async def scenario() -> None:
        await h.spawn(inst, {"id": "img", "path": str(image_file), "pending": True}, [], [])
        image_file.parent.mkdir()
        blank_disk(image_file)
        await h.attach_volume(inst, ci, "/dev/vdb")
        for _ in range(400):  # a bound on waiting, not a speed check
            if await h.get_power_state(inst) == 1:
                break
            await asyncio.sleep(0.05)
        assert await h.get_power_state(inst) == 1

    try:
        run(scenario())
        assert ci["data"]["device_path"] in qemu_block_files(h, uuid).values()
    finally:
        run(h.destroy(inst))
