"""Device changes on a libvirt domain: live and persistent together where libvirt can
hot-plug, a redefinition and restart where it cannot (libvirt's test driver)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import partial

import libvirt

from specstack_runtime.virt import VirtError
from specstack_runtime.virt.domain_xml import METADATA_NS


def live_flags(dom: libvirt.virDomain) -> int:
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    return int(flags)


def disks(xml: str) -> dict[str, ET.Element]:
    """The domain's <disk> elements by target dev."""
    out = {}
    for disk in ET.fromstring(xml).findall("devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev"):
            out[str(target.get("dev"))] = disk
    return out


def cold_plug(
    conn: libvirt.virConnect, dom: libvirt.virDomain, device_xml: str, remove: str | None
) -> None:
    """Change the persistent definition and restart the guest. `remove` is the target dev
    of the disk (or the MAC address of the interface) to take out; without it `device_xml`
    is added."""
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    devices = root.find("devices")
    assert devices is not None
    if remove is None:
        devices.append(ET.fromstring(device_xml))
    else:
        for element in list(devices):
            if _key(element) == remove:
                devices.remove(element)
    ET.register_namespace("specstack", METADATA_NS)
    running = bool(dom.isActive())
    if running:
        dom.destroy()
    dom = conn.defineXML(ET.tostring(root, encoding="unicode"))
    if running:
        dom.create()


def _or_cold_plug(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    change: Callable[[], object],
    device_xml: str,
    remove: str | None,
) -> None:
    """`change` (a device change through libvirt), or the same by `cold_plug` where
    libvirt cannot make it (VIR_ERR_NO_SUPPORT)."""
    try:
        change()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        cold_plug(conn, dom, device_xml, remove)


def attach(conn: libvirt.virConnect, dom: libvirt.virDomain, device_xml: str) -> None:
    change = partial(dom.attachDeviceFlags, device_xml, live_flags(dom))
    _or_cold_plug(conn, dom, change, device_xml, None)


def detach_disk(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    disk: ET.Element,
    timeout_s: float,
    mountpoint: str,
) -> None:
    target = disk.find("target")
    dev = str(target.get("dev") if target is not None else "")
    xml = ET.tostring(disk, encoding="unicode")

    def release() -> None:
        if dom.isActive():
            # The running guest must release the disk (ACPI/PCI unplug) first; until it
            # has, the persistent definition keeps it, so a failed detach changes nothing.
            dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            _wait_released(dom, dev, timeout_s, mountpoint)
        if dom.isPersistent():
            stored = disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).get(dev)
            if stored is not None:
                dom.detachDeviceFlags(
                    ET.tostring(stored, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_CONFIG
                )

    _or_cold_plug(conn, dom, release, xml, dev)


def _wait_released(dom: libvirt.virDomain, dev: str, timeout_s: float, mountpoint: str) -> None:
    deadline = time.monotonic() + timeout_s
    while dev in disks(dom.XMLDesc(0)):
        if time.monotonic() > deadline:
            raise VirtError(
                f"Instance {dom.UUIDString()} did not release {mountpoint} within "
                f"{timeout_s:g} s (the guest OS must acknowledge the unplug)."
            )
        time.sleep(0.1)


def _key(element: ET.Element) -> str | None:
    """A disk's target dev, an interface's MAC address (lower case)."""
    if element.tag == "disk":
        target = element.find("target")
        return None if target is None else target.get("dev")
    mac = element.find("mac") if element.tag == "interface" else None
    return None if mac is None else str(mac.get("address") or "").lower()


def interfaces(xml: str) -> dict[str, ET.Element]:
    """The domain's <interface> elements by MAC address (lower case)."""
    found = ET.fromstring(xml).findall("devices/interface")
    return {key: i for i in found if (key := _key(i))}


def plug_interfaces(
    conn: libvirt.virConnect, dom: libvirt.virDomain, wanted: dict[str, str]
) -> None:
    """Each interface (MAC address -> its XML) the domain lacks, attached."""
    present = interfaces(dom.XMLDesc(0))
    for mac, xml in wanted.items():
        if mac not in present:
            attach(conn, dom, xml)


def unplug_interfaces(conn: libvirt.virConnect, dom: libvirt.virDomain, macs: list[str]) -> None:
    """Each of these interfaces (by MAC address) the domain has, detached: live (hot-unplug)
    and persistent together, or by redefinition where libvirt cannot."""
    for mac in macs:
        iface = interfaces(dom.XMLDesc(0)).get(mac)
        if iface is None:
            continue
        xml = ET.tostring(iface, encoding="unicode")
        change = partial(dom.detachDeviceFlags, xml, live_flags(dom))
        _or_cold_plug(conn, dom, change, xml, mac)
