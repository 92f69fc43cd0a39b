"""A volume made from an image (cinder's createVolume with imageRef): glance's image checked
at the API, its data copied by the back end, the volume bootable with the image's metadata."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx

from tests.runtime.netvol_fakes import expect_error, make_call
from tests.runtime.test_volume import GIB, Cinder, run, served

IMAGE_ID = "8a2b6c1d-3e4f-4a5b-8c7d-9e0f1a2b3c4d"
DATA = b"\xeb\x63\x90" + b"guest disk " * 1000


class FakeGlance:
    """glance's showImage and downloadImageData for the images it holds (404 for others);
    records who asked with which token."""

    def __init__(self, **image: Any) -> None:
        self.image = {
            "id": IMAGE_ID,
            "name": "cirros",
            "status": "active",
            "size": len(DATA),
            "checksum": hashlib.md5(DATA).hexdigest(),
            "disk_format": "raw",
            "container_format": "bare",
            "min_disk": 0,
            "min_ram": 64,
            **image,
        }
        self.calls: list[tuple[str, str | None]] = []

    async def call(self, api: str, operation: str, params: Any, **kw: Any) -> httpx.Response:
        assert api == "image"
        self.calls.append((operation, kw.get("token")))
        if params["image_id"] != IMAGE_ID:
            return httpx.Response(404, json={"message": "not found"})
        if operation == "showImage":
            return httpx.Response(200, json=self.image)
        assert operation == "downloadImageData"
        return httpx.Response(200, content=DATA)


async def service_token() -> str:
    return "cinder-service-token"


def with_glance(c: Cinder, glance: FakeGlance) -> None:
    for rt in (c.api, *c.backends):
        rt.clients = glance  # type: ignore[assignment]
        rt.service_token = service_token  # type: ignore[method-assign]


def test_volume_from_image_has_its_data_and_metadata_and_is_bootable(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        glance = FakeGlance()
        with_glance(c, glance)
        body, _ = await c.op(
            served, "createVolume", 202, body={"volume": {"size": 1, "imageRef": IMAGE_ID}}
        )
        vid = body["volume"]["id"]
        await c.wait_status(vid, "available")
        # the caller's token asks glance for the image, the back end's own for its data
        assert glance.calls == [
            ("showImage", "tok-u1"),
            ("downloadImageData", "cinder-service-token"),
        ]
        path = c.volume_file(vid)
        assert path.stat().st_size == GIB
        with open(path, "rb") as f:
            assert f.read(len(DATA) + 1) == DATA + b"\0"
        shown, _ = await c.op(served, "showVolume", 200, path_params=c.pp(volume_id=vid))
        volume = shown["volume"]
        assert volume["bootable"] == "true"
        assert volume["volume_image_metadata"] == {
            "image_id": IMAGE_ID,
            "image_name": "cirros",
            "checksum": hashlib.md5(DATA).hexdigest(),
            "container_format": "bare",
            "disk_format": "raw",
            "min_disk": "0",
            "min_ram": "64",
            "size": str(len(DATA)),
        }
        listed, _ = await c.op(served, "listVolumesDetailed", 200, query={"bootable": ["true"]})
        assert [v["id"] for v in listed["volumes"]] == [vid]

    run(tmp_path, scenario)


def test_volume_from_image_refused_for_a_missing_inactive_or_larger_image(
    tmp_path: Path,
) -> None:
    async def scenario(c: Cinder) -> None:
        for image, volume, message in (
            ({}, {"imageRef": "no-such-image"}, "Invalid image identifier"),
            ({"status": "queued"}, {"image_id": IMAGE_ID}, f"Image {IMAGE_ID} is not active."),
            (
                {"size": 3 * GIB - 5},
                {"imageRef": IMAGE_ID},
                "Size of specified image 3GB is larger than volume size 2GB.",
            ),
            (
                {"min_disk": 4},
                {"imageRef": IMAGE_ID},
                "Image minDisk size 4GB is larger than the volume size 2GB.",
            ),
        ):
            with_glance(c, FakeGlance(**image))
            call = make_call(
                c.api, "createVolume", body={"volume": {"size": 2, **volume}}, path_params=c.pp()
            )
            await expect_error(served(call), 400, kind="InvalidInput", match=message)
        assert await c.store.count("volumes") == 0

    run(tmp_path, scenario)


def test_back_end_puts_the_volume_in_error_when_the_image_data_differs(tmp_path: Path) -> None:
    async def scenario(c: Cinder) -> None:
        with_glance(c, FakeGlance(checksum="0" * 32))
        body, _ = await c.op(
            served, "createVolume", 202, body={"volume": {"size": 1, "imageRef": IMAGE_ID}}
        )
        await c.wait_status(body["volume"]["id"], "error")
        assert not c.volume_file(body["volume"]["id"]).exists()

    run(tmp_path, scenario)
