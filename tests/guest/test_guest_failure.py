"""A guest that cannot start leaves the instance in ERROR with a fault, never ACTIVE."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from generator.tools.guestimage import GuestImage

from .conftest import driver_stack, require_driver


def test_guest_that_cannot_start_gives_error_with_fault(
    tmp_path: Path, guest_image: GuestImage
) -> None:
    require_driver("qemu")
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` command to stand in for a broken QEMU")
    # every compute host's "QEMU" exits at once with status 1; one host only: no reschedule
    env = {"SPECSTACK_QEMU_BINARY": false, "SPECSTACK_MAX_BUILD_ATTEMPTS": "1"}
    with driver_stack(tmp_path, "qemu", env=env) as stack:
        stack.json(
            "image", "create", "--file", str(guest_image.disk),
            "--disk-format", "raw", "--container-format", "bare", "guest-image",
        )  # fmt: skip
        proc = stack.run(
            "server", "create", "--image", "guest-image", "--flavor", "m1.tiny",
            "--network", "private", "--wait", "broken", check=False,
        )  # fmt: skip
        assert proc.returncode != 0
        shown = stack.json("server", "show", "broken")
        assert shown["status"] == "ERROR"
        assert shown["fault"]["message"], shown
        assert "did not start" in str(shown["fault"]), shown["fault"]
