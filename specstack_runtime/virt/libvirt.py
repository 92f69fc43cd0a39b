"""The libvirt hypervisor: guests as libvirt domains, through libvirt-python.

Every method of the driver interface (spec/hypervisors.yaml) is a call to the
libvirt API, run in a worker thread (`asyncio.to_thread`) because libvirt-python
blocks. Domain XML comes from the templates of ./templates, one per virt type
(see domain_xml.py).

- Connection: `uri`, else $LIBVIRT_DEFAULT_URI, else qemu:///system.
  `test:///default` (libvirt's built-in test driver) works for everything but
  the files: it runs no guest, so the console stays empty.
- Virt type: `virt_type`, else from the URI; for QEMU, KVM only where it
  really works (accel.py), TCG (`type='qemu'`) otherwise.
- Domains are named `instance-<uuid>` with the instance's uuid as domain uuid;
  their <metadata> records the instance name and the compute host. A driver
  only sees the domains of its own host, so that several compute nodes (or test
  runs) can share one libvirtd.
- Files live in `instances_path/<uuid>/` (files.py makes them): root disk, kernel and
  ramdisk, and `console.log`, the guest's serial console that `get_console_output` reads.
- An image marked `pending` is still being downloaded (nova spawns at step 9,
  downloads at step 12): the domain is defined at once and started when the
  files are there; its power state is NOSTATE until then, CRASHED if that fails.
- Moves (resize, cold migration): libvirt_moves.py.
- Volumes: local files (files.local_volume), virtio disks hot-plugged into a running
  guest (libvirt_devices.py) whose serial is the volume id. A guest's start and device
  changes take its lock in turn: a disk plugged as the guest starts must reach it.
- Ports: `vif_type` 'user' (QEMU user-mode networking; needs no bridge or tap,
  the default), 'bridge' or 'network' with `vif_source` naming it.
- With qemu:///system, QEMU runs as the compute service's own user (a static
  DAC label, `guest_user`), who owns the instance, image cache and volume files,
  as in session mode; `guest_user=""` leaves libvirtd's qemu.conf user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import libvirt

from specstack_runtime.virt import (
    CRASHED,
    NOSTATE,
    RUNNING,
    DeviceBusy,
    DiskNotFound,
    InstanceExists,
    InstanceNotFound,
    VirtError,
    files,
)
from specstack_runtime.virt import libvirt_devices as devices
from specstack_runtime.virt import libvirt_power as power
from specstack_runtime.virt.accel import libvirt_types
from specstack_runtime.virt.common import disk_name, instance_uuid, vif_mac
from specstack_runtime.virt.domain_xml import (
    METADATA_NS,
    VIRT_TYPES,
    Disk,
    Guest,
    Interface,
    render_disk,
    render_domain,
    render_interface,
)
from specstack_runtime.virt.libvirt_host import host_resources
from specstack_runtime.virt.libvirt_moves import LibvirtMoves

if TYPE_CHECKING:  # the contract generated from spec/hypervisors.yaml (checked in its adapter)
    from generated.drivers.types import (
        BlockDevice,
        ConnectionInfo,
        ImageMeta,
        Instance,
        PowerState,
        Resources,
        Vif,
    )

T = TypeVar("T")
logger = logging.getLogger(__name__)

MAX_CONSOLE_BYTES = 100 * 1024  # nova's limit for console output
VIF_TYPES = ("user", "bridge", "network")
_NS = {"s": METADATA_NS}


def _quiet(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; they are raised as VirtError instead."""


libvirt.registerErrorHandler(_quiet, None)


def _disk_name(mountpoint: Any) -> str:
    """`/dev/vdb` (or sdb, xvdb) -> `vdb`: every disk is a virtio disk here."""
    name = disk_name(mountpoint)
    return "vd" + name[name.index("d") + 1 :]


