"""Server actions declared in spec/resources/compute.yaml beyond start/stop/reboot: pause,
unpause, suspend and resume (a task state, a cast to the compute host, the hypervisor's
power state), and lock/unlock (recorded, and enforced on the other actions and on delete)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from generated.drivers.types import Instance
from specstack_runtime.errors import BadRequest, Conflict, Forbidden, NotFound
from specstack_runtime.virt import PAUSED, RUNNING, SUSPENDED
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_kit import (
    PROJECT,
    auth_ctx,
)
from tests.runtime.test_nova_cell import booted_cell

ADMIN = auth_ctx(project="admin-project", user="admin-user", admin=True, token="admin-token")


async def act(cell: NovaCell, server_id: str, body: dict[str, Any], **kw: Any) -> int:
    reply, _ = await cell.operation(
        "serverAction", path_params={"server_id": server_id}, body=body, **kw
    )
    return reply.status


async def settled(cell: NovaCell, server_id: str, vm_state: str) -> dict[str, Any]:
    return await cell.wait_for(
        server_id, lambda r: r["vm_state"] == vm_state and r["task_state"] is None
    )


@arun
async def test_pause_unpause_suspend_resume_reach_the_hypervisor(tmp_path: Path) -> None:
    async with booted_cell(tmp_path) as (cell, row):
        sid = row["id"]
        driver: FakeHypervisor = cell.computes["compute-1"].driver
        guest: Instance = {"uuid": sid, "name": row["name"]}

        assert await act(cell, sid, {"pause": None}) == 202
        paused = await settled(cell, sid, "paused")
        assert paused["power_state"] == PAUSED and await driver.get_power_state(guest) == PAUSED
        # a paused server cannot be suspended or paused again: nova's 409, in its words
        with pytest.raises(Conflict, match=r"Cannot 'suspend' instance .* vm_state paused"):
            await act(cell, sid, {"suspend": None})
        assert await act(cell, sid, {"unpause": None}) == 202
        assert (await settled(cell, sid, "active"))["power_state"] == RUNNING

        assert await act(cell, sid, {"suspend": None}) == 202
        suspended = await settled(cell, sid, "suspended")
        assert suspended["power_state"] == SUSPENDED
        assert await driver.get_power_state(guest) == SUSPENDED
        with pytest.raises(Conflict, match="Cannot 'unpause' instance"):
            await act(cell, sid, {"unpause": None})
        assert await act(cell, sid, {"resume": None}) == 202
        assert (await settled(cell, sid, "active"))["power_state"] == RUNNING
        console = await driver.get_console_output(guest)
        assert [line.split(": ")[-1] for line in console.splitlines()[-4:]] == [
            "paused",
            "unpaused",
            "suspended",
            "resumed",
        ]


@arun
async def test_a_hypervisor_refusal_clears_the_task_and_records_the_fault(
    tmp_path: Path,
) -> None:
    async with booted_cell(tmp_path) as (cell, row):
        sid = row["id"]
        driver: FakeHypervisor = cell.computes["compute-1"].driver
        await driver.pause({"uuid": sid, "name": row["name"]})  # behind nova's back
        assert await act(cell, sid, {"suspend": None}) == 202
        after = await cell.wait_for(sid, lambda r: r["task_state"] is None)
        assert after["vm_state"] == "active"  # unchanged: the action did not happen
        assert "suspend failed" in after["fault"]["message"]


@arun
async def test_a_locked_server_refuses_actions_and_delete_but_not_to_admins(
    tmp_path: Path,
) -> None:
    async with booted_cell(tmp_path) as (cell, row):
        sid = row["id"]
        assert await act(cell, sid, {"lock": {"locked_reason": "maintenance"}}) == 202
        locked = await cell.store.get("instances", sid)
        assert locked is not None
        assert (locked["locked"], locked["locked_by"], locked["locked_reason"]) == (
            True,
            "owner",
            "maintenance",
        )
        for body in ({"os-stop": None}, {"pause": None}, {"reboot": {"type": "HARD"}}):
            with pytest.raises(Conflict, match=f"Instance {sid} is locked"):
                await act(cell, sid, body)
        with pytest.raises(Conflict, match=f"Instance {sid} is locked"):
            await cell.operation("deleteServer", path_params={"server_id": sid})
        current = await cell.store.get("instances", sid)
        assert current is not None and current["task_state"] is None  # nothing started
        # an administrator may still act on it
        assert await act(cell, sid, {"pause": None}, auth=ADMIN) == 202
        await settled(cell, sid, "paused")
        assert await act(cell, sid, {"unlock": None}) == 202
        assert await act(cell, sid, {"unpause": None}) == 202
        await settled(cell, sid, "active")


@arun
async def test_only_an_admin_unlocks_what_an_admin_locked(tmp_path: Path) -> None:
    async with booted_cell(tmp_path) as (cell, row):
        sid = row["id"]
        assert row["project_id"] == PROJECT
        assert await act(cell, sid, {"lock": None}, auth=ADMIN) == 202
        locked = await cell.store.get("instances", sid)
        assert locked is not None and locked["locked_by"] == "admin"
        with pytest.raises(Forbidden, match="unlock_override"):
            await act(cell, sid, {"unlock": None})
        assert await act(cell, sid, {"unlock": None}, auth=ADMIN) == 202
        unlocked = await cell.store.get("instances", sid)
        assert unlocked is not None and unlocked["locked"] is False


@arun
async def test_a_lock_reason_must_be_a_short_string(tmp_path: Path) -> None:
    async with booted_cell(tmp_path) as (cell, row):
        with pytest.raises(BadRequest, match="locked_reason"):
            await act(cell, row["id"], {"lock": {"locked_reason": "x" * 256}})
        stored = await cell.store.get("instances", row["id"])
        assert stored is not None and not stored.get("locked")


@arun
async def test_ips_lists_the_servers_addresses_by_network(tmp_path: Path) -> None:
    async with booted_cell(tmp_path) as (cell, row):
        sid = {"server_id": row["id"]}
        reply, _ = await cell.operation("listServerIps", path_params=sid)
        expected = {
            net: [{"version": a.get("version", 4), "addr": a["addr"]} for a in addresses]
            for net, addresses in row["addresses"].items()
        }
        assert expected and all(expected.values())
        assert reply.status == 200 and reply.body == {"addresses": expected}
        other = auth_ctx(project="b" * 32, user="other-user")
        with pytest.raises(NotFound, match=f"Instance {row['id']} could not be found"):
            await cell.operation("listServerIps", path_params=sid, auth=other)
