"""The libvirt driver's moves of a guest (resize, cold migration), as the qemu driver's
(qemu_moves.py) on one machine: the source destroys and undefines the guest's domain and
keeps its directory aside (`<uuid>_resize`, files.py's) with the domain's definition; the
destination defines a domain with the instance's (new) vCPUs and memory, copies the kept
root disk as its own (grown to the new flavor's size) and starts it; a confirm removes the
kept directory, a revert puts it back, defines the kept domain again (with the interfaces
and volumes given) and starts it."""

from __future__ import annotations

import asyncio
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import libvirt

from specstack_runtime.virt import InstanceNotFound, files
from specstack_runtime.virt import libvirt_devices as devices
from specstack_runtime.virt.common import handed_over, instance_uuid
from specstack_runtime.virt.domain_xml import METADATA_NS, render_disk, render_interface

if TYPE_CHECKING:  # the contract generated from spec/hypervisors.yaml (checked in its adapter)
    from collections.abc import Callable

    from generated.drivers.types import BlockDevice, ImageMeta, Instance, Vif
    from specstack_runtime.virt.domain_xml import Disk, Interface

#: the kept domain's definition, in the kept directory
KEPT_DOMAIN = "domain.xml"
_NS = {"s": METADATA_NS}


class LibvirtMoves:
    instances_path: Path
    hostname: str
    virt_type: str

    if TYPE_CHECKING:  # what LibvirtHypervisor provides

        async def _run(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        def _connect(self) -> libvirt.virConnect: ...
        def _domain(self, uuid: str) -> libvirt.virDomain: ...
        def _absent(self, uuid: str) -> None: ...
        def _destroy(self, instance: Instance) -> None: ...
        def _define(
            self, instance: Instance, image: ImageMeta, network_info: list[Vif],
            block_device_info: list[BlockDevice], now: bool,
        ) -> None: ...  # fmt: skip
        def _start_defined(
            self, uuid: str, image: ImageMeta, root_gb: int, moved: bool = False,
            start: bool = True,
        ) -> None: ...  # fmt: skip
        @staticmethod
        def _volume_disk(connection_info: Any, mountpoint: Any, serial: Any = None) -> Disk: ...
        def _interface(self, vif: Any) -> Interface: ...

    # -- the source -----------------------------------------------------------------------

    def _hand_over(self, uuid: str, dest: str) -> str:
        dom = self._domain(uuid)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # what a revert defines again
        if dom.isActive():
            dom.destroy()
        kept = files.set_aside(self.instances_path, uuid, kept=True)
        (kept / KEPT_DOMAIN).write_text(xml, encoding="utf-8")
        if dom.isPersistent():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        root = ET.fromstring(xml)
        disk = devices.disks(xml).get("vda")
        source = disk.find("source") if disk is not None and disk.find("serial") is None else None

        def here(path: str | None) -> str | None:  # the file, in the kept directory
            return str(kept / Path(path).name) if path else None

        return json.dumps({
            "uuid": uuid,
            "root_disk": here(source.get("file") if source is not None else None),
            "kernel": here(root.findtext("os/kernel")),
            "ramdisk": here(root.findtext("os/initrd")),
            "cmdline": root.findtext("os/cmdline") or "",
            "image_id": root.findtext("metadata/s:instance/s:image_id", "", _NS),
            "source": self.hostname,
            "dest": dest,
        })  # fmt: skip

    async def migrate_disk_and_power_off(self, instance: Instance, dest: str) -> str:
        return cast(str, await self._run(self._hand_over, instance_uuid(instance), dest))

    # -- the destination ----------------------------------------------------------------------

    def _arrive(
        self,
        instance: Instance,
        disk_info: str,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        power_on: bool,
    ) -> None:
        uuid = instance_uuid(instance)
        handed = handed_over(disk_info, uuid)
        image = cast("ImageMeta", {
            "id": str(handed.get("image_id") or ""),
            "path": handed.get("root_disk"),
            "kernel_path": handed.get("kernel"),
            "ramdisk_path": handed.get("ramdisk"),
            "properties": {"os_command_line": str(handed.get("cmdline") or "console=ttyS0")},
        })  # fmt: skip
        # defined with the instance's sizes, then the kept disk copied as its own
        self._define(instance, image, network_info, block_device_info, False)
        try:
            root_gb = int(instance.get("root_gb") or 0)
            self._start_defined(uuid, image, root_gb, moved=True, start=power_on)
        except BaseException:
            self._destroy(instance)
            raise

    async def finish_migration(
        self,
        instance: Instance,
        disk_info: str,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        power_on: bool,
    ) -> None:
        await self._run(
            self._arrive, instance, disk_info, network_info, block_device_info, power_on
        )

    # -- confirm or revert, on the source -----------------------------------------------------

    def _kept(self, uuid: str) -> Path:
        kept = files.kept_dir(self.instances_path, uuid)
        if not (kept / KEPT_DOMAIN).is_file():
            raise InstanceNotFound(uuid)  # nothing kept of it here
        return kept

    async def confirm_migration(self, instance: Instance) -> None:
        kept = self._kept(instance_uuid(instance))
        await asyncio.to_thread(shutil.rmtree, kept, True)

    def _bring_back(
        self,
        instance: Instance,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        power_on: bool,
    ) -> None:
        uuid = instance_uuid(instance)
        kept = self._kept(uuid)
        self._absent(uuid)  # (the destination's guest is destroyed first, on the same host too)
        root = ET.fromstring((kept / KEPT_DOMAIN).read_text(encoding="utf-8"))
        # its volumes and interfaces as given now, every other device as it was
        given = [
            render_disk(self.virt_type, self._volume_disk(b.get("connection_info"),
                        b.get("mountpoint"), b.get("serial")))
            for b in block_device_info or []
        ] + [render_interface(self.virt_type, self._interface(v)) for v in network_info or []]  # fmt: skip
        found = root.find("devices")
        assert found is not None
        for element in list(found):
            volume = element.tag == "disk" and element.find("serial") is not None
            if volume or element.tag == "interface":
                found.remove(element)
        found.extend(ET.fromstring(device) for device in given)
        ET.register_namespace("specstack", METADATA_NS)
        dom = self._connect().defineXML(ET.tostring(root, encoding="unicode"))
        try:  # the kept directory stays kept until its domain is defined again
            back = files.set_aside(self.instances_path, uuid, kept=False)
        except BaseException:
            dom.undefine()
            raise
        (back / KEPT_DOMAIN).unlink(missing_ok=True)
        if power_on:
            dom.create()

    async def finish_revert_migration(
        self,
        instance: Instance,
        network_info: list[Vif],
        block_device_info: list[BlockDevice],
        power_on: bool,
    ) -> None:
        await self._run(self._bring_back, instance, network_info, block_device_info, power_on)


__all__ = ["KEPT_DOMAIN", "LibvirtMoves"]
