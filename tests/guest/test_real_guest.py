"""The tiny Debian guest booted through all 15 steps by the real `openstack` CLI.

The image is uploaded to glance (its data goes to swift), the server is created
with a cinder volume (step 15) and waits for ACTIVE, which the stack gives only
once the guest runs. The guest's serial console, read with `openstack console
log show`, carries its marker line with its disk list; a second volume attached
to the running guest is hot-plugged and shows up there too; `server delete`
ends the guest's QEMU process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from generator.tools.guestimage import MARKER, GuestImage

from ..wire.conftest import Stack
from .conftest import driver_stack, guest_pids, require_driver

DRIVERS = ["qemu", "libvirt"]
CONSOLE_WAIT_S = 300.0  # a bound on waiting, not a speed check: TCG on a busy host is slow


def _serial(volume_id: str) -> str:
    return volume_id[:20]  # virtio-blk shows the guest 20 bytes of serial


def _wait_console(stack: Stack, server: str, wanted: str) -> str:
    """`console log show` until a marker line contains `wanted`; the whole log."""
    deadline = time.monotonic() + CONSOLE_WAIT_S
    while True:
        log = stack.run("console", "log", "show", server).stdout
        if any(MARKER in line and wanted in line for line in log.splitlines()):
            return log
        if time.monotonic() > deadline:
            pytest.fail(f"no marker line with {wanted!r} on the console of {server}:\n{log}")
        time.sleep(1.0)


@pytest.fixture(scope="module", params=DRIVERS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    require_driver(request.param)
    with driver_stack(tmp_path_factory.mktemp(f"guest-{request.param}"), request.param) as s:
        yield s


@pytest.fixture(scope="module")
def booted(stack: Stack, guest_image: GuestImage) -> dict[str, Any]:
    image = stack.json(
        "image", "create", "--file", str(guest_image.disk),
        "--disk-format", "raw", "--container-format", "bare", "guest-image",
    )  # fmt: skip
    volume = stack.json("volume", "create", "--size", "1", "boot-vol")
    assert stack.wait_for("volume", "boot-vol", "status", "available")["status"] == "available"
    server = stack.json(
        "server", "create", "--image", "guest-image", "--flavor", "m1.tiny",
        "--network", "private",
        "--block-device", f"source_type=volume,uuid={volume['id']},destination_type=volume,boot_index=-1",
        "--wait", "guest",
    )  # fmt: skip
    return {"image": image, "volume": volume, "server": server}


def test_image_stored_and_active(
    booted: dict[str, Any], stack: Stack, guest_image: GuestImage
) -> None:
    shown = stack.json("image", "show", "guest-image")
    assert shown["status"] == "active" and shown["size"] == guest_image.disk.stat().st_size


def test_active_only_with_a_running_guest(booted: dict[str, Any], stack: Stack) -> None:
    server = booted["server"]
    assert server["status"] == "ACTIVE" and server["OS-EXT-STS:power_state"] in (1, "Running")
    assert len(guest_pids(server["id"])) == 1, "ACTIVE without a QEMU process"


def test_console_shows_marker_and_boot_volume(booted: dict[str, Any], stack: Stack) -> None:
    serial = _serial(booted["volume"]["id"])
    log = _wait_console(stack, "guest", serial)
    line = next(x for x in log.splitlines() if MARKER in x and serial in x)
    assert "vda:" in line  # the root disk, from the image
    attached = stack.json("server", "show", "guest")["volumes_attached"]
    assert [v["id"] for v in attached] == [booted["volume"]["id"]]


def test_volume_hot_plugged_into_running_guest(booted: dict[str, Any], stack: Stack) -> None:
    _wait_console(stack, "guest", _serial(booted["volume"]["id"]))  # the guest is up
    volume = stack.json("volume", "create", "--size", "1", "hot-vol")
    assert stack.wait_for("volume", "hot-vol", "status", "available")["status"] == "available"
    pids = guest_pids(booted["server"]["id"])
    stack.run("server", "add", "volume", "guest", "hot-vol")
    assert stack.wait_for("volume", "hot-vol", "status", "in-use")["status"] == "in-use"
    _wait_console(stack, "guest", _serial(volume["id"]))
    assert guest_pids(booted["server"]["id"]) == pids  # the same process: hot-plugged


def test_stop_and_start_keep_the_disks(booted: dict[str, Any], stack: Stack) -> None:
    uuid = booted["server"]["id"]
    hot = stack.json("volume", "show", "hot-vol")
    before = guest_pids(uuid)
    stack.run("server", "stop", "guest")
    assert stack.wait_for("server", "guest", "status", "SHUTOFF")["status"] == "SHUTOFF"
    assert guest_pids(uuid) == []  # stopped: no QEMU
    log_lines = len(stack.run("console", "log", "show", "guest").stdout.splitlines())
    stack.run("server", "start", "guest")
    assert stack.wait_for("server", "guest", "status", "ACTIVE")["status"] == "ACTIVE"
    assert len(guest_pids(uuid)) == 1 and guest_pids(uuid) != before
    deadline = time.monotonic() + CONSOLE_WAIT_S
    wanted = (_serial(booted["volume"]["id"]), _serial(hot["id"]))
    while True:  # a new boot's marker lists the boot volume and the hot-plugged one
        new = stack.run("console", "log", "show", "guest").stdout.splitlines()[log_lines:]
        if any(MARKER in x and all(w in x for w in wanted) for x in new):
            break
        if time.monotonic() > deadline:
            pytest.fail("no marker with both volumes after start:\n" + "\n".join(new))
        time.sleep(1.0)


def test_delete_ends_the_guest(booted: dict[str, Any], stack: Stack) -> None:
    uuid = booted["server"]["id"]
    assert guest_pids(uuid)
    stack.run("server", "delete", "--wait", "guest")
    assert guest_pids(uuid) == []
    assert not any(Path(stack.data_dir).rglob(f"{uuid}/console.log"))
