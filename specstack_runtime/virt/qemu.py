"""The qemu driver: `qemu-system-x86_64` run directly, one process per guest, controlled over QMP.

For hosts without libvirtd. Each guest has a directory beside the state file
(`<state>-guests/<uuid>/`) with its root disk, its serial console log, its QMP
socket and QEMU's own log. The guests' records (pid, disks, vifs) are kept as
JSON in the state file, rewritten atomically after every change, and QEMU runs
in its own session, so a restarted compute service finds its guests running.

Booting follows the order of nova's build steps: `spawn` (step 9) is called
before the image has been downloaded (step 12), with the image marked
`pending`; then it records the guest and starts a task that waits for the
image file named by `image["path"]` to appear in the image cache, copies it as the guest's root disk and starts QEMU with the
interfaces and volumes known by then. Interfaces and volumes that come later are
hot-plugged over QMP (netdev_add/blockdev-add + device_add). Until QEMU runs,
`get_power_state` says NOSTATE; nova-compute waits for RUNNING before it makes
the instance ACTIVE. A spawn without an image path boots a blank root disk.

KVM is used only where it really works: not under the `kvm_pvm` module, and only
when the CPU shows vmx or svm; otherwise TCG (`SPECSTACK_QEMU_ACCEL` overrides).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemu.qmp import QMPClient, QMPError

from specstack_runtime import filewriter
from specstack_runtime.virt import (
    CRASHED,
    NOSTATE,
    PAUSED,
    RUNNING,
    SHUTDOWN,
    SUSPENDED,
    DeviceBusy,
    DiskNotFound,
    VirtError,
    accel,
    files,
    qmp_devices,
)
from specstack_runtime.virt.common import (
    disk_name,
    instance_uuid,
    resource_report,
    vif_mac,
)
from specstack_runtime.virt.qemu_moves import QemuMoves

logger = logging.getLogger(__name__)

CONSOLE_TAIL = 256 * 1024  # nova too returns only the end of a long console log
IMAGE_WAIT_S = 600.0
START_TIMEOUT_S = 30.0
DETACH_TIMEOUT_S = 30.0
QMP_STATES: dict[str, PowerState] = {
    "running": RUNNING,
    "paused": PAUSED,
    "prelaunch": PAUSED,
    "inmigrate": PAUSED,
    "postmigrate": PAUSED,
    "finish-migrate": PAUSED,
    "restore-vm": PAUSED,
    "save-vm": PAUSED,
    "debug": PAUSED,
    "suspended": SUSPENDED,
    "shutdown": SHUTDOWN,
    "internal-error": CRASHED,
    "io-error": CRASHED,
    "guest-panicked": CRASHED,
    "colo": RUNNING,
    "watchdog": CRASHED,
}
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

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


def _uuid_of(instance: Any) -> str:
    """The instance's uuid, which also names the guest's files and QMP socket."""
    uuid = instance_uuid(instance)
    if not _SAFE.match(uuid):
        raise VirtError(f"instance uuid {uuid!r} cannot name a guest")
    return uuid


def _alive(pid: int | None, uuid: str) -> bool:
    """The pid is a live (not zombie) QEMU of this guest; guards against a reused pid."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
        return False
    return uuid.encode() in cmdline


def _socket_path(guest_dir: Path) -> Path:
    """The guest's QMP socket: in a short directory, as sun_path holds only 108 bytes."""
    digest = hashlib.sha256(str(guest_dir.resolve()).encode()).hexdigest()[:24]
    base = Path(tempfile.gettempdir()) / f"specstack-qmp-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    return base / f"{digest}.sock"


def socket_in_argv(argv: list[bytes]) -> Path | None:
    """The QMP socket a guest's QEMU command line names (`-qmp unix:PATH,...`): what is
    left to remove when a guest is ended without its driver (a test's or bench's cleanup)."""
    for flag, value in itertools.pairwise(argv):
        if flag == b"-qmp" and value.startswith(b"unix:"):
            return Path(os.fsdecode(value[len(b"unix:") :].split(b",", 1)[0]))
    return None


