"""Power changes of a libvirt domain, each refused (VirtError) from a state that does not
allow it: off, on, reboot, pause (frozen vCPUs) and suspend (memory saved to disk); and the
domain's power state as nova's."""

from __future__ import annotations

from typing import TYPE_CHECKING

import libvirt

from specstack_runtime.virt import (
    CRASHED,
    NOSTATE,
    PAUSED,
    RUNNING,
    SHUTDOWN,
    SUSPENDED,
    VirtError,
)

if TYPE_CHECKING:
    from generated.drivers.types import PowerState

# nova power_state codes from libvirt domain states (as nova's libvirt driver maps them)
_POWER_STATE: dict[int, PowerState] = {
    libvirt.VIR_DOMAIN_NOSTATE: NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: SUSPENDED,
}


def power_state(dom: libvirt.virDomain) -> PowerState:
    state = dom.state()[0]
    if state == libvirt.VIR_DOMAIN_SHUTOFF and dom.hasManagedSaveImage(0):
        return SUSPENDED  # its memory is saved: resume restores it
    return _POWER_STATE.get(state, NOSTATE)


def _refuse(dom: libvirt.virDomain, what: str) -> VirtError:
    return VirtError(f"the guest of instance {dom.UUIDString()} is not {what}")


def power_off(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()


def power_on(dom: libvirt.virDomain) -> None:
    if not dom.isActive():
        dom.create()


def reboot(dom: libvirt.virDomain, hard: bool) -> None:
    if not dom.isActive():
        dom.create()
    elif hard:
        dom.reset(0)
    else:
        try:
            dom.reboot(0)  # asks the guest (ACPI); a guest without an OS ignores it
        except libvirt.libvirtError:
            dom.reset(0)


def inject_nmi(dom: libvirt.virDomain) -> None:
    if dom.state()[0] not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED):
        raise _refuse(dom, "running")
    dom.injectNMI(0)


def pause(dom: libvirt.virDomain) -> None:
    if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
        raise _refuse(dom, "running")
    dom.suspend()  # libvirt's word for freezing the vCPUs


def unpause(dom: libvirt.virDomain) -> None:
    if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
        raise _refuse(dom, "paused")
    dom.resume()


def suspend(dom: libvirt.virDomain) -> None:
    if not dom.isActive():
        raise _refuse(dom, "running")
    dom.managedSave(0)  # memory to disk; the next create() restores it


def resume(dom: libvirt.virDomain) -> None:
    if dom.isActive() or not dom.hasManagedSaveImage(0):
        raise _refuse(dom, "suspended")
    dom.create()
