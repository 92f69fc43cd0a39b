"""OSProfiler round trips through Redis: a stack with `osprofiler_connection` writes its
steps as trace points, OpenStack's own `osprofiler trace show --json` reads them back, and
`specstack diagram --diff` checks that file against the deck; the real `openstack` CLI's
`--os-profile KEY` puts its boot in the client's trace."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from specstack_runtime.ir import IR
from specstack_runtime.tracepoints import TraceMap, events_of_report

from ..conftest import REPO
from .conftest import SERVER_CREATE, Stack, running_stack, stack_mode

# the Redis database these tests write to, emptied of their keys after: one per mode, as
# CI runs the embedded and the distributed suite side by side
DB = 7 if stack_mode() == "embedded" else 8
COLLECTOR = f"redis://127.0.0.1:6379/{DB}"
KEY = "wire-hmac-key"


@pytest.fixture(scope="module")
def collector() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(COLLECTOR)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"no Redis at 127.0.0.1:6379 ({exc}): apt install redis-server")
    yield client
    for key in client.scan_iter("osprofiler*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="module")
def traced_stack(
    tmp_path_factory: pytest.TempPathFactory, collector: redis.Redis
) -> Iterator[Stack]:
    env = {
        "SPECSTACK_OSPROFILER_CONNECTION": COLLECTOR,
        "SPECSTACK_OSPROFILER_HMAC_KEYS": KEY,
    }
    with running_stack(tmp_path_factory, "osprofiler", env=env) as stack:
        yield stack


def trace_show(base_id: str, out: Path) -> dict[str, Any]:
    """OpenStack's own reader of the collector: `osprofiler trace show --json`."""
    exe = Path(sys.executable).parent / "osprofiler"
    got = subprocess.run(
        [str(exe), "trace", "show", "--json", "--connection-string", COLLECTOR, base_id],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out.write_text(got.stdout)
    report: dict[str, Any] = json.loads(got.stdout)
    return report


def diff(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", "diagram", "boot-vm", "--diff", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_demo_boot_read_back_by_osprofiler_matches_the_deck(
    traced_stack: Stack, tmp_path: Path
) -> None:
    said = next(line for line in traced_stack.output if line.startswith("osprofiler:"))
    base_id = said.split()[-1]
    assert f"--connection-string {COLLECTOR} {base_id}" in said
    report = trace_show(base_id, tmp_path / "demo.json")
    names = {str(c["info"]["name"]) for c in report["children"]}
    assert names == {"wsgi", "rpc", "db", "driver"}
    checked = diff(tmp_path / "demo.json")
    assert checked.returncode == 0, checked.stderr
    assert "matches the declared sequence: every step, in order" in checked.stderr


def test_the_openstack_clis_profiled_boot_joins_the_clients_trace(
    traced_stack: Stack, tmp_path: Path
) -> None:
    made = traced_stack.run("--os-profile", KEY, *SERVER_CREATE, "--wait", "profiled-vm")
    trace_id = re.search(r"Trace ID: ([0-9a-f-]{36})", made.stdout + made.stderr)
    assert trace_id is not None, made.stdout + made.stderr
    report = trace_show(trace_id.group(1), tmp_path / "cli.json")
    ir = IR.model_validate_json((REPO / "generated" / "ir.json").read_bytes())
    boot = next(s for s in ir.sequences if s.name == "boot-vm")
    events = events_of_report(TraceMap(ir), boot, report)
    shown = {e["step"] for e in events}
    # from nova-api's token check on: every step the stack took for the CLI's request
    assert {"4", "4.1", "5", "6", "7", "7.1", "8", "8.1", "9", "10", "11", "12", "13", "14"} <= (
        shown
    )
    assert {e["flow_id"] for e in events} == {trace_id.group(1)}
    checked = diff(tmp_path / "cli.json")
    assert "out of order" not in checked.stderr, checked.stderr


def test_a_trace_header_signed_with_another_key_is_not_followed(
    traced_stack: Stack, collector: redis.Redis
) -> None:
    before = set(collector.scan_iter("osprofiler_opt:*"))
    made = traced_stack.run(
        "--os-profile",
        "not-the-key",
        *("server", "create", "--image", "demo-image", "--flavor", "m1.tiny"),
        *("--network", "private", "--wait", "unsigned-vm"),
    )
    trace_id = re.search(r"Trace ID: ([0-9a-f-]{36})", made.stdout + made.stderr)
    assert trace_id is not None
    assert collector.exists(f"osprofiler_opt:{trace_id.group(1)}") == 0
    # the boot was traced all the same, under a base id of the stack's own
    assert len(set(collector.scan_iter("osprofiler_opt:*")) - before) == 1
