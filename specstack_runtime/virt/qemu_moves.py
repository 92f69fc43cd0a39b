"""The qemu driver's moves of a guest (resize, cold migration), on one machine: the source
stops QEMU and keeps the guest's directory aside (`<uuid>_resize`, nova's); the destination
copies the kept root disk as its own (grown to the new flavor's size) and starts QEMU; a
confirm removes the kept directory, a revert puts it back and starts the guest again.
Where the directory is kept is files.py's, as for the libvirt driver's moves."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specstack_runtime.virt import InstanceNotFound, files
from specstack_runtime.virt.common import handed_over, instance_uuid
from specstack_runtime.virt.records import RecordedHost

if TYPE_CHECKING:  # the contract generated from spec/hypervisors.yaml (checked in its adapter)
    from generated.drivers.types import BlockDevice, Instance, Vif


class QemuMoves(RecordedHost):
    guests_dir: Path

    if TYPE_CHECKING:  # what QemuHypervisor provides

        def _save(self) -> None: ...
        def _lock(self, uuid: str) -> asyncio.Lock: ...
        async def _start(self, guest: dict[str, Any]) -> None: ...

    def _aside(self, uuid: str, kept: bool) -> dict[str, Any]:
        """The guest's record and directory moved to (kept) or back from `<uuid>_resize`."""
        kept_name = files.kept_dir(self.guests_dir, uuid).name
        guest = self.guests.pop(uuid if kept else kept_name, None)
        if guest is None:
            raise InstanceNotFound(uuid)
        new = files.set_aside(self.guests_dir, uuid, kept)
        for key in ("root_disk", "console"):
            guest[key] = str(new / Path(guest[key]).name)
        self.guests[new.name] = guest
        self._save()
        return guest

    async def migrate_disk_and_power_off(self, instance: Instance, dest: str) -> str:
        guest = self._guest(instance)
        if guest.get("state") == "started":
            await self.power_off(instance)
        self._note(guest, f"disk handed to {dest}")
        kept = self._aside(guest["uuid"], kept=True)
        return json.dumps({"uuid": kept["uuid"], "root_disk": kept["root_disk"],
                           "image_id": kept.get("image_id"), "source": self.hostname})  # fmt: skip

    async def finish_migration(
        self,
        instance: Instance,
        disk_info: str,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        power_on: bool,
    ) -> None:
        handed = handed_over(disk_info, instance_uuid(instance))
        image = {"id": handed.get("image_id") or "", "path": handed["root_disk"]}
        # its spawn copies the disk, grows it and starts the guest
        await self._arrive(instance, image, network_info, block_device_info,
                           power_on=power_on, source=handed.get("source"))  # fmt: skip

    async def confirm_migration(self, instance: Instance) -> None:
        uuid = instance_uuid(instance)
        kept = files.kept_dir(self.guests_dir, uuid)
        guest = self.guests.pop(kept.name, None)
        if guest is None:
            raise InstanceNotFound(uuid)
        self._save()
        # its stopped QEMU's socket, unless the guest that arrived on this host has that path
        if all(other.get("qmp") != guest.get("qmp") for other in self.guests.values()):
            Path(guest["qmp"]).unlink(missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, kept, True)

    async def finish_revert_migration(
        self,
        instance: Instance,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        power_on: bool,
    ) -> None:
        uuid = instance_uuid(instance)
        guest = self._aside(uuid, kept=False)
        guest["vifs"] = [dict(v) for v in network_info or []]
        self._note(guest, "move reverted")
        if power_on:
            async with self._lock(uuid):
                await self._start(guest)
