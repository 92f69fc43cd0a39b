"""Devices hot-plugged into a running QEMU over QMP: volumes as virtio-blk disks, ports as
virtio-net NICs (user-mode networking). `execute` runs one QMP command on the guest."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from specstack_runtime.virt import VirtError

if TYPE_CHECKING:
    from generated.drivers.types import Vif

Execute = Callable[..., Awaitable[Any]]


def blockdev(name: str, path: str) -> dict[str, Any]:
    """The block node of a raw volume file, named after its disk."""
    return {
        "driver": "raw",
        "node-name": f"vol-{name}",
        "file": {"driver": "file", "filename": path},
    }


async def hotplug_disk(execute: Execute, name: str, path: str, serial: str) -> None:
    await execute("blockdev-add", **blockdev(name, path))
    try:
        await execute(
            "device_add",
            driver="virtio-blk-pci",
            id=f"disk-{name}",
            drive=f"vol-{name}",
            serial=serial[:20],  # virtio-blk carries 20 bytes of serial, as nova truncates
        )
    except VirtError:
        with contextlib.suppress(VirtError):
            await execute("blockdev-del", **{"node-name": f"vol-{name}"})
        raise


async def unplug_disk(execute: Execute, name: str, uuid: str, timeout_s: float) -> None:
    """device_del asks the guest to let the disk go (ACPI eject); then the node is freed."""
    device = f"disk-{name}"
    await execute("device_del", id=device)
    deadline = time.monotonic() + timeout_s
    while True:
        children = await execute("qom-list", path="/machine/peripheral")
        if device not in {c.get("name") for c in children}:
            break
        if time.monotonic() > deadline:
            raise VirtError(
                f"the guest of instance {uuid} did not release {device} within {timeout_s:.0f} s"
            )
        await asyncio.sleep(0.1)
    while True:  # the device is gone; QEMU may release its block node a moment later
        try:
            await execute("blockdev-del", **{"node-name": f"vol-{name}"})
            break
        except VirtError as exc:
            if "in use" not in str(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def hotplug_nic(execute: Execute, vif: Vif) -> None:
    nid = str(vif["id"])[:8]
    await execute("netdev_add", type="user", id=f"net-{nid}")
    await execute(
        "device_add",
        driver="virtio-net-pci",
        netdev=f"net-{nid}",
        id=f"nic-{nid}",
        mac=vif["address"],
    )


async def unplug_nic(execute: Execute, vif: Vif) -> None:
    """device_del asks the guest to let the NIC go; its user-mode netdev is freed with it."""
    nid = str(vif["id"])[:8]
    await execute("device_del", id=f"nic-{nid}")
    with contextlib.suppress(VirtError):  # QEMU may have freed it with the device
        await execute("netdev_del", id=f"net-{nid}")
