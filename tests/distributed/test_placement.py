"""Nine instances on three compute processes land where the scheduler's weigher says.

The configured weigher is RAMWeigher (multiplier 1.0): the host with the most free
RAM wins, so sequential boots spread over the hosts. Before each boot the test works
out the hosts with the most free RAM from what the admin sees (every live server's
host and flavor), and the boot must land on one of them.
"""

from __future__ import annotations

from collections import Counter

from ..wire.conftest import DISTRIBUTED_COMPUTES, Stack
from .conftest import Cloud

FLAVOR_RAM = {"1": 512, "2": 2048, "3": 4096}  # the demo flavors (specstack_runtime.demo)
NODE_RAM_MB = 16384  # spec/topology.yaml: compute resources


def _used_ram(admin: Cloud, hosts: list[str]) -> dict[str, int]:
    used = dict.fromkeys(hosts, 0)
    for s in admin.get("compute", "/servers/detail?all_tenants=1")["servers"]:
        host = s.get("OS-EXT-SRV-ATTR:host")
        if host in used and s["status"] != "ERROR":
            used[host] += FLAVOR_RAM[str(s["flavor"]["id"])]
    return used


def test_nine_boots_follow_the_ram_weigher(dstack: Stack, admin: Cloud, demo: Cloud) -> None:
    hosts = sorted(
        h["hypervisor_hostname"] for h in admin.get("compute", "/os-hypervisors")["hypervisors"]
    )
    assert hosts == [f"compute-{i}" for i in range(1, DISTRIBUTED_COMPUTES + 1)]
    body = demo.boot_body("placed", flavor="2")
    placed: list[str] = []
    for i in range(9):
        used = _used_ram(admin, hosts)
        most_free = max(NODE_RAM_MB - u for u in used.values())
        expected = {h for h in hosts if NODE_RAM_MB - used[h] == most_free}
        body["server"]["name"] = f"placed-{i}"
        server = demo.wait_settled(demo.post_server(body))
        assert server["status"] == "ACTIVE", server
        host = admin.server(server["id"])["OS-EXT-SRV-ATTR:host"]
        assert host in expected, (i, host, used)
        placed.append(host)
    assert sorted(Counter(placed).values()) == [3, 3, 3], placed
