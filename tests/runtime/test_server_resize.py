"""resize, confirmResize, revertResize and cold migrate (spec/resources/compute.yaml,
issue 15): the scheduler claims the new flavor on another host, the compute hosts move the
guest (prep_resize, resize_instance, finish_resize): VERIFY_RESIZE with the new flavor on the
new host, both flavors claimed; confirm frees the source, revert brings the guest back there
with the old flavor. nova's 400, 403 and 409s, and what no valid host leaves."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import nova_resize  # noqa: F401  (registers its behaviours)
from specstack_runtime.errors import BadRequest, Conflict, Forbidden, NotFound
from specstack_runtime.virt import RUNNING, SHUTDOWN
from specstack_runtime.virt.fake import FakeHypervisor
from specstack_runtime.virt.qemu import QemuHypervisor
from tests.aio import arun, settle
from tests.guest.conftest import guest_pids, qemu_pids_under, require_qemu
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_kit import auth_ctx, seed_flavors
from tests.runtime.test_instance_actions import recorded_events
from tests.runtime.test_nova_cell import boot_through_the_cell


async def _cell(tmp_path: Path, computes: int = 2, **config: Any) -> NovaCell:
    cell = await NovaCell(tmp_path, computes=computes, **config).start()
    await seed_flavors(cell.store)
    return cell


async def _act(cell: NovaCell, sid: str, name: str, arg: Any = None, admin: bool = False) -> int:
    reply, _ = await cell.operation(
        "serverAction",
        path_params={"server_id": sid},
        body={name: arg},
        auth=auth_ctx(admin=admin),
    )
    return reply.status


async def _show_server(cell: NovaCell, sid: str) -> dict[str, Any]:
    reply, _ = await cell.operation("showServer", path_params={"server_id": sid})
    server: dict[str, Any] = reply.body["server"]
    return server


async def _wait(cell: NovaCell, sid: str, state: str) -> dict[str, Any]:
    """The instance once it is in `state` with no task (a bound for a loaded machine)."""
    return await cell.wait_for(
        sid, lambda r: r["vm_state"] == state and r["task_state"] is None, timeout=60
    )


def _guests(cell: NovaCell, host: str) -> dict[str, Any]:
    driver = cell.computes[host].driver
    assert isinstance(driver, FakeHypervisor)
    return driver.guests


async def _nodes(cell: NovaCell) -> dict[str, dict[str, Any]]:
    """Each host's claims (names) and used vCPUs and RAM, as the hypervisors show them."""
    return {
        n["host"]: {
            "claims": sorted(n.get("claims") or {}),
            "vcpus_used": n["vcpus_used"],
            "memory_mb_used": n["memory_mb_used"],
        }
        for n in await cell.store.list("compute_nodes")
    }


def _other(host: str) -> str:
    return "compute-2" if host == "compute-1" else "compute-1"


