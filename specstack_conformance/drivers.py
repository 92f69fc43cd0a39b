"""What the generated driver contract tests (generated/conformance/test_drivers.py) run on.

The template renders one test per method of the spec's driver interface; this
module knows the rest: which adapters this machine can run (each driver of the
spec in one or more variants, e.g. libvirt on its test driver and on a real
libvirtd with QEMU), and a `ContractWorld` per test: one adapter, a guest, and
the image and volume files its methods are exercised with, plus what must hold
after each method.

A variant whose requirement is absent is skipped with the reason, unless
SPECSTACK_REQUIRE_VIRT=1 (CI, which installs them): then it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.virt import DeviceBusy, DiskNotFound, InstanceNotFound, VirtError

REQUIRE_ENV = "SPECSTACK_REQUIRE_VIRT"
NOSTATE, RUNNING, PAUSED, SHUTDOWN, SUSPENDED = 0, 1, 3, 4, 7
START_WAIT_S = 120.0


@dataclass(frozen=True)
class Variant:
    """One way to run a driver's adapter here."""

    driver: str
    label: str  # the pytest id
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of create()
    # Whether a running guest acknowledges a disk's hot-unplug. A blank-disk guest under
    # real QEMU has no OS to do so: there the contract is checked on a stopped guest.
    live_detach: bool = True
    missing: str | None = None  # why it cannot run here, or None


#: How to install each requirement on Debian (the README's "Real hypervisors" sections).
INSTALL = {
    "libvirt-python": "apt-get install libvirt-dev pkg-config gcc python3-dev, "
    "then pip install -e '.[libvirt]'",
    "qemu.qmp": "pip install -e .",
    "qemu-system-x86": "apt-get install --no-install-recommends qemu-system-x86",
    "libvirtd": "apt-get install --no-install-recommends libvirt-daemon-system "
    "qemu-system-x86 qemu-utils, then bash .ci/virt.sh",
}


def _module_missing(module: str, package: str) -> str | None:
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"Python package {package} is not installed ({INSTALL[package]})"


def requirement_missing(requirement: str) -> str | None:
    """Why a driver requirement of spec/hypervisors.yaml is not met here (with how to
    install it), or None."""
    if requirement == "libvirt-python":
        return _module_missing("libvirt", requirement)
    if requirement == "qemu.qmp":
        return _module_missing("qemu.qmp", requirement)
    if requirement == "qemu-system-x86":
        if shutil.which("qemu-system-x86_64"):
            return None
        return f"qemu-system-x86_64 is not installed ({INSTALL[requirement]})"
    return f"no check is known for requirement {requirement!r}"


def libvirtd_missing(uri: str) -> str | None:
    """Why libvirt at `uri` cannot be reached, or None."""
    try:
        import libvirt
    except ImportError:
        return f"Python package libvirt-python is not installed ({INSTALL['libvirt-python']})"
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        return f"libvirtd is not running or not reachable at {uri}: {exc} ({INSTALL['libvirtd']})"
    conn.close()
    return None


def variants(driver: str, requires: Sequence[str]) -> list[Variant]:
    """The variants of one driver of the spec, with what is missing for each."""
    missing = next((m for m in map(requirement_missing, requires) if m), None)
    if driver == "libvirt":
        return [
            Variant(driver, "libvirt-test", {"uri": "test:///default"}, True, missing),
            Variant(
                driver,
                "libvirt-qemu",
                {"uri": "qemu:///system", "detach_timeout_s": "5"},
                False,
                missing or libvirtd_missing("qemu:///system"),
            ),
        ]
    return [Variant(driver, driver, {}, driver == "fake", missing)]


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: every driver must run)")
    pytest.skip(reason)


def run(world: ContractWorld, scenario: Callable[[], Awaitable[None]]) -> None:
    """Run a test's scenario, then remove its guest, in one event loop (adapters keep
    loop-bound things: QMP connections, QEMU child processes, boot tasks)."""

    async def session() -> None:
        try:
            await scenario()
        finally:
            await world.close()

    asyncio.run(session())


