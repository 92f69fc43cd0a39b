"""`specstack run` signalled while a client holds a request open: it stops within its grace
(`stop_grace_s`) instead of waiting for that request for ever (issue 14: a stack of many
hosts once ignored SIGTERM for more than 60 s)."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from specstack_conformance.harness import free_port_block

from ..wire.conftest import run_stack, wait_until_serving

GRACE_S = 3
HOSTS = 200
#: How long the test waits for the exit before it calls the stack hung (not a measure).
HUNG_S = 120


def _hold_a_request(port: int) -> socket.socket:
    """A token request whose body never comes: uvicorn waits for its answer at shutdown."""
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(
        b"POST /v3/auth/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    return conn


def test_a_signalled_stack_of_many_hosts_stops_within_its_grace(tmp_path: Path) -> None:
    port = free_port_block(8)
    grace = {"SPECSTACK_STOP_GRACE_S": str(GRACE_S)}
    proc = run_stack(tmp_path / "data", port, "--computes", str(HOSTS), env=grace)
    held = None
    try:
        output = wait_until_serving(proc)
        held = _hold_a_request(port)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=HUNG_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "the stack did not exit after SIGTERM:\n" + "".join(output[-20:])
            ) from None
        text = "".join(output)
        assert code == 0, text[-3000:]
        assert "stopping" in text and "stopped" in text.split("stopping")[-1], text[-3000:]
    finally:
        if held is not None:
            held.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
