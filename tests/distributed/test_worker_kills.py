"""kill -9 of nova-scheduler, then of nova-conductor, each while 30 boots are in flight
(issue 14's fault suite): the supervisor restarts the process, RabbitMQ redelivers what it
had not acknowledged, and every accepted boot ends ACTIVE with one port (or ERROR with a
fault and none); none stays in BUILD, and deleting them all leaves no port behind."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ..wire.conftest import Stack
from .conftest import Cloud
from .test_faults import _pid, _wait_output

BOOTS = 30
KILL_AFTER = 10  # accepted boots before the kill: the rest arrive while it is down
SETTLE_TIMEOUT_S = 300.0


def _ports_by_device(admin: Cloud) -> dict[str, list[str]]:
    """Ports bound to instances: device_id -> port ids."""
    out: dict[str, list[str]] = {}
    for p in admin.get("network", "/v2.0/ports")["ports"]:
        if str(p["device_owner"]).startswith("compute:"):
            out.setdefault(str(p["device_id"]), []).append(str(p["id"]))
    return out


def _live_ids(admin: Cloud) -> set[str]:
    return {s["id"] for s in admin.get("compute", "/servers?all_tenants=1&limit=1000")["servers"]}


def _boot_while_killing(stack: Stack, demo: Cloud, component: str, name: str) -> list[str]:
    pid = _pid(stack, component, "controller")
    assert pid is not None, f"{component} has no ready file"
    body = demo.boot_body(name, flavor="1")
    accepted = threading.Semaphore(0)

    def post(i: int) -> str:
        sid = demo.post_server({"server": {**body["server"], "name": f"{name}-{i}"}})
        accepted.release()
        return sid

    def kill() -> None:
        for _ in range(KILL_AFTER):
            accepted.acquire()
        os.kill(pid, signal.SIGKILL)

    with ThreadPoolExecutor(max_workers=KILL_AFTER + 1) as pool:
        killed = pool.submit(kill)
        ids = list(pool.map(post, range(BOOTS)))
        killed.result()
    _wait_output(stack, f"{component}.controller (pid {pid}) exited with signal 9")
    _wait_output(stack, f"restarting {component}.controller")
    return ids


@pytest.mark.parametrize("component", ["nova-scheduler", "nova-conductor"])
def test_a_worker_killed_with_30_boots_in_flight_loses_none_and_leaks_no_port(
    dstack: Stack, admin: Cloud, demo: Cloud, component: str
) -> None:
    ids = _boot_while_killing(dstack, demo, component, f"kill-{component}")
    assert len(set(ids)) == BOOTS  # every boot was accepted (202), the APIs kept serving
    settled = {sid: demo.wait_settled(sid, timeout=SETTLE_TIMEOUT_S) for sid in ids}
    counts = Counter(s["status"] for s in settled.values())
    print(f"{component} killed after {KILL_AFTER} of {BOOTS} boots: {dict(counts)}")
    assert set(counts) <= {"ACTIVE", "ERROR"}, counts
    assert sum(counts.values()) == BOOTS
    faults = {sid: s.get("fault") for sid, s in settled.items() if s["status"] == "ERROR"}
    assert all(f and f.get("message") for f in faults.values()), faults

    ports = _ports_by_device(admin)
    active = {sid for sid, s in settled.items() if s["status"] == "ACTIVE"}
    assert {sid: len(ports.get(sid, [])) for sid in ids} == {
        sid: 1 if sid in active else 0 for sid in ids
    }
    assert set(ports) <= _live_ids(admin)  # no port bound to a server that is gone

    for sid in ids:
        resp = demo.http.delete(
            f"{demo.urls['compute']}/servers/{sid}", headers={"X-Auth-Token": demo.token}
        )
        assert resp.status_code == 204, resp.text
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while set(ids) & _live_ids(admin):
        assert time.monotonic() < deadline, f"not deleted: {set(ids) & _live_ids(admin)}"
        time.sleep(0.5)
    left: dict[str, Any] = {sid: p for sid, p in _ports_by_device(admin).items() if sid in ids}
    assert left == {}
