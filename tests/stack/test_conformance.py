"""The generated conformance suite passes, one item per step: against the embedded stack it
starts itself, or (SPECSTACK_TEST_MODE=distributed) against a distributed stack as a target."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ..conftest import REPO
from ..wire.conftest import running_stack, stack_mode


@contextlib.contextmanager
def _target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """`conform` arguments: none (it starts an embedded stack), or a running stack known only
    by the clouds.yaml it wrote (its member and admin clouds; no built-in password)."""
    if stack_mode() == "embedded":
        yield []
        return
    with running_stack(tmp_path_factory, "conform") as stack:
        os.environ["OS_CLIENT_CONFIG_FILE"] = str(stack.clouds)
        try:
            yield ["--cloud", "specstack", "--admin-cloud", "specstack-admin"]
        finally:
            del os.environ["OS_CLIENT_CONFIG_FILE"]


def test_generated_suite_passes(tmp_path_factory: pytest.TempPathFactory) -> None:
    report = tmp_path_factory.mktemp("conform") / "report.html"  # never the user's .specstack/
    with _target(tmp_path_factory) as target:
        args = ["conform", *target, "--report", str(report), "--", "-v"]
        proc = subprocess.run(
            [sys.executable, "-m", "generator", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"report: {report}" in out and report.is_file()
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
