"""`specstack run` as a user runs it: the demo boot through every step, state kept on restart."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from generator.pipeline.load import load_spec
from specstack_conformance.harness import free_port_block

from ..conftest import REPO

STEP_LINE = re.compile(r"^\[\s*(\d+)/15\] (.+?)\s{2,}(\S+) -> (\S+)\s+(\S+)\s+([\d.]+) ms", re.M)


def run_once(
    data_dir: Path,
    port: int,
    *extra: str,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """`specstack run --once` on `port` (the first of a free block of 8), run to its end."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "generator",
            "run",
            "--once",
            "--no-generate",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_run_once_prints_all_fifteen_steps_and_exits_zero(tmp_path: Path) -> None:
    port = free_port_block(8)
    # per-request lines (access, messages, steps) at INFO, as an operator asks for them
    proc = run_once(tmp_path / "data", port, env={"SPECSTACK_REQUEST_LOG_LEVEL": "INFO"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = STEP_LINE.findall(proc.stdout)
    assert [int(s[0]) for s in steps] == list(range(1, 16)), proc.stdout
    assert steps[6][:5] == ("7", "Schedule provisioning", "nova-scheduler", "nova-db", "sql")
    assert "is ACTIVE" in proc.stdout
    clouds = tmp_path / "data" / "clouds.yaml"
    assert f"export OS_CLIENT_CONFIG_FILE={clouds.resolve()}" in proc.stdout
    assert "export OS_CLOUD=specstack" in proc.stdout
    cloud = yaml.safe_load(clouds.read_text())["clouds"]["specstack"]
    assert cloud["auth"]["auth_url"] == f"http://127.0.0.1:{port}/v3"
    assert clouds.stat().st_mode & 0o777 == 0o600  # it holds passwords

    # The flow's global request id is in the log of every service the boot went through.
    flow_id = re.search(r"trace: specstack trace (req-[0-9a-f-]{36})", proc.stdout)
    assert flow_id is not None, proc.stdout
    logs = tmp_path / "data" / "logs"
    for name in _services_in("boot-vm"):
        text = (logs / f"{name}.log").read_text()
        lines = [line for line in text.splitlines() if flow_id[1] in line]
        assert lines, f"{name}.log has no line of flow {flow_id[1]}"
        assert all(f" INFO {name} [req-" in line for line in lines), lines[0]


def _services_in(sequence: str) -> set[str]:
    """The running services (api, worker, agent) a sequence's steps go from or to."""
    components = yaml.safe_load((REPO / "spec" / "components.yaml").read_text())["components"]
    spec, problems = load_spec(REPO / "spec")  # as generate reads it: shared steps in place
    assert problems == []
    seq = next(f.data for f in spec.of_kind("sequence") if f.stem == sequence)

    def walk(node: object) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            found |= {str(node[k]) for k in ("from", "to") if isinstance(node.get(k), str)}
            for value in node.values():
                found |= walk(value)
        elif isinstance(node, list):
            for value in node:
                found |= walk(value)
        return found

    names = walk(seq)
    return {n for n in names if components.get(n, {}).get("kind") in ("api", "worker", "agent")}


SERVER = re.compile(r"^server demo-vm \(([0-9a-f-]{36})\) is ACTIVE$", re.M)


def test_state_survives_a_restart(tmp_path: Path) -> None:
    """The second run finds the first run's data and replaces its demo VM: one VM, one
    volume and one image however often the stack is run."""
    import sqlite3

    port = free_port_block(8)
    first = run_once(tmp_path / "data", port)
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_once(tmp_path / "data", port)
    assert second.returncode == 0, second.stdout + second.stderr
    old, new = SERVER.search(first.stdout), SERVER.search(second.stdout)
    assert old and new and old[1] != new[1], second.stdout
    assert f"deleted the demo VM of the previous run ({old[1]})" in second.stdout
    db = tmp_path / "data" / "db"
    nova = sqlite3.connect(db / "nova-db.sqlite")
    live = "SELECT id, name FROM instances WHERE vm_state != 'deleted'"
    assert nova.execute(live).fetchall() == [(new[1], "demo-vm")]
    volumes = sqlite3.connect(db / "cinder-db.sqlite").execute("SELECT name, status FROM volumes")
    assert volumes.fetchall() == [("demo-volume", "in-use")]
    images = sqlite3.connect(db / "glance-db.sqlite")
    assert images.execute("SELECT count(*) FROM images").fetchone()[0] == 1


def test_two_stacks_side_by_side(tmp_path: Path) -> None:
    a, b = free_port_block(8), None
    b = free_port_block(8)
    while abs(b - a) < 8:
        b = free_port_block(8)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "generator",
                "run",
                "--once",
                "--no-generate",
                "--data-dir",
                str(tmp_path / name),
                "--port",
                str(port),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, port in (("a", a), ("b", b))
    ]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    port = free_port_block(8)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        proc = run_once(tmp_path / "data", port)
    assert proc.returncode == 2
    assert f"port {port}" in proc.stdout and "in use" in proc.stdout


def test_an_unknown_behaviour_stops_the_start_with_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from specstack_runtime.config import StackConfig
    from specstack_runtime.embedded import EmbeddedStack, StackError

    monkeypatch.chdir(REPO)
    stack = EmbeddedStack(StackConfig(data_dir=tmp_path))
    handler = next(h for h in stack.info.ir["handlers"] if h["trigger"] == "createServer")
    handler["behaviour"] = "compute.no_such_thing"
    with pytest.raises(
        StackError, match=r"compute\.no_such_thing \(used by nova-api operation createServer\)"
    ):
        stack.build()
    json.dumps(stack.info.ir)  # the IR is still plain data


def test_driver_options_size_the_hosts_and_the_stacks_own_arguments_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--driver-option fake.memory_mb=700` gives every host of the driver that size instead
    of its topology node's; `hostname` and `state_file` are the stack's, a size must be a
    whole number: each refused by name."""
    import asyncio

    from specstack_runtime.config import StackConfig
    from specstack_runtime.embedded import EmbeddedStack, StackError

    monkeypatch.chdir(REPO)
    options = {"fake": {"memory_mb": "700", "vcpus": "3"}}
    stack = EmbeddedStack(StackConfig(data_dir=tmp_path, computes=2, driver_options=options))
    stack.build()
    try:
        for host in ("compute-1", "compute-2"):
            got = asyncio.run(
                stack.runtime_of("nova-compute", host).driver.get_available_resource()
            )
            assert (got["memory_mb"], got["vcpus"], got["local_gb"]) == (700, 3, 200)
            assert got["hypervisor_hostname"] == host
    finally:
        for store in stack.stores.values():
            store.close()
    for bad, error in (
        ({"hostname": "x"}, "driver option fake.hostname is the stack's to set"),
        ({"vcpus": "many"}, "driver option fake.vcpus: 'many' is not a whole number"),
    ):
        config = StackConfig(data_dir=tmp_path / "b", driver_options={"fake": bad})
        with pytest.raises(StackError, match=error):
            EmbeddedStack(config).build()


SIGNAL_AT_READY = """\
import os, signal, sys
from generator.commands import run
from generator.cli import main

class Console(run.Console):
    def print(self, *objects, **kwargs):
        super().print(*objects, **kwargs)
        if objects and str(objects[0]).startswith("serving;"):
            os.kill(os.getpid(), signal.SIGTERM)  # as soon as the line is out

run.Console = Console
sys.exit(main(sys.argv[1:]))
"""


def test_a_signal_as_soon_as_it_serves_stops_the_stack_cleanly(tmp_path: Path) -> None:
    """The handlers are in place before "serving; Ctrl-C stops the stack" is printed."""
    data = tmp_path / "data"
    args = ["run", "--no-generate", "--data-dir", str(data), "--port", str(free_port_block(8))]
    proc = subprocess.run(
        [sys.executable, "-c", SIGNAL_AT_READY, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # it stopped within its grace: "stopped", not the grace timer's message
    assert proc.stdout.rstrip().endswith("serving; Ctrl-C stops the stack\nstopping\nstopped")


def test_a_components_hosts_share_one_token_validator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process's compute hosts validate tokens and hold the service's token once: a boot
    on a host that never booted does not ask keystone for a token of its own."""
    from specstack_runtime.config import StackConfig
    from specstack_runtime.embedded import EmbeddedStack

    monkeypatch.chdir(REPO)
    stack = EmbeddedStack(StackConfig(data_dir=tmp_path, computes=3))
    stack.build()
    try:
        computes = [stack.runtime_of("nova-compute", f"compute-{i}").auth for i in (1, 2, 3)]
        assert computes[0] is not None and all(a is computes[0] for a in computes)
        agents = {id(stack.runtime_of("neutron-l2-agent", f"compute-{i}").auth) for i in (1, 2)}
        assert len(agents) == 1 and id(computes[0]) not in agents
        assert computes[0].service_user == "nova"
    finally:
        for store in stack.stores.values():
            store.close()
