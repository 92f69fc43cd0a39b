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
- Files live in `instances_path/<uuid>/`: the root disk (a qcow2 overlay on the
  image file made with qemu-img, or a raw copy), the kernel and ramdisk for
  direct kernel boot, and `console.log`, where the guest's serial console is
  written and `get_console_output` reads it.
- Volumes: connection_info of type `file` or `local` whose data gives the path
  of a raw (or qcow2) file in `device_path` (or `path`); they become virtio
  disks whose serial is the volume id, hot-plugged into a running guest.
- Ports: `vif_type` 'user' (QEMU user-mode networking; needs no bridge or tap,
  the default), 'bridge' or 'network' with `vif_source` naming it.
- With qemu:///system, QEMU runs as the compute service's own user (a static
  DAC label, `guest_user`), who owns the instance, image cache and volume files,
  as in session mode; `guest_user=""` leaves libvirtd's qemu.conf user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import libvirt

from generator.runtime.virt import (
    DeviceBusy,
    DiskNotFound,
    InstanceExists,
    InstanceNotFound,
    VirtError,
)
from generator.runtime.virt.accel import libvirt_virt_type
from generator.runtime.virt.domain_xml import (
    METADATA_NS,
    VIRT_TYPES,
    Disk,
    Guest,
    Interface,
    render_disk,
    render_domain,
    render_interface,
)

T = TypeVar("T")

