"""The fake hypervisor: guests that exist only as records, the embedded default.

It implements every method of the driver interface in spec/hypervisors.yaml
(async, plain dicts in and out) and behaves like a real hypervisor as far as a
caller can tell: guests are keyed by instance uuid, have a power state, virtual
interfaces, disks (vda for the root disk, vdb... for volumes) and a serial
console whose lines record what happened to them. Capacity comes from the
constructor; usage is the sum of the guests'. The guests are kept in the state file
given to the constructor, a snapshot and a journal of changes (`virt.journal`).
A change is written behind: `sync()` appends every guest changed so far to the
journal in one write (a few hundred bytes, no rename), and the runtime calls it
before the compute service tells anyone else anything (a message it sends, a call it
answers, a message it finishes: `ServiceRuntime.settle`). So a guest a caller was
told exists survives a crash (`kill -9`) of the service, and a boot's changes (spawn,
then its vifs) take one write, not one each. The trade-off: a change is not on disk
while the service has not yet reported it (between spawn and the boot's instance
update, e.g. during its HTTP requests); a crash there loses it, leaving what a crash
just before the change leaves (a build not reported done, which recovery handles).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specstack_runtime import filewriter, jsoncodec
from specstack_runtime.virt import (
    PAUSED,
    RUNNING,
    SHUTDOWN,
    SUSPENDED,
    DeviceBusy,
    DiskNotFound,
    InstanceNotFound,
    VirtError,
    journal,
)
from specstack_runtime.virt.common import (
    disk_name,
    handed_over,
    instance_uuid,
    read_state,
    resource_report,
)
from specstack_runtime.virt.records import RecordedHost

MAX_CONSOLE_LINES = 1000
_STATE_WORDS = {RUNNING: "running", PAUSED: "paused", SUSPENDED: "suspended"}

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


class FakeHypervisor(RecordedHost):
    """Guests as JSON records; see the module docstring.

    `state_file` None keeps the guests in memory only.
    """

    hypervisor_type = "fake"
    default_hostname = "fake-hypervisor"

    def _setup(self) -> None:
        self._dirty: set[str] = set()  # guests changed since the last write
        self._journal: journal.Journal | None = None

    def _read_state(self, path: Path) -> dict[str, Any] | None:
        what = f"{self.hypervisor_type} driver"
        doc, number = journal.read(path, "guests", lambda p: read_state(p, what))
        self._journal = journal.Journal(path, number)
        guests: dict[str, Any] = doc["guests"]
        return guests

    # -- persistence -----------------------------------------------------------

    def _changed(self, *keys: str) -> None:
        """Note a change of these guests (by key); `sync` writes it (see the module
        docstring)."""
        self._dirty.update(keys)

    def pending(self) -> bool:
        """Whether a change is not on disk yet."""
        return self._journal is not None and bool(self._dirty)

    async def sync(self) -> None:
        """Write every change made so far before returning: one append to the journal,
        in this thread (the page cache takes it in microseconds)."""
        self.flush()

    def flush(self) -> None:
        """Write the guests changed and not on disk yet (also at stop)."""
        if self._journal is None or not self._dirty:
            return
        keys, self._dirty = sorted(self._dirty), set()
        self._journal.append((k, self.guests.get(k)) for k in keys)
        if self._journal.due(len(self.guests)):
            self._journal.fold(lambda number: self._encoded(journal=number))

    def close(self) -> None:
        self.flush()

    # -- helpers -----------------------------------------------------------------

    def _note(self, guest: dict[str, Any], text: str) -> None:
        lines: list[str] = guest.setdefault("console", [])
        lines.append(f"fake-guest {guest['name']}: {text}")
        del lines[:-MAX_CONSOLE_LINES]

    @staticmethod
    def _disks_line(guest: dict[str, Any]) -> str:
        return "disks: " + " ".join(sorted(guest["disks"])) if guest["disks"] else "disks: none"

    # -- the driver interface --------------------------------------------------

    async def spawn(
        self,
        instance: Instance,
        image: ImageMeta,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
    ) -> None:
        guest = self._new_guest(instance)
        disks: dict[str, dict[str, Any]] = {}
        image_id = (image or {}).get("id") or instance.get("image_id")
        for bdev in block_device_info or []:
            name = disk_name(bdev["mountpoint"])
            if name in disks:
                raise DeviceBusy(f"device {bdev['mountpoint']} is given twice")
            disks[name] = {
                "kind": "volume",
                "serial": bdev.get("serial"),
                "connection_info": bdev.get("connection_info"),
            }
        if image_id and "vda" not in disks:
            disks["vda"] = {
                "kind": "image",
                "image_id": image_id,
                "size_gb": instance.get("root_gb", 0),
                "path": (image or {}).get("path"),  # its data: what a snapshot writes
            }
        guest |= {
            "image_id": image_id or None,
            "power_state": RUNNING,
            "vifs": [],
            "disks": disks,
            "console": [],
            "created_at": time.time(),
        }
        self.guests[guest["uuid"]] = guest
        self._plug(guest, network_info or [])
        self._note(guest, f"booted; {self._disks_line(guest)}")
        self._changed(guest["uuid"])

    async def destroy(self, instance: Instance) -> None:
        guest = self._guest(instance)
        del self.guests[guest["uuid"]]
        self._changed(guest["uuid"])

    async def get_power_state(self, instance: Instance) -> PowerState:
        state: PowerState = self._guest(instance)["power_state"]
        return state

    async def get_console_output(self, instance: Instance) -> str:
        lines = self._guest(instance).get("console", [])
        return "".join(f"{line}\n" for line in lines)

    async def snapshot(self, instance: Instance, target: str) -> str:
        """The root disk's data: its image's, as a fake guest never writes to its disk
        (none when the image had no file here)."""
        root = self._guest(instance)["disks"].get("vda") or {}
        if root.get("kind") != "image":
            raise DiskNotFound(f"instance {instance_uuid(instance)} has no local root disk")
        source = Path(root["path"]) if root.get("path") else None
        data = source.read_bytes() if source is not None and source.is_file() else b""
        await asyncio.to_thread(filewriter.atomic_write, Path(target), data)
        return "raw"

    async def attach_volume(
        self, instance: Instance, connection_info: ConnectionInfo, mountpoint: str
    ) -> None:
        guest = self._guest(instance)
        name = disk_name(mountpoint)
        if name in guest["disks"]:
            raise DeviceBusy(f"The supplied device path ({mountpoint}) is in use.")
        if not isinstance(connection_info, dict) or "driver_volume_type" not in connection_info:
            raise VirtError("connection_info must have a driver_volume_type")
        data = connection_info.get("data") or {}
        guest["disks"][name] = {
            "kind": "volume",
            "serial": data.get("volume_id"),
            "connection_info": connection_info,
        }
        self._note(guest, f"attached {name}; {self._disks_line(guest)}")
        self._changed(guest["uuid"])

    async def detach_volume(
        self, instance: Instance, connection_info: ConnectionInfo, mountpoint: str
    ) -> None:
        guest = self._guest(instance)
        name = disk_name(mountpoint)
        disk = guest["disks"].get(name)
        if disk is None or disk.get("kind") != "volume":
            raise DiskNotFound(
                f"No volume is attached to instance {guest['uuid']} at {mountpoint}."
            )
        del guest["disks"][name]
        self._note(guest, f"detached {name}; {self._disks_line(guest)}")
        self._changed(guest["uuid"])

    async def plug_vifs(self, instance: Instance, network_info: list[Vif]) -> None:
        guest = self._guest(instance)
        self._plug(guest, network_info or [])
        self._changed(guest["uuid"])

    async def unplug_vifs(self, instance: Instance, network_info: list[Vif]) -> None:
        guest = self._guest(instance)
        gone = {v.get("id") for v in network_info or []}
        for vif in [v for v in guest["vifs"] if v["id"] in gone]:
            guest["vifs"].remove(vif)
            self._note(guest, f"link down {vif['address']}")
        self._changed(guest["uuid"])

    def _plug(self, guest: dict[str, Any], network_info: list[Vif]) -> None:
        known = {v["id"] for v in guest["vifs"]}
        for vif in network_info:
            if not isinstance(vif, dict) or not vif.get("id") or not vif.get("address"):
                raise VirtError("each vif needs an id and an address")
            if vif["id"] in known:
                continue
            guest["vifs"].append(dict(vif))
            known.add(vif["id"])
            ips = ", ".join(vif.get("ip_addresses") or []) or "no address"
            self._note(guest, f"link up {vif['address']} ({ips})")

    async def get_available_resource(self) -> Resources:
        return resource_report(self, self.guests.values(), running=len(self.guests))

    # -- power control -----------------------------------------------------------

    async def power_off(self, instance: Instance) -> None:
        guest = self._guest(instance)
        guest["power_state"] = SHUTDOWN
        self._note(guest, "powered off")
        self._changed(guest["uuid"])

    async def power_on(self, instance: Instance) -> None:
        guest = self._guest(instance)
        guest["power_state"] = RUNNING
        self._note(guest, f"booted; {self._disks_line(guest)}")
        self._changed(guest["uuid"])

    async def reboot(self, instance: Instance, reboot_type: str = "SOFT") -> None:
        guest = self._guest(instance)
        guest["power_state"] = RUNNING
        self._note(guest, f"{reboot_type.lower()} reboot")
        self._note(guest, f"booted; {self._disks_line(guest)}")
        self._changed(guest["uuid"])

    async def _transition(self, instance: Instance, wanted: int, to: PowerState, done: str) -> None:
        """A power change that a real hypervisor allows from one state only."""
        guest = self._guest(instance)
        if guest["power_state"] != wanted:
            raise VirtError(
                f"the guest of instance {guest['uuid']} cannot be {done}: "
                f"it is not {_STATE_WORDS[wanted]}"
            )
        guest["power_state"] = to
        self._note(guest, done)
        self._changed(guest["uuid"])

    async def pause(self, instance: Instance) -> None:
        await self._transition(instance, RUNNING, PAUSED, "paused")

    async def trigger_crash_dump(self, instance: Instance) -> None:
        """An NMI to a running (or paused) guest: its kernel may dump its memory."""
        guest = self._guest(instance)
        if guest["power_state"] not in (RUNNING, PAUSED):
            raise VirtError(f"the guest of instance {guest['uuid']} is not running")
        self._note(guest, "NMI received")
        self._changed(guest["uuid"])

    async def unpause(self, instance: Instance) -> None:
        await self._transition(instance, PAUSED, RUNNING, "unpaused")

    async def suspend(self, instance: Instance) -> None:
        await self._transition(instance, RUNNING, SUSPENDED, "suspended")

    async def resume(self, instance: Instance) -> None:
        await self._transition(instance, SUSPENDED, RUNNING, "resumed")

    # -- moving a guest (resize, cold migration) ----------------------------------------

    async def migrate_disk_and_power_off(self, instance: Instance, dest: str) -> str:
        """Off, its disks described for `dest`, this host's record kept aside (nova's
        `_resize` copy) until the move is confirmed or reverted."""
        guest = self._guest(instance)
        guest["power_state"] = SHUTDOWN
        self._note(guest, f"powered off; disks handed to {dest}")
        self.guests[_kept(guest["uuid"])] = self.guests.pop(guest["uuid"])
        self._changed(guest["uuid"], _kept(guest["uuid"]))
        handed = {"uuid": guest["uuid"], "source": self.hostname, "disks": guest["disks"],
                  "console": guest["console"]}  # fmt: skip
        return jsoncodec.dumps_text(handed)

    async def finish_migration(
        self,
        instance: Instance,
        disk_info: str,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        power_on: bool,
    ) -> None:
        handed = handed_over(disk_info, instance_uuid(instance))
        root = handed["disks"].get("vda") or {}
        image: ImageMeta = {"id": str(root.get("image_id") or ""), "path": root.get("path")}
        guest = await self._arrive(instance, image, network_info, block_device_info,
                                   power_on=power_on, source=handed["source"])  # fmt: skip
        guest["console"] = [*handed["console"], *guest["console"]][-MAX_CONSOLE_LINES:]
        self._changed(guest["uuid"])

    async def confirm_migration(self, instance: Instance) -> None:
        uuid = instance_uuid(instance)
        if self.guests.pop(_kept(uuid), None) is None:
            raise InstanceNotFound(uuid)
        self._changed(_kept(uuid))

    async def finish_revert_migration(
        self,
        instance: Instance,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        power_on: bool,
    ) -> None:
        uuid = instance_uuid(instance)
        guest = self.guests.pop(_kept(uuid), None)
        if guest is None:
            raise InstanceNotFound(uuid)
        self.guests[uuid] = guest
        guest.update(vcpus=int(instance.get("vcpus") or guest["vcpus"]),
                     memory_mb=int(instance.get("memory_mb") or guest["memory_mb"]))  # fmt: skip
        self._plug(guest, network_info or [])
        self._note(guest, "move reverted")
        guest["power_state"] = SHUTDOWN
        if power_on:
            await self.power_on(instance)
        self._changed(uuid, _kept(uuid))


def _kept(uuid: str) -> str:
    """The key of the copy of a moved guest its source keeps (nova's instance_resize)."""
    return f"{uuid}_resize"