@arun
async def test_resize_to_another_host_then_confirm(tmp_path: Path) -> None:
    cell = await _cell(tmp_path)
    try:
        row = await boot_through_the_cell(cell, name="web")
        sid, source = row["id"], str(row["host"])
        dest = _other(source)
        assert await _act(cell, sid, "resize", {"flavorRef": "2"}) == 202
        moved = await _wait(cell, sid, "resized")
        assert (moved["host"], moved["flavor_id"], moved["power_state"]) == (dest, "2", 1)
        shown = await _show_server(cell, sid)
        assert shown["status"] == "VERIFY_RESIZE"
        assert (shown["flavor"]["original_name"], shown["flavor"]["ram"]) == ("m1.small", 2048)
        # the guest runs on the destination with the new flavor; the source keeps its copy
        guest = _guests(cell, dest)[sid]
        assert (guest["power_state"], guest["memory_mb"]) == (RUNNING, 2048)
        assert _guests(cell, source)[f"{sid}_resize"]["power_state"] == SHUTDOWN
        # its port bound to the destination (neutron's binding:host_id)
        assert [p["binding:host_id"] for p in cell.services.ports.values()] == [dest]
        # both flavors claimed until the move is confirmed: the new on dest, the old on source
        nodes = await _nodes(cell)
        assert nodes[dest] == {"claims": [sid], "vcpus_used": 1, "memory_mb_used": 2048}
        assert nodes[source] == {
            "claims": [f"{sid}#migration"],
            "vcpus_used": 1,
            "memory_mb_used": 512,
        }
        assert await _act(cell, sid, "confirmResize") == 204  # nova's: no content
        done = await cell.wait_for(sid, lambda r: r["vm_state"] == "active", timeout=60)
        assert (done["host"], done["flavor_id"], done["migration"]) == (dest, "2", None)
        assert (await _show_server(cell, sid))["status"] == "ACTIVE"
        assert f"{sid}_resize" not in _guests(cell, source)
        nodes = await _nodes(cell)
        assert nodes[source] == {"claims": [], "vcpus_used": 0, "memory_mb_used": 0}
        assert nodes[dest]["claims"] == [sid]
        # confirmed once: not again
        with pytest.raises(Conflict, match=f"Cannot 'confirmResize' instance {sid} .*active"):
            await _act(cell, sid, "confirmResize")
    finally:
        await cell.stop()


@arun
async def test_revert_brings_the_server_back_with_its_old_flavor(tmp_path: Path) -> None:
    cell = await _cell(tmp_path)
    try:
        row = await boot_through_the_cell(cell)
        sid, source = row["id"], str(row["host"])
        await _act(cell, sid, "resize", {"flavorRef": "3"})
        await _wait(cell, sid, "resized")
        assert await _act(cell, sid, "revertResize") == 202
        back = await cell.wait_for(sid, lambda r: r["vm_state"] == "active", timeout=60)
        assert (back["host"], back["flavor_id"], back["task_state"]) == (source, "1", None)
        shown = await _show_server(cell, sid)
        assert (shown["status"], shown["flavor"]["original_name"]) == ("ACTIVE", "m1.tiny")
        assert sid not in _guests(cell, _other(source))
        guest = _guests(cell, source)[sid]
        assert (guest["power_state"], guest["memory_mb"]) == (RUNNING, 512)
        assert [p["binding:host_id"] for p in cell.services.ports.values()] == [source]
        nodes = await _nodes(cell)
        assert nodes[source] == {"claims": [sid], "vcpus_used": 1, "memory_mb_used": 512}
        assert nodes[_other(source)]["claims"] == []
    finally:
        await cell.stop()


@arun
async def test_cold_migrate_a_stopped_server_and_resize_on_the_same_host(tmp_path: Path) -> None:
    cell = await _cell(tmp_path, allow_resize_to_same_host=True)
    try:
        row = await boot_through_the_cell(cell)
        sid, source = row["id"], str(row["host"])
        await _act(cell, sid, "os-stop")
        await _wait(cell, sid, "stopped")
        # migrate: the same flavor on the other host (never the current one); stays off
        assert await _act(cell, sid, "migrate", admin=True) == 202
        moved = await _wait(cell, sid, "resized")
        assert (moved["host"], moved["flavor_id"], moved["power_state"]) == (_other(source), "1", 4)
        assert _guests(cell, _other(source))[sid]["power_state"] == SHUTDOWN
        await _act(cell, sid, "confirmResize")
        await cell.wait_for(sid, lambda r: r["vm_state"] == "stopped", timeout=60)
        await _act(cell, sid, "os-start")
        await _wait(cell, sid, "active")
        # a resize where allow_resize_to_same_host and only this host takes it
        here = _other(source)
        await cell.store.update("compute_nodes", source, {"enabled": False})
        await _act(cell, sid, "resize", {"flavorRef": "2"})
        same = await _wait(cell, sid, "resized")
        assert (same["host"], same["flavor_id"]) == (here, "2")
        nodes = await _nodes(cell)
        assert nodes[here] == {
            "claims": sorted([sid, f"{sid}#migration"]),
            "vcpus_used": 2,
            "memory_mb_used": 2048 + 512,
        }
        await _act(cell, sid, "revertResize")
        back = await cell.wait_for(sid, lambda r: r["vm_state"] == "active", timeout=60)
        assert (back["host"], back["flavor_id"]) == (here, "1")
        assert (await _nodes(cell))[here]["claims"] == [sid]
        guest = _guests(cell, here)[sid]
        assert (guest["power_state"], guest["memory_mb"]) == (RUNNING, 512)
    finally:
        await cell.stop()


