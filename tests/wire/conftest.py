"""A running stack (`specstack run`, kept serving) and the real `openstack` CLI pointed at it.

The stack runs in the mode that SPECSTACK_TEST_MODE names: `embedded` (the default)
or `distributed` (a process per component per node, RabbitMQ, PostgreSQL, with
DISTRIBUTED_COMPUTES compute nodes). The same tests run against either.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from specstack_conformance.harness import free_port_block

from ..conftest import REPO

START_TIMEOUT_S = 180.0
CLI_TIMEOUT_S = 180.0
#: how long a test's own raw httpx call waits (httpx's default, 5 s, timed out a password
#: login in a CI run whose three lanes loaded the machine; the clients wait longer too)
HTTP_TIMEOUT_S = 60.0


@pytest.fixture(autouse=True)
def _patient_raw_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's module functions wait `HTTP_TIMEOUT_S` unless a call says otherwise."""
    for name in ("request", "get", "head", "post", "put", "patch", "delete"):
        call = getattr(httpx, name)
        monkeypatch.setattr(httpx, name, functools.partial(call, timeout=HTTP_TIMEOUT_S))


MODE_ENV = "SPECSTACK_TEST_MODE"
DISTRIBUTED_COMPUTES = 3
#: `openstack server create` of the demo image's tiny server on the private network
SERVER_CREATE = ("server", "create", "--image", "demo-image", "--flavor", "m1.tiny",
                 "--network", "private")  # fmt: skip


def stack_mode() -> str:
    mode = os.environ.get(MODE_ENV, "embedded")
    if mode not in ("embedded", "distributed"):
        pytest.fail(f"{MODE_ENV}={mode!r}: expected embedded or distributed")
    return mode


def openstack_executable() -> str:
    """The `openstack` of this interpreter's environment (the nox venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "openstack"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("openstack")
    if found is None:
        pytest.fail(
            "the openstack CLI is not installed: `pip install -e .[test]` "
            "(python-openstackclient and openstacksdk are in the test extra)"
        )
    return found


class CliError(AssertionError):
    pass


@dataclass
class Stack:
    """A stack serving on `port`.. with its clouds.yaml, and the CLI to talk to it."""

    port: int
    data_dir: Path
    clouds: Path
    output: list[str] = field(default_factory=list)
    exe: str = field(default_factory=openstack_executable)
    mode: str = "embedded"
    process: subprocess.Popen[str] | None = None

    @property
    def identity_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    def env(self, cloud: str = "specstack") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(OS_CLIENT_CONFIG_FILE=str(self.clouds), OS_CLOUD=cloud, COLUMNS="200")
        return env

    def run(
        self, *args: str, cloud: str = "specstack", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.exe, *args],
            env=self.env(cloud),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        if check and proc.returncode != 0:
            raise CliError(
                f"openstack {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout}\n{proc.stderr}\n--- stack output (tail) ---\n"
                + "".join(self.output[-40:])
            )
        return proc

    def json(self, *args: str, cloud: str = "specstack") -> Any:
        """`openstack ARGS -f json`, parsed."""
        return json.loads(self.run(*args, "-f", "json", cloud=cloud).stdout)

    def wait_for(
        self, kind: str, name: str, column: str, value: str, timeout: float = 60.0
    ) -> dict[str, Any]:
        """`openstack KIND show NAME` until COLUMN is VALUE."""
        deadline = time.monotonic() + timeout
        while True:
            shown: dict[str, Any] = self.json(kind, "show", name)
            if shown.get(column) == value or time.monotonic() > deadline:
                return shown
            time.sleep(0.5)


def drop_distributed(data_dir: Path) -> None:
    """Drop what a distributed stack made outside its data directory (databases, vhost)."""
    from specstack_runtime.config import load_config
    from specstack_runtime.supervisor import drop_stack_resources

    if not (data_dir / "secrets.json").exists():
        return
    config = load_config(data_dir=data_dir, mode="distributed", environ={})
    config.ensure_secrets()
    drop_stack_resources(config.for_mode())


@contextlib.contextmanager
def running_stack(
    tmp_path_factory: pytest.TempPathFactory,
    name: str = "wire",
    *,
    mode: str | None = None,
    extra: tuple[str, ...] = (),
    data_dir: Path | None = None,
    drop: bool = True,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """`specstack run --no-generate` on a free block of ports, until the block exits."""
    mode = mode or stack_mode()
    data_dir = data_dir or tmp_path_factory.mktemp(name) / "data"
    if mode == "distributed":
        from specstack_runtime.supervisor import free_port_block_outside_ephemeral

        port = free_port_block_outside_ephemeral(8)
    else:
        port = free_port_block(8)
    args = ["--mode", mode]
    if mode == "distributed":
        args += ["--computes", str(DISTRIBUTED_COMPUTES)]
    proc = run_stack(data_dir, port, *args, *extra, cwd=cwd, env=env)
    try:
        output = wait_until_serving(proc)
        yield Stack(
            port=port,
            data_dir=data_dir,
            clouds=data_dir / "clouds.yaml",
            output=output,
            mode=mode,
            process=proc,
        )
    finally:
        stop_stack(proc, timeout_s=60)
        if mode == "distributed" and drop:
            drop_distributed(data_dir)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def demo_project(stack: Stack) -> str:
    """The demo cloud's project id (from `openstack token issue`)."""
    return str(stack.json("token", "issue")["project_id"])


def names(rows: list[dict[str, Any]]) -> set[str]:
    """The `Name` column of a `-f json` listing."""
    return {str(r["Name"]) for r in rows}


def run_stack(
    data_dir: Path, port: int, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`specstack run --no-generate` on `port` (the first of a free block of 8), its output
    piped for `wait_until_serving`; `env` is added to this process's environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "generator", "run", "--no-generate",
         "--data-dir", str(data_dir), "--port", str(port), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip


def sdk_connection(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An openstacksdk connection to the stack's `specstack` cloud, whatever OS_* this
    process has."""
    import openstack

    for name in [k for k in os.environ if k.startswith("OS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(stack.clouds))
    return openstack.connect(cloud="specstack")


def wait_until_serving(proc: subprocess.Popen[str]) -> list[str]:
    """The stack's output until it says it is serving, and on after (a list that grows).

    Its output is read all the while, so that it never blocks on a full pipe; a stack
    that exits or is not serving within START_TIMEOUT_S fails the test with its output.
    """
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail("the stack did not start in time:\n" + "".join(output))
        if line is None:
            pytest.fail(f"the stack exited ({proc.wait()}):\n" + "".join(output))
        if "serving;" in line:
            return output


def stop_stack(proc: subprocess.Popen[str], *, timeout_s: float) -> None:
    """Ctrl-C, as a user stops it; killed if it has not ended within `timeout_s`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def endpoint(catalog: list[dict[str, Any]], service_type: str) -> str:
    """The public URL of a service in `openstack catalog list`'s rows."""
    (entry,) = [e for e in catalog if e["Type"] == service_type]
    (public,) = [e for e in entry["Endpoints"] if e["interface"] == "public"]
    return str(public["url"])
