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