class ContractWorld:
    """One adapter, one guest and its files (see the module docstring)."""

    def __init__(self, variant: Variant, adapter: Any, directory: Path) -> None:
        self.variant = variant
        self.adapter = adapter
        self.dir = directory
        self.host = adapter_host(adapter)
        image = directory / "image.raw"
        with image.open("wb") as fh:  # a blank raw disk: enough for a guest to run
            fh.truncate(1 << 20)
        volume = directory / "volume.raw"
        with volume.open("wb") as fh:
            fh.truncate(1 << 20)
        volume_id = str(uuid.uuid4())
        uid = str(uuid.uuid4())
        self.instance: dict[str, Any] = {
            "uuid": uid,
            "name": f"contract-{uid[:8]}",
            "vcpus": 1,
            "memory_mb": 64,
            "root_gb": 0,
            "image_id": "contract-image",
        }
        self.image: dict[str, Any] = {
            "id": "contract-image",
            "name": "blank",
            "disk_format": "raw",
            "container_format": "bare",
            "size": 1 << 20,
            "path": str(image),
            "properties": {},
        }
        self.vifs: list[dict[str, Any]] = [
            {
                "id": str(uuid.uuid4()),
                "address": "fa:16:3e:" + ":".join(f"{b:02x}" for b in os.urandom(3)),
                "network_id": str(uuid.uuid4()),
                "ip_addresses": ["10.0.0.5"],
            }
        ]
        self.connection_info: dict[str, Any] = {
            "driver_volume_type": "file",
            "data": {
                "device_path": str(volume),
                "volume_id": volume_id,
                "serial": volume_id,
                "access_mode": "rw",
                "format": "raw",
            },
        }
        self.mountpoint = "/dev/vdb"
        self.disk_info = ""  # what migrate_disk_and_power_off handed over (a move to this host)
        self.spawned = False
        self.closed = False

    # -- arguments -------------------------------------------------------------------

    def arg(self, name: str) -> Any:
        """The value for a parameter of the interface, by its name in the spec."""
        values: dict[str, Any] = {
            "instance": self.instance,
            "image": self.image,
            "network_info": self.vifs,
            "block_device_info": [],
            "connection_info": self.connection_info,
            "mountpoint": self.mountpoint,
            "reboot_type": "HARD",  # SOFT needs a guest OS that acts on ACPI
            "target": str(self.dir / "snapshot"),
            "dest": self.host,  # a move to the same host
            "disk_info": self.disk_info,
            "power_on": True,
        }
        if name not in values:
            raise KeyError(f"the driver contract tests have no value for parameter {name!r}")
        return values[name]

    def unknown_instance(self) -> dict[str, Any]:
        uid = str(uuid.uuid4())
        return {"uuid": uid, "name": f"nobody-{uid[:8]}"}

    # -- before and after a method ------------------------------------------------------

    async def spawn(self) -> None:
        await self.adapter.spawn(
            instance=self.instance, image=self.image, network_info=self.vifs, block_device_info=[]
        )
        self.spawned = True
        await self.running()

    async def running(self) -> int:
        """The guest's power state once it has left NOSTATE (a real guest may still be
        starting when spawn returns), waiting at most START_WAIT_S: a bound, not a speed check."""
        deadline = time.monotonic() + START_WAIT_S
        while True:
            state = int(await self.adapter.get_power_state(instance=self.instance))
            if state != NOSTATE or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.05)

    async def prepare(self, method: str, params: Sequence[str]) -> None:
        """What must exist before `method` runs: a guest, an attached volume, a guest moved
        (to this same host) whose move is to be finished, confirmed or reverted."""
        if method == "spawn":
            return
        power_off = getattr(self.adapter.impl, "power_off", None)
        if method == "detach_volume" and not self.variant.live_detach and power_off is None:
            # No guest OS to acknowledge a hot-unplug and no way to stop the guest: the
            # volume comes off a guest that has not started yet (its image is on its way).
            arriving = dict(self.image, path=str(self.dir / "arriving.raw"), pending=True)
            await self.adapter.spawn(
                instance=self.instance, image=arriving, network_info=[], block_device_info=[]
            )
            self.spawned = True
        elif "instance" in params or method in ("list_instances", "get_available_resource"):
            await self.spawn()
        if method == "power_on":
            await self.adapter.power_off(instance=self.instance)
        if method in ("pause", "unpause", "suspend", "resume"):
            await self.running()  # a real guest may still be starting
        if method in ("unpause", "resume"):  # a paused or suspended guest to bring back
            undone = self.adapter.pause if method == "unpause" else self.adapter.suspend
            await undone(instance=self.instance)
        moves = ("finish_migration", "confirm_migration", "finish_revert_migration")
        if method in moves:
            a = self.adapter
            self.disk_info = await a.migrate_disk_and_power_off(
                instance=self.instance, dest=self.host
            )
        if method in moves[1:]:
            await a.finish_migration(instance=self.instance, disk_info=self.disk_info,
                                     network_info=self.vifs, block_device_info=[], power_on=True)  # fmt: skip
        if method == "finish_revert_migration":  # the destination's guest goes first (nova's)
            await a.destroy(instance=self.instance)
        if method == "detach_volume":
            if not self.variant.live_detach and power_off is not None:
                await power_off(self.instance)  # no guest OS to acknowledge a hot-unplug
            await self.adapter.attach_volume(
                instance=self.instance,
                connection_info=self.connection_info,
                mountpoint=self.mountpoint,
            )

    async def verify(self, method: str, result: Any) -> None:
        """What must hold after `method` returned `result`."""
        a, inst = self.adapter, self.instance
        if method == "spawn":
            self.spawned = True
            assert inst["name"] in await a.list_instances()
            assert await self.running() == RUNNING
        elif method == "destroy":
            self.spawned = False
            assert inst["name"] not in await a.list_instances()
            await expect(InstanceNotFound, a.get_power_state(instance=inst))
        elif method == "get_power_state":
            assert result == RUNNING
        elif method == "power_off":
            assert await a.get_power_state(instance=inst) == SHUTDOWN
        elif method in ("power_on", "reboot"):
            assert await self.running() == RUNNING
        elif method in ("pause", "suspend"):
            wanted = PAUSED if method == "pause" else SUSPENDED
            assert await a.get_power_state(instance=inst) == wanted
            again = a.pause if method == "pause" else a.suspend
            await expect(VirtError, again(instance=inst))  # not running any more
        elif method in ("unpause", "resume"):
            assert await a.get_power_state(instance=inst) == RUNNING
        elif method == "attach_volume":
            await expect(
                DeviceBusy,
                a.attach_volume(
                    instance=inst, connection_info=self.connection_info, mountpoint=self.mountpoint
                ),
            )
        elif method == "detach_volume":
            await expect(
                DiskNotFound,
                a.detach_volume(
                    instance=inst, connection_info=self.connection_info, mountpoint=self.mountpoint
                ),
            )
        elif method == "plug_vifs":  # plugging the same ports again changes nothing
            await a.plug_vifs(instance=inst, network_info=self.vifs)
        elif method == "get_available_resource":
            assert result["vcpus"] >= 1 and result["memory_mb"] >= 1
            assert result["hypervisor_hostname"] == self.host
            assert result.get("running_vms", 1) >= 1
            assert result.get("vcpus_used", 1) >= 1
        elif method == "list_instances":
            assert inst["name"] in result
        elif method == "migrate_disk_and_power_off":  # off, or gone from here till it is back
            assert isinstance(result, str) and result
            with contextlib.suppress(InstanceNotFound):
                assert await a.get_power_state(instance=inst) == SHUTDOWN
        elif method in ("finish_migration", "finish_revert_migration"):
            assert inst["name"] in await a.list_instances()
            assert await self.running() == RUNNING
        elif method == "confirm_migration":  # the guest runs on; its kept copy is gone
            assert await self.running() == RUNNING
            await expect(InstanceNotFound, a.confirm_migration(instance=inst))
        elif method == "snapshot":  # the root disk written whole: the blank image's size
            written = self.dir / "snapshot"
            assert result in ("raw", "qcow2") and written.is_file()
            if result == "raw":
                assert written.read_bytes() == Path(self.image["path"]).read_bytes()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.spawned:
            # a move the test left open keeps the guest's stopped copy (and its QEMU's socket
            # outside the test's directory): confirmed first, as nova's delete does
            with contextlib.suppress(InstanceNotFound):
                await self.adapter.confirm_migration(instance=self.instance)
            with contextlib.suppress(InstanceNotFound):
                await self.adapter.destroy(instance=self.instance)
        close = getattr(self.adapter.impl, "close", None)
        if close is not None:
            close()


