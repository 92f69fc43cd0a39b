"""createImage of a volume-backed server (issue 15): as nova's API does, each attached volume
is snapshotted in cinder (forced: in use), and the image holds their mappings
(block_device_mapping, bdm_v2, root_device_name), active with no data (size 0); the
server is ACTIVE again with no fault."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from specstack_runtime.behaviours import nova_snapshot  # noqa: F401  (registers its behaviours)
from tests.aio import arun
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_kit import VOLUME_ID, response, seed_flavors
from tests.runtime.test_nova_cell import boot_through_the_cell
from tests.runtime.test_server_snapshot import Glance

ROOT = {"uuid": VOLUME_ID, "boot_index": 0, "source_type": "volume",
        "destination_type": "volume", "delete_on_termination": False}  # fmt: skip


class Snapshotting(Glance):
    """Glance, and cinder's snapshots (of a 1 GiB volume)."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots: list[dict[str, Any]] = []

    def _createSnapshot(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        snap = {**body["snapshot"], "id": str(uuid.uuid4()), "size": 1, "status": "creating"}
        self.snapshots.append(snap)
        return response(202, {"snapshot": snap})


@arun
async def test_create_image_of_a_volume_backed_server_snapshots_its_volume(
    tmp_path: Path,
) -> None:
    cell = NovaCell(tmp_path, computes=1)
    services = Snapshotting()
    for rt in (cell.api, cell.scheduler, cell.conductor, *cell.computes.values()):
        rt.clients = services  # type: ignore[assignment]
    await cell.start()
    try:
        await seed_flavors(cell.store)
        row = await boot_through_the_cell(cell, imageRef="", block_device_mapping_v2=[ROOT])
        sid = row["id"]
        assert row["vm_state"] == "active", row.get("fault")
        reply, _ = await cell.operation(
            "serverAction", path_params={"server_id": sid}, body={"createImage": {"name": "bk"}}
        )
        assert reply.status == 202
        image_id = reply.body["image_id"]
        done = await cell.wait_for(sid, lambda r: r["task_state"] is None)
        assert done["vm_state"] == "active" and not done.get("fault")
        (snap,) = services.snapshots
        assert (snap["volume_id"], snap["force"], snap["name"]) == (
            VOLUME_ID,
            True,
            "snapshot for bk",
        )
        image = services.images[image_id]
        assert (image["status"], image["size"], services.data[image_id]) == ("active", 0, b"")
        assert (image["bdm_v2"], image["root_device_name"]) == ("True", "/dev/vda")
        (mapping,) = json.loads(image["block_device_mapping"])
        assert mapping["source_type"] == "snapshot" and mapping["snapshot_id"] == snap["id"]
        assert (mapping["destination_type"], mapping["boot_index"]) == ("volume", 0)
        assert (mapping["device_name"], mapping["volume_size"]) == ("/dev/vda", 1)
    finally:
        await cell.stop()
