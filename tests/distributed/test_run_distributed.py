"""`specstack run --mode distributed`: a process per component per node, the demo boot through
all 15 steps with a trace gathered from every process, and all state kept across a restart."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from specstack_runtime.config import load_config
from specstack_runtime.embedded import load_generated
from specstack_runtime.supervisor import free_port_block_outside_ephemeral, layout

from ..conftest import REPO
from ..stack.test_run import run_once
from ..wire.conftest import DISTRIBUTED_COMPUTES, drop_distributed, running_stack

STEP_LINE = re.compile(r"^\[\s*(\d+)/15\] (.+?)\s{2,}(\S+) -> (\S+)\s+(\S+)\s+([\d.]+) ms", re.M)
FLOW = re.compile(r"trace: specstack trace (\S+)")


def _run_once(
    data_dir: Path, port: int, computes: int = DISTRIBUTED_COMPUTES, **env: str
) -> subprocess.CompletedProcess[str]:
    mode = ("--mode", "distributed", "--computes", str(computes))
    return run_once(data_dir, port, *mode, env=env, timeout=300)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"
    drop_distributed(tmp_path / "data")


def test_run_once_boots_through_every_process_and_keeps_state(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The first run: 4 compute hosts served by 2 processes per compute-node component
    (node_processes 2); the second, serving: one process per host (the default)."""
    port = free_port_block_outside_ephemeral(8)
    first = _run_once(data_dir, port, computes=4, SPECSTACK_NODE_PROCESSES="2")
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    steps = STEP_LINE.findall(first.stdout)
    assert [int(s[0]) for s in steps] == list(range(1, 16)), out
    assert steps[6][:5] == ("7", "Schedule provisioning", "nova-scheduler", "nova-db", "sql")
    assert "is ACTIVE" in first.stdout

    # One process (and one log file) per component per node of the layout; the compute
    # hosts' in runs of two
    config = load_config(data_dir=data_dir, computes=4, mode="distributed")
    config.node_processes = 2
    info, services, _ = load_generated()
    procs = layout(info, services, config)
    assert [p.name for p in procs if p.component == "nova-compute"] == [
        "nova-compute.compute-1..compute-2",
        "nova-compute.compute-3..compute-4",
    ]
    logs = sorted(p.name for p in (data_dir / "logs").glob("*.log"))
    assert logs == sorted(f"{p.name}.log" for p in procs)
    assert "is ready" in (data_dir / "logs" / "nova-scheduler.controller.log").read_text()

    flow = FLOW.search(first.stdout)
    assert flow, first.stdout

    # Stop and start the whole stack (serving this time): all state is kept.
    with running_stack(tmp_path_factory, mode="distributed", data_dir=data_dir, drop=False):
        trace = subprocess.run(
            [
                sys.executable,
                "-m",
                "generator",
                "trace",
                flow.group(1),
                "--format",
                "json",
                "--data-dir",
                str(data_dir),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        config.ensure_secrets()
        config.for_mode()
        nova = create_engine(config.database_url("nova-db"))
        glance = create_engine(config.database_url("glance-db"))
        try:
            with nova.connect() as db:
                rows = db.execute(text("SELECT data FROM instances")).all()
                nodes = db.execute(text("SELECT data FROM compute_nodes")).all()
            with glance.connect() as db:
                images = db.execute(text("SELECT count(*) FROM images")).scalar_one()
        finally:
            nova.dispose()
            glance.dispose()
    docs = [json.loads(r[0]) for r in rows]
    # The state is kept (in PostgreSQL): the image, and the first run's server, which the
    # second run deleted (through delete-vm) before booting its own demo VM.
    assert sorted(d["vm_state"] for d in docs) == ["active", "deleted"], docs
    assert {d["name"] for d in docs} == {"demo-vm"}
    assert images == 1
    # every host of the first run registered its compute node (compute-4 from the first)
    hosts = sorted(json.loads(r[0])["host"] for r in nodes)
    assert hosts == [f"compute-{i}" for i in range(1, 5)]

    # The first run's trace (`specstack trace ID`, through the admin-only endpoint of the
    # restarted stack): every step, in order, recorded by separate processes.
    assert trace.returncode == 0, trace.stdout + trace.stderr
    events = json.loads(trace.stdout)["events"]
    main = sorted({int(e["step"]) for e in events if e["step"].isdigit()})
    assert main == list(range(1, 16))
    assert [e["started_at"] for e in events] == sorted(e["started_at"] for e in events)
    by_source = {e["source"]: e["host"] for e in events}
    assert {"nova-api", "nova-scheduler", "nova-compute", "neutron-server"} <= set(by_source)
    assert by_source["nova-compute"].startswith("compute-")
    assert by_source["nova-scheduler"] == "controller"
