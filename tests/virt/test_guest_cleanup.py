"""Ending guests without their driver (a test's or the bench's cleanup after the stack
stopped): the QEMU process is killed and the QMP socket it named is removed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from generator.bench.guest import end_guests
from specstack_runtime.virt.qemu import socket_in_argv


def test_the_qmp_socket_is_read_from_the_command_line() -> None:
    argv = [b"qemu-system-x86_64", b"-name", b"guest", b"-qmp"]
    assert socket_in_argv(argv) is None
    argv.append(b"unix:/tmp/specstack-qmp-0/ab12.sock,server=on,wait=off")
    assert socket_in_argv([*argv, b"-nographic"]) == Path("/tmp/specstack-qmp-0/ab12.sock")
    assert socket_in_argv([b"qemu-system-x86_64", b"-qmp", b"tcp:127.0.0.1:4444"]) is None


def test_a_guest_of_the_data_directory_is_killed_and_its_socket_removed(tmp_path: Path) -> None:
    data_dir, other_dir = tmp_path / "data", tmp_path / "other"
    qemu = tmp_path / "qemu-system-x86_64"  # a stand-in process QEMU's name
    qemu.symlink_to(sys.executable)

    def guest(directory: Path) -> tuple[subprocess.Popen[bytes], Path]:
        directory.mkdir()
        sock = directory / "qmp.sock"
        sock.touch()
        qmp = f"unix:{sock},server=on,wait=off"
        disk = f"file={directory / 'disk'},format=qcow2"
        code = "import time; time.sleep(60)"
        return subprocess.Popen([str(qemu), "-c", code, "-qmp", qmp, "-drive", disk]), sock

    ours, our_sock = guest(data_dir)
    theirs, their_sock = guest(other_dir)
    try:
        end_guests(data_dir, None)
        assert ours.wait(timeout=10) == -9
        assert not our_sock.exists()
        assert theirs.poll() is None and their_sock.exists()  # another stack's: untouched
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()


def test_a_confirmed_move_removes_the_kept_guests_socket_unless_the_guest_uses_it(
    tmp_path: Path,
) -> None:
    """The source's kept guest (`<uuid>_resize`) is stopped; confirming the move removes
    its QMP socket, except when the guest that arrived on the same host (a resize to the
    same host) has the same socket path: the running guest's socket stays."""
    import asyncio

    from specstack_runtime.virt.qemu import QemuHypervisor

    driver = QemuHypervisor(tmp_path / "qemu.json", hostname="compute-1")
    try:
        for uuid, shared in (("a" * 32, True), ("b" * 32, False)):
            kept_sock, guest_sock = tmp_path / f"{uuid}-kept.sock", tmp_path / f"{uuid}.sock"
            kept_sock.touch()
            guest_sock.touch()
            (driver.guests_dir / f"{uuid}_resize").mkdir(parents=True)
            driver.guests[f"{uuid}_resize"] = {"uuid": uuid, "qmp": str(kept_sock)}
            driver.guests[uuid] = {"uuid": uuid, "qmp": str(kept_sock if shared else guest_sock)}
            asyncio.run(driver.confirm_migration({"uuid": uuid, "name": uuid}))
            assert set(driver.guests) == {"a" * 32} | {uuid}
            assert not (driver.guests_dir / f"{uuid}_resize").exists()
            assert kept_sock.exists() is shared  # the running guest's: kept
            assert guest_sock.exists()
    finally:
        driver.close()


def test_a_driver_contract_world_confirms_the_move_its_test_left_open(tmp_path: Path) -> None:
    """The contract test of `migrate_disk_and_power_off` ends with the guest kept aside
    (stopped) on its host; closing its world confirms the move, then destroys: nothing of
    the guest is left, its QEMU's socket (outside the test's directory) included."""
    import asyncio

    from generated.drivers import DRIVERS
    from specstack_conformance.drivers import open_world, variants
    from tests.guest.conftest import require_qemu

    require_qemu()
    (variant,) = variants("qemu", ["qemu-system-x86", "qemu.qmp"])
    world = open_world(variant, DRIVERS["qemu"], tmp_path)

    async def scenario() -> list[Path]:
        await world.prepare("migrate_disk_and_power_off", ["instance", "dest"])
        await world.adapter.migrate_disk_and_power_off(instance=world.arg("instance"), dest="x")
        sockets = [Path(guest["qmp"]) for guest in world.adapter.impl.guests.values()]
        await world.close()
        return sockets

    sockets = asyncio.run(scenario())
    assert len(sockets) == 1 and sockets[0].parent.name.startswith("specstack-qmp-")
    assert not sockets[0].exists()
    assert world.adapter.impl.guests == {}
