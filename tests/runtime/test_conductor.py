"""nova-conductor's behaviours: instance reads and updates, compute node reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from specstack_runtime.behaviours import conductor, scheduler
from specstack_runtime.errors import Conflict, NotFound
from specstack_runtime.messaging import check
from tests.aio import arun
from tests.runtime.test_compute_flow import new_instance, schedule_payload
from tests.runtime.test_compute_kit import (
    VOLUME_ID,
    add_compute_node,
    make_runtime,
    msg_call,
    nova_store,
    stack_info,
)

# -- conductor -------------------------------------------------------------------------------


@arun
async def test_conductor_instance_get_and_cas_update(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    await add_compute_node(store, "compute-1")
    row = await new_instance(store)
    rt = make_runtime(info, "nova-conductor", store=store)
    reply = await conductor.instance_get(msg_call(rt, "instance_get", {"instance_uuid": row["id"]}))
    check(info, "instance_get", "reply", reply)
    assert reply["instance"]["vm_state"] == "building" and reply["flavor"]["ram"] == 512
    with pytest.raises(NotFound, match="Instance nope could not be found"):
        await conductor.instance_get(msg_call(rt, "instance_get", {"instance_uuid": "nope"}))

    # claim, then update with the right and the wrong expected task state
    sched = make_runtime(info, "nova-scheduler", store=store)
    await scheduler.schedule_and_build(
        msg_call(sched, "schedule_and_build_instances", schedule_payload(row))
    )
    with pytest.raises(Conflict, match="Unexpected task state"):
        await conductor.instance_update(
            msg_call(
                rt,
                "instance_update",
                {
                    "instance_uuid": row["id"],
                    "expected_task_state": "spawning",
                    "updates": {"vm_state": "active"},
                },
            )
        )
    reply = await conductor.instance_update(
        msg_call(
            rt,
            "instance_update",
            {
                "instance_uuid": row["id"],
                "expected_task_state": "scheduling",
                "updates": {
                    "vm_state": "active",
                    "task_state": None,
                    "power_state": 1,
                    "addresses": {"private": []},
                    "id": "hijack",
                    "project_id": "x",
                },
            },
        )
    )
    check(info, "instance_update", "reply", reply)
    saved = await store.get("instances", row["id"])
    assert (
        saved is not None
        and saved["vm_state"] == "active"
        and saved["addresses"] == {"private": []}
    )
    assert saved["project_id"] == row["project_id"]  # protected fields stay
    node = await store.get("compute_nodes", "compute-1")
    assert node is not None and row["id"] in node["claims"]
    # Deleting releases the claim and stamps deleted_at.
    await conductor.instance_update(
        msg_call(
            rt,
            "instance_update",
            {"instance_uuid": row["id"], "updates": {"vm_state": "deleted", "task_state": None}},
        )
    )
    saved = await store.get("instances", row["id"])
    assert saved is not None and saved["deleted_at"]
    node = await store.get("compute_nodes", "compute-1")
    assert node is not None and node["claims"] == {} and node["memory_mb_used"] == 0


@arun
async def test_compute_node_update_keeps_the_claims(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    await add_compute_node(store, "compute-1", memory_mb=4096)
    row = await new_instance(store)
    sched = make_runtime(info, "nova-scheduler", store=store)
    await scheduler.schedule_and_build(
        msg_call(sched, "schedule_and_build_instances", schedule_payload(row))
    )
    rt = make_runtime(info, "nova-conductor", store=store)
    reply = await conductor.compute_node_update(
        msg_call(
            rt,
            "compute_node_update",
            {
                "nodes": [
                    {
                        "host": "compute-1",
                        "resources": {"vcpus": 16, "memory_mb": 32768, "local_gb": 400},
                    }
                ]
            },
        )
    )
    assert reply == {"hosts": ["compute-1"]}
    node = await store.get("compute_nodes", "compute-1")
    assert node is not None
    assert (node["memory_mb"], node["vcpus"], node["memory_mb_used"]) == (32768, 16, 512)
    assert node["hypervisor_id"] == 1 and node["availability_zone"] == "nova"


@arun
async def test_block_device_mappings_follow_the_attachments(tmp_path: Path) -> None:
    info = stack_info()
    store = nova_store(info)
    row = await new_instance(store)
    rt = make_runtime(info, "nova-conductor", store=store)
    att = {"attachment_id": "a1", "volume_id": VOLUME_ID, "device": "/dev/vdb"}
    await conductor.instance_update(
        msg_call(
            rt, "instance_update", {"instance_uuid": row["id"], "updates": {"attachments": [att]}}
        )
    )
    bdms = await store.list("block_device_mappings", {"instance_uuid": row["id"]})
    assert [(b["id"], b["volume_id"], b["device"]) for b in bdms] == [("a1", VOLUME_ID, "/dev/vdb")]
    await conductor.instance_update(
        msg_call(
            rt, "instance_update", {"instance_uuid": row["id"], "updates": {"attachments": []}}
        )
    )
    assert await store.list("block_device_mappings", {"instance_uuid": row["id"]}) == []


# -- scheduler, at-least-once ----------------------------------------------------------------


@arun
async def test_a_redelivered_schedule_request_sends_the_build_again_to_the_same_host(
    tmp_path: Path,
) -> None:
    """The scheduler placed the instance, then died before it cast the build (or before its
    ack): the redelivered request sends the build again, to that host, on the same claim,
    instead of leaving the instance in BUILD for ever."""
    info = stack_info()
    store = nova_store(info)
    await add_compute_node(store, "compute-1")
    await add_compute_node(store, "compute-2")
    row = await new_instance(store)
    sched = make_runtime(info, "nova-scheduler", store=store)
    first = msg_call(sched, "schedule_and_build_instances", schedule_payload(row))
    await scheduler.schedule_and_build(first)
    host = first.vars["host"]
    assert host in ("compute-1", "compute-2")
    used = {n["host"]: n["memory_mb_used"] for n in await store.list("compute_nodes")}

    again = msg_call(sched, "schedule_and_build_instances", schedule_payload(row))
    await scheduler.schedule_and_build(again)
    assert again.vars["host"] == host
    assert again.vars["build"] == first.vars["build"]
    assert {n["host"]: n["memory_mb_used"] for n in await store.list("compute_nodes")} == used

    # once the build is done, a redelivery builds nothing
    await store.update("instances", row["id"], {"vm_state": "active", "task_state": None})
    done = msg_call(sched, "schedule_and_build_instances", schedule_payload(row))
    await scheduler.schedule_and_build(done)
    assert done.vars["host"] is None
