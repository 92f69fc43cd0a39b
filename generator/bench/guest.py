"""Real-guest figures for `specstack bench`: `guest_boot_s_<driver>` for libvirt and qemu.

Each is the time from `POST /servers` to the guest's marker line on its serial
console (read through `os-getConsoleOutput`, as `openstack console log show`
does), for the tiny Debian guest of generator.tools.guestimage uploaded to glance, on
a stack started with `specstack run --driver <driver>`. A driver whose
hypervisor is absent is skipped with a note instead of a figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from generator.tools import guestimage
from specstack_conformance.harness import free_port_block
from specstack_runtime.config import StackConfig
from specstack_runtime.embedded import load_generated
from specstack_runtime.virt.accel import qemu_binary
from specstack_runtime.virt.qemu import socket_in_argv

DRIVERS = ("libvirt", "qemu")
MARKER_TIMEOUT_S = 300.0


def _absent(driver: str) -> str | None:
    """Why this driver cannot boot a real guest here, or None."""
    if qemu_binary() is None:
        return "qemu-system-x86_64 is not installed"
    if driver == "libvirt":
        if importlib.util.find_spec("libvirt") is None:
            return "libvirt-python is not installed"
        import libvirt

        uri = os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"  # the driver's default
        try:
            libvirt.open(uri).close()
        except libvirt.libvirtError as exc:
            return f"libvirtd is not reachable at {uri}: {exc}"
    return None


async def _boot_to_marker(identity: str, config: StackConfig, disk: Path) -> float:
    async with httpx.AsyncClient(timeout=120) as http:
        from generator.bench.stack import _login

        token, urls = await _login(http, identity, config)
        h = {"X-Auth-Token": token}
        image = await http.post(
            f"{urls['image']}/v2/images",
            json={"name": "bench-guest", "disk_format": "raw", "container_format": "bare"},
            headers=h,
        )
        image.raise_for_status()
        image_id = image.json()["id"]
        upload = await http.put(
            f"{urls['image']}/v2/images/{image_id}/file",
            content=disk.read_bytes(),
            headers={**h, "Content-Type": "application/octet-stream"},
        )
        upload.raise_for_status()
        nets = (await http.get(f"{urls['network']}/v2.0/networks?name=private", headers=h)).json()
        body = {
            "server": {
                "name": "bench-guest",
                "imageRef": image_id,
                "flavorRef": "1",
                "networks": [{"uuid": nets["networks"][0]["id"]}],
            }
        }
        started = time.perf_counter()
        resp = await http.post(f"{urls['compute']}/servers", json=body, headers=h)
        resp.raise_for_status()
        sid = resp.json()["server"]["id"]
        try:
            while time.perf_counter() - started < MARKER_TIMEOUT_S:
                got = await http.post(
                    f"{urls['compute']}/servers/{sid}/action",
                    json={"os-getConsoleOutput": {}},
                    headers=h,
                )
                if got.status_code == 200 and guestimage.MARKER in got.json()["output"]:
                    return time.perf_counter() - started
                shown = await http.get(f"{urls['compute']}/servers/{sid}", headers=h)
                if shown.status_code == 200 and shown.json()["server"]["status"] == "ERROR":
                    raise RuntimeError(f"the server went to ERROR: {shown.json()['server']}")
                await asyncio.sleep(0.1)
            raise RuntimeError(f"no marker on the console within {MARKER_TIMEOUT_S:g} s")
        finally:
            await http.delete(f"{urls['compute']}/servers/{sid}", headers=h)


def _one(driver: str, disk: Path) -> float:
    info, _, _ = load_generated()
    base = free_port_block(len(info.listening))  # the APIs and the dashboard
    config = StackConfig(base_port=base)
    identity = info.endpoint(info.api_of_type("identity"), config)
    with tempfile.TemporaryDirectory(prefix="specstack-guestbench-") as tmp:
        cmd = [sys.executable, "-m", "generator", "run", "--no-generate", "--data-dir", tmp]
        proc = subprocess.Popen(
            [*cmd, "--port", str(base), "--driver", driver],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ),
        )
        try:
            from generator.bench.stack import _wait_for_line

            _wait_for_line(proc, "serving;")
            assert proc.stdout is not None
            # keep reading, so that the stack never blocks on a full pipe
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return asyncio.run(_boot_to_marker(identity, config, disk))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            uri = os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"
            end_guests(Path(tmp), uri if driver == "libvirt" else None)


def end_guests(data_dir: Path, libvirt_uri: str | None) -> None:
    """End the guests whose files are in data_dir, which outlive their stack by design:
    the libvirt domains at `libvirt_uri` (None: none looked for) destroyed and undefined,
    then every QEMU process killed and its QMP socket removed."""
    if libvirt_uri is not None and importlib.util.find_spec("libvirt") is not None:
        _remove_domains(str(data_dir), libvirt_uri)
    needle = str(data_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and any(needle in a for a in argv):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
            qmp = socket_in_argv(argv)
            if qmp is not None:
                qmp.unlink(missing_ok=True)


def _remove_domains(needle: str, uri: str) -> None:
    import libvirt

    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return
    try:
        for dom in conn.listAllDomains(0):
            try:
                ours = needle in dom.XMLDesc(0)
            except libvirt.libvirtError:
                continue  # gone meanwhile
            if not ours:
                continue
            # each on its own: a domain that stopped just now refuses destroy, not undefine
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
    finally:
        conn.close()


def guest_figures(note: Callable[[str], None]) -> dict[str, float]:
    figures: dict[str, float] = {}
    absent = {d: _absent(d) for d in DRIVERS}
    if all(absent.values()):
        for d, why in absent.items():
            note(f"guest_boot_s_{d} skipped: {why}")
        return figures
    with tempfile.TemporaryDirectory(prefix="specstack-guest-") as tmp:
        try:
            image = guestimage.build(tmp)
        except guestimage.GuestImageError as exc:
            note(f"guest figures skipped: the guest image could not be built: {exc}")
            return figures
        for driver in DRIVERS:
            why = absent[driver]
            if why:
                note(f"guest_boot_s_{driver} skipped: {why}")
                continue
            try:
                figures[f"guest_boot_s_{driver}"] = round(_one(driver, image.disk), 2)
            except Exception as exc:  # a figure lost is reported, the others still measured
                note(f"guest_boot_s_{driver} not measured: {exc}")
    return figures


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> dict[str, Any]:  # pragma: no cover - manual use
    return dict(guest_figures(_stderr))


if __name__ == "__main__":  # pragma: no cover - manual use
    print(main())
