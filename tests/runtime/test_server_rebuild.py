"""rebuild (spec/resources/compute.yaml): nova-api checks the new image with glance and
records it (202 with the server, status REBUILD), the compute host makes the guest again
from it on the same host with the same interfaces (rebuilding, rebuild_spawning), ACTIVE
again, or SHUTOFF when it was; nova's 400s, 409s, and ERROR when the host fails (issue 15)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import nova_rebuild  # noqa: F401  (registers its behaviours)
from specstack_runtime.errors import BadRequest, Conflict
from specstack_runtime.virt import RUNNING, SHUTDOWN
from tests.aio import arun
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_kit import IMAGE_ID
from tests.runtime.test_nova_cell import boot_through_the_cell
from tests.runtime.test_server_snapshot import GatedHypervisor, Glance, _cell

NEW_IMAGE = "22222222-2222-4222-8222-222222222222"


def _second_image(glance: Glance, status: str = "active") -> None:
    """Another image of glance's (the same data: the fake swift has one object)."""
    glance.images[NEW_IMAGE] = {**glance.image, "id": NEW_IMAGE, "name": "other", "status": status}


async def _rebuild(cell: NovaCell, sid: str, arg: Any) -> tuple[int, Any]:
    reply, _ = await cell.operation(
        "serverAction", path_params={"server_id": sid}, body={"rebuild": arg}
    )
    return reply.status, reply.body


@arun
async def test_rebuild_makes_the_guest_again_from_the_new_image(tmp_path: Path) -> None:
    cell, glance, driver = await _cell(tmp_path)
    try:
        _second_image(glance)
        row = await boot_through_the_cell(cell)
        sid = row["id"]
        vifs = driver.guests[sid]["vifs"]
        assert driver.guests[sid]["image_id"] == IMAGE_ID and vifs
        status, body = await _rebuild(
            cell, sid, {"imageRef": NEW_IMAGE, "name": "rebuilt", "metadata": {"k": "v"}}
        )
        # 202 with the server as the API left it: REBUILD, the new image, name and metadata
        server = body["server"]
        assert status == 202 and server["status"] == "REBUILD" and server["id"] == sid
        assert server["image"]["id"] == NEW_IMAGE
        assert (server["name"], server["metadata"]) == ("rebuilt", {"k": "v"})
        # nova's enable_instance_password (its default): a made-up administrator password
        assert isinstance(server["adminPass"], str) and len(server["adminPass"]) == 12
        done = await cell.wait_for(sid, lambda r: r["task_state"] is None)
        assert (done["vm_state"], done["power_state"], done["host"]) == ("active", 1, row["host"])
        assert done["image_ref"] == NEW_IMAGE and not done.get("fault")
        guest = driver.guests[sid]
        assert guest["image_id"] == NEW_IMAGE and guest["power_state"] == RUNNING
        assert guest["vifs"] == vifs  # the same ports
        # a stopped server is rebuilt and left stopped
        cell_api = {"server_id": sid}
        await cell.operation("serverAction", path_params=cell_api, body={"os-stop": None})
        await cell.wait_for(sid, lambda r: r["vm_state"] == "stopped" and r["task_state"] is None)
        # the password given is the one answered; 2.19's description set (null: none)
        arg = {"imageRef": IMAGE_ID, "adminPass": "s3cret-pw", "description": "again"}
        status, body = await _rebuild(cell, sid, arg)
        assert status == 202 and body["server"]["adminPass"] == "s3cret-pw"
        assert body["server"]["description"] == "again"
        again = await cell.wait_for(sid, lambda r: r["task_state"] is None)
        assert (again["vm_state"], again["image_ref"]) == ("stopped", IMAGE_ID)
        assert again["description"] == "again"
        assert driver.guests[sid]["power_state"] == SHUTDOWN
        assert driver.guests[sid]["image_id"] == IMAGE_ID
    finally:
        await cell.stop()


@arun
async def test_rebuild_refusals_leave_the_server_as_it_was(tmp_path: Path) -> None:
    cell, glance, _ = await _cell(tmp_path)
    try:
        row = await boot_through_the_cell(cell)
        sid = row["id"]
        with pytest.raises(BadRequest, match="'imageRef' is a required property"):
            await _rebuild(cell, sid, {})
        with pytest.raises(BadRequest, match="Invalid imageRef provided"):
            await _rebuild(cell, sid, {"imageRef": "not-an-image"})
        with pytest.raises(BadRequest, match="Additional properties are not allowed"):
            await _rebuild(cell, sid, {"imageRef": IMAGE_ID, "flavorRef": "1"})
        with pytest.raises(BadRequest, match=r"field/attribute description\. Value: a\x01b"):
            await _rebuild(cell, sid, {"imageRef": IMAGE_ID, "description": "a\x01b"})
        with pytest.raises(BadRequest, match="field/attribute adminPass"):
            await _rebuild(cell, sid, {"imageRef": IMAGE_ID, "adminPass": 7})
        with pytest.raises(BadRequest, match="Cannot find image for rebuild"):
            await _rebuild(cell, sid, {"imageRef": str(uuid.uuid4()), "name": "changed"})
        _second_image(glance, status="queued")
        with pytest.raises(BadRequest, match=f"Image {NEW_IMAGE} is not active"):
            await _rebuild(cell, sid, {"imageRef": NEW_IMAGE})
        same = await cell.store.get("instances", sid)
        assert same is not None
        assert (same["task_state"], same["image_ref"], same["name"]) == (
            None,
            IMAGE_ID,
            row["name"],
        )
        # not while paused, nor locked (nova's 409s)
        path = {"server_id": sid}
        await cell.operation("serverAction", path_params=path, body={"pause": None})
        await cell.wait_for(sid, lambda r: r["vm_state"] == "paused" and r["task_state"] is None)
        with pytest.raises(Conflict, match=r"Cannot 'rebuild' instance .* vm_state paused"):
            await _rebuild(cell, sid, {"imageRef": IMAGE_ID})
        await cell.operation("serverAction", path_params=path, body={"unpause": None})
        await cell.wait_for(sid, lambda r: r["vm_state"] == "active" and r["task_state"] is None)
        await cell.operation("serverAction", path_params=path, body={"lock": None})
        with pytest.raises(Conflict, match=f"Instance {sid} is locked"):
            await _rebuild(cell, sid, {"imageRef": IMAGE_ID})
    finally:
        await cell.stop()


class BrokenSpawn(GatedHypervisor):
    async def spawn(self, *args: Any, **kwargs: Any) -> None:
        if self.broken:
            raise RuntimeError("no room for the guest")
        await super().spawn(*args, **kwargs)


@arun
async def test_a_rebuild_the_host_cannot_finish_leaves_error(tmp_path: Path) -> None:
    cell, _, _ = await _cell(tmp_path)
    driver = BrokenSpawn(tmp_path / "broken.json", hostname="compute-1")
    cell.computes["compute-1"].driver = driver
    try:
        row = await boot_through_the_cell(cell)
        sid = row["id"]
        driver.broken = True
        assert (await _rebuild(cell, sid, {"imageRef": IMAGE_ID}))[0] == 202
        failed = await cell.wait_for(sid, lambda r: r["task_state"] is None)
        assert failed["vm_state"] == "error"
        assert "rebuild failed: no room for the guest" in failed["fault"]["message"]
        for _ in range(500):  # the handler's failure is recorded once it has raised
            if cell.errors:
                break
            await asyncio.sleep(0.01)
        assert [m for m, _ in cell.errors] == ["rebuild_instance"]
    finally:
        await cell.stop()
