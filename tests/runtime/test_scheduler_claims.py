"""nova-scheduler killed after it claimed a host's resources for an instance but before it
recorded the host on the instance: the redelivered request finds that claim by the instance
wherever it is (not only among the hosts its query returns) and reuses it, or releases it
when that host does not take the instance any more; never two claims (issue 14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import scheduler
from specstack_runtime.store import Store
from tests.aio import arun
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_flow import new_instance, schedule_payload
from tests.runtime.test_compute_kit import (
    add_compute_node,
    make_runtime,
    msg_call,
    nova_store,
    stack_info,
)


class Crash(Exception):
    """The scheduler's process dies here."""


async def _schedule(store: Store, row: dict[str, Any]) -> Any:
    rt = make_runtime(stack_info(), "nova-scheduler", store=store)
    call = msg_call(rt, "schedule_and_build_instances", schedule_payload(row))
    await scheduler.schedule_and_build(call)
    return call


async def _crash_after_the_claim(store: Store, row: dict[str, Any]) -> None:
    """A run of the request that dies when it records the chosen host on the instance."""
    original = store.update

    async def dying(table: str, id_: str, changes: Any, **kw: Any) -> Any:
        if table == "instances" and "host" in changes:
            raise Crash
        return await original(table, id_, changes, **kw)

    store.update = dying  # type: ignore[method-assign]
    try:
        with pytest.raises(Crash):
            await _schedule(store, row)
    finally:
        store.update = original  # type: ignore[method-assign]


async def _claims(store: Store) -> dict[str, list[str]]:
    return {
        str(n["host"]): sorted(n.get("claims") or {}) for n in await store.list("compute_nodes")
    }


@arun
async def test_a_claim_on_a_host_outside_the_candidates_is_reused_not_made_twice(
    tmp_path: Path,
) -> None:
    store = nova_store(stack_info())
    # 512 MB x 1.5: room for one m1.tiny (512 MB); with its claim counted, none
    await add_compute_node(store, "small", memory_mb=512)
    row = await new_instance(store)
    await _crash_after_the_claim(store, row)
    assert await _claims(store) == {"small": [row["id"]]}
    # a roomier host appears; "small" (its claim counted) is not among the query's hosts
    await add_compute_node(store, "big", memory_mb=16384)

    call = await _schedule(store, row)

    assert call.vars["host"] == "small"
    assert await _claims(store) == {"small": [row["id"]], "big": []}
    small = await store.get("compute_nodes", "small")
    assert small is not None and small["memory_mb_used"] == 512 and small["running_vms"] == 1
    placed = await store.get("instances", row["id"])
    assert placed is not None and (placed["host"], placed["task_state"]) == ("small", "scheduling")


@arun
async def test_a_claim_on_a_host_since_disabled_is_released_and_made_elsewhere(
    tmp_path: Path,
) -> None:
    store = nova_store(stack_info())
    await add_compute_node(store, "first", memory_mb=16384)
    row = await new_instance(store)
    await _crash_after_the_claim(store, row)
    assert await _claims(store) == {"first": [row["id"]]}
    await store.update("compute_nodes", "first", {"enabled": False})  # an operator's doing
    await add_compute_node(store, "second", memory_mb=8192)

    call = await _schedule(store, row)

    assert call.vars["host"] == "second"
    assert await _claims(store) == {"first": [], "second": [row["id"]]}
    first = await store.get("compute_nodes", "first")
    assert first is not None and first["memory_mb_used"] == 0 and first["running_vms"] == 0


@arun
async def test_deleting_an_instance_never_placed_releases_the_claim_its_scheduler_made(
    tmp_path: Path,
) -> None:
    """The scheduler died after its claim; the user deletes the server still in BUILD with no
    host: the claim goes with it (nova-api deletes it at once, as no host has it)."""
    cell = await NovaCell(tmp_path, computes=0).start()
    try:
        await add_compute_node(cell.store, "compute-1")
        row = await new_instance(cell.store)
        await _crash_after_the_claim(cell.store, row)
        assert await _claims(cell.store) == {"compute-1": [row["id"]]}
        reply, _ = await cell.operation(
            "deleteServer", sequence="delete-vm", path_params={"server_id": row["id"]}
        )
        assert reply.status == 204
        gone = await cell.store.get("instances", row["id"])
        assert gone is not None and (gone["vm_state"], gone["host"]) == ("deleted", None)
        assert await _claims(cell.store) == {"compute-1": []}
        node = await cell.store.get("compute_nodes", "compute-1")
        assert node is not None and node["memory_mb_used"] == 0
    finally:
        await cell.stop()
