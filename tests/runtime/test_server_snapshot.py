"""createImage (spec/resources/compute.yaml): nova-api makes a queued glance image and
answers 202 with its Location, the compute host takes the task through image_pending_upload
and image_uploading while its driver writes the root disk and uploads it, and the image is
active with the guest's data. nova's 400s for a bad body, 409 in a state or task that does
not allow it, and what a refusal by glance or a failing driver leaves (issue 15)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from generated.drivers.types import Instance
from specstack_runtime.behaviours import nova_snapshot  # noqa: F401  (registers its behaviours)
from specstack_runtime.errors import BadRequest, Conflict, NotFound
from specstack_runtime.virt import VirtError
from specstack_runtime.virt.fake import FakeHypervisor
from tests.aio import arun
from tests.runtime.nova_cell_kit import NovaCell
from tests.runtime.test_compute_kit import (
    IMAGE_DATA,
    IMAGE_ID,
    FakeServices,
    response,
    seed_flavors,
)
from tests.runtime.test_nova_cell import boot_through_the_cell

GLANCE = "http://glance.test:9292"


class Glance(FakeServices):
    """FakeServices with glance's image life cycle: create (queued), patch while queued,
    upload (active, with its data), delete."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, dict[str, Any]] = {}
        self.data: dict[str, bytes] = {}

    def base_url(self, api: str) -> str:
        return GLANCE

    def _showImage(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        made = self.images.get(p["image_id"])
        return response(200, made) if made is not None else super()._showImage(p, body, q)

    def _createImage(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        image = {**body, "id": str(uuid.uuid4()), "status": "queued", "size": None}
        self.images[image["id"]] = image
        return response(201, image)

    def _updateImage(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        image = self.images[p["image_id"]]
        assert image["status"] == "queued"  # glance: formats change only while queued
        for op in body:
            image[op["path"].lstrip("/")] = op["value"]
        return response(200, image)

    def _uploadImageData(
        self, p: dict[str, Any], body: Any, q: Mapping[str, Any]
    ) -> httpx.Response:
        image = self.images[p["image_id"]]
        self.data[image["id"]] = bytes(body)
        image.update(status="active", size=len(body), checksum=hashlib.md5(body).hexdigest())
        return response(204)

    def _deleteImage(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        self.images.pop(p["image_id"], None)
        return response(204)


class GatedHypervisor(FakeHypervisor):
    """A snapshot that waits for the test (the task state can be seen meanwhile), or fails."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.broken = False

    async def snapshot(self, instance: Instance, target: str) -> str:
        self.started.set()
        await self.gate.wait()
        if self.broken:
            raise VirtError("the disk could not be read")
        return await super().snapshot(instance, target)


async def _cell(tmp_path: Path) -> tuple[NovaCell, Glance, GatedHypervisor]:
    cell = NovaCell(tmp_path, computes=1)
    glance = Glance()
    driver = GatedHypervisor(tmp_path / "gated.json", hostname="compute-1")
    for rt in (cell.api, cell.scheduler, cell.conductor, *cell.computes.values()):
        rt.clients = glance  # type: ignore[assignment]
    cell.computes["compute-1"].driver = driver
    await cell.start()
    await seed_flavors(cell.store)
    return cell, glance, driver


async def _snapshot(cell: NovaCell, sid: str, arg: Any) -> tuple[int, str]:
    """The answer's status and the new image's id: no version negotiated (in-process) is
    the newest shape, 2.45's {"image_id"} without a Location header."""
    reply, _ = await cell.operation(
        "serverAction", path_params={"server_id": sid}, body={"createImage": arg}
    )
    assert "Location" not in reply.headers
    return reply.status, str((reply.body or {}).get("image_id"))


@arun
async def test_create_image_uploads_the_root_disk_through_the_task_states(tmp_path: Path) -> None:
    cell, glance, driver = await _cell(tmp_path)
    try:
        row = await boot_through_the_cell(cell)
        sid = row["id"]
        status, image_id = await _snapshot(
            cell, sid, {"name": "snap-1", "metadata": {"purpose": "backup"}}
        )
        assert status == 202
        made = glance.images[image_id]
        # what nova gives the image: private, a snapshot of this instance, the request's metadata
        assert (made["name"], made["visibility"], made["image_type"]) == (
            "snap-1",
            "private",
            "snapshot",
        )
        assert (made["instance_uuid"], made["base_image_ref"]) == (sid, IMAGE_ID)
        assert made["purpose"] == "backup" and made["container_format"] == "bare"
        await asyncio.wait_for(driver.started.wait(), 5)
        pending = await cell.store.get("instances", sid)
        assert pending is not None
        assert (pending["vm_state"], pending["task_state"]) == ("active", "image_pending_upload")
        assert made["status"] == "queued"
        # one task at a time: nova's 409, in its words
        with pytest.raises(
            Conflict, match=r"Cannot 'createImage' instance .* image_pending_upload"
        ):
            await _snapshot(cell, sid, {"name": "snap-2"})
        driver.gate.set()
        done = await cell.wait_for(sid, lambda r: r["task_state"] is None)
        assert done["vm_state"] == "active" and not done.get("fault")
        # active, with the guest's root disk (a fake guest's is its image's data), as raw
        assert made["status"] == "active" and glance.data[image_id] == IMAGE_DATA
        assert made["disk_format"] == "raw"
        assert made["checksum"] == hashlib.md5(IMAGE_DATA).hexdigest()
        assert "updateImage" in glance.ops() and len(glance.images) == 1
    finally:
        await cell.stop()


@arun
async def test_create_image_refusals(tmp_path: Path) -> None:
    cell, glance, _ = await _cell(tmp_path)
    try:
        row = await boot_through_the_cell(cell)
        sid = row["id"]
        with pytest.raises(BadRequest, match="'name' is a required property"):
            await _snapshot(cell, sid, {})
        for arg in ({"name": ""}, {"name": " padded"}, {"name": "x" * 256}):
            with pytest.raises(BadRequest, match="field/attribute name"):
                await _snapshot(cell, sid, arg)
        with pytest.raises(BadRequest, match="field/attribute metadata"):
            await _snapshot(cell, sid, {"name": "s", "metadata": {"k": 1}})
        with pytest.raises(BadRequest, match="Additional properties are not allowed"):
            await _snapshot(cell, sid, {"name": "s", "other": 1})
        with pytest.raises(NotFound):
            await _snapshot(cell, str(uuid.uuid4()), {"name": "s"})
        # not from ERROR (nova: ACTIVE, STOPPED, PAUSED, SUSPENDED)
        await cell.store.update("instances", sid, {"vm_state": "error"})
        with pytest.raises(Conflict, match=r"Cannot 'createImage' instance .* vm_state error"):
            await _snapshot(cell, sid, {"name": "s"})
        await cell.store.update("instances", sid, {"vm_state": "active"})
        # glance refuses the image: 400 with its reason, and the task is back as it was
        glance.fail["createImage"] = 413
        with pytest.raises(BadRequest, match=r"image service refused .* createImage failed"):
            await _snapshot(cell, sid, {"name": "s"})
        back = await cell.store.get("instances", sid)
        assert back is not None and back["task_state"] is None
        assert glance.images == {} and "snapshot_instance" not in str(cell.errors)
    finally:
        await cell.stop()


@arun
async def test_a_failing_snapshot_clears_the_task_and_deletes_the_image(tmp_path: Path) -> None:
    cell, glance, driver = await _cell(tmp_path)
    try:
        row = await boot_through_the_cell(cell)
        sid = row["id"]
        driver.broken = True
        driver.gate.set()
        status, image_id = await _snapshot(cell, sid, {"name": "doomed"})
        assert status == 202 and len(image_id) == 36  # (the failure deletes it, below)
        after = await cell.wait_for(sid, lambda r: r["task_state"] is None)
        assert after["vm_state"] == "active"
        assert "snapshot failed: the disk could not be read" in after["fault"]["message"]
        assert glance.images == {} and "deleteImage" in glance.ops()
        for _ in range(500):  # the handler's failure is recorded once it has raised
            if cell.errors:
                break
            await asyncio.sleep(0.01)
        assert [m for m, _ in cell.errors] == ["snapshot_instance"]
    finally:
        await cell.stop()
