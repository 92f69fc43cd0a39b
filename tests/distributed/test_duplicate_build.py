"""Builds and claims a crashed nova-scheduler leaves behind, on RabbitMQ and PostgreSQL
(issue 14): a build delivered twice to its compute host builds one guest with one port
and the instance is ACTIVE once; a claim the scheduler made but never recorded on the
instance is found by the instance and reused by the redelivered request, never made twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

from specstack_runtime.behaviours.conductor import (
    COMPUTE_NODES,
    INSTANCES,
    mutate_node,
    usage_of,
)
from specstack_runtime.bus import make_bus
from specstack_runtime.config import StackConfig, load_config
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import Store, TableSpec
from specstack_runtime.virt.fake import FakeHypervisor

from ..conftest import REPO
from ..wire.conftest import DISTRIBUTED_COMPUTES, Stack
from .conftest import Cloud
from .test_faults import _compute_pids, _instance_ports, _paused, _pid, _wait_output

BIG_RAM_MB = 20480  # one per 16 GB host (x1.5): with its claim counted a host cannot take it


def _config(stack: Stack) -> StackConfig:
    config = load_config(data_dir=stack.data_dir, mode="distributed", environ={})
    config.ensure_secrets()
    return config.for_mode()


def _build_payload(admin: Cloud, demo: Cloud, server: dict[str, Any]) -> dict[str, Any]:
    """build_and_run_instance for the server, as nova-scheduler casts it to its host."""
    host = str(server["OS-EXT-SRV-ATTR:host"])
    net = demo.first_id("network", "/v2.0/networks?name=private", "networks")
    return {
        "instance": {
            "uuid": server["id"],
            "project_id": server["tenant_id"],
            "user_id": server["user_id"],
        },
        "host": host,
        "node": host,
        "image_id": server["image"]["id"],
        "flavor_id": str(server["flavor"].get("id") or "1"),
        "requested_networks": [{"network_id": net}],
        "block_device_mapping": [],
        "retry": {"num_attempts": 1, "hosts": [host]},
    }


def _cast_build(stack: Stack, payload: dict[str, Any], token: str) -> None:
    """The build sent again, on the stack's own RabbitMQ vhost (a new message id)."""

    async def cast() -> None:
        bus = make_bus(_config(stack).bus_url)
        await bus.start()
        try:
            await bus.cast(
                "compute",
                "build_and_run_instance",
                payload,
                host=payload["host"],
                context={"auth_token": token},
            )
        finally:
            await bus.close()

    asyncio.run(cast())


def _guests(stack: Stack, host: str) -> list[str]:
    """The guests the host's fake hypervisor has on disk (its snapshot and journal, as a
    restarted host reads them; none before its first change)."""
    return sorted(FakeHypervisor(stack.data_dir / "hypervisors" / f"{host}.json").guests)


def _dropped(stack: Stack, host: str, server_id: str) -> bool:
    log = stack.data_dir / "logs" / f"nova-compute.{host}.log"
    return any(
        "dropped compute.build_and_run_instance" in line and server_id in line
        for line in log.read_text().splitlines()
    )


def _wait_dropped(stack: Stack, host: str, server_id: str) -> None:
    deadline = time.monotonic() + 120
    while not _dropped(stack, host, server_id):
        assert time.monotonic() < deadline, f"{host} never dropped the build of {server_id}"
        time.sleep(0.2)


def _delete(demo: Cloud, admin: Cloud, server_id: str) -> None:
    url = f"{demo.urls['compute']}/servers/{server_id}"
    resp = demo.http.delete(url, headers={"X-Auth-Token": demo.token})
    assert resp.status_code == 204, resp.text
    deadline = time.monotonic() + 120
    while demo.http.get(url, headers={"X-Auth-Token": demo.token}).status_code != 404:
        assert time.monotonic() < deadline, f"{server_id} was never deleted"
        time.sleep(0.2)
    assert _instance_ports(admin, server_id) == []


def _check_built_once(stack: Stack, admin: Cloud, server_id: str) -> dict[str, Any]:
    server = admin.server(server_id)
    assert (server["status"], server["OS-EXT-STS:task_state"]) == ("ACTIVE", None), server
    host = str(server["OS-EXT-SRV-ATTR:host"])
    ports = _instance_ports(admin, server_id)
    assert len(ports) == 1 and ports[0]["binding:host_id"] == host, ports
    assert server_id in _guests(stack, host)
    others = [h for h in (f"compute-{i}" for i in range(1, DISTRIBUTED_COMPUTES + 1)) if h != host]
    assert all(server_id not in _guests(stack, h) for h in others)
    return server