async def expect(error: type[VirtError], call: Awaitable[Any]) -> VirtError:
    """`call` must raise `error` (a driver error of specstack_runtime.virt)."""
    try:
        await call
    except error as exc:
        return exc
    raise AssertionError(f"expected {error.__name__}, the call succeeded")


def adapter_host(adapter: Any) -> str:
    return str(getattr(adapter.impl, "hostname", ""))


def open_world(variant: Variant, adapter_cls: Any, directory: Path) -> ContractWorld:
    """An adapter of `variant` with its own host name and files, or skip (fail in CI)."""
    # A driver the spec names but this branch does not implement yet is absent, not broken.
    implementation = str(importlib.import_module(adapter_cls.__module__).IMPLEMENTATION)
    if _module_missing(implementation.split(":")[0], implementation):
        pytest.skip(f"{variant.label}: this installation has no {implementation}")
    if variant.missing:
        _unavailable(f"{variant.label}: {variant.missing}")
    host = f"contract-{uuid.uuid4().hex[:8]}"  # its own host: it sees only its own guests
    adapter = adapter_cls.create(
        state_file=directory / f"{host}.json",
        vcpus=4,
        memory_mb=4096,
        local_gb=20,
        hostname=host,
        **variant.options,
    )
    return ContractWorld(variant, adapter, directory)


__all__ = [
    "REQUIRE_ENV",
    "ContractWorld",
    "Variant",
    "expect",
    "libvirtd_missing",
    "open_world",
    "requirement_missing",
    "run",
    "variants",
]
