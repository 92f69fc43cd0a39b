"""Thousands of compute hosts: reports batched into one message and one transaction,
host selection by a query of indexed columns that still picks the host the filters and
weighers would pick over every host."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from specstack_runtime.batching import Batch
from specstack_runtime.behaviours import conductor, nova_host, scheduler
from specstack_runtime.config import StackConfig
from specstack_runtime.store import Store
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun
from tests.runtime.test_compute_flow import new_instance, schedule_payload
from tests.runtime.test_compute_kit import (
    RecordingBus,
    make_runtime,
    msg_call,
    nova_store,
    stack_info,
)

HOSTS = 2500
RES = {"vcpus": 8, "memory_mb": 16384, "local_gb": 200}


def count_statements(store: Store) -> list[str]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.split()[0])

    event.listen(store.engine, "before_cursor_execute", record)
    return seen


async def register(store: Store, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    rt = make_runtime(stack_info(), "nova-conductor", store=store)
    return await conductor.compute_node_update(
        msg_call(rt, "compute_node_update", {"nodes": nodes})
    )


def nodes(first: int, last: int, **resources: int) -> list[dict[str, Any]]:
    return [
        {"host": f"compute-{i}", "resources": {**RES, **resources}} for i in range(first, last + 1)
    ]


@arun
async def test_registering_thousands_of_hosts_takes_a_few_statements() -> None:
    store = nova_store(stack_info())
    statements = count_statements(store)
    reply = await register(store, nodes(1, HOSTS))
    assert reply == {"hosts": [f"compute-{i}" for i in range(1, HOSTS + 1)]}
    # the last hypervisor id, a locked read per 500 ids, one insert of all rows
    assert len(statements) <= 2 + HOSTS // 500 + 1
    assert statements.count("INSERT") == 1
    docs = await store.list("compute_nodes")
    assert len(docs) == HOSTS
    assert sorted(d["hypervisor_id"] for d in docs) == list(range(1, HOSTS + 1))
    # a heartbeat of every host: updated in place, claims and ids kept
    before = {d["id"]: d for d in docs}
    statements.clear()
    await register(store, nodes(1, HOSTS))
    assert statements.count("UPDATE") == 1 and "INSERT" not in statements
    again = await store.get("compute_nodes", "compute-77")
    assert again is not None and again["hypervisor_id"] == before["compute-77"]["hypervisor_id"]
    assert again["generation"] == 2 and again["heartbeat"] >= before["compute-77"]["heartbeat"]


def compute_hosts(
    info: Any, store: Any, tmp_path: Path, count: int
) -> tuple[RecordingBus, list[Any]]:
    """`count` compute hosts of one process (one `shared`), their reports registered in
    `store` through a recording bus; compute-N has 2048 + N MB."""

    async def record(payload: dict[str, Any]) -> dict[str, Any]:
        return await register(store, payload["nodes"])

    bus = RecordingBus({"compute_node_update": record})
    shared: dict[str, Any] = {}
    runtimes = []
    for i in range(1, count + 1):
        rt = make_runtime(
            info,
            "nova-compute",
            host=f"compute-{i}",
            bus=bus,
            data_dir=tmp_path,
            config=StackConfig(data_dir=tmp_path, computes=count),
            driver=FakeHypervisor(None, vcpus=4, memory_mb=2048 + i, hostname=f"compute-{i}"),
        )
        rt.shared = shared
        runtimes.append(rt)
    return bus, runtimes


@arun
async def test_hosts_reporting_together_send_one_message(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)

    bus, runtimes = compute_hosts(info, store, tmp_path, 40)
    await asyncio.gather(*(nova_host.report_once(rt) for rt in runtimes))
    ((kind, method, payload, _),) = bus.sent
    assert (kind, method, len(payload["nodes"])) == ("call", "compute_node_update", 40)
    node = await store.get("compute_nodes", "compute-9")
    assert node is not None and node["memory_mb"] == 2048 + 9
    assert node["availability_zone"] == "nova"


class BrokenDriver(FakeHypervisor):
    async def get_available_resource(self) -> Any:
        raise RuntimeError("hypervisor gone")


@arun
async def test_one_heartbeat_loop_reports_every_host_but_a_broken_one(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)

    bus, runtimes = compute_hosts(info, store, tmp_path, 30)
    await asyncio.gather(*(nova_host.report_resources(rt) for rt in runtimes))
    heartbeat = nova_host.heartbeat_of(runtimes[0])
    try:
        # one loop task for the process, whichever host's `local` it is looked up in
        assert {id(rt.local["compute.heartbeat"]) for rt in runtimes} == {id(heartbeat.task)}
        assert sorted(heartbeat.hosts) == sorted(rt.host for rt in runtimes)
        runtimes[6].driver = BrokenDriver(None, hostname="compute-7")
        before = await store.get("compute_nodes", "compute-7")
        bus.sent.clear()
        reported = await heartbeat.report()
        # one message for the period, every host in it but the one whose driver failed
        ((kind, method, payload, _),) = bus.sent
        assert (kind, method) == ("call", "compute_node_update")
        hosts = [n["host"] for n in payload["nodes"]]
        assert hosts == reported and len(hosts) == 29 and "compute-7" not in hosts
        assert payload["nodes"][2]["resources"]["memory_mb"] == 2048 + 3
        after = await store.get("compute_nodes", "compute-7")
        assert before is not None and after is not None
        assert after["heartbeat"] == before["heartbeat"]  # ages: down after service_down_time
    finally:
        assert heartbeat.task is not None
        heartbeat.task.cancel()


@arun
async def test_a_failed_batch_fails_every_submitter() -> None:
    async def flush(items: list[Any]) -> Any:
        raise RuntimeError(f"conductor away ({len(items)} reports)")

    batch = Batch(flush)
    results = await asyncio.gather(*(batch.submit(i) for i in range(5)), return_exceptions=True)
    assert [str(r) for r in results] == ["conductor away (5 reports)"] * 5
    assert batch.flushes == 1


async def schedule(store: Store) -> str:
    info = stack_info()
    row = await new_instance(store)
    sched = make_runtime(info, "nova-scheduler", store=store)
    call = msg_call(sched, "schedule_and_build_instances", schedule_payload(row))
    await scheduler.schedule_and_build(call)
    return str(call.vars["host"])


@arun
async def test_selection_among_thousands_picks_the_host_with_most_free_ram() -> None:
    store = nova_store(stack_info())
    await register(store, nodes(1, HOSTS))
    await register(store, nodes(1777, 1777, memory_mb=32768))
    statements = count_statements(store)
    assert await schedule(store) == "compute-1777"
    # no document of every host read: the query returns the few candidates (10 reads in
    # all since the scheduler records the host it claims on and looks for an earlier claim
    # by the instance's id)
    assert statements.count("SELECT") <= 10
    node = await store.get("compute_nodes", "compute-1777")
    assert node is not None and node["memory_mb_used"] == 512 and len(node["claims"]) == 1


@arun
async def test_selection_looks_past_candidates_a_filter_outside_the_query_refuses() -> None:
    # the 60 hosts with most RAM have no vCPU left (CoreFilter, which the query leaves out)
    store = nova_store(stack_info())
    await register(store, nodes(1, 60, memory_mb=65536, vcpus=1))
    for i in range(1, 61):
        await conductor.mutate_node(store, f"compute-{i}", lambda d: {"vcpus_used": 16})
    await register(store, nodes(61, 80, memory_mb=1024))
    assert await schedule(store) == "compute-61"


@arun
async def test_no_host_says_which_filter_refused_them() -> None:
    store = nova_store(stack_info())
    await register(store, nodes(1, 50, memory_mb=256))
    with pytest.raises(scheduler.NoValidHost) as err:
        await schedule(store)
    assert err.value.eliminated["RamFilter"] == 50


def test_host_names_map_to_their_topology_node() -> None:
    info = stack_info()
    config = StackConfig(computes=10000)
    assert info.node_of("compute-10000", config) == "compute"
    assert info.node_of("compute-10001", config) is None
    assert info.node_of("compute-07", config) is None
    assert info.node_of("controller", config) == "controller"
    assert info.node_of("controller-1", config) is None