@arun
async def test_resize_and_migrate_refusals(tmp_path: Path) -> None:
    cell = await _cell(tmp_path, quotas={"cores": 1})
    try:
        row = await boot_through_the_cell(cell)
        sid, host = row["id"], str(row["host"])
        with pytest.raises(BadRequest, match="When resizing, instances must change flavor!"):
            await _act(cell, sid, "resize", {"flavorRef": "1"})
        with pytest.raises(BadRequest, match="Unable to locate requested flavor"):
            await _act(cell, sid, "resize", {"flavorRef": "nope"})
        with pytest.raises(BadRequest, match="'flavorRef' is a required property"):
            await _act(cell, sid, "resize", {})
        # the new flavor's vCPUs over the project's cores
        with pytest.raises(
            Forbidden, match="Quota exceeded for cores: Requested 1, but already used 1 of 1 cores"
        ):
            await _act(cell, sid, "resize", {"flavorRef": "3"})
        for action in ("confirmResize", "revertResize"):
            with pytest.raises(Conflict, match=f"Cannot '{action}' instance .* vm_state active"):
                await _act(cell, sid, action)
        with pytest.raises(Forbidden, match="os_compute_api:os-migrate-server:migrate"):
            await _act(cell, sid, "migrate")
        with pytest.raises(BadRequest, match="Cannot migrate to the host where the server exists"):
            await _act(cell, sid, "migrate", {"host": host}, admin=True)
        with pytest.raises(NotFound, match="Compute host nowhere could not be found"):
            await _act(cell, sid, "migrate", {"host": "nowhere"}, admin=True)
        # nothing changed by a refusal
        assert (await cell.store.get("instances", sid) or {}).get("migration") is None
        await _act(cell, sid, "os-stop")
        await _wait(cell, sid, "stopped")
        await _act(cell, sid, "lock")
        with pytest.raises(Conflict, match=f"Instance {sid} is locked"):
            await _act(cell, sid, "resize", {"flavorRef": "2"})
        await _act(cell, sid, "unlock")
        # no other host takes it: the server stays where it was, with the scheduler's fault
        await cell.store.update("compute_nodes", _other(host), {"enabled": False})
        assert await _act(cell, sid, "resize", {"flavorRef": "2"}) == 202
        left = await cell.wait_for(sid, lambda r: bool(r.get("fault")), timeout=60)
        assert (left["vm_state"], left["task_state"], left["host"]) == ("stopped", None, host)
        assert "No valid host" in left["fault"]["message"] and left["flavor_id"] == "1"
        assert (await _nodes(cell))[host]["claims"] == [sid]
    finally:
        await cell.stop()


@arun
async def test_resize_actions_are_recorded_with_novas_names() -> None:
    handled_by = {
        "resize": ["schedule_resize_instance", "prep_resize", "resize_instance", "finish_resize"],
        "confirmResize": ["confirm_resize"],
        "revertResize": ["revert_resize", "finish_revert_resize"],
        "migrate": ["schedule_resize_instance", "prep_resize"],
    }
    found = await recorded_events(handled_by)
    assert found == {
        "resize": [
            "conductor_migrate_server",
            "compute_prep_resize",
            "compute_resize_instance",
            "compute_finish_resize",
        ],
        "confirmResize": ["compute_confirm_resize"],
        "revertResize": ["compute_revert_resize", "compute_finish_revert_resize"],
        "migrate": ["conductor_migrate_server", "compute_prep_resize"],
    }


