"""A restarted stack finds its qemu guests still running and can still delete them."""

from __future__ import annotations

from pathlib import Path

from generator.tools.guestimage import MARKER, GuestImage

from .conftest import driver_stack, end_guests, guest_pids, require_driver
from .test_real_guest import _wait_console


def test_restarted_stack_finds_the_running_guest(tmp_path: Path, guest_image: GuestImage) -> None:
    require_driver("qemu")
    try:
        with driver_stack(tmp_path, "qemu", keep_guests=True) as stack:
            stack.json(
                "image", "create", "--file", str(guest_image.disk),
                "--disk-format", "raw", "--container-format", "bare", "guest-image",
            )  # fmt: skip
            server = stack.json(
                "server", "create", "--image", "guest-image", "--flavor", "m1.tiny",
                "--network", "private", "--wait", "survivor",
            )  # fmt: skip
            _wait_console(stack, "survivor", "vda:")
            pids = guest_pids(server["id"])
            assert len(pids) == 1
        assert guest_pids(server["id"]) == pids  # the stack stopped; the guest did not
        with driver_stack(tmp_path, "qemu") as stack:  # the same data directory
            shown = stack.json("server", "show", "survivor")
            assert shown["status"] == "ACTIVE" and guest_pids(server["id"]) == pids
            assert MARKER in stack.run("console", "log", "show", "survivor").stdout
            stack.run("server", "delete", "--wait", "survivor")
            assert guest_pids(server["id"]) == []
    finally:
        end_guests(tmp_path / "data", "qemu")
