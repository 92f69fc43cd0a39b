"""The generated conformance suite passes against the embedded stack, one item per step."""

from __future__ import annotations

import subprocess
import sys

from ..conftest import REPO


def test_generated_suite_passes_against_the_embedded_stack() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "generator", "conform", "--", "-v"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for n, title in (
        (1, "request_vm_provisioning_via_ui_cli"),
        (7, "schedule_provisioning"),
        (15, "request_volume_attachment"),
    ):
        assert f"test_step{n:02d}_{title} PASSED" in out
    assert "test_boot_vm_invalid_token PASSED" in out
    assert "test_boot_vm_no_valid_host PASSED" in out
    assert "test_boot_vm_unknown_image PASSED" in out
    assert "test_compute_create_server PASSED" in out
