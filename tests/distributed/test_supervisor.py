"""The supervisor's layout comes from the spec's topology; a process that cannot start is
reported with the tail of its log, and nothing is left running."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from specstack_runtime.config import ConfigError, load_config
from specstack_runtime.embedded import load_generated
from specstack_runtime.process import HostsError, expand_hosts, hosts_label
from specstack_runtime.supervisor import (
    Supervisor,
    SupervisorError,
    drop_stack_resources,
    free_port_block_outside_ephemeral,
    layout,
)

from ..conftest import REPO


@pytest.fixture(autouse=True)
def _repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the generated package is imported from the working directory


def test_the_layout_is_the_topology() -> None:
    info, services, _ = load_generated()
    for computes in (1, 3):
        config = load_config(environ={}, computes=computes, mode="distributed")
        procs = layout(info, services, config)
        assert procs[0].component == "keystone"  # the others log in to it
        where = {(p.component, p.host) for p in procs}
        for comp in info.components.values():
            if comp["kind"] in ("api", "worker", "agent"):
                for node in comp["nodes"]:
                    for host in info.node_hosts(node, config):
                        assert (comp["name"], host) in where
        assert len(procs) == len(where)
        assert sum(p.component == "nova-compute" for p in procs) == computes
        web = {c["name"] for c in info.web_clients}  # the dashboard: a process with a port
        assert web == {"dashboard"} and {
            (p.component, p.host) for p in procs if p.component in web
        } == {("dashboard", "controller")}
        assert all(
            (p.port is not None)
            == bool(info.components[p.component].get("api") or p.component in web)
            for p in procs
        )


def test_a_process_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    config = load_config(
        environ={},
        data_dir=tmp_path / "data",
        mode="distributed",
        driver="no-such-driver",
        computes=1,
        base_port=free_port_block_outside_ephemeral(8),
        bus_url="memory://",  # no process here talks to another: no RabbitMQ needed
    )
    config.ensure_secrets()
    config.for_mode()
    said: list[str] = []
    sup = Supervisor(config, None, say=said.append)

    async def attempt() -> str:
        try:
            await sup.start()
        except SupervisorError as exc:
            return str(exc)
        finally:
            await sup.stop()
        return ""

    try:
        message = asyncio.run(attempt())
    finally:
        drop_stack_resources(config)
    assert message.startswith("nova-compute.compute-1 (pid "), message
    assert "exited with code 3 while starting" in message
    assert "unknown driver 'no-such-driver'" in message  # the tail of its log
    assert (config.data_dir / "logs" / "nova-compute.compute-1.log").is_file()
    # the others were still starting: a stop ends their start, none needs SIGKILL
    assert not [line for line in said if "ignored SIGTERM" in line], said
    for m in sup.procs:  # everything it started is stopped
        if m.popen is not None:
            assert m.popen.poll() is not None
            with pytest.raises(ProcessLookupError):
                os.kill(m.popen.pid, 0)


def test_a_process_that_keeps_dying_is_left_down_and_reported_while_the_rest_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restarts after a pause that doubles; after restart_limit restarts in a row the process
    is left down, reported failed with its log (output and status.json); the others run on."""
    config = load_config(
        environ={},
        data_dir=tmp_path / "data",
        mode="distributed",
        bus_url="memory://",
        restart_limit=2,
        restart_backoff_s=0.05,
    )
    said: list[str] = []
    sup = Supervisor(config, None, say=said.append)
    crashing, steady = sup.procs[0], sup.procs[1]
    sup.procs = [crashing, steady]
    commands = {
        crashing.spec: [sys.executable, "-c", "import sys; print('boom'); sys.exit(1)"],
        steady.spec: [sys.executable, "-c", "import time; time.sleep(300)"],
    }
    monkeypatch.setattr(sup, "_argv", lambda spec: commands[spec])

    async def run() -> None:
        for m in sup.procs:
            sup._spawn(m)
        sup._monitor = asyncio.create_task(sup._watch())
        deadline = time.monotonic() + 60
        while not crashing.failed:
            assert time.monotonic() < deadline, said
            await asyncio.sleep(0.05)
        try:
            assert steady.popen is not None and steady.popen.poll() is None  # still running
            assert sup.failure.is_set()
        finally:
            await sup.stop()

    asyncio.run(run())
    name = crashing.spec.name
    assert [line for line in said if line.startswith("restarting")] == [
        f"restarting {name} in 0.05 s (1/2)",
        f"restarting {name} in 0.1 s (2/2)",
    ]
    failed = [line for line in said if "FAILED" in line]
    assert failed == [
        f"[red]{name} FAILED (exited with code 1 after 2 restarts in a row); left down, the rest "
        f"of the stack keeps serving; its log: {crashing.log_path}[/red]"
    ]
    assert crashing.log_path.read_text().count("boom") == 3  # started 3 times, all logged
    status = json.loads((config.data_dir / "run" / "status.json").read_text())["processes"]
    assert [(p["process"], p["state"], p["restarts"], p["log"]) for p in status] == [
        (name, "failed", 2, str(crashing.log_path)),
        (steady.spec.name, "stopped", 0, str(steady.log_path)),
    ]


