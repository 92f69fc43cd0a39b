"""A build run again (redelivered after a compute crash) and a delete after an interrupted
build: no port made twice, none left behind (issue 14, item 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from specstack_runtime.behaviours import nova_build, nova_host
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun
from tests.runtime.test_compute_flow import build_payload, new_instance
from tests.runtime.test_compute_kit import (
    NETWORK_ID,
    FakeServices,
    interaction,
    make_runtime,
    msg_call,
    nova_store,
    stack_info,
)


def _create_port(services: FakeServices) -> Any:
    async def invoke(**kw: Any) -> httpx.Response:  # step 13's transport: createPort
        return await services.call("network", "createPort", body=kw["body"], token=kw["token"])

    return invoke


def _delete_port(services: FakeServices) -> Any:
    async def invoke(**kw: Any) -> httpx.Response:  # delete-vm 8's transport: deletePort
        return await services.call(
            "network", "deletePort", {"port_id": kw["port_id"]}, token=kw["token"]
        )

    return invoke


@arun
async def test_a_build_run_again_takes_the_port_it_made(tmp_path: Path) -> None:
    """The compute died after step 13; the broker hands the build over again: one port."""
    info = stack_info()
    store = nova_store(info)
    row = await new_instance(store)
    services = FakeServices()
    driver = FakeHypervisor(None)
    payload = build_payload(row, volume=False)
    runs = []
    for _ in range(2):  # each run in a new process of compute-1 (the first one died)
        rt = make_runtime(info, "nova-compute", host="compute-1", clients=services, driver=driver)
        call = msg_call(rt, "build_and_run_instance", payload)
        await nova_build.begin_build(call)
        await nova_build.create_ports(interaction(call, _create_port(services), label="13"))
        runs.append([p["id"] for p in call.vars["ports"]])
    assert len(services.ports) == 1
    (port_id,) = services.ports
    assert runs == [[port_id], [port_id]]
    assert services.ports[port_id]["device_id"] == row["id"]
    assert services.ports[port_id]["network_id"] == NETWORK_ID


@arun
async def test_two_networks_asked_twice_get_two_ports_not_one(tmp_path: Path) -> None:
    """The key is the request: the same network asked twice gets a port per request."""
    info = stack_info()
    store = nova_store(info)
    row = await new_instance(store)
    services = FakeServices()
    payload = {
        **build_payload(row, volume=False),
        "requested_networks": [{"network_id": NETWORK_ID}, {"network_id": NETWORK_ID}],
    }
    for _ in range(2):  # each run in a new process of compute-1 (the first one died)
        rt = make_runtime(info, "nova-compute", host="compute-1", clients=services)
        call = msg_call(rt, "build_and_run_instance", payload)
        await nova_build.begin_build(call)
        await nova_build.create_ports(interaction(call, _create_port(services), label="13"))
        assert len({p["id"] for p in call.vars["ports"]}) == 2
    assert len(services.ports) == 2


@arun
async def test_a_delete_releases_the_ports_an_interrupted_build_never_recorded(
    tmp_path: Path,
) -> None:
    """The instance row names no port (the build stopped before step 15.4 recorded them):
    the terminate still finds them by device_id and deletes them; the user's own port stays."""
    info = stack_info()
    store = nova_store(info)
    row = await new_instance(store)
    services = FakeServices()
    rt = make_runtime(info, "nova-compute", host="compute-1", clients=services)
    build = msg_call(rt, "build_and_run_instance", build_payload(row, volume=False))
    await nova_build.begin_build(build)
    await nova_build.create_ports(interaction(build, _create_port(services), label="13"))
    mine = (
        await services.call("network", "createPort", body={"port": {"network_id": "n2"}})
    ).json()
    services.ports[mine["port"]["id"]]["device_id"] = row["id"]  # bound to it by the user
    assert len(services.ports) == 2

    terminate = msg_call(
        rt,
        "terminate_instance",
        {
            "instance": {"uuid": row["id"], "project_id": row["project_id"]},
            "ports": [],
            "keep_ports": [mine["port"]["id"]],
            "attachments": [],
        },
    )
    await nova_host.begin_terminate(terminate)
    await nova_host.delete_ports(interaction(terminate, _delete_port(services), label="8"))
    assert list(services.ports) == [mine["port"]["id"]]


@arun
async def test_a_build_run_again_replaces_the_guest_its_first_run_began(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    row = await new_instance(store)
    driver = FakeHypervisor(None)
    for _ in range(2):  # each run in a new process of compute-1 (the first one died)
        rt = make_runtime(info, "nova-compute", host="compute-1", driver=driver)
        call = msg_call(rt, "build_and_run_instance", build_payload(row, volume=False))
        await nova_build.begin_build(call)
        call.vars["driver_instance"] = {"uuid": row["id"], "name": "vm1"}
        await nova_build.spawn(interaction(call, driver.spawn, label="9"))
    assert list(driver.guests) == [row["id"]]
