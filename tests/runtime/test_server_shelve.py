"""shelve, shelveOffload and unshelve (spec/resources/compute.yaml, issue 15): nova-api
makes the NAME-shelved glance image, the compute host powers the guest off and uploads its
root disk into it (SHELVED); offloading removes the guest and gives the host's claim back
(SHELVED_OFFLOADED, no host); unshelving places an offloaded instance again through the
scheduler, makes the guest from the shelved image and deletes the image (ACTIVE). nova's
400, 403 and 409s, the instance actions they record, and what no valid host leaves."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from specstack_runtime.behaviours import nova_rebuild, nova_snapshot  # noqa: F401
from specstack_runtime.errors import BadRequest, Conflict, Forbidden
from specstack_runtime.virt import RUNNING, SHUTDOWN
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_kit import (
    IMAGE_DATA,
    OTHER_PROJECT,
    auth_ctx,
    seed_flavors,
)
from tests.runtime.test_instance_actions import recorded_events
from tests.runtime.test_nova_cell import boot_through_the_cell
from tests.runtime.test_server_snapshot import Glance


class StoringGlance(Glance):
    """Glance whose uploaded images say where swift keeps their data (as glance's do)."""

    def _uploadImageData(
        self, p: dict[str, Any], body: Any, q: Mapping[str, Any]
    ) -> httpx.Response:
        where = str(self.image["direct_url"]).rsplit("/", 1)[0]
        self.images[p["image_id"]]["direct_url"] = f"{where}/{p['image_id']}"
        return super()._uploadImageData(p, body, q)


async def _cell(tmp_path: Path, computes: int = 2) -> tuple[NovaCell, Glance]:
    cell = NovaCell(tmp_path, computes=computes)
    glance = StoringGlance()
    for rt in (cell.api, cell.scheduler, cell.conductor, *cell.computes.values()):
        rt.clients = glance  # type: ignore[assignment]
    await cell.start()
    await seed_flavors(cell.store)
    return cell, glance


async def _act(
    cell: NovaCell,
    sid: str,
    name: str,
    arg: Any = None,
    admin: bool = True,
    microversion: tuple[int, int] | None = None,
) -> int:
    reply, _ = await cell.operation(
        "serverAction",
        path_params={"server_id": sid},
        body={name: arg},
        auth=auth_ctx(admin=admin),
        microversion=microversion,
    )
    return reply.status


def _driver(cell: NovaCell, host: str) -> FakeHypervisor:
    driver = cell.computes[host].driver
    assert isinstance(driver, FakeHypervisor)
    return driver


async def _claims(cell: NovaCell) -> dict[str, list[str]]:
    return {
        n["host"]: sorted(n.get("claims") or {}) for n in await cell.store.list("compute_nodes")
    }


async def _wait(cell: NovaCell, sid: str, state: str) -> dict[str, Any]:
    """The instance once it is in `state` with no task (a bound for a loaded machine)."""
    return await cell.wait_for(
        sid, lambda r: r["vm_state"] == state and r["task_state"] is None, timeout=60
    )


@arun
async def test_shelve_offload_and_unshelve_on_another_host(tmp_path: Path) -> None:
    cell, glance = await _cell(tmp_path)
    try:
        row = await boot_through_the_cell(cell, name="web")
        sid, first = row["id"], str(row["host"])
        assert await _act(cell, sid, "shelve", admin=False) == 202
        shelved = await _wait(cell, sid, "shelved")
        # the guest is off, its root disk in glance as nova names the image
        image_id = shelved["shelved_image_id"]
        image = glance.images[image_id]
        assert (image["name"], image["status"], image["image_type"]) == (
            "web-shelved",
            "active",
            "snapshot",
        )
        assert glance.data[image_id] == IMAGE_DATA and image["instance_uuid"] == sid
        assert shelved["host"] == first and shelved["power_state"] == 4
        assert _driver(cell, first).guests[sid]["power_state"] == SHUTDOWN
        assert (await _claims(cell))[first] == [sid]
        # offloaded: the guest gone, the instance on no host, the host's claim given back
        assert await _act(cell, sid, "shelveOffload") == 202
        off = await _wait(cell, sid, "shelved_offloaded")
        assert (off["host"], off["node"]) == (None, None)
        assert sid not in _driver(cell, first).guests
        assert all(sid not in c for c in (await _claims(cell)).values())
        # its ports unbound from the host, still the instance's (nova's network API)
        ports = [p for p in glance.ports.values() if p["device_id"] == sid]
        assert ports and all(p["binding:host_id"] == "" for p in ports)
        # unshelved: placed again (the other host only, here), made from the shelved image,
        # which then goes
        nodes = await cell.store.list("compute_nodes")
        await cell.store.update("compute_nodes", first, {"enabled": False})
        assert len(nodes) == 2
        assert await _act(cell, sid, "unshelve", admin=False) == 202
        back = await _wait(cell, sid, "active")
        second = str(back["host"])
        assert second != first and back["power_state"] == 1 and not back.get("fault")
        guest = _driver(cell, second).guests[sid]
        assert guest["power_state"] == RUNNING and guest["image_id"] == image_id
        assert back["shelved_image_id"] is None and image_id not in glance.images
        assert back["image_ref"] == row["image_ref"]  # the server's image is still its own
        assert (await _claims(cell))[second] == [sid]
        # bound again, to the host it landed on
        again = [p for p in glance.ports.values() if p["device_id"] == sid]
        assert [p["id"] for p in again] == [p["id"] for p in ports]
        assert all(p["binding:host_id"] == second for p in again)
    finally:
        await cell.stop()


@arun
async def test_unshelve_to_an_availability_zone(tmp_path: Path) -> None:
    """2.77: an offloaded server unshelved into the zone it names (the scheduler keeps to
    it); a zone no host is in is a 400, a server not offloaded a 409."""
    cell, _ = await _cell(tmp_path)
    try:
        row = await boot_through_the_cell(cell, name="zoned")
        sid, first = row["id"], str(row["host"])
        other = next(h for h in cell.computes if h != first)
        await cell.store.update("compute_nodes", other, {"availability_zone": "az2"})
        assert await _act(cell, sid, "shelve", admin=False) == 202
        await _wait(cell, sid, "shelved")
        zone = {"availability_zone": "az2"}
        with pytest.raises(Conflict, match=f'unshelving server {sid} with status "shelved"'):
            await _act(cell, sid, "unshelve", zone, microversion=(2, 77))
        assert await _act(cell, sid, "shelveOffload") == 202
        await _wait(cell, sid, "shelved_offloaded")
        with pytest.raises(BadRequest, match="The requested availability zone is not available"):
            await _act(
                cell, sid, "unshelve", {"availability_zone": "nowhere"}, microversion=(2, 77)
            )
        with pytest.raises(BadRequest, match="Additional properties are not allowed"):
            await _act(cell, sid, "unshelve", {"host": other}, microversion=(2, 77))
        with pytest.raises(BadRequest, match="Additional properties are not allowed"):
            await _act(cell, sid, "unshelve", zone, microversion=(2, 76))
        assert (await cell.store.get("instances", sid) or {})["vm_state"] == "shelved_offloaded"
        # the first host is free and would do; the zone named keeps the server off it
        assert await _act(cell, sid, "unshelve", zone, admin=False, microversion=(2, 77)) == 202
        back = await _wait(cell, sid, "active")
        assert back["host"] == other and back["availability_zone"] == "az2"
        assert _driver(cell, other).guests[sid]["power_state"] == RUNNING
    finally:
        await cell.stop()


@arun
async def test_unshelve_of_a_shelved_server_stays_on_its_host(tmp_path: Path) -> None:
    cell, glance = await _cell(tmp_path, computes=1)
    try:
        row = await boot_through_the_cell(cell)
        sid = row["id"]
        # a stopped server shelves too
        await _act(cell, sid, "os-stop")
        await _wait(cell, sid, "stopped")
        # by an administrator of another project: the image is the server's project's, whose
        # users unshelve from it
        reply, _ = await cell.operation(
            "serverAction",
            path_params={"server_id": sid},
            body={"shelve": None},
            auth=auth_ctx(project=OTHER_PROJECT, admin=True),
        )
        assert reply.status == 202
        image_id = (await _wait(cell, sid, "shelved"))["shelved_image_id"]
        assert glance.images[image_id]["owner"] == row["project_id"]
        assert await _act(cell, sid, "unshelve") == 202
        back = await _wait(cell, sid, "active")
        assert back["host"] == "compute-1" and image_id not in glance.images
        assert _driver(cell, "compute-1").guests[sid]["power_state"] == RUNNING
    finally:
        await cell.stop()


@arun
async def test_shelve_refusals_and_no_valid_host(tmp_path: Path) -> None:
    cell, glance = await _cell(tmp_path, computes=1)
    try:
        row = await boot_through_the_cell(cell)
        sid = row["id"]
        for action, word in (("shelveOffload", "shelve_offload"), ("unshelve", "unshelve")):
            with pytest.raises(Conflict, match=f"Cannot '{word}' instance .* vm_state active"):
                await _act(cell, sid, action)
        await _act(cell, sid, "lock", admin=False)
        with pytest.raises(Conflict, match=f"Instance {sid} is locked"):
            await _act(cell, sid, "shelve", admin=False)
        await _act(cell, sid, "unlock", admin=False)
        await _act(cell, sid, "shelve")
        await _wait(cell, sid, "shelved")
        # offloading is the administrators' (nova's policy); unshelve takes no argument
        # before 2.77
        with pytest.raises(Forbidden, match="os_compute_api:os-shelve:shelve_offload"):
            await _act(cell, sid, "shelveOffload", admin=False)
        with pytest.raises(BadRequest, match="Additional properties are not allowed"):
            await _act(cell, sid, "unshelve", {"availability_zone": "nova"}, microversion=(2, 76))
        with pytest.raises(Conflict, match=r"Cannot 'shelve' instance .* vm_state shelved"):
            await _act(cell, sid, "shelve")
        await _act(cell, sid, "shelveOffload")
        await _wait(cell, sid, "shelved_offloaded")
        # no host takes it: it stays offloaded, its task cleared, with the scheduler's fault
        await cell.store.update("compute_nodes", "compute-1", {"enabled": False})
        assert await _act(cell, sid, "unshelve") == 202
        left = await _wait(cell, sid, "shelved_offloaded")
        assert left["host"] is None and "No valid host" in left["fault"]["message"]
        assert left["shelved_image_id"] in glance.images  # kept for the next unshelve
        assert (await _claims(cell))["compute-1"] == []
    finally:
        await cell.stop()


@arun
async def test_shelve_actions_are_recorded_with_novas_names() -> None:
    handled_by = {
        "shelve": ["shelve_instance"],
        "shelveOffload": ["shelve_offload_instance"],
        "unshelve": ["schedule_unshelve_instance", "unshelve_instance"],
    }
    found = await recorded_events(handled_by)
    assert found == {
        "shelve": ["compute_shelve_instance"],
        "shelveOffload": ["compute_shelve_offload_instance"],
        "unshelve": ["schedule_instances", "compute_unshelve_instance"],
    }
