"""Start-up recovery as spec/resources/compute.yaml declares it (`states.recover`): what
the conductor and a compute host do, when they start, with rows a crash left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specstack_runtime.resources.recovery import recover, recover_all, rules_of
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_flow import new_instance
from tests.runtime.test_compute_kit import seed_flavors
from tests.runtime.test_nova_cell import boot_through_the_cell


async def _guest_on(driver: FakeHypervisor, row: dict[str, Any]) -> None:
    await driver.spawn({"uuid": row["id"], "name": row["name"]}, {"id": "img"}, [], [])


@arun
async def test_the_rules_belong_to_the_components_the_spec_names(tmp_path: Path) -> None:
    cell = NovaCell(tmp_path, computes=1)
    assert [(res, len(rules)) for res, rules in rules_of(cell.conductor)] == [("server", 2)]
    (_, compute_rules), *_ = rules_of(cell.computes["compute-1"])
    assert [r.send or r.hook for r in compute_rules] == [
        "terminate_instance",
        "compute.discard_build",
        "stop_instance",
        "start_instance",
        "reboot_instance",
        None,  # pause/suspend interrupted: the task cleared
        None,  # a snapshot interrupted: the task cleared
        None,  # a resize or migration interrupted: ERROR
        None,  # a rebuild interrupted: ERROR
    ]
    assert rules_of(cell.scheduler) == []


@arun
async def test_interrupted_rows_are_finished_or_failed_and_others_left_alone(
    tmp_path: Path,
) -> None:
    cell = await NovaCell(tmp_path, computes=2).start()
    try:
        await seed_flavors(cell.store)
        built = await boot_through_the_cell(cell)  # ACTIVE: nothing to recover
        assert built["vm_state"] == "active"
        one: FakeHypervisor = cell.computes["compute-1"].driver
        building = {"vm_state": "building", "task_state": "scheduling"}
        unscheduled = await new_instance(cell.store, **building)
        half_built = await new_instance(cell.store, **building, host="compute-1")
        await _guest_on(one, half_built)
        elsewhere = await new_instance(cell.store, **building, host="compute-2")
        stopping = await new_instance(
            cell.store, vm_state="active", task_state="powering-off", host="compute-1"
        )
        await _guest_on(one, stopping)
        deleting = await new_instance(
            cell.store, vm_state="active", task_state="deleting", host="compute-1"
        )
        await _guest_on(one, deleting)
        pausing = await new_instance(
            cell.store, vm_state="active", task_state="pausing", host="compute-1"
        )
        uploading = await new_instance(
            cell.store, vm_state="stopped", task_state="image_uploading", host="compute-1"
        )
        rebuilding = await new_instance(
            cell.store, vm_state="active", task_state="rebuild_spawning", host="compute-1"
        )

        move = {"kind": "resize", "source_host": "compute-1", "dest_host": None}
        unplaced = await new_instance(
            cell.store, vm_state="active", task_state="resize_prep", host="compute-1",
            migration=move,
        )  # fmt: skip
        moving = await new_instance(
            cell.store, vm_state="active", task_state="resize_migrating", host="compute-1",
            migration={**move, "dest_host": "compute-2"},
        )  # fmt: skip

        assert await recover(cell.conductor) == 2
        assert await recover(cell.computes["compute-1"]) == 7
        row = await cell.store.get("instances", unplaced["id"])
        assert row is not None and (row["vm_state"], row["task_state"], row["migration"]) == (
            "active", None, None,
        )  # fmt: skip
        row = await cell.store.get("instances", moving["id"])
        assert row is not None and (row["vm_state"], row["task_state"]) == ("error", None)
        row = await cell.store.get("instances", pausing["id"])
        assert row is not None and (row["vm_state"], row["task_state"]) == ("active", None)
        row = await cell.store.get("instances", uploading["id"])
        assert row is not None and (row["vm_state"], row["task_state"]) == ("stopped", None)
        row = await cell.store.get("instances", rebuilding["id"])
        assert row is not None and (row["vm_state"], row["task_state"]) == ("error", None)

        row = await cell.store.get("instances", unscheduled["id"])
        assert row is not None and (row["vm_state"], row["task_state"]) == ("error", None)
        assert "interrupted by a restart" in row["fault"]["message"]
        row = await cell.store.get("instances", half_built["id"])
        assert row is not None and (row["vm_state"], row["task_state"]) == ("error", None)
        assert half_built["id"] not in one.guests  # its half-made guest is gone
        # compute-1 does not touch what is compute-2's; nothing touches an ACTIVE server
        assert await cell.store.get("instances", elsewhere["id"]) == elsewhere
        assert (await cell.store.get("instances", built["id"])) == built
        # the stop and the delete are asked again, and done
        await cell.wait_for(stopping["id"], lambda r: r["task_state"] is None)
        row = await cell.store.get("instances", stopping["id"])
        assert row is not None and (row["vm_state"], row["power_state"]) == ("stopped", 4)
        await cell.wait_for(deleting["id"], lambda r: r["vm_state"] == "deleted")
        assert deleting["id"] not in one.guests
        assert set(one.guests) | set(cell.computes["compute-2"].driver.guests) == {
            built["id"],
            stopping["id"],
        }
        # run again: nothing left to recover
        assert await recover(cell.conductor) == 0
        assert await recover(cell.computes["compute-1"]) == 0
    finally:
        await cell.stop()


@arun
async def test_a_guest_recovery_discards_is_gone_from_disk_before_the_host_serves(
    tmp_path: Path,
) -> None:
    """The hypervisor writes behind; recovery makes what it did durable (no stop, no
    message sent that would)."""
    cell = await NovaCell(tmp_path, computes=1).start()
    try:
        one: FakeHypervisor = cell.computes["compute-1"].driver
        kept = await new_instance(cell.store, vm_state="active", host="compute-1")
        await _guest_on(one, kept)
        await one.sync()
        half_built = await new_instance(
            cell.store, vm_state="building", task_state="spawning", host="compute-1"
        )
        await _guest_on(one, half_built)
        assert await recover(cell.computes["compute-1"]) == 1
        assert not one.pending()
        assert set(FakeHypervisor(one.state_file).guests) == {kept["id"]}
    finally:
        await cell.stop()


@arun
async def test_hosts_recovering_together_read_the_table_once_and_each_its_own_rows(
    tmp_path: Path,
) -> None:
    """A process's compute hosts recover together (`of_host`): one read of the instances
    for all of them, each host applying the rules to its own rows only."""
    cell = await NovaCell(tmp_path, computes=3).start()
    try:
        building = {"vm_state": "building", "task_state": "spawning"}
        rows = {h: await new_instance(cell.store, **building, host=h) for h in cell.computes}
        reads = 0
        list_rows = cell.store.list

        async def counted(*args: Any, **kw: Any) -> Any:
            nonlocal reads
            reads += 1
            return await list_rows(*args, **kw)

        cell.store.list = counted  # type: ignore[method-assign]
        hosts = [cell.computes["compute-1"], cell.computes["compute-2"]]
        assert await recover_all(hosts) == {"compute-1": 1, "compute-2": 1}
        assert reads == 1
        for host in ("compute-1", "compute-2"):
            row = await cell.store.get("instances", rows[host]["id"])
            assert row is not None and (row["vm_state"], row["task_state"]) == ("error", None)
        assert await cell.store.get("instances", rows["compute-3"]["id"]) == rows["compute-3"]
    finally:
        await cell.stop()
