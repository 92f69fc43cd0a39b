"""`specstack run --driver libvirt`: the demo boot through the 15 steps on libvirt's test driver."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from specstack_conformance.drivers import requirement_missing
from specstack_conformance.harness import free_port_block

from ..stack.test_run import run_once
from .conftest import unavailable

STEP_LINE = re.compile(r"^\[\s*(\d+)/15\] ", re.M)
SERVER = re.compile(r"^server \S+ \(([0-9a-f-]{36})\) is ACTIVE$", re.M)


def _run(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`specstack run --once` (as tests/stack runs it) on a free block of ports."""
    return run_once(data_dir, free_port_block(8), *extra)


@pytest.mark.usefixtures("libvirt_python")
def test_demo_boot_through_libvirt(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = _run(data, "--driver", "libvirt", "--driver-option", "libvirt.uri=test:///default")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [int(n) for n in STEP_LINE.findall(proc.stdout)] == list(range(1, 16)), proc.stdout
    match = SERVER.search(proc.stdout)
    assert match, proc.stdout
    # the guest's directory, made by the libvirt driver of the compute host that built it
    made = list((data / "hypervisors" / "instances").glob(f"*/{match.group(1)}"))
    assert len(made) == 1, list((data / "hypervisors").rglob("*"))


def test_bad_driver_options_stop_the_stack_with_a_clear_error(tmp_path: Path) -> None:
    proc = _run(tmp_path / "a", "--driver-option", "libvirt-uri")
    assert proc.returncode == 2
    assert "--driver-option 'libvirt-uri' is not DRIVER.KEY=VALUE" in proc.stdout + proc.stderr
    missing = requirement_missing("libvirt-python")
    if missing:
        unavailable(missing)
    proc = _run(tmp_path / "b", "--driver", "libvirt", "--driver-option", "libvirt.bogus=1")
    assert proc.returncode != 0
    assert "unexpected keyword argument 'bogus'" in proc.stdout + proc.stderr