@arun
async def test_deleting_a_resized_server_confirms_the_resize_first(tmp_path: Path) -> None:
    """nova's delete of a server in VERIFY_RESIZE confirms the resize first
    (_confirm_resize_on_deleting): the source's kept copy and its claim go with it."""
    cell = await _cell(tmp_path)
    try:
        row = await boot_through_the_cell(cell)
        sid, source = row["id"], str(row["host"])
        dest = _other(source)
        await _act(cell, sid, "resize", {"flavorRef": "2"})
        await _wait(cell, sid, "resized")
        assert f"{sid}_resize" in _guests(cell, source)
        cell.errors.clear()
        before = len(cell.steps)
        await cell.operation("deleteServer", sequence="delete-vm", path_params={"server_id": sid})
        # (the confirm is cast to the source before the terminate to the destination)
        gone = await cell.wait_for(
            sid,
            lambda r: (
                r["vm_state"] == "deleted" and not r["migration"] and not _guests(cell, source)
            ),
            timeout=60,
        )
        assert gone["task_state"] is None
        assert _guests(cell, dest) == {}

        async def source_freed() -> bool:  # (the confirm's claim change follows its update)
            return not (await _nodes(cell))[source]["claims"]

        await settle(source_freed, timeout=30)
        nodes = await _nodes(cell)
        assert nodes[source] == {"claims": [], "vcpus_used": 0, "memory_mb_used": 0}
        assert nodes[dest] == {"claims": [], "vcpus_used": 0, "memory_mb_used": 0}
        assert cell.errors == []
        # the source confirmed it, then the destination terminated it (only its own steps)
        assert [s for s in cell.steps[before:] if s[1] in ("5.1", "6", "10")] == [
            ("nova-api", "5.1", "flow.amqp-cast"),
            ("nova-api", "6", "flow.amqp-cast"),
            ("nova-compute", "10", "flow.native"),
        ]
    finally:
        await cell.stop()


@arun
async def test_deleting_a_resized_qemu_guest_removes_its_kept_copy(tmp_path: Path) -> None:
    """The same delete with the qemu driver on both hosts: the source's kept directory
    (`<uuid>_resize`) goes from the disk, and no QEMU of the guest is left."""
    require_qemu()
    cell = NovaCell(tmp_path)
    drivers = {h: QemuHypervisor(tmp_path / f"qemu-{h}.json", hostname=h) for h in cell.computes}
    for host, rt in cell.computes.items():
        rt.driver = drivers[host]
    await cell.start()
    await seed_flavors(cell.store)
    try:
        row = await boot_through_the_cell(cell, name="web")
        assert row["vm_state"] == "active", row["fault"]
        sid, source = row["id"], str(row["host"])
        await _act(cell, sid, "resize", {"flavorRef": "2"})
        await _wait(cell, sid, "resized")
        kept = drivers[source].guests_dir / f"{sid}_resize"
        assert (kept / "disk").is_file() and guest_pids(sid) != []  # it runs on the destination
        sockets = [Path(d.guests[n]["qmp"]) for d in drivers.values() for n in d.guests]
        assert len(sockets) == 2 and sockets[0] != sockets[1]  # the kept one and the guest's
        await cell.operation("deleteServer", sequence="delete-vm", path_params={"server_id": sid})
        await cell.wait_for(sid, lambda r: r["vm_state"] == "deleted" and not r["migration"])

        async def gone() -> bool:  # (the confirm is cast to the source, the terminate to dest)
            return not any(d.guests for d in drivers.values())

        await settle(gone, timeout=30)
        assert not kept.exists()
        assert [list(d.guests_dir.iterdir()) for d in drivers.values()] == [[], []]
        assert guest_pids(sid) == []
        assert [s for s in sockets if s.exists()] == []
    finally:
        await cell.stop()
        for driver in drivers.values():
            driver.close()
        for pid in qemu_pids_under(tmp_path):  # a failed test's guests
            os.kill(pid, signal.SIGKILL)
