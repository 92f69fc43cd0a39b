"""What every driver checks and reports the same way: instances, disks, vifs, state, resources."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from specstack_runtime.virt import InstanceNotFound, VirtError

if TYPE_CHECKING:
    from generated.drivers.types import Resources

_MOUNTPOINT = re.compile(r"^/dev/((?:x?v|s|h)d[a-z]{1,2})$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def instance_uuid(instance: Any) -> str:
    if not isinstance(instance, dict) or not instance.get("uuid"):
        raise VirtError("instance must be a dict with a uuid")
    return str(instance["uuid"])


def disk_name(mountpoint: Any) -> str:
    """`/dev/vdb` -> `vdb` (also sd*, hd*, xvd*); anything else is refused."""
    match = _MOUNTPOINT.match(str(mountpoint))
    if match is None:
        raise VirtError(f"The supplied device path ({mountpoint}) is invalid.")
    return match.group(1)


def vif_mac(vif: Any) -> str:
    """The MAC address of a vif of network_info, checked."""
    if not isinstance(vif, dict) or not vif.get("id") or not vif.get("address"):
        raise VirtError("each vif needs an id and an address")
    mac = str(vif["address"])
    if not _MAC.match(mac):
        raise VirtError(f"vif {vif['id']} has an invalid MAC address {mac!r}")
    return mac


def read_state(state_file: Path, what: str) -> dict[str, Any]:
    """A driver's state file, its `guests` checked; `what` names the file in the error."""
    try:
        data = json.loads(state_file.read_text("utf-8"))
        if not isinstance(data, dict) or not isinstance(data["guests"], dict):
            raise TypeError("guests is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VirtError(f"{what} state file {state_file} is unreadable: {exc}") from exc
    return data


def read_guests(state_file: Path, what: str) -> dict[str, Any]:
    """The guests a driver's state file records; `what` names the file in the error."""
    guests: dict[str, Any] = read_state(state_file, what)["guests"]
    return guests


class Host(Protocol):
    hypervisor_type: str
    hostname: str
    vcpus: int
    memory_mb: int
    local_gb: int


def check_capacity(vcpus: int, memory_mb: int, local_gb: int) -> tuple[int, int, int]:
    if min(vcpus, memory_mb, local_gb) < 0:
        raise ValueError("resources must not be negative")
    return int(vcpus), int(memory_mb), int(local_gb)


def resource_report(host: Host, guests: Iterable[dict[str, Any]], running: int) -> Resources:
    """`get_available_resource` of a host whose guests are records with their flavor's sizes."""
    guests = list(guests)
    return {
        "vcpus": host.vcpus,
        "vcpus_used": sum(int(g["vcpus"]) for g in guests),
        "memory_mb": host.memory_mb,
        "memory_mb_used": sum(int(g["memory_mb"]) for g in guests),
        "local_gb": host.local_gb,
        "local_gb_used": sum(int(g["root_gb"]) for g in guests),
        "running_vms": running,
        "hypervisor_type": host.hypervisor_type,
        "hypervisor_hostname": host.hostname,
    }


def handed_over(disk_info: str, uuid: str) -> dict[str, Any]:
    """What a move's source handed the destination (`migrate_disk_and_power_off`'s text),
    checked to be this instance's: InstanceNotFound otherwise."""
    try:
        handed = json.loads(disk_info)
    except ValueError:
        handed = {}
    if not isinstance(handed, dict) or handed.get("uuid") != uuid:
        raise InstanceNotFound(uuid)  # no disk of this instance was handed over
    return handed
