"""A real guest (built from Debian packages) booted through the running stack's 15 steps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator.bench import guest as bench_guest
from generator.tools import guestimage
from specstack_conformance.drivers import libvirtd_missing, requirement_missing
from specstack_conformance.harness import free_port_block
from specstack_runtime.virt.accel import qemu_binary

from ..virt.conftest import unavailable
from ..wire.conftest import Stack, run_stack, stop_stack, wait_until_serving

LIBVIRT_URI = "qemu:///system"


def require_qemu() -> None:
    if qemu_binary() is None:
        unavailable(requirement_missing("qemu-system-x86") or "qemu-system-x86_64 is missing")


@pytest.fixture(scope="session")
def qemu_installed() -> None:
    """qemu-system-x86_64 (skips without it, fails under SPECSTACK_REQUIRE_VIRT=1); of the
    session's scope, so that it comes before the module-scoped fixtures that start QEMU."""
    require_qemu()


def require_driver(driver: str) -> None:
    """Skip (fail under SPECSTACK_REQUIRE_VIRT=1, as in CI) when the hypervisor is absent."""
    require_qemu()
    if driver == "libvirt":
        missing = requirement_missing("libvirt-python") or libvirtd_missing(LIBVIRT_URI)
        if missing:
            unavailable(missing)


@pytest.fixture(scope="session")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> guestimage.GuestImage:
    """The tiny guest; its packages and build are cached (SPECSTACK_GUEST_CACHE) across runs."""
    require_qemu()
    return guestimage.build(tmp_path_factory.mktemp("guest-image"))


def guest_pids(instance_uuid: str) -> list[int]:
    """Live QEMU processes running this instance (QEMU is given the instance's uuid)."""
    return _qemu_pids(instance_uuid)


def qemu_pids_under(data_dir: Path) -> list[int]:
    """Live QEMU processes whose files are in this data directory."""
    return _qemu_pids(str(data_dir))


def _qemu_pids(needle: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state in ("Z", "X") or not cmdline or b"qemu-system" not in cmdline[0]:
            continue
        if any(needle.encode() in arg for arg in cmdline):
            pids.append(int(proc.name))
    return pids


@contextlib.contextmanager
def driver_stack(
    tmp_path: Path, driver: str, env: dict[str, str] | None = None, keep_guests: bool = False
) -> Iterator[Stack]:
    """`specstack run --driver DRIVER` on a free block of ports (as tests/wire's stack)."""
    data_dir = tmp_path / "data"
    port = free_port_block(8)
    args = ["--driver", driver]
    if driver == "libvirt":
        args += ["--driver-option", f"libvirt.uri={LIBVIRT_URI}"]
    proc = run_stack(data_dir, port, *args, env=env)
    try:
        output = wait_until_serving(proc)
        yield Stack(port=port, data_dir=data_dir, clouds=data_dir / "clouds.yaml", output=output)
    finally:
        stop_stack(proc, timeout_s=30)
        # guests outlive the stack by design: end the ones this stack started (a failed test's),
        # unless the test restarts the stack on them (and ends them itself with end_guests)
        if not keep_guests:
            end_guests(data_dir, driver)


def end_guests(data_dir: Path, driver: str) -> None:
    """End the guests whose files are in this data directory (and their QMP sockets)."""
    bench_guest.end_guests(data_dir, LIBVIRT_URI if driver == "libvirt" else None)