def test_a_scaled_node_s_hosts_share_a_bounded_number_of_processes() -> None:
    """12 compute hosts, node_processes 2: each compute-node component runs as 2 processes
    of 6 hosts each; the other nodes' components keep one process per host."""
    info, services, _ = load_generated()
    config = load_config(environ={"SPECSTACK_NODE_PROCESSES": "2"}, computes=12, mode="distributed")
    procs = layout(info, services, config)
    compute = [p for p in procs if p.node == "compute"]
    assert {p.component for p in compute} == {"nova-compute", "neutron-l2-agent"}
    for component in ("nova-compute", "neutron-l2-agent"):
        mine = [p for p in compute if p.component == component]
        assert [p.name for p in mine] == [
            f"{component}.compute-1..compute-6",
            f"{component}.compute-7..compute-12",
        ]
        assert [len(p.hosts) for p in mine] == [6, 6]
        served = [h for p in mine for h in p.hosts]
        assert served == [f"compute-{i}" for i in range(1, 13)]
    assert all(len(p.hosts) <= 1 for p in procs if p.node != "compute")
    # 7 hosts in 2 processes: runs of 4 and 3; 1 host per process when there are few
    config = load_config(environ={"SPECSTACK_NODE_PROCESSES": "2"}, computes=7, mode="distributed")
    runs = [p.hosts for p in layout(info, services, config) if p.component == "nova-compute"]
    assert [len(r) for r in runs] == [4, 3]
    default = load_config(environ={}, computes=3, mode="distributed")
    assert [p.name for p in layout(info, services, default) if p.component == "nova-compute"] == [
        f"nova-compute.compute-{i}" for i in range(1, 4)
    ]


def test_host_ranges_on_the_process_command_line() -> None:
    assert expand_hosts("compute-1..compute-3,network") == [
        "compute-1",
        "compute-2",
        "compute-3",
        "network",
    ]
    assert hosts_label(["compute-1", "compute-2", "compute-3", "network", "compute-9"]) == (
        "compute-1..compute-3,network,compute-9"
    )
    for bad, why in (
        ("compute-3..compute-1", "NAME-M..NAME-N with M <= N"),
        ("compute-1..network-2", "NAME-M..NAME-N with M <= N"),
        ("compute-1,compute-1", "a host is named twice"),
        (",", "no host named"),
    ):
        with pytest.raises(HostsError, match=why):
            expand_hosts(bad)
    with pytest.raises(ConfigError, match="node_processes: must be at least 1"):
        load_config(environ={"SPECSTACK_NODE_PROCESSES": "0"}, mode="distributed")