def test_a_build_delivered_again_after_the_instance_is_active_changes_nothing(
    dstack: Stack, admin: Cloud, demo: Cloud
) -> None:
    server_id = demo.post_server(demo.boot_body("dup-after-active", flavor="1"))
    assert demo.wait_settled(server_id)["status"] == "ACTIVE"
    before = _check_built_once(dstack, admin, server_id)
    host = str(before["OS-EXT-SRV-ATTR:host"])

    _cast_build(dstack, _build_payload(admin, demo, before), demo.token)
    _wait_dropped(dstack, host, server_id)

    after = _check_built_once(dstack, admin, server_id)
    assert after["OS-SRV-USG:launched_at"] == before["OS-SRV-USG:launched_at"]
    assert after["addresses"] == before["addresses"]
    _delete(demo, admin, server_id)


def test_a_build_delivered_twice_while_it_builds_makes_one_guest_and_one_port(
    dstack: Stack, admin: Cloud, demo: Cloud
) -> None:
    """The computes are frozen once the scheduler chose a host; its build is sent a second
    time (the scheduler's after a crash), and the host then gets both at once."""
    pids = _compute_pids(dstack)
    with _paused(pids):
        server_id = demo.post_server(demo.boot_body("dup-while-building", flavor="1"))
        deadline = time.monotonic() + 120
        while not (placed := admin.server(server_id)).get("OS-EXT-SRV-ATTR:host"):
            assert time.monotonic() < deadline, "the scheduler never chose a host"
            time.sleep(0.1)
        _cast_build(dstack, _build_payload(admin, demo, placed), demo.token)
    host = str(placed["OS-EXT-SRV-ATTR:host"])
    assert demo.wait_settled(server_id)["status"] == "ACTIVE"
    _wait_dropped(dstack, host, server_id)
    _check_built_once(dstack, admin, server_id)
    _delete(demo, admin, server_id)


def _nova_store(stack: Stack) -> Store:
    info = StackInfo(json.loads((REPO / "generated" / "ir.json").read_text()))
    tables = [
        TableSpec(t["name"], tuple(t["indexes"])) for t in info.components["nova-db"]["tables"]
    ]
    return Store(_config(stack).database_url("nova-db"), tables, database="nova-db")


async def _claim_unrecorded(
    stack: Stack, server_id: str, host: str, flavor: dict[str, Any]
) -> None:
    """What a scheduler killed right after its claim leaves: the claim on `host` and the
    instance naming the host it was claiming, not yet placed there."""
    store = _nova_store(stack)
    try:
        claim = {"memory_mb": flavor["ram"], "vcpus": flavor["vcpus"], "disk_gb": flavor["disk"]}

        def add(doc: dict[str, Any]) -> dict[str, Any]:
            claims = {**(doc.get("claims") or {}), server_id: claim}
            return {"claims": claims, **usage_of(claims)}

        assert await mutate_node(store, host, add) is not None
        assert await store.update(INSTANCES, server_id, {"claim_host": host}) is not None
    finally:
        store.close()


async def _claims(stack: Stack) -> dict[str, dict[str, Any]]:
    store = _nova_store(stack)
    try:
        return {str(n["host"]): n for n in await store.list(COMPUTE_NODES)}
    finally:
        store.close()


def test_a_claim_the_killed_scheduler_never_recorded_is_reused_not_made_twice(
    dstack: Stack, admin: Cloud, demo: Cloud
) -> None:
    flavor = {"id": "dup-big", "name": "dup-big", "ram": BIG_RAM_MB, "vcpus": 1, "disk": 1}
    resp = admin.http.post(
        f"{admin.urls['compute']}/flavors",
        json={"flavor": flavor},
        headers={"X-Auth-Token": admin.token},
    )
    assert resp.status_code == 200, resp.text
    pid = _pid(dstack, "nova-scheduler", "controller")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # holds the request it is handed
    try:
        server_id = demo.post_server(demo.boot_body("claimed-unrecorded", flavor="dup-big"))
        asyncio.run(_claim_unrecorded(dstack, server_id, "compute-1", flavor))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    _wait_output(dstack, f"nova-scheduler.controller (pid {pid}) exited with signal 9")
    server = demo.wait_settled(server_id, timeout=300)
    assert server["status"] == "ACTIVE", server
    assert admin.server(server_id)["OS-EXT-SRV-ATTR:host"] == "compute-1"
    nodes = asyncio.run(_claims(dstack))
    holding = {h for h, n in nodes.items() if server_id in (n.get("claims") or {})}
    assert holding == {"compute-1"}
    for host, node in nodes.items():  # each host's usage is the sum of its claims, once
        assert node["memory_mb_used"] == usage_of(node["claims"])["memory_mb_used"], host
    _delete(demo, admin, server_id)
    nodes = asyncio.run(_claims(dstack))
    assert all(server_id not in (n.get("claims") or {}) for n in nodes.values())
