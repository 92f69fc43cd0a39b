"""The qemu driver against a real qemu-system-x86_64 and the tiny Debian guest.

One guest is booted for the module; the tests run in order on it, on one event
loop (as nova-compute's), then a second driver object on the same state file
plays the restarted compute service. Waits are bounded, not timed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from generated.drivers.types import ConnectionInfo, ImageMeta, Instance, Vif
from generator.tools.guestimage import MARKER, GuestImage
from specstack_runtime.virt import (
    DeviceBusy,
    DiskNotFound,
    InstanceExists,
    InstanceNotFound,
    VirtError,
)
from specstack_runtime.virt import qemu as qemu_mod
from specstack_runtime.virt.qemu import CRASHED, NOSTATE, RUNNING, QemuHypervisor

from ..guest.conftest import guest_image as guest_image  # the fixture
from ..guest.conftest import guest_pids
from ..guest.conftest import qemu_installed as qemu_installed  # the fixture

pytestmark = pytest.mark.usefixtures("qemu_installed")

T = TypeVar("T")
WAIT_S = 300.0
UUID = "9b0c0d1e-0000-4000-8000-00000000a001"
INSTANCE: Instance = {
    "uuid": UUID,
    "name": "guest-a",
    "vcpus": 1,
    "memory_mb": 256,
    "root_gb": 1,
}
VOLUME_ID = "5f1d7a0e-1111-4222-8333-444455556666"


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


def run(loop: asyncio.Runner, coro: Awaitable[T]) -> T:
    return loop.run(coro)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def hv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QemuHypervisor]:
    state = tmp_path_factory.mktemp("qemu") / "compute-1.json"
    driver = QemuHypervisor(state, vcpus=4, memory_mb=4096, local_gb=20, hostname="compute-1")
    yield driver
    for guest in list(driver.guests.values()):  # a failed test's leftovers
        if guest.get("pid"):
            for pid in guest_pids(guest["uuid"]):
                os.kill(pid, 9)


async def _until(pred: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await pred():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.2)


async def _console_has(hv: QemuHypervisor, text: str) -> bool:
    out = await hv.get_console_output(INSTANCE)
    return any(MARKER in line and text in line for line in out.splitlines())


async def _last_marker(hv: QemuHypervisor) -> str:
    out = await hv.get_console_output(INSTANCE)
    return [line for line in out.splitlines() if MARKER in line][-1]


def test_spawn_waits_for_the_image_then_runs(
    hv: QemuHypervisor,
    loop: asyncio.Runner,
    guest_image: GuestImage,
    tmp_path: Path,
) -> None:
    cache = tmp_path / "image-cache" / "img-1"  # not there yet: step 12 brings it later
    vif: Vif = {"id": "port-0001", "address": "fa:16:3e:00:00:01", "ip_addresses": ["10.0.0.5"]}

    async def scenario() -> None:
        await hv.spawn(INSTANCE, {"id": "img-1", "path": str(cache), "pending": True}, [], [])
        assert await hv.get_power_state(INSTANCE) == NOSTATE
        await hv.plug_vifs(INSTANCE, [vif])  # before the start: on QEMU's command line
        cache.parent.mkdir(parents=True)
        cache.write_bytes(guest_image.disk.read_bytes())

        async def running() -> bool:
            return await hv.get_power_state(INSTANCE) == RUNNING

        await _until(running, "the guest to run")

    run(loop, scenario())
    assert len(guest_pids(UUID)) == 1
    assert run(loop, hv.list_instances()) == ["guest-a"]
    res = run(loop, hv.get_available_resource())
    assert res["running_vms"] == 1 and res["vcpus_used"] == 1 and res["memory_mb_used"] == 256
    assert res["hypervisor_type"] == "QEMU" and res["hypervisor_hostname"] == "compute-1"
    cmdline = Path(f"/proc/{guest_pids(UUID)[0]}/cmdline").read_bytes()
    assert b"mac=fa:16:3e:00:00:01" in cmdline


def test_console_shows_the_marker(hv: QemuHypervisor, loop: asyncio.Runner) -> None:
    run(loop, _until(lambda: _console_has(hv, "vda:"), "the marker"))
    assert "vdb" not in run(loop, _last_marker(hv))


def test_spawn_twice_is_refused(hv: QemuHypervisor, loop: asyncio.Runner) -> None:
    with pytest.raises(InstanceExists):
        run(loop, hv.spawn(INSTANCE, {"id": "img-1"}, [], []))
    assert len(guest_pids(UUID)) == 1


def test_volume_hot_plugged_and_unplugged(
    hv: QemuHypervisor, loop: asyncio.Runner, tmp_path: Path
) -> None:
    volume = tmp_path / "volume.img"
    with volume.open("wb") as fh:
        fh.truncate(1 << 30)
    info: ConnectionInfo = {
        "driver_volume_type": "file",
        "data": {"device_path": str(volume), "volume_id": VOLUME_ID, "serial": VOLUME_ID},
    }
    pid = guest_pids(UUID)
    run(loop, hv.attach_volume(INSTANCE, info, "/dev/vdb"))
    run(loop, _until(lambda: _console_has(hv, f"vdb:{VOLUME_ID[:20]}"), "the hot-plugged disk"))
    assert guest_pids(UUID) == pid
    with pytest.raises(DeviceBusy):
        run(loop, hv.attach_volume(INSTANCE, info, "/dev/vdb"))
    run(loop, hv.detach_volume(INSTANCE, info, "/dev/vdb"))

    async def gone() -> bool:
        return "vdb" not in await _last_marker(hv)

    run(loop, _until(gone, "the disk to leave the guest"))
    with pytest.raises(DiskNotFound):
        run(loop, hv.detach_volume(INSTANCE, info, "/dev/vdb"))


def test_nic_hot_plugged_and_unplugged(hv: QemuHypervisor, loop: asyncio.Runner) -> None:
    """An interface attached to the running guest (QMP device_add), then detached."""
    vif: Vif = {"id": "beef0002-port", "address": "fa:16:3e:00:00:02", "ip_addresses": []}
    pid, guest = guest_pids(UUID), hv.guests[UUID]

    async def peripherals() -> set[str]:
        children = await hv._execute(guest, "qom-list", path="/machine/peripheral")
        return {str(c.get("name")) for c in children}

    run(loop, hv.plug_vifs(INSTANCE, [vif]))
    assert "nic-beef0002" in run(loop, peripherals()) and guest_pids(UUID) == pid
    assert [v["id"] for v in hv.guests[UUID]["vifs"]][-1] == vif["id"]
    run(loop, hv.unplug_vifs(INSTANCE, [vif]))
    assert vif["id"] not in [v["id"] for v in hv.guests[UUID]["vifs"]]

    async def gone() -> bool:
        return "nic-beef0002" not in await peripherals()

    run(loop, _until(gone, "the NIC to leave the guest"))
    assert guest_pids(UUID) == pid


@pytest.mark.parametrize(
    ("info", "mountpoint", "error"),
    [
        ({"driver_volume_type": "iscsi", "data": {"target_iqn": "x"}}, "/dev/vdc", "local files"),
        ({"driver_volume_type": "file", "data": {"device_path": "/nonexistent"}}, "/dev/vdc", "does not exist"),
        ({"data": {}}, "/dev/vdc", "driver_volume_type"),
        ({"driver_volume_type": "file", "data": {}}, "sdq1", "invalid"),
    ],
)  # fmt: skip
def test_bad_attach_is_refused_and_changes_nothing(
    hv: QemuHypervisor, loop: asyncio.Runner, info: dict[str, Any], mountpoint: str, error: str
) -> None:
    before = dict(hv.guests[UUID]["disks"])
    with pytest.raises(VirtError, match=error):
        # malformed on purpose: the driver must refuse what the type checker cannot see
        run(loop, hv.attach_volume(INSTANCE, cast(ConnectionInfo, info), mountpoint))
    assert hv.guests[UUID]["disks"] == before


def test_unknown_instance(hv: QemuHypervisor, loop: asyncio.Runner) -> None:
    other: Instance = {"uuid": "0000aaaa-0000-4000-8000-000000000000", "name": "nope"}
    for call in (hv.get_power_state(other), hv.destroy(other), hv.get_console_output(other)):
        with pytest.raises(InstanceNotFound):
            run(loop, call)


def test_restarted_service_finds_the_guest_and_destroys_it(
    hv: QemuHypervisor, loop: asyncio.Runner
) -> None:
    assert hv.state_file is not None
    pids = guest_pids(UUID)
    hv.close()  # the compute service stops; its guests go on
    assert guest_pids(UUID) == pids
    again = QemuHypervisor(hv.state_file, hostname="compute-1")  # the restarted service
    assert run(loop, again.list_instances()) == ["guest-a"]
    assert run(loop, again.get_power_state(INSTANCE)) == RUNNING
    assert MARKER in run(loop, again.get_console_output(INSTANCE))
    run(loop, again.destroy(INSTANCE))
    assert guest_pids(UUID) == [] and pids
    assert run(loop, again.list_instances()) == []
    hv.guests.clear()


def test_guest_that_cannot_start_fails_spawn_and_leaves_nothing(
    loop: asyncio.Runner, tmp_path: Path
) -> None:
    driver = QemuHypervisor(tmp_path / "c.json", hostname="c")
    huge: Instance = {
        **INSTANCE,
        "uuid": "9b0c0d1e-0000-4000-8000-00000000a002",
        "memory_mb": 1 << 40,
    }
    with pytest.raises(VirtError, match="qemu exited"):
        run(loop, driver.spawn(huge, {"id": ""}, [], []))  # no image: a blank root disk
    assert run(loop, driver.list_instances()) == [] and guest_pids(huge["uuid"]) == []
    assert not (tmp_path / "c-guests" / huge["uuid"]).exists()


def test_missing_image_not_pending_is_refused(loop: asyncio.Runner, tmp_path: Path) -> None:
    driver = QemuHypervisor(tmp_path / "e.json", hostname="e")
    with pytest.raises(VirtError, match="has no file"):
        run(loop, driver.spawn(INSTANCE, {"id": "i", "path": str(tmp_path / "none")}, [], []))
    assert run(loop, driver.list_instances()) == []


def test_image_that_never_arrives_fails_the_guest(
    loop: asyncio.Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qemu_mod, "IMAGE_WAIT_S", 0.3)
    driver = QemuHypervisor(tmp_path / "d.json", hostname="d")
    inst: Instance = {**INSTANCE, "uuid": "9b0c0d1e-0000-4000-8000-00000000a003"}

    async def scenario() -> tuple[int, str]:
        never: ImageMeta = {"id": "img-x", "path": str(tmp_path / "never"), "pending": True}
        await driver.spawn(inst, never, [], [])

        async def settled() -> bool:
            return await driver.get_power_state(inst) != NOSTATE

        await _until(settled, "the wait to give up")
        return await driver.get_power_state(inst), await driver.get_console_output(inst)

    state, console = run(loop, scenario())
    assert state == CRASHED and "never arrived" in console
    assert guest_pids(inst["uuid"]) == []
