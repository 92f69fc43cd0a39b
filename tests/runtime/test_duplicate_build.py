"""A build delivered twice to a compute host (the scheduler died after it sent the build and
sent it again when restarted): the second delivery is recognised and dropped, whether the
first is still running or done; one guest, one port, ACTIVE once (issue 14)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import nova_build
from specstack_runtime.bus import Envelope, MessagingTimeout, RemoteError
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_flow import FLAVOR, build_payload, new_instance
from tests.runtime.test_compute_kit import (
    Recorder,
    RecordingBus,
    instance_message,
    make_runtime,
    msg_call,
    nova_store,
    run_spec_step,
    stack_info,
)

HOST = "compute-1"


@contextlib.asynccontextmanager
async def _placed(
    tmp_path: Path, computes: int = 1, host: str = HOST
) -> AsyncIterator[tuple[NovaCell, dict[str, Any]]]:
    """A cell and an instance its scheduler placed on `host`, the build not yet taken by
    the host; the cell stopped after."""
    cell = await NovaCell(tmp_path, computes=computes).start()
    try:
        row = await new_instance(cell.store)
        placed = await cell.store.update("instances", row["id"], {"host": host, "node": host})
        assert placed is not None
        yield cell, placed
    finally:
        await cell.stop()


def _build(row: dict[str, Any], host: str = HOST) -> Envelope:
    """build_and_run_instance as the scheduler casts it (a new message id each time)."""
    return Envelope(
        topic="compute",
        method="build_and_run_instance",
        payload={**build_payload(row, volume=False), "host": host, "node": host},
        pattern="cast",
        host=host,
        context={"auth_token": "user-token", "global_request_id": "req-boot"},
    )


def _ports_of(cell: NovaCell, server_id: str) -> list[str]:
    return [p for p, port in cell.services.ports.items() if port["device_id"] == server_id]


@arun
async def test_a_build_delivered_twice_at_once_builds_one_guest_with_one_port(
    tmp_path: Path,
) -> None:
    async with _placed(tmp_path) as (cell, row):
        deliver = cell._handler(cell.computes[HOST])
        await asyncio.gather(deliver(_build(row)), deliver(_build(row)))
        done = await cell.store.get("instances", row["id"])
        assert done is not None
        assert (done["vm_state"], done["task_state"], done["host"]) == ("active", None, HOST)
        assert done["ports"] == _ports_of(cell, row["id"]) and len(done["ports"]) == 1
        assert await cell.computes[HOST].driver.list_instances() == [row["name"]]  # one guest
        assert cell.errors == []
        [(message, why)] = cell.dropped
        assert message == "build_and_run_instance"
        assert f"the build of instance {row['id']} is already under way on host {HOST}" in str(why)


@arun
async def test_a_build_delivered_again_after_it_is_active_changes_nothing(
    tmp_path: Path,
) -> None:
    async with _placed(tmp_path) as (cell, row):
        deliver = cell._handler(cell.computes[HOST])
        await deliver(_build(row))
        built = await cell.store.get("instances", row["id"])
        assert built is not None and built["vm_state"] == "active"
        await deliver(_build(row))
        again = await cell.store.get("instances", row["id"])
        assert again == built  # not touched: same ports, launched_at, state
        assert _ports_of(cell, row["id"]) == built["ports"] and len(built["ports"]) == 1
        assert await cell.computes[HOST].driver.list_instances() == [row["name"]]
        assert cell.errors == []
        [(_, why)] = cell.dropped
        assert "vm_state active, task_state None" in str(why), why


@arun
async def test_a_stale_build_for_an_instance_moved_to_another_host_is_dropped(
    tmp_path: Path,
) -> None:
    """Rescheduled from compute-1 to compute-2: compute-1's late copy builds nothing."""
    async with _placed(tmp_path, computes=2, host="compute-2") as (cell, row):
        await cell._handler(cell.computes[HOST])(_build(row, HOST))
        left = await cell.store.get("instances", row["id"])
        assert left is not None
        assert (left["vm_state"], left["task_state"], left["host"]) == (
            "building",
            "scheduling",
            "compute-2",
        )
        assert _ports_of(cell, row["id"]) == []
        assert await cell.computes[HOST].driver.list_instances() == []
        [(_, why)] = cell.dropped
        assert f"not waiting to be built on host {HOST}" in str(why) and "compute-2" in str(why)


@arun
async def test_an_active_state_the_conductor_committed_before_it_died_is_not_undone(
    tmp_path: Path,
) -> None:
    """nova-conductor was killed after it made the instance ACTIVE and before it answered;
    asked again when restarted it refuses (the task state moved on): the build is done, its
    guest and port stay (they were destroyed and deleted under an ACTIVE server)."""
    info = stack_info()
    row = await new_instance(nova_store(info))
    driver = FakeHypervisor(None)
    rt = make_runtime(info, "nova-compute", host=HOST, data_dir=tmp_path, driver=driver)
    guest: Any = {
        "uuid": row["id"],
        "name": row["name"],
        "vcpus": 1,
        "memory_mb": 512,
        "root_gb": 1,
    }
    await driver.spawn(guest, {"id": ""}, [], [])
    active = {
        **instance_message(row),
        "host": HOST,
        "vm_state": "active",
        "task_state": None,
        "ports": [],
    }

    def refused(payload: dict[str, Any]) -> Any:
        raise RemoteError("Conflict", "Unexpected task state: expecting 'spawning'")

    def unanswered(payload: dict[str, Any]) -> Any:
        raise MessagingTimeout("no reply to instance_update")

    for failing in (refused, unanswered):
        rt.bus = RecordingBus({"instance_get": {"instance": active, "flavor": FLAVOR}})  # type: ignore[assignment]
        call = msg_call(
            rt, "build_and_run_instance", build_payload(row, volume=False, network=False)
        )
        await nova_build.begin_build(call)
        call.vars.update(task_state="spawning", driver_instance=guest)
        await run_spec_step(call, "boot-vm", "15.5", Recorder(fn=failing))
        assert call.vars["built"] is True and call.vars["instance"] == active
        assert rt.local[nova_build.LIVE_BUILDS] == {}
        ((kind, method, asked, _),) = rt.bus.sent  # type: ignore[attr-defined]
        assert (kind, method, asked) == ("call", "instance_get", {"instance_uuid": row["id"]})

    # not ACTIVE as this run made it (a delete began): the refusal stands, the build failed
    rt.bus = RecordingBus(  # type: ignore[assignment]
        {"instance_get": {"instance": {**active, "task_state": "deleting"}, "flavor": FLAVOR}}
    )
    call = msg_call(rt, "build_and_run_instance", build_payload(row, volume=False, network=False))
    await nova_build.begin_build(call)
    call.vars.update(task_state="spawning", driver_instance=guest)
    with pytest.raises(RemoteError, match="Conflict"):
        await run_spec_step(call, "boot-vm", "15.5", Recorder(fn=refused))
