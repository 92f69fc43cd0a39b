"""Fixtures of the hypervisor driver tests: libvirt on its test driver and on a real libvirtd.

A capability that is absent (libvirt-python, libvirtd, virt-xml-validate) skips
its tests with the reason; with SPECSTACK_REQUIRE_VIRT=1 (CI) it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from generated.drivers.types import Instance
from specstack_conformance.drivers import REQUIRE_ENV, libvirtd_missing, requirement_missing


def unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


@pytest.fixture
def libvirt_python() -> None:
    """libvirt's Python binding (`pip install -e '.[libvirt]'`, built against libvirt-dev)."""
    missing = requirement_missing("libvirt-python")
    if missing:
        unavailable(missing)


def _hypervisor(tmp_path: Path, **options: Any) -> Iterator[Any]:
    missing = requirement_missing("libvirt-python")
    if missing:
        unavailable(missing)
    from specstack_runtime.virt.libvirt import LibvirtHypervisor

    host = f"test-{uuid.uuid4().hex[:8]}"  # its own host: it sees only its own domains
    h = LibvirtHypervisor(tmp_path / f"{host}.json", hostname=host, **options)
    yield h
    # Remove what a failed test left behind on the (shared) hypervisor.
    for dom, _meta in h._ours():
        LibvirtHypervisor._remove(dom)
    h.close()


@pytest.fixture
def test_driver(tmp_path: Path) -> Iterator[Any]:
    """A LibvirtHypervisor on libvirt's built-in test:///default driver."""
    yield from _hypervisor(tmp_path, uri="test:///default")


@pytest.fixture
def qemu_system(tmp_path: Path) -> Iterator[Any]:
    """A LibvirtHypervisor on the real libvirtd (qemu:///system) with QEMU."""
    missing = requirement_missing("libvirt-python") or libvirtd_missing("qemu:///system")
    if missing:
        unavailable(missing)
    yield from _hypervisor(tmp_path, uri="qemu:///system", detach_timeout_s=3)


def blank_disk(path: Path, size: int = 1 << 20) -> Path:
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


def file_volume(path: Path, volume_id: str | None = None) -> dict[str, Any]:
    """connection_info of a raw file volume, shaped as cinder's file back end gives it."""
    blank_disk(path)
    vid = volume_id or str(uuid.uuid4())
    return {
        "driver_volume_type": "file",
        "data": {
            "device_path": str(path),
            "volume_id": vid,
            "serial": vid,
            "access_mode": "rw",
            "format": "raw",
        },
    }


def new_instance(**extra: Any) -> Instance:
    uid = str(uuid.uuid4())
    return cast(
        Instance,
        {
            "uuid": uid,
            "name": f"vm-{uid[:8]}",
            "vcpus": 1,
            "memory_mb": 64,
            "root_gb": 0,
            **extra,
        },
    )