# nova power_state codes, from libvirt domain states (as nova's libvirt driver maps them).
NOSTATE, RUNNING, PAUSED, SHUTDOWN, CRASHED, SUSPENDED = 0, 1, 3, 4, 6, 7
_POWER_STATE = {
    libvirt.VIR_DOMAIN_NOSTATE: NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: SUSPENDED,
}
MAX_CONSOLE_BYTES = 100 * 1024  # nova's limit for console output
GIB = 1024**3
IMAGE_WAIT_S = 600.0  # how long a deferred spawn waits for the image cache
VOLUME_TYPES = ("file", "local")
VIF_TYPES = ("user", "bridge", "network")
_MOUNTPOINT = re.compile(r"^/dev/(?:x?v|s|h)d([a-z]{1,2})$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_NS = {"s": METADATA_NS}


def _quiet(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; they are raised as VirtError instead."""


libvirt.registerErrorHandler(_quiet, None)


def _disk_name(mountpoint: Any) -> str:
    """`/dev/vdb` (or sdb, xvdb) -> `vdb`; anything else is refused."""
    match = _MOUNTPOINT.match(str(mountpoint))
    if match is None:
        raise VirtError(f"The supplied device path ({mountpoint}) is invalid.")
    return f"vd{match.group(1)}"


def _uuid_of(instance: Any) -> str:
    if not isinstance(instance, dict) or not instance.get("uuid"):
        raise VirtError("instance must be a dict with a uuid")
    return str(instance["uuid"])


def _virt_type_of(uri: str) -> tuple[str, str]:
    """(virt type of the templates, <domain type>) for a connection URI."""
    scheme = urlsplit(uri).scheme.split("+", 1)[0]
    if scheme == "test":
        return "qemu", "test"
    if scheme in ("xen", "libxl"):
        return "xen", "xen"
    if scheme == "lxc":
        return "lxc", "lxc"
    virt = libvirt_virt_type()
    return virt, virt


def _qemu_img(*args: str) -> str:
    exe = shutil.which("qemu-img")
    if exe is None:
        raise VirtError("qemu-img is not installed (package qemu-utils)")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VirtError(f"qemu-img {args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _image_format(path: Path) -> str:
    """The format of an image file as qemu-img sees it (raw when qemu-img is absent)."""
    if shutil.which("qemu-img") is None:
        return "raw"
    import json

    info = json.loads(_qemu_img("info", "--output=json", str(path)))
    return str(info.get("format") or "raw")


class LibvirtHypervisor:
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
    ) -> None:
        del vcpus, memory_mb, local_gb  # the host's own figures are reported
        self.uri = uri or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"
        self.hostname = hostname
        templates_type, domain_type = _virt_type_of(self.uri)
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
        # guests whose spawn came before their image (see spawn), and those that then failed
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, str] = {}
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
        """The domain's specstack metadata, or None when it is not this host's guest."""
        root = ET.fromstring(dom.XMLDesc(0))
        inst = root.find("metadata/s:instance", _NS)
        if inst is None:
            return None
        meta = {el.tag.split("}", 1)[-1]: (el.text or "") for el in inst}
        return meta if meta.get("host") == self.hostname else None

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

    def instance_dir(self, uuid: str) -> Path:
        return self.instances_path / uuid

    # -- spawn ------------------------------------------------------------------------

    def _root_disk(self, image: dict[str, Any], root_gb: int, inst_dir: Path) -> Disk | None:
        """A disk of the instance's own on the image file: a qcow2 overlay, or a raw copy."""
        src = image.get("path")
        if not src:
            return None
        base = Path(str(src)).resolve()
        if not base.is_file():
            raise VirtError(f"image {image.get('id')} has no file at {base}")
        fmt = _image_format(base)
        if fmt not in ("raw", "qcow2"):
            raise VirtError(f"image {image.get('id')} is {fmt}; only raw and qcow2 can boot")
        disk = inst_dir / "disk"
        if shutil.which("qemu-img") is not None:
            size = [f"{root_gb}G"] if root_gb * GIB > self._virtual_size(base) else []
            _qemu_img("create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(base), str(disk), *size)
            return Disk(path=str(disk), dev="vda", format="qcow2")
        shutil.copyfile(base, disk)
        return Disk(path=str(disk), dev="vda", format=fmt)

    @staticmethod
    def _virtual_size(path: Path) -> int:
        import json

        return int(json.loads(_qemu_img("info", "--output=json", str(path)))["virtual-size"])

    @staticmethod
    def _volume_disk(connection_info: Any, mountpoint: Any, serial: Any = None) -> Disk:
        if not isinstance(connection_info, dict):
            raise VirtError("connection_info must be an object")
        kind = connection_info.get("driver_volume_type")
        if kind not in VOLUME_TYPES:
            raise VirtError(
                f"volume type {kind!r} is not supported by the libvirt driver "
                f"(supported: {', '.join(VOLUME_TYPES)})"
            )
        data = connection_info.get("data") or {}
        path = data.get("device_path") or data.get("path")
        if not path:
            raise VirtError(f"connection_info of type {kind} needs data.device_path")
        if not Path(str(path)).exists():
            raise VirtError(f"volume file {path} does not exist")
        fmt = str(data.get("format") or "raw")
        if fmt not in ("raw", "qcow2"):
            raise VirtError(f"volume format {fmt!r} is not supported (raw, qcow2)")
        return Disk(
            path=str(path),
            dev=_disk_name(mountpoint),
            format=fmt,
            serial=str(serial or data.get("serial") or data.get("volume_id") or "") or None,
            readonly=data.get("access_mode") == "ro",
        )

    def _interface(self, vif: Any) -> Interface:
        if not isinstance(vif, dict) or not vif.get("id") or not vif.get("address"):
            raise VirtError("each vif needs an id and an address")
        mac = str(vif["address"])
        if not _MAC.match(mac):
            raise VirtError(f"vif {vif['id']} has an invalid MAC address {mac!r}")
        return Interface(
            mac=mac.lower(), vif_id=str(vif["id"]), kind=self.vif_type, source=self.vif_source
        )

    def _kernel_boot(self, image: dict[str, Any], inst_dir: Path) -> tuple[str | None, str | None]:
        """Copies of the image's kernel and ramdisk in the instance directory (as nova makes)."""
        paths: list[str | None] = []
        for key, name in (("kernel_path", "kernel"), ("ramdisk_path", "ramdisk")):
            src = image.get(key)
            if not src:
                paths.append(None)
                continue
            if not Path(str(src)).is_file():
                raise VirtError(f"image {image.get('id')}: {key} {src} is not a file")
            dst = inst_dir / name
            shutil.copyfile(str(src), dst)
            paths.append(str(dst))
        if paths[1] and not paths[0]:
            raise VirtError(f"image {image.get('id')} has a ramdisk but no kernel")
        return paths[0], paths[1]

    def _spawn(
        self,
        instance: dict[str, Any],
        image: dict[str, Any],
        network_info: list[dict[str, Any]],
        block_device_info: list[dict[str, Any]],
    ) -> None:
        uuid = _uuid_of(instance)
        conn = self._connect()
        try:
            conn.lookupByUUIDString(uuid)
            raise InstanceExists(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        image = image or {}
        src = image.get("path")
        deferred = bool(image.get("pending")) and not Path(str(src)).is_file()  # on its way
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
        inst_dir.mkdir(parents=True, exist_ok=True)
        dom: libvirt.virDomain | None = None
        try:
            kernel, initrd = self._kernel_boot(image, inst_dir)
            disks = list(volumes)
            if "vda" not in devs:
                root = (
                    self._future_root_disk(inst_dir)
                    if deferred
                    else self._root_disk(image, root_gb, inst_dir)
                )
                if root is not None:
                    disks.insert(0, root)
            props = image.get("properties") or {}
            guest = Guest(
                name=self.domain_name(uuid),
                uuid=uuid,
                title=str(instance.get("name") or uuid),
                host=self.hostname,
                domain_type=self.domain_type,
                memory_mb=int(instance.get("memory_mb") or 512),
                vcpus=int(instance.get("vcpus") or 1),
                console_log=str(inst_dir / "console.log"),
                root_gb=root_gb,
                image_id=str(image.get("id") or instance.get("image_id") or ""),
                machine=self.machine,
                kernel=kernel,
                initrd=initrd,
                cmdline=str(props.get("os_command_line") or "console=ttyS0"),
                disks=disks,
                interfaces=interfaces,
                dac_label=self.dac_label,
            )
            dom = conn.defineXML(render_domain(self.virt_type, guest))
            if not deferred:
                dom.create()
        except BaseException:
            if dom is not None:
                self._remove(dom)
            shutil.rmtree(inst_dir, ignore_errors=True)
            raise

    @staticmethod
    def _future_root_disk(inst_dir: Path) -> Disk:
        """The root disk that _root_disk will make once the image file is there."""
        fmt = "qcow2" if shutil.which("qemu-img") is not None else "raw"
        return Disk(path=str(inst_dir / "disk"), dev="vda", format=fmt)

    async def spawn(
        self,
        instance: dict[str, Any],
        image: dict[str, Any],
        network_info: list[dict[str, Any]],
        block_device_info: list[dict[str, Any]],
    ) -> None:
        """Define and start the domain. An image marked `pending` is not yet at its path
        (nova-compute spawns at step 9 and downloads the image at step 12): the domain is
        defined now and started when the image lands; until then the power state is NOSTATE."""
        await self._run(self._spawn, instance, image, network_info, block_device_info)
        src = (image or {}).get("path")
        if src and (image or {}).get("pending") and not Path(str(src)).is_file():
            uuid = _uuid_of(instance)
            root_gb = int(instance.get("root_gb") or 0)
            self._pending[uuid] = asyncio.create_task(self._start_later(uuid, image, root_gb))

    async def _start_later(self, uuid: str, image: dict[str, Any], root_gb: int) -> None:
        deadline = time.monotonic() + IMAGE_WAIT_S
        try:
            while not Path(str(image["path"])).is_file():
                if time.monotonic() > deadline:
                    raise VirtError(f"image {image.get('id')} never arrived at {image['path']}")
                await asyncio.sleep(0.05)

            def start() -> None:
                self._root_disk(image, root_gb, self.instance_dir(uuid))
                self._domain(uuid).create()

            await self._run(start)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed[uuid] = str(exc)
            console = self.instance_dir(uuid) / "console.log"
            with contextlib.suppress(OSError), open(console, "a", encoding="utf-8") as fh:
                fh.write(f"[libvirt driver] guest did not start: {exc}\n")
        finally:
            self._pending.pop(uuid, None)

    # -- destroy ------------------------------------------------------------------------

    @staticmethod
    def _remove(dom: libvirt.virDomain) -> None:
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # stopped meanwhile
                raise
        if dom.isPersistent():
            dom.undefine()

    def _destroy(self, instance: dict[str, Any]) -> None:
        uuid = _uuid_of(instance)
        self._remove(self._domain(uuid))
        shutil.rmtree(self.instance_dir(uuid), ignore_errors=True)

    async def destroy(self, instance: dict[str, Any]) -> None:
        task = self._pending.pop(_uuid_of(instance), None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._failed.pop(_uuid_of(instance), None)
        await self._run(self._destroy, instance)

    # -- state and console ------------------------------------------------------------------

    def _power_state(self, instance: dict[str, Any]) -> int:
        if _uuid_of(instance) in self._pending:
            self._domain(_uuid_of(instance))  # InstanceNotFound as for any guest
            return NOSTATE
        if _uuid_of(instance) in self._failed:
            return CRASHED
        state = self._domain(_uuid_of(instance)).state()[0]
        return _POWER_STATE.get(state, NOSTATE)

    async def get_power_state(self, instance: dict[str, Any]) -> int:
        return await self._run(self._power_state, instance)

    def _console(self, instance: dict[str, Any]) -> str:
        dom = self._domain(_uuid_of(instance))
        root = ET.fromstring(dom.XMLDesc(0))
        paths = [
            el.get("path")
            for el in root.findall("devices/serial/source") + root.findall("devices/console/source")
        ]
        path = next((p for p in paths if p), None)
        if path is None or not Path(path).exists():
            return ""  # no guest has written anything (or libvirt's test driver runs none)
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - MAX_CONSOLE_BYTES))
            return fh.read().decode("utf-8", errors="replace")

    async def get_console_output(self, instance: dict[str, Any]) -> str:
        return await self._run(self._console, instance)

    # -- devices -------------------------------------------------------------------------

    @staticmethod
    def _live_flags(dom: libvirt.virDomain) -> int:
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        return int(flags)

    def _cold_plug(self, dom: libvirt.virDomain, device_xml: str, remove: str | None) -> None:
        """Change the persistent definition and restart the guest: for a libvirt driver
        without hot-plug (libvirt's test driver). `remove` is the target dev to take out."""
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        devices = root.find("devices")
        assert devices is not None
        if remove is None:
            devices.append(ET.fromstring(device_xml))
        else:
            for disk in devices.findall("disk"):
                target = disk.find("target")
                if target is not None and target.get("dev") == remove:
                    devices.remove(disk)
        ET.register_namespace("specstack", METADATA_NS)
        running = bool(dom.isActive())
        conn = self._connect()
        if running:
            dom.destroy()
        dom = conn.defineXML(ET.tostring(root, encoding="unicode"))
        if running:
            dom.create()

    def _attach(self, dom: libvirt.virDomain, device_xml: str) -> None:
        try:
            dom.attachDeviceFlags(device_xml, self._live_flags(dom))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            self._cold_plug(dom, device_xml, None)

    @staticmethod
    def _disks(xml: str) -> dict[str, ET.Element]:
        out = {}
        for disk in ET.fromstring(xml).findall("devices/disk"):
            target = disk.find("target")
            if target is not None and target.get("dev"):
                out[str(target.get("dev"))] = disk
        return out

    def _attach_volume(
        self, instance: dict[str, Any], connection_info: dict[str, Any], mountpoint: str
    ) -> None:
        uuid = _uuid_of(instance)
        disk = self._volume_disk(connection_info, mountpoint)
        dom = self._domain(uuid)
        dev = disk.dev.replace("vd", "xvd", 1) if self.virt_type == "xen" else disk.dev
        if dev in self._disks(dom.XMLDesc(0)):
            raise DeviceBusy(f"The supplied device path ({mountpoint}) is in use.")
        self._attach(dom, render_disk(self.virt_type, disk))

    async def attach_volume(
        self, instance: dict[str, Any], connection_info: dict[str, Any], mountpoint: str
    ) -> None:
        await self._run(self._attach_volume, instance, connection_info, mountpoint)

    def _detach_volume(
        self, instance: dict[str, Any], connection_info: dict[str, Any], mountpoint: str
    ) -> None:
        uuid = _uuid_of(instance)
        dev = _disk_name(mountpoint)
        if self.virt_type == "xen":
            dev = dev.replace("vd", "xvd", 1)
        dom = self._domain(uuid)
        disk = self._disks(dom.XMLDesc(0)).get(dev)
        if disk is None or disk.find("serial") is None:  # the root disk is no volume
            raise DiskNotFound(f"No volume is attached to instance {uuid} at {mountpoint}.")
        xml = ET.tostring(disk, encoding="unicode")
        try:
            if dom.isActive():
                # The running guest must release the disk (ACPI/PCI unplug) first; until it
                # has, the persistent definition keeps it, so a failed detach changes nothing.
                dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                self._wait_released(dom, uuid, dev, mountpoint)
            if dom.isPersistent():
                stored = self._disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).get(dev)
                if stored is not None:
                    dom.detachDeviceFlags(
                        ET.tostring(stored, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_CONFIG
                    )
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            self._cold_plug(dom, xml, dev)

    def _wait_released(self, dom: libvirt.virDomain, uuid: str, dev: str, mountpoint: str) -> None:
        deadline = time.monotonic() + self.detach_timeout_s
        while dev in self._disks(dom.XMLDesc(0)):
            if time.monotonic() > deadline:
                raise VirtError(
                    f"Instance {uuid} did not release {mountpoint} within "
                    f"{self.detach_timeout_s:g} s (the guest OS must acknowledge the unplug)."
                )
            time.sleep(0.1)

    async def detach_volume(
        self, instance: dict[str, Any], connection_info: dict[str, Any], mountpoint: str
    ) -> None:
        await self._run(self._detach_volume, instance, connection_info, mountpoint)

    def _plug_vifs(self, instance: dict[str, Any], network_info: list[dict[str, Any]]) -> None:
        uuid = _uuid_of(instance)
        wanted = [self._interface(v) for v in network_info or []]
        dom = self._domain(uuid)
        present = {
            str(mac.get("address")).lower()
            for mac in ET.fromstring(dom.XMLDesc(0)).findall("devices/interface/mac")
        }
        for iface in wanted:
            if iface.mac not in present:
                self._attach(dom, render_interface(self.virt_type, iface))
                present.add(iface.mac)

    async def plug_vifs(self, instance: dict[str, Any], network_info: list[dict[str, Any]]) -> None:
        await self._run(self._plug_vifs, instance, network_info)

    # -- host ----------------------------------------------------------------------------

    def _resources(self) -> dict[str, Any]:
        info = (
            self._connect().getInfo()
        )  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
        self.instances_path.mkdir(parents=True, exist_ok=True)
        disk = shutil.disk_usage(self.instances_path)
        vcpus_used = memory_used = local_used = running = 0
        for dom, meta in self._ours():
            _state, _max_kib, mem_kib, vcpus, _cpu_time = dom.info()
            if dom.isActive():
                running += 1
                vcpus_used += int(vcpus)
                memory_used += int(mem_kib) // 1024
            local_used += int(meta.get("root_gb") or 0)
        return {
            "vcpus": int(info[2]),
            "vcpus_used": vcpus_used,
            "memory_mb": int(info[1]),
            "memory_mb_used": memory_used,
            "local_gb": int(disk.total // GIB),
            "local_gb_used": local_used,
            "running_vms": running,
            "hypervisor_type": str(self._connect().getType()),
            "hypervisor_hostname": self.hostname,
        }

    async def get_available_resource(self) -> dict[str, Any]:
        return await self._run(self._resources)

    def _list(self) -> list[str]:
        return [meta.get("name") or dom.name() for dom, meta in self._ours()]

    async def list_instances(self) -> list[str]:
        return await self._run(self._list)

    # -- beyond the interface (power control, as the fake driver has) -------------------------

    def _power_off(self, instance: dict[str, Any]) -> None:
        dom = self._domain(_uuid_of(instance))
        if dom.isActive():
            dom.destroy()

    async def power_off(self, instance: dict[str, Any]) -> None:
        await self._run(self._power_off, instance)

    def _power_on(self, instance: dict[str, Any]) -> None:
        dom = self._domain(_uuid_of(instance))
        if not dom.isActive():
            dom.create()

    async def power_on(self, instance: dict[str, Any]) -> None:
        await self._run(self._power_on, instance)

    def _reboot(self, instance: dict[str, Any], reboot_type: str) -> None:
        dom = self._domain(_uuid_of(instance))
        if not dom.isActive():
            dom.create()
        elif reboot_type.upper() == "HARD":
            dom.reset(0)
        else:
            try:
                dom.reboot(0)  # asks the guest (ACPI); a guest without an OS ignores it
            except libvirt.libvirtError:
                dom.reset(0)

    async def reboot(self, instance: dict[str, Any], reboot_type: str = "SOFT") -> None:
        await self._run(self._reboot, instance, reboot_type)


__all__ = ["LibvirtHypervisor"]
