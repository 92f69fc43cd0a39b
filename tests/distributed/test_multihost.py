"""One distributed stack on three "hosts" of this machine: each a `specstack run --nodes`
of its own, on its own loopback address, with its own data directory and config file;
they share only the machine's RabbitMQ and PostgreSQL (and the trace store on it).

host A 127.0.0.2: controller, network, storage; host B 127.0.0.3: compute-1, compute-2;
host C 127.0.0.4: compute-3. The demo boots through the 15 steps of boot-vm, the merged
trace shows both hosts' steps; host B is killed (every process, SIGKILL), its computes go
down in `compute service list`, new boots land on host C, then host B comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.config import StackConfig, load_config

from ..wire.conftest import REPO, Stack, stop_stack, wait_until_serving
from .conftest import Cloud

pytestmark = pytest.mark.skipif(
    os.environ.get("SPECSTACK_TEST_MODE") != "distributed",
    reason="a distributed stack on three hosts (SPECSTACK_TEST_MODE=distributed)",
)

HOSTS = {
    "a": ("127.0.0.2", "controller,network,storage"),
    "b": ("127.0.0.3", "compute-1..compute-2"),
    "c": ("127.0.0.4", "compute-3"),
}
NODE_ADDRESSES = {
    "controller": "127.0.0.2",
    "network": "127.0.0.2",
    "storage": "127.0.0.2",
    "compute-1": "127.0.0.3",
    "compute-2": "127.0.0.3",
    "compute-3": "127.0.0.4",
}
DOWN_TIMEOUT_S = 120.0
T0 = time.monotonic()  # the spec's service_down_time_s (60) and a report interval


@dataclass
class Host:
    name: str
    address: str
    nodes: str
    data_dir: Path
    config_file: Path
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.launch()
        self.wait()

    def wait(self) -> None:
        assert self.process is not None
        self.output = wait_until_serving(self.process)
        self.output.append(f"--- serving at {time.monotonic() - T0:.1f} s\n")

    def launch(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "generator",
                "run",
                "--no-generate",
                "--mode",
                "distributed",
                "--nodes",
                self.nodes,
                "--config",
                str(self.config_file),
                "--data-dir",
                str(self.data_dir),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
        )

    def pids(self) -> list[int]:
        """The host's supervisor and every process it runs."""
        assert self.process is not None
        status = json.loads((self.data_dir / "run" / "status.json").read_text())
        return [self.process.pid] + [p["pid"] for p in status["processes"] if p["pid"]]

    def kill(self) -> list[int]:
        """The host goes away at once: SIGKILL to all its processes, nothing stops cleanly."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=30)
        for pid in pids[1:]:  # not our children: gone once /proc no longer has them
            deadline = time.monotonic() + 30
            while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
                assert time.monotonic() < deadline, f"pid {pid} survived SIGKILL"
                time.sleep(0.1)
        return pids

    def stop(self) -> None:
        if self.process is not None:
            stop_stack(self.process, timeout_s=60)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def _toml(settings: dict[str, Any]) -> str:
    lines = []
    tables = []
    for key, value in settings.items():
        if isinstance(value, dict):
            tables.append(f"[{key}]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in value.items()))
        elif isinstance(value, int):
            lines.append(f"{key} = {value}\n")
        else:
            lines.append(f'{key} = "{value}"\n')
    return "".join(lines) + "\n".join(tables)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Host]]:
    from specstack_runtime.supervisor import (
        drop_stack_resources,
        free_port_block_outside_ephemeral,
    )

    root = tmp_path_factory.mktemp("multihost")
    shared = {
        "stack_name": f"mh_{secrets.token_hex(5)}",
        "service_password": secrets.token_urlsafe(18),
        "computes": 3,
        "node_processes": 1,  # a process per component per host: fewer on 2 cores
        "base_port": free_port_block_outside_ephemeral(8, host="127.0.0.2"),
    }
    out: dict[str, Host] = {}
    for name, (address, nodes) in HOSTS.items():
        data_dir = root / f"host-{name}"
        data_dir.mkdir()
        config_file = root / f"host-{name}.toml"
        config_file.write_text(
            _toml({**shared, "host_address": address, "node_addresses": NODE_ADDRESSES})
        )
        out[name] = Host(name, address, nodes, data_dir, config_file)
    try:
        out["a"].start()  # the identity API first: the others log in to it
        out["b"].launch()
        out["c"].launch()
        out["b"].wait()
        out["c"].wait()
        yield out
    finally:
        for host in out.values():  # Ctrl-C to every host at once, then wait for each
            if host.process is not None and host.process.poll() is None:
                host.process.send_signal(signal.SIGINT)
        for host in out.values():
            host.stop()
        drop_stack_resources(host_config(out["a"]))


def host_config(host: Host) -> StackConfig:
    config = load_config(host.config_file, data_dir=host.data_dir, mode="distributed", environ={})
    config.ensure_secrets()
    return config.for_mode()


@dataclass
class HostStack(Stack):
    """The stack as a client sees it through the identity API on `address`."""

    address: str = "127.0.0.1"

    @property
    def identity_url(self) -> str:
        return f"http://{self.address}:{self.port}/v3"


def admin_stack(host: Host) -> HostStack:
    port = host_config(host).base_port
    assert port is not None
    clouds = host.data_dir / "clouds.yaml"
    return HostStack(port=port, data_dir=host.data_dir, clouds=clouds, address=host.address)


def admin_cloud(host: Host) -> Cloud:
    return Cloud.login(admin_stack(host), "admin", "admin", "admin")


def compute_services(cloud: Cloud) -> dict[str, str]:
    """host -> state of nova-compute in the os-services listing."""
    services = cloud.get("compute", "/os-services")["services"]
    return {s["host"]: s["state"] for s in services if s["binary"] == "nova-compute"}


def wait_services(cloud: Cloud, want: dict[str, str]) -> dict[str, str]:
    deadline = time.monotonic() + DOWN_TIMEOUT_S
    while True:
        seen = compute_services(cloud)
        if all(seen.get(h) == s for h, s in want.items()) or time.monotonic() > deadline:
            return seen
        time.sleep(1.0)


def boot(cloud: Cloud, name: str) -> dict[str, Any]:
    return cloud.wait_settled(cloud.post_server(cloud.boot_body(name)))


def demo_boot(host: Host) -> tuple[str, str]:
    """The demo, as `specstack run` runs it, from a client of host A: seed, boot-vm."""
    from generator.commands.run import client_demo
    from specstack_runtime.embedded import load_generated
    from specstack_runtime.trace import TraceRecorder

    config = host_config(host)
    info, services, _ = load_generated()

    async def go() -> tuple[str, str]:
        recorder = TraceRecorder(None, shared=True, url=config.trace_store_url())
        demo = client_demo(info, config, services, recorder)
        try:
            ids = await demo.seed()
            flow_id, server_id, server = await demo.boot(ids, "multihost-demo")
            assert server["status"] == "ACTIVE", server
            return flow_id, server_id
        finally:
            recorder.flush()
            recorder.close()
            await demo.clients.aclose()

    return asyncio.run(go())


def test_three_hosts(hosts: dict[str, Host]) -> None:
    a, b, c = hosts["a"], hosts["b"], hosts["c"]
    # each host writes in its own directory only; clouds.yaml where the identity API runs
    assert (a.data_dir / "clouds.yaml").is_file()
    assert not (b.data_dir / "clouds.yaml").exists() and not (c.data_dir / "clouds.yaml").exists()
    for host in (a, b, c):
        assert not (host.data_dir / "trace.sqlite").exists()
        assert f"distributed stack on {host.address}" in "".join(host.output)

    # the catalog places each API on its node's host
    admin = admin_cloud(a)
    try:
        assert {u.split("/")[2].split(":")[0] for u in admin.urls.values()} == {"127.0.0.2"}

        # the 15 steps of boot-vm, across hosts, in one trace
        flow_id, server_id = demo_boot(a)
        got = subprocess.run(
            [
                sys.executable,
                "-m",
                "generator",
                "trace",
                flow_id,
                "--format",
                "json",
                "--data-dir",
                str(a.data_dir),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert got.returncode == 0, got.stderr
        events = json.loads(got.stdout)["events"]
        steps = {e["step"].split(".")[0] for e in events if e["status"] == "ok"}
        assert steps >= {str(i) for i in range(1, 16)}, sorted(steps)
        demo_host = admin.server(server_id)["OS-EXT-SRV-ATTR:host"]
        event_hosts = {e["host"] for e in events}
        assert "controller" in event_hosts and demo_host in event_hosts, event_hosts
        # files stay on the host that owns them: the image cache on the compute host,
        # the objects behind swift-proxy on the storage node's host
        compute_dir = c.data_dir if demo_host == "compute-3" else b.data_dir
        assert any((compute_dir / "image-cache" / demo_host).iterdir())
        assert (a.data_dir / "swift").is_dir()
        for host in (a, b, c):
            if host.data_dir != compute_dir:
                assert not (host.data_dir / "image-cache").exists()
        assert not (b.data_dir / "swift").exists() and not (c.data_dir / "swift").exists()

        # servers on every compute host (the RAM weigher spreads them)
        spread = [boot(admin, f"spread-{i}") for i in range(3)]
        placed = {s["OS-EXT-SRV-ATTR:host"] for s in spread} | {demo_host}
        assert all(s["status"] == "ACTIVE" for s in spread), spread
        on_b = [s for s in spread if s["OS-EXT-SRV-ATTR:host"] in ("compute-1", "compute-2")]
        assert on_b and "compute-3" in placed, placed
        assert compute_services(admin) == {h: "up" for h in ("compute-1", "compute-2", "compute-3")}

        # host B goes away: every process killed at once
        b.kill()
        seen = wait_services(admin, {"compute-1": "down", "compute-2": "down"})
        assert seen == {"compute-1": "down", "compute-2": "down", "compute-3": "up"}, seen
        stack = admin_stack(a)
        listed = stack.json("compute", "service", "list", cloud="specstack-admin")
        states = {(r["Host"], r["State"]) for r in listed if r["Binary"] == "nova-compute"}
        assert {("compute-1", "down"), ("compute-2", "down"), ("compute-3", "up")} <= states
        # its servers stay where they are (nova does not move them by itself)
        for s in on_b:
            now = admin.server(s["id"])
            assert now["OS-EXT-SRV-ATTR:host"] == s["OS-EXT-SRV-ATTR:host"]
            assert now["status"] == "ACTIVE"
        # new boots go to the host that is up
        later = [boot(admin, f"after-{i}") for i in range(2)]
        assert [(s["status"], s["OS-EXT-SRV-ATTR:host"]) for s in later] == [
            ("ACTIVE", "compute-3")
        ] * 2, later

        # host B comes back: its computes report again
        b.start()
        seen = wait_services(admin, {"compute-1": "up", "compute-2": "up"})
        assert seen == {h: "up" for h in ("compute-1", "compute-2", "compute-3")}, seen
        for s in on_b:
            assert admin.server(s["id"])["status"] == "ACTIVE"
    finally:
        admin.close()
