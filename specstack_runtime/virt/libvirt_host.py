"""What a libvirt host reports to nova-compute: its real capacity and its guests' use."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import libvirt

from specstack_runtime.virt import files

if TYPE_CHECKING:
    from generated.drivers.types import Resources


def host_resources(
    conn: libvirt.virConnect,
    ours: list[tuple[libvirt.virDomain, dict[str, str]]],
    instances_path: Path,
    hostname: str,
) -> Resources:
    """The host's CPUs, memory and instance disk, and what this host's domains (`ours`,
    with their metadata) use of them."""
    info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
    instances_path.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(instances_path)
    vcpus_used = memory_used = local_used = running = 0
    for dom, meta in ours:
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
        "local_gb": int(disk.total // files.GIB),
        "local_gb_used": local_used,
        "running_vms": running,
        "hypervisor_type": str(conn.getType()),
        "hypervisor_hostname": hostname,
    }