class LibvirtHypervisor(LibvirtMoves):
    """Guests as libvirt domains; see the module docstring.

    `vcpus`, `memory_mb` and `local_gb` (the topology's figures for fake hosts)
    are accepted and ignored: libvirt reports the host's real capacity.
    """

    hypervisor_type = "libvirt"

    def __init__(
        self,
        state_file: Path | str | None = None,
        *,
        vcpus: int | None = None,
        memory_mb: int | None = None,
        local_gb: int | None = None,
        hostname: str = "libvirt-host",
        uri: str | None = None,
        virt_type: str | None = None,
        instances_path: Path | str | None = None,
        vif_type: str = "user",
        vif_source: str = "",
        guest_user: str | None = None,
        machine: str = "pc",
        detach_timeout_s: float = 20.0,
        image_wait_s: float = 600.0,
    ) -> None:
        del vcpus, memory_mb, local_gb  # the host's own figures are reported
        self.uri = uri or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"
        self.hostname = hostname
        templates_type, domain_type = libvirt_types(self.uri)
        if virt_type:
            if virt_type not in VIRT_TYPES:
                raise VirtError(
                    f"unknown libvirt virt type {virt_type!r}; known: {', '.join(VIRT_TYPES)}"
                )
            templates_type = virt_type
            domain_type = "test" if domain_type == "test" else virt_type
        self.virt_type = templates_type
        self.domain_type = domain_type
        if vif_type not in VIF_TYPES:
            raise VirtError(f"unknown vif type {vif_type!r}; known: {', '.join(VIF_TYPES)}")
        if vif_type != "user" and not vif_source:
            raise VirtError(f"vif type {vif_type} needs vif_source (the {vif_type} name)")
        self.vif_type = vif_type
        self.vif_source = vif_source
        self.machine = machine
        self.detach_timeout_s = float(detach_timeout_s)
        self.image_wait_s = float(image_wait_s)
        self._pending: dict[str, asyncio.Task[None]] = {}  # guests waiting for their image
        self._failed: dict[str, str] = {}  # guests whose deferred start failed: why
        # A device change decides live-or-persistent by whether the guest runs: a start in
        # another thread between the two would lose the device from the running guest.
        self._locks: dict[str, threading.Lock] = {}
        if instances_path is not None:
            base = Path(instances_path)
        elif state_file is not None:
            base = Path(state_file).parent / "instances" / hostname
        else:
            base = Path(tempfile.gettempdir()) / "specstack-instances" / hostname
        self.instances_path = base.resolve()
        if guest_user is None:
            system = urlsplit(self.uri).path == "/system" and domain_type in ("kvm", "qemu")
            guest_user = f"+{os.getuid()}:{os.getgid()}" if system else ""
        self.dac_label = guest_user or None
        self._conn: libvirt.virConnect | None = None
        self._connect()

    # -- connection ---------------------------------------------------------------

    def _connect(self) -> libvirt.virConnect:
        conn = self._conn
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
        try:
            self._conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise VirtError(f"cannot connect to libvirt at {self.uri}: {exc}") from exc
        return self._conn

    def close(self) -> None:
        for task in self._pending.values():
            task.cancel()
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except libvirt.libvirtError as exc:
            raise VirtError(f"libvirt: {exc}") from exc

    # -- domains of this host -------------------------------------------------------

    @staticmethod
    def domain_name(uuid: str) -> str:
        return f"instance-{uuid}"

    def _meta(self, dom: libvirt.virDomain) -> dict[str, str] | None:
        """The domain's specstack metadata, or None when it is not this host's guest: made
        by a driver of another host name or instance directory (another stack, another test)."""
        root = ET.fromstring(dom.XMLDesc(0))
        inst = root.find("metadata/s:instance", _NS)
        if inst is None:
            return None
        meta = {el.tag.split("}", 1)[-1]: (el.text or "") for el in inst}
        mine = meta.get("host") == self.hostname and meta.get("instances") == str(
            self.instances_path
        )
        return meta if mine else None

    def _domain(self, uuid: str) -> libvirt.virDomain:
        try:
            dom = self._connect().lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise InstanceNotFound(uuid) from None
            raise
        if self._meta(dom) is None:
            raise InstanceNotFound(uuid)
        return dom

    def _ours(self) -> list[tuple[libvirt.virDomain, dict[str, str]]]:
        out = []
        for dom in self._connect().listAllDomains(0):
            try:
                meta = self._meta(dom)
            except libvirt.libvirtError:  # went away meanwhile
                continue
            if meta is not None:
                out.append((dom, meta))
        return out

    def _guest_lock(self, uuid: str) -> threading.Lock:
        """Held by each start and device change of this guest: one at a time."""
        return self._locks.setdefault(uuid, threading.Lock())

    def instance_dir(self, uuid: str) -> Path:
        return self.instances_path / uuid

    # -- spawn ------------------------------------------------------------------------

    @staticmethod
    def _volume_disk(connection_info: Any, mountpoint: Any, serial: Any = None) -> Disk:
        vol = files.local_volume(connection_info, "libvirt")
        return Disk(
            path=vol.path,
            dev=_disk_name(mountpoint),
            format=vol.format,
            serial=str(serial or vol.serial) or None,
            readonly=vol.readonly,
        )

    def _interface(self, vif: Any) -> Interface:
        mac = vif_mac(vif)
        return Interface(
            mac=mac.lower(), vif_id=str(vif["id"]), kind=self.vif_type, source=self.vif_source
        )

    @staticmethod
    def _materialize(
        image: ImageMeta, root_gb: int, root: Disk | None, inst_dir: Path, moved: bool = False
    ) -> None:
        """The instance's own files made from the image's: root disk, kernel, ramdisk
        (`moved`: the image is a moved guest's own files, its disk copied whole)."""
        if root is not None:
            files.make_root(image, root_gb, Path(root.path), root.format, whole=moved)
        files.copy_boot_files(image, inst_dir)

    def _absent(self, uuid: str) -> None:
        """InstanceExists if libvirt has a domain of this uuid."""
        try:
            self._connect().lookupByUUIDString(uuid)
            raise InstanceExists(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise

    def _define(
        self,
        instance: Instance,
        image: ImageMeta,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        now: bool,
    ) -> None:
        """Define the guest's domain; with `now`, make its files and start it too."""
        uuid = instance_uuid(instance)
        self._absent(uuid)
        # Check everything that can be checked before anything is made.
        volumes = [
            self._volume_disk(b.get("connection_info"), b.get("mountpoint"), b.get("serial"))
            for b in block_device_info or []
        ]
        devs = [d.dev for d in volumes]
        if len(set(devs)) != len(devs):
            raise DeviceBusy(f"a device is given twice in {', '.join(devs)}")
        interfaces = [self._interface(v) for v in network_info or []]
        root_gb = int(instance.get("root_gb") or 0)
        inst_dir = self.instance_dir(uuid)
        boot = files.boot_files(image, inst_dir)
        fmt = None if "vda" in devs else files.root_format(image)
        root = None if fmt is None else Disk(path=str(inst_dir / "disk"), dev="vda", format=fmt)
        props = image.get("properties") or {}
        guest = Guest(
            name=self.domain_name(uuid),
            uuid=uuid,
            title=str(instance.get("name") or uuid),
            host=self.hostname,
            instances_path=str(self.instances_path),
            domain_type=self.domain_type,
            memory_mb=int(instance.get("memory_mb") or 512),
            vcpus=int(instance.get("vcpus") or 1),
            console_log=str(inst_dir / "console.log"),
            root_gb=root_gb,
            image_id=str(image.get("id") or instance.get("image_id") or ""),
            machine=self.machine,
            kernel=boot["kernel"][1] if "kernel" in boot else None,
            initrd=boot["ramdisk"][1] if "ramdisk" in boot else None,
            cmdline=str(props.get("os_command_line") or "console=ttyS0"),
            disks=[root, *volumes] if root is not None else volumes,
            interfaces=interfaces,
            dac_label=self.dac_label,
        )
        inst_dir.mkdir(parents=True, exist_ok=True)
        dom: libvirt.virDomain | None = None
        try:
            if now:
                self._materialize(image, root_gb, root, inst_dir)
            dom = self._connect().defineXML(render_domain(self.virt_type, guest))
            if now:
                dom.create()
        except BaseException:
            if dom is not None:
                self._remove(dom)
            shutil.rmtree(inst_dir, ignore_errors=True)
            raise

    def _start_defined(
        self, uuid: str, image: ImageMeta, root_gb: int, moved: bool = False, start: bool = True
    ) -> None:
        """Make the files of a guest defined before its image arrived (`moved`: defined before
        its moved files are copied, libvirt_moves.py), and start it (unless not `start`)."""
        with self._guest_lock(uuid):
            self._start_locked(uuid, image, root_gb, moved, start)

    def _start_locked(
        self, uuid: str, image: ImageMeta, root_gb: int, moved: bool, start: bool
    ) -> None:
        dom = self._domain(uuid)
        inst_dir = self.instance_dir(uuid)
        stored = devices.disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).get("vda")
        root = None
        if stored is not None and stored.find("serial") is None and image.get("path"):
            driver = stored.find("driver")
            fmt = driver.get("type", "raw") if driver is not None else "raw"
            root = Disk(path=str(inst_dir / "disk"), dev="vda", format=fmt)
        self._materialize(image, root_gb, root, inst_dir, moved)
        if start and not dom.isActive():
            dom.create()

    async def _boot_when_ready(self, uuid: str, image: ImageMeta, root_gb: int) -> None:
        """Wait for the image's files (boot-vm step 12 downloads them after step 9), then boot."""
        try:
            wanted = files.image_files(image)
            deadline = time.monotonic() + self.image_wait_s
            while not all(f.is_file() for f in wanted):
                if time.monotonic() > deadline:
                    missing = ", ".join(str(f) for f in wanted if not f.is_file())
                    raise VirtError(f"image {image.get('id')} never arrived at {missing}")
                await asyncio.sleep(0.05)
            await self._run(self._start_defined, uuid, image, root_gb)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("guest of instance %s did not start: %s", uuid, exc)
            self._failed[uuid] = str(exc)
            console = self.instance_dir(uuid) / "console.log"  # where nova-compute looks
            with contextlib.suppress(OSError), open(console, "a", encoding="utf-8") as fh:
                fh.write(f"[libvirt driver] guest did not start: {exc}\n")
        finally:
            self._pending.pop(uuid, None)

    async def spawn(
        self,
        instance: Instance,
        image: ImageMeta,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
    ) -> None:
        """Define and start the guest. An image marked `pending` is still on its way to its
        path (nova spawns at step 9 and downloads the image at step 12): the guest is defined
        now and started once the files are there; until then its power state is NOSTATE."""
        # Only an image marked pending may be missing: otherwise spawn fails at once.
        ready = not image.get("pending") or all(f.is_file() for f in files.image_files(image))
        await self._run(self._define, instance, image, network_info, block_device_info, ready)
        if not ready:
            uuid = instance_uuid(instance)
            root_gb = int(instance.get("root_gb") or 0)
            self._pending[uuid] = asyncio.create_task(
                self._boot_when_ready(uuid, image, root_gb), name=f"libvirt-boot-{uuid}"
            )

    # -- destroy ------------------------------------------------------------------------

    @staticmethod
    def _remove(dom: libvirt.virDomain) -> None:
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # stopped meanwhile
                raise
        if dom.isPersistent():  # with the memory a suspend saved, if any
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)

    def _destroy(self, instance: Instance) -> None:
        uuid = instance_uuid(instance)
        with self._guest_lock(uuid):
            self._remove(self._domain(uuid))
            shutil.rmtree(self.instance_dir(uuid), ignore_errors=True)
        self._locks.pop(uuid, None)

    async def destroy(self, instance: Instance) -> None:
        uuid = instance_uuid(instance)
        task = self._pending.pop(uuid, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._run(self._destroy, instance)
        self._failed.pop(uuid, None)

    # -- state and console ------------------------------------------------------------------

    def _power_state(self, instance: Instance) -> PowerState:
        return power.power_state(self._domain(instance_uuid(instance)))

    async def get_power_state(self, instance: Instance) -> PowerState:
        uuid = instance_uuid(instance)
        state = await self._run(self._power_state, instance)
        if uuid in self._pending:
            return NOSTATE  # defined, waiting for its image to start
        if uuid in self._failed and state != RUNNING:
            return CRASHED
        return state

    def _console(self, instance: Instance) -> str:
        dom = self._domain(instance_uuid(instance))
        root = ET.fromstring(dom.XMLDesc(0))
        paths = [
            el.get("path")
            for el in root.findall("devices/serial/source") + root.findall("devices/console/source")
        ]
        path = next((p for p in paths if p), None)
        # no path or no file: no guest has written anything (or libvirt's test driver runs none)
        return files.console_tail(Path(path), MAX_CONSOLE_BYTES) if path else ""

    async def get_console_output(self, instance: Instance) -> str:
        return await self._run(self._console, instance)

    # -- devices -------------------------------------------------------------------------

    def _attach_volume(
        self, instance: Instance, connection_info: ConnectionInfo, mountpoint: str
    ) -> None:
        uuid = instance_uuid(instance)
        disk = self._volume_disk(connection_info, mountpoint)
        dom = self._domain(uuid)
        dev = disk.dev.replace("vd", "xvd", 1) if self.virt_type == "xen" else disk.dev
        with self._guest_lock(uuid):
            if dev in devices.disks(dom.XMLDesc(0)):
                raise DeviceBusy(f"The supplied device path ({mountpoint}) is in use.")
            devices.attach(self._connect(), dom, render_disk(self.virt_type, disk))

    async def snapshot(self, instance: Instance, target: str) -> str:
        uuid = instance_uuid(instance)
        self._domain(uuid)  # InstanceNotFound for another host's or a gone guest
        root = self.instance_dir(uuid) / "disk"
        return await asyncio.to_thread(files.snapshot_root, root, Path(target))

    async def attach_volume(
        self, instance: Instance, connection_info: ConnectionInfo, mountpoint: str
    ) -> None:
        await self._run(self._attach_volume, instance, connection_info, mountpoint)

    def _detach_volume(
        self, instance: Instance, connection_info: ConnectionInfo, mountpoint: str
    ) -> None:
        uuid = instance_uuid(instance)
        dev = _disk_name(mountpoint)
        if self.virt_type == "xen":
            dev = dev.replace("vd", "xvd", 1)
        dom = self._domain(uuid)
        with self._guest_lock(uuid):
            disk = devices.disks(dom.XMLDesc(0)).get(dev)
            if disk is None or disk.find("serial") is None:  # the root disk is no volume
                raise DiskNotFound(f"No volume is attached to instance {uuid} at {mountpoint}.")
            devices.detach_disk(self._connect(), dom, disk, self.detach_timeout_s, mountpoint)

    async def detach_volume(
        self, instance: Instance, connection_info: ConnectionInfo, mountpoint: str
    ) -> None:
        await self._run(self._detach_volume, instance, connection_info, mountpoint)

    def _plug_vifs(self, instance: Instance, network_info: list[Vif]) -> None:
        uuid = instance_uuid(instance)
        dom = self._domain(uuid)
        wanted = [self._interface(v) for v in network_info or []]
        xml = {i.mac: render_interface(self.virt_type, i) for i in wanted}
        with self._guest_lock(uuid):
            devices.plug_interfaces(self._connect(), dom, xml)

    async def plug_vifs(self, instance: Instance, network_info: list[Vif]) -> None:
        await self._run(self._plug_vifs, instance, network_info)

    def _unplug_vifs(self, instance: Instance, network_info: list[Vif]) -> None:
        uuid = instance_uuid(instance)
        dom = self._domain(uuid)
        macs = [vif_mac(v).lower() for v in network_info or []]
        with self._guest_lock(uuid):
            devices.unplug_interfaces(self._connect(), dom, macs)

    async def unplug_vifs(self, instance: Instance, network_info: list[Vif]) -> None:
        await self._run(self._unplug_vifs, instance, network_info)

    # -- host ----------------------------------------------------------------------------

    async def get_available_resource(self) -> Resources:
        def resources() -> Resources:
            conn = self._connect()
            return host_resources(conn, self._ours(), self.instances_path, self.hostname)

        return await self._run(resources)

    def _list(self) -> list[str]:
        return [meta.get("name") or dom.name() for dom, meta in self._ours()]

    async def list_instances(self) -> list[str]:
        return await self._run(self._list)

    # -- power control -----------------------------------------------------------------------

    async def _power(self, instance: Instance, change: Callable[..., None], *args: Any) -> None:
        """A power change of the instance's domain (libvirt_power.py), in a worker thread."""
        uuid = instance_uuid(instance)

        def locked() -> None:
            with self._guest_lock(uuid):
                change(self._domain(uuid), *args)

        await self._run(locked)

    async def power_off(self, instance: Instance) -> None:
        await self._power(instance, power.power_off)

    async def power_on(self, instance: Instance) -> None:
        await self._power(instance, power.power_on)

    async def reboot(self, instance: Instance, reboot_type: str = "SOFT") -> None:
        if str(reboot_type).upper() not in ("SOFT", "HARD"):
            raise VirtError(f"reboot_type must be SOFT or HARD, not {reboot_type!r}")
        await self._power(instance, power.reboot, reboot_type.upper() == "HARD")

    async def pause(self, instance: Instance) -> None:
        await self._power(instance, power.pause)

    async def trigger_crash_dump(self, instance: Instance) -> None:
        await self._power(instance, power.inject_nmi)

    async def unpause(self, instance: Instance) -> None:
        await self._power(instance, power.unpause)

    async def suspend(self, instance: Instance) -> None:
        await self._power(instance, power.suspend)

    async def resume(self, instance: Instance) -> None:
        await self._power(instance, power.resume)


__all__ = ["LibvirtHypervisor"]