def _volume_file(connection_info: Any) -> tuple[str, str]:
    """(path, serial) of a volume's local file; QEMU attaches it as a raw block device."""
    vol = files.local_volume(connection_info, "qemu")
    if vol.format != "raw":
        raise VirtError(f"the qemu driver attaches raw volumes only, not {vol.format}")
    return vol.path, vol.serial


class QemuHypervisor(QemuMoves):
    """Guests as QEMU processes; see the module docstring."""

    hypervisor_type = "QEMU"

    default_hostname = "qemu-hypervisor"
    default_memory_mb = 128
    _uuid = staticmethod(_uuid_of)

    def _setup(self) -> None:
        binary = accel.qemu_binary()
        if binary is None:
            raise VirtError("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")
        self.binary = binary
        self.accel = accel.qemu_accelerator()
        if self.state_file is not None:
            self.guests_dir = self.state_file.with_name(self.state_file.stem + "-guests")
        else:
            self.guests_dir = Path(tempfile.mkdtemp(prefix="specstack-qemu-"))
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        # per guest and event loop: callers may come from more than one loop (tests do)
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}

    # -- persistence -----------------------------------------------------------------------

    def _loaded(self) -> None:
        for guest in self.guests.values():
            # a build interrupted by the restart cannot go on: its boot task is gone
            if guest.get("state") == "building":
                guest["state"] = "failed"
                guest["error"] = "the compute service restarted before the guest was started"

    def _save(self) -> None:
        if self.state_file is None:
            return
        filewriter.atomic_write(self.state_file, self._encoded())

    def close(self) -> None:
        """Stop waiting for images; the guests keep running (like libvirt's)."""
        for task in self._tasks.values():
            task.cancel()
        self._save()

    # -- helpers ---------------------------------------------------------------------------

    def _lock(self, uuid: str) -> asyncio.Lock:
        key = (id(asyncio.get_running_loop()), uuid)
        return self._locks.setdefault(key, asyncio.Lock())

    def _dir(self, uuid: str) -> Path:
        return self.guests_dir / uuid

    def _note(self, guest: dict[str, Any], text: str) -> None:
        """A line of the host's own in the console log (QEMU appends to the same file)."""
        path = Path(guest["console"])
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"[qemu driver] {text}\n")

    async def _execute(self, guest: dict[str, Any], cmd: str, **args: Any) -> Any:
        """One QMP command on a connection of its own.

        QEMU's QMP socket serves one client at a time; a short connection per command
        keeps it free for a restarted service and works from any event loop.
        """
        uuid = guest["uuid"]
        if not _alive(guest.get("pid"), uuid):
            raise VirtError(f"the QEMU process of instance {uuid} is not running")
        client = QMPClient(f"guest-{uuid[:8]}")
        try:
            await asyncio.wait_for(client.connect(guest["qmp"]), 10)
        except (TimeoutError, QMPError, OSError) as exc:
            raise VirtError(f"cannot reach the QMP socket of instance {uuid}: {exc}") from exc
        try:
            return await client.execute(cmd, args or None)
        except QMPError as exc:
            raise VirtError(f"QMP {cmd} on instance {uuid} failed: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()

    # -- building and starting a guest -------------------------------------------------------

    def _command(self, guest: dict[str, Any]) -> list[str]:
        accel = self.accel
        cmd = [
            self.binary,
            "-name", f"guest={guest['name']},debug-threads=off",
            "-uuid", guest["uuid"],
            "-machine", f"pc,accel={accel}",
            "-cpu", "host" if accel == "kvm" else "qemu64",  # TCG: emulate no more than needed
            "-smp", str(guest["vcpus"]),
            "-m", str(max(guest["memory_mb"], 64)),
            "-nodefaults", "-no-user-config",
            "-display", "none", "-vga", "none",
            "-chardev", f"file,id=console,path={guest['console']},append=on",
            "-serial", "chardev:console",
            "-qmp", f"unix:{guest['qmp']},server=on,wait=off",
            "-drive", f"file={guest['root_disk']},if=none,id=drive-root,format=raw",
            "-device", "virtio-blk-pci,drive=drive-root,id=disk-root,bootindex=1",
        ]  # fmt: skip
        for name, disk in sorted(guest["disks"].items()):
            cmd += [
                "-blockdev",
                json.dumps(qmp_devices.blockdev(name, disk["path"]), separators=(",", ":")),
                "-device",
                f"virtio-blk-pci,drive=vol-{name},id=disk-{name},serial={disk['serial'][:20]}",
            ]
        for vif in guest["vifs"]:
            nid = vif["id"][:8]
            cmd += [
                "-netdev", f"user,id=net-{nid}",
                "-device", f"virtio-net-pci,netdev=net-{nid},id=nic-{nid},mac={vif['address']}",
            ]  # fmt: skip
        return cmd

    async def _boot(self, uuid: str) -> None:
        guest = self.guests[uuid]
        try:
            await self._prepare_root(guest)
            async with self._lock(uuid):
                if uuid not in self.guests:
                    return  # destroyed meanwhile
                await self._start(guest)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("guest of instance %s did not start: %s", uuid, exc)
            guest["state"] = "failed"
            guest["error"] = str(exc)
            self._note(guest, f"guest did not start: {exc}")
            self._save()

    async def _prepare_root(self, guest: dict[str, Any]) -> None:
        """The guest's own copy of its image (waiting for the image cache), or a blank disk."""
        root = Path(guest["root_disk"])
        image_path = guest.get("image_path")
        if image_path:
            source = Path(image_path)
            deadline = time.monotonic() + IMAGE_WAIT_S
            while not source.is_file():
                if time.monotonic() > deadline:
                    raise VirtError(f"image {guest['image_id']} never arrived at {source}")
                await asyncio.sleep(0.05)
            await asyncio.to_thread(shutil.copyfile, source, root)
        else:
            root.touch()
        size = max(root.stat().st_size, int(guest["root_gb"]) << 30, 1 << 20)
        os.truncate(root, size)  # sparse: the flavor's root disk size costs nothing until used

    async def _start(self, guest: dict[str, Any]) -> None:
        uuid = guest["uuid"]
        Path(guest["qmp"]).unlink(missing_ok=True)
        with open(self._dir(uuid) / "qemu.log", "ab") as log:
            proc = subprocess.Popen(
                self._command(guest),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # the guest outlives a restart of the compute service
            )
        self._procs[uuid] = proc
        guest["pid"] = proc.pid
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise VirtError(f"qemu exited with {proc.returncode}: {self._qemu_log(uuid)}")
            if Path(guest["qmp"]).exists():
                try:
                    await self._execute(guest, "query-status")
                    break
                except VirtError:
                    pass
            if time.monotonic() > deadline:
                raise VirtError(f"qemu did not open its QMP socket: {self._qemu_log(uuid)}")
            await asyncio.sleep(0.05)
        guest["state"] = "started"
        guest["started_at"] = time.time()
        self._save()

    def _qemu_log(self, uuid: str) -> str:
        try:
            text = (self._dir(uuid) / "qemu.log").read_text(errors="replace").strip()
        except OSError:
            return "(no log)"
        return text[-2000:] or "(no log)"

    # -- the driver interface ----------------------------------------------------------------

    async def spawn(
        self,
        instance: Instance,
        image: ImageMeta,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
    ) -> None:
        guest = self._new_guest(instance)
        uuid = guest["uuid"]
        image = image or {}
        path = image.get("path") or None
        pending = bool(image.get("pending")) and path is not None and not Path(path).is_file()
        if path is not None and not pending and not Path(path).is_file():
            raise VirtError(f"image {image.get('id')} has no file at {path}")
        guest_dir = self._dir(uuid)
        guest |= {
            "image_id": image.get("id") or instance.get("image_id") or None,
            "image_path": image.get("path") or None,
            "root_disk": str(guest_dir / "disk"),
            "console": str(guest_dir / "console.log"),
            "qmp": str(_socket_path(guest_dir)),
            "pid": None,
            "state": "building",
            "vifs": [],
            "disks": {},
            "created_at": time.time(),
        }
        for bdev in block_device_info or []:
            name = disk_name(bdev["mountpoint"])
            if name in guest["disks"] or name == "vda":
                raise DeviceBusy(f"device {bdev['mountpoint']} is given twice")
            path, serial = _volume_file(bdev.get("connection_info"))
            guest["disks"][name] = {"path": path, "serial": str(bdev.get("serial") or serial)}
        for vif in network_info or []:
            vif_mac(vif)  # each vif checked first
        guest["vifs"] = [dict(v) for v in network_info or []]
        guest_dir.mkdir(parents=True, exist_ok=True)
        self.guests[uuid] = guest
        self._save()
        path = guest["image_path"]
        if not pending:
            # everything is there: the guest runs when spawn returns, or spawn fails cleanly
            try:
                await self._prepare_root(guest)
                async with self._lock(uuid):
                    await self._start(guest)
            except BaseException:
                await self._kill(guest)
                self.guests.pop(uuid, None)
                self._save()
                Path(guest["qmp"]).unlink(missing_ok=True)
                shutil.rmtree(guest_dir, ignore_errors=True)
                raise
            return
        # the image is still on its way (boot-vm step 12): the guest starts when it lands
        self._tasks[uuid] = asyncio.create_task(self._boot(uuid), name=f"qemu-boot-{uuid}")

    async def destroy(self, instance: Instance) -> None:
        guest = self._guest(instance)
        uuid = guest["uuid"]
        task = self._tasks.pop(uuid, None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        async with self._lock(uuid):
            await self._kill(guest)
            self.guests.pop(uuid, None)
            self._save()
        for key in [k for k in self._locks if k[1] == uuid]:
            del self._locks[key]
        Path(guest["qmp"]).unlink(missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, self._dir(uuid), True)

    async def _kill(self, guest: dict[str, Any]) -> None:
        uuid, pid = guest["uuid"], guest.get("pid")
        proc = self._procs.pop(uuid, None)
        if pid and _alive(pid, uuid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        if proc is not None:
            await asyncio.to_thread(proc.wait, 10)  # reap our own child at once
            return
        deadline = time.monotonic() + 10
        while _alive(pid, uuid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def get_power_state(self, instance: Instance) -> PowerState:
        guest = self._guest(instance)
        state = guest.get("state")
        if state == "building":
            return NOSTATE
        if state == "failed":
            return CRASHED
        if not _alive(guest.get("pid"), guest["uuid"]):
            return SHUTDOWN
        if guest.get("suspended"):
            return SUSPENDED
        try:
            status = await self._execute(guest, "query-status")
        except VirtError:
            return NOSTATE
        return QMP_STATES.get(str(status.get("status")), NOSTATE)

    async def get_console_output(self, instance: Instance) -> str:
        text = files.console_tail(Path(self._guest(instance)["console"]), CONSOLE_TAIL)
        return text.replace("\r\n", "\n")

    async def snapshot(self, instance: Instance, target: str) -> str:
        root = Path(self._guest(instance)["root_disk"])
        return await asyncio.to_thread(files.snapshot_root, root, Path(target))

    async def attach_volume(
        self, instance: Instance, connection_info: ConnectionInfo, mountpoint: str
    ) -> None:
        guest = self._guest(instance)
        name = disk_name(mountpoint)
        path, serial = _volume_file(connection_info)
        async with self._lock(guest["uuid"]):
            if name in guest["disks"] or name == "vda":
                raise DeviceBusy(f"The supplied device path ({mountpoint}) is in use.")
            if guest.get("state") == "started":
                await qmp_devices.hotplug_disk(partial(self._execute, guest), name, path, serial)
                self._note(guest, f"hot-plugged volume {serial} as disk-{name}")
            elif guest.get("state") not in ("building", "stopped"):
                raise VirtError(f"the guest of instance {guest['uuid']} failed; cannot attach")
            # building or stopped: the disk goes on QEMU's command line when the guest starts
            guest["disks"][name] = {"path": path, "serial": serial}
            self._save()

    async def detach_volume(
        self, instance: Instance, connection_info: ConnectionInfo, mountpoint: str
    ) -> None:
        guest = self._guest(instance)
        name = disk_name(mountpoint)
        async with self._lock(guest["uuid"]):
            if name not in guest["disks"]:
                raise DiskNotFound(
                    f"No volume is attached to instance {guest['uuid']} at {mountpoint}."
                )
            if guest.get("state") == "started" and _alive(guest.get("pid"), guest["uuid"]):
                execute = partial(self._execute, guest)
                await qmp_devices.unplug_disk(execute, name, guest["uuid"], DETACH_TIMEOUT_S)
                self._note(guest, f"unplugged disk-{name}")
            del guest["disks"][name]
            self._save()

    async def plug_vifs(self, instance: Instance, network_info: list[Vif]) -> None:
        for vif in network_info or []:
            vif_mac(vif)  # each vif checked first
        await self._change_vifs(instance, network_info or [], plug=True)

    async def unplug_vifs(self, instance: Instance, network_info: list[Vif]) -> None:
        await self._change_vifs(instance, network_info or [], plug=False)

    async def _change_vifs(self, instance: Instance, network_info: list[Vif], plug: bool) -> None:
        """Each vif added (or taken out), hot-(un)plugged when the guest runs."""
        guest = self._guest(instance)
        async with self._lock(guest["uuid"]):
            for vif in network_info:
                others = [v for v in guest["vifs"] if v["id"] != vif["id"]]
                if (len(others) < len(guest["vifs"])) == plug:
                    continue  # plugged already, or not there to unplug
                if guest.get("state") == "started":
                    change = qmp_devices.hotplug_nic if plug else qmp_devices.unplug_nic
                    await change(partial(self._execute, guest), vif)
                guest["vifs"] = [*others, dict(vif)] if plug else others
            self._save()

    # -- power control ---------------------------------------------------------------------

    async def power_off(self, instance: Instance) -> None:
        """Stop the guest's QEMU; its disks and devices stay for power_on."""
        guest = self._guest(instance)
        async with self._lock(guest["uuid"]):
            if guest.get("state") != "started":
                raise VirtError(f"the guest of instance {guest['uuid']} is not running")
            await self._kill(guest)
            guest["state"], guest["pid"], guest["suspended"] = "stopped", None, False
            self._note(guest, "powered off")
            self._save()

    async def power_on(self, instance: Instance) -> None:
        guest = self._guest(instance)
        async with self._lock(guest["uuid"]):
            if guest.get("state") == "started" and _alive(guest.get("pid"), guest["uuid"]):
                return
            if guest.get("state") not in ("started", "stopped"):
                raise VirtError(f"the guest of instance {guest['uuid']} cannot be started")
            await self._start(guest)

    async def reboot(self, instance: Instance, reboot_type: str = "SOFT") -> None:
        guest = self._guest(instance)
        if reboot_type not in ("SOFT", "HARD"):
            raise VirtError(f"reboot type must be SOFT or HARD, not {reboot_type!r}")
        # both reset the machine: a SOFT reboot asking the guest OS first needs an OS that
        # answers ACPI power buttons, which the tiny test guest does not
        await self._execute(guest, "system_reset")
        self._note(guest, f"{reboot_type.lower()} reboot")

    async def _freeze(self, instance: Instance, cmd: str, wanted: str, done: str) -> None:
        """QMP stop/cont on a started guest that is `wanted` (running, paused, suspended)."""
        guest = self._guest(instance)
        async with self._lock(guest["uuid"]):
            now = "" if guest.get("state") != "started" else "suspended"
            if now and not guest.get("suspended"):
                now = str((await self._execute(guest, "query-status")).get("status"))
            if now != wanted:
                raise VirtError(f"the guest of instance {guest['uuid']} is not {wanted}")
            await self._execute(guest, cmd)
            guest["suspended"] = done == "suspended"
            self._note(guest, done)
            self._save()

    async def pause(self, instance: Instance) -> None:
        await self._freeze(instance, "stop", "running", "paused")

    async def trigger_crash_dump(self, instance: Instance) -> None:
        await self._execute(self._guest(instance), "inject-nmi")  # QMP: a started guest

    async def unpause(self, instance: Instance) -> None:
        await self._freeze(instance, "cont", "paused", "unpaused")

    async def suspend(self, instance: Instance) -> None:
        # QEMU alone keeps a suspended guest's memory in its process (no save to disk)
        await self._freeze(instance, "stop", "running", "suspended")

    async def resume(self, instance: Instance) -> None:
        await self._freeze(instance, "cont", "suspended", "resumed")

    async def get_available_resource(self) -> Resources:
        guests = self.guests.values()
        running = sum(1 for g in guests if _alive(g.get("pid"), g["uuid"]))
        return resource_report(self, guests, running)
