"""kill -9 of the embedded stack right after 50 accepted boots, then a restart: every
build ends (ACTIVE with its guest, or ERROR with a fault), no port is left bound to a
server that is gone, the agents know every port, and deleting the servers releases all
their ports (issue 14, item 5)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.virt.fake import FakeHypervisor

from ..distributed.conftest import Cloud
from ..wire.conftest import Stack, running_stack

BOOTS = 50
SETTLE_TIMEOUT_S = 240.0


def _servers(cloud: Cloud, every_project: bool = True) -> list[dict[str, Any]]:
    query = "?all_tenants=1&limit=1000" if every_project else "?limit=1000"
    return list(cloud.get("compute", f"/servers/detail{query}")["servers"])


def _ports(cloud: Cloud) -> list[dict[str, Any]]:
    return list(cloud.get("network", "/v2.0/ports")["ports"])


def _guests(data_dir: Path) -> set[str]:
    """The guests the fake hypervisors hold (their snapshots and journals, as a restarted
    host reads them)."""
    out: set[str] = set()
    hyp = data_dir / "hypervisors"
    for path in {
        p.with_name(p.name.split(".")[0] + ".json")
        for p in hyp.iterdir()
        if not p.name.startswith(".")
    }:
        out |= set(FakeHypervisor(path).guests)
    return out


def _agents_ports(data_dir: Path) -> tuple[set[str], set[str]]:
    """(ports the DHCP agent serves, ports the L2 agents have wired)."""
    dhcp: set[str] = set()
    for path in (data_dir / "dhcp").glob("*/ports.json"):
        dhcp |= set(json.loads(path.read_text()))
    wired: set[str] = set()
    for path in (data_dir / "l2").glob("*.json"):
        wired |= set(json.loads(path.read_text()).get("ports") or {})
    return dhcp, wired


def _settled(admin: Cloud, ids: set[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        mine = [s for s in _servers(admin) if s["id"] in ids]
        if all(s["status"] != "BUILD" for s in mine) or time.monotonic() > deadline:
            return mine
        time.sleep(0.5)


def _eventually(check: Any, what: str, timeout: float = 30.0) -> None:
    """Agents' files are written just behind their messages: wait for them (bounded)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_kill_9_after_50_boots_then_restart_leaves_nothing_stuck_or_orphaned(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir = tmp_path_factory.mktemp("crash") / "data"
    with running_stack(tmp_path_factory, "crash", mode="embedded", data_dir=data_dir) as stack:
        demo = Cloud.login(stack, "demo", "demo", "demo")
        body = demo.boot_body("crash", flavor="1")
        with ThreadPoolExecutor(max_workers=10) as pool:
            ids = set(
                pool.map(
                    lambda i: demo.post_server(
                        {"server": {**body["server"], "name": f"crash-{i}"}}
                    ),
                    range(BOOTS),
                )
            )
        # some built, most still building: then the whole stack dies at once
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while not any(s["status"] == "ACTIVE" for s in _servers(demo, False)):
            assert time.monotonic() < deadline, "no boot became ACTIVE"
            time.sleep(0.05)
        _kill_9(stack)
        demo.close()
    assert len(ids) == BOOTS

    with running_stack(tmp_path_factory, "crash", mode="embedded", data_dir=data_dir) as stack:
        admin = Cloud.login(stack, "admin", "admin", "admin")
        mine = _settled(admin, ids)
        assert len(mine) == BOOTS
        by_status: dict[str, list[dict[str, Any]]] = {}
        for s in mine:
            by_status.setdefault(s["status"], []).append(s)
        assert set(by_status) <= {"ACTIVE", "ERROR"}, {k: len(v) for k, v in by_status.items()}
        assert all(s["fault"]["message"] for s in by_status.get("ERROR", []))

        live = {s["id"]: s for s in _servers(admin)}
        active = {i for i, s in live.items() if s["status"] == "ACTIVE"}
        # every ACTIVE server has its guest, and no guest is left without an ACTIVE server
        assert _guests(data_dir) == active
        # no port bound to a server that is not there; every ACTIVE server has its port
        bound = {
            p["id"]: p["device_id"]
            for p in _ports(admin)
            if p["device_owner"].startswith("compute:")
        }
        assert set(bound.values()) <= set(live)
        assert active <= set(bound.values())
        # the agents know every port neutron has bound (resynced after the crash)
        _eventually(
            lambda: (
                set(bound) <= _agents_ports(data_dir)[0]
                and set(bound) <= _agents_ports(data_dir)[1]
            ),
            f"agents miss ports: {set(bound) - _agents_ports(data_dir)[0]} (DHCP), "
            f"{set(bound) - _agents_ports(data_dir)[1]} (L2)",
        )

        # deleting them all releases their ports, built or not
        for server_id in ids:
            resp = admin.http.delete(
                f"{admin.urls['compute']}/servers/{server_id}",
                headers={"X-Auth-Token": admin.token},
            )
            assert resp.status_code == 204, resp.text
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while ids & {s["id"] for s in _servers(admin)} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not ids & {s["id"] for s in _servers(admin)}
        left = [p for p in _ports(admin) if p["device_id"] in ids]
        assert left == []
        assert not ids & _guests(data_dir)
        admin.close()


def _kill_9(stack: Stack) -> None:
    assert stack.process is not None
    stack.process.kill()  # SIGKILL: nothing flushed, nothing stopped cleanly
    stack.process.wait(timeout=30)
