"""The supervisor of a distributed stack: one OS process per component per topology node.

The layout comes from the spec: every component instance with code to run (an
API's routes, a worker's or agent's consumers, startup behaviours) on every node
instance the topology places it on (`--computes N` compute nodes). Each runs
`python -m specstack_runtime.process` with its own log file under
`<data-dir>/logs/`. The supervisor prepares what the processes share (the
databases on their server, the RabbitMQ vhost), starts the identity API first
(the others log in to it), waits until each process is ready (its ready file,
and for an API its `/specstack/health`), restarts a process that dies (after a
pause, `restart_backoff_s` doubled at each restart in a row up to
`restart_backoff_max_s`, reporting each death with the tail of its log) and stops
them all with SIGTERM, then SIGKILL after `stop_grace_s`. A process that dies
`restart_limit` times in a row (or with a configuration error) is left down and
reported failed, with its log; the rest of the stack keeps serving. What each
process is doing is in `<data-dir>/run/status.json`, rewritten at every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from specstack_runtime.config import StackConfig
from specstack_runtime.embedded import coded_instances, load_generated, web_instances
from specstack_runtime.ir_deploy import process_name
from specstack_runtime.process import (
    EXIT_CONFIG,
    HostsError,
    expand_hosts,
    hosts_label,
    ready_file,
)
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import Store, TableSpec

log = logging.getLogger("specstack.supervisor")

LOG_TAIL_LINES = 25
POLL_S = 0.1


class SupervisorError(RuntimeError):
    pass


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the layout: a component on one host, or on several of a scaled node."""

    component: str
    host: str  # node instance(s): controller, compute-2, compute-1..compute-250
    node: str  # topology node: controller, compute, ...
    port: int | None  # an API's port (health-checked), else None
    hosts: tuple[str, ...] = ()  # every host it serves (default: `host`)

    @property
    def name(self) -> str:
        return process_name(self.component, self.host)

    def serves(self, host: str) -> bool:
        return host in self.hosts if self.hosts else host == self.host


@dataclass
class Managed:
    spec: ProcessSpec
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # in a row: reset once it stays up restart_backoff_max_s
    ready: bool = False
    failed: str = ""  # why it was given up on
    started_at: float = 0.0  # monotonic
    restart_at: float | None = None  # monotonic: dead, to be started again then


def this_hosts(info: StackInfo, config: StackConfig, text: str) -> frozenset[str]:
    """The node instances `--nodes` names (`controller,compute-1..compute-40`; a topology
    node's name stands for all its hosts), checked against the topology and node_addresses."""
    try:
        names = expand_hosts(text)
    except HostsError as exc:
        raise SupervisorError(f"--nodes {exc}") from None
    out: set[str] = set()
    for name in names:
        if name in info.nodes:
            out |= set(info.node_hosts(name, config))
        elif info.node_of(name, config) is not None:
            out.add(name)
        else:
            known = ", ".join(hosts_label(info.node_hosts(n, config)) for n in info.nodes)
            raise SupervisorError(f"--nodes: no node instance {name!r}; the topology has {known}")
    for host in sorted(out):
        node = info.node_of(host, config) or host
        where = config.address(host, node)
        if where != config.host_address:
            raise SupervisorError(
                f"--nodes: {host} is at {where} by node_addresses, but this host's "
                f"host_address is {config.host_address}"
            )
    return frozenset(out)


def layout(
    info: StackInfo,
    services: dict[str, Any],
    config: StackConfig,
    only: frozenset[str] | None = None,
) -> list[ProcessSpec]:
    """Every process the spec's topology and components call for (on the hosts of `only`,
    if given), identity API first. A component's instances on a scaled node's hosts share
    at most `config.processes_per_component()` processes, each serving a run of hosts."""
    out: list[ProcessSpec] = []
    groups: dict[tuple[str, str], list[str]] = {}
    for inst in coded_instances(info, services, config):
        if only is not None and inst.host not in only:
            continue
        module = services[inst.component]
        comp = info.components[inst.component]
        serves = getattr(module, "ROUTES", None) or getattr(module, "CONSUMERS", None)
        if not serves and not comp.get("startup"):
            continue  # a client: nothing to serve (the CLI runs on the user's side)
        port = info.port(inst.component, config) if module.ROUTES else None
        if port is None and len(info.node_hosts(inst.node, config)) > 1:  # a scaled node
            groups.setdefault((inst.component, inst.node), []).append(inst.host)
            if len(groups[(inst.component, inst.node)]) == 1:
                out.append(ProcessSpec(inst.component, "", inst.node, None))  # its place
            continue
        out.append(ProcessSpec(inst.component, inst.host, inst.node, port))
    for inst in web_instances(info, config):  # the dashboard: a web client of its own
        if only is not None and inst.host not in only:
            continue
        out.append(
            ProcessSpec(inst.component, inst.host, inst.node, info.port(inst.component, config))
        )
    share = config.processes_per_component()
    grouped: list[ProcessSpec] = []
    for spec in out:
        hosts = groups.get((spec.component, spec.node)) if not spec.host else None
        if hosts is None:
            grouped.append(spec)
            continue
        n = min(share, len(hosts))
        size, extra = divmod(len(hosts), n)
        at = 0
        for i in range(n):  # runs of near-equal size, in host order
            run = hosts[at : at + size + (1 if i < extra else 0)]
            at += len(run)
            label = run[0] if len(run) == 1 else hosts_label(run)
            grouped.append(ProcessSpec(spec.component, label, spec.node, None, tuple(run)))

    def first(spec: ProcessSpec) -> int:
        cat = info.components[spec.component].get("catalog") or {}
        return 0 if cat.get("type") == "identity" else 1

    return sorted(grouped, key=first)


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def ports_free(base: int, count: int, host: str = "127.0.0.1") -> bool:
    """Every port of base..base+count-1 can be bound just now (checked, not reserved)."""
    import socket

    for port in range(base, base + count):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port_block_outside_ephemeral(count: int, host: str = "127.0.0.1") -> int:
    """A base port with `count` free ports after it, below the ephemeral range.

    A distributed stack's processes open many outgoing connections (to PostgreSQL,
    RabbitMQ, each other) while its APIs are still starting, as do the clients and
    stacks of other tests running beside it; a port picked inside the ephemeral range
    can be taken by one of them before its API binds it.
    """
    import random

    low, _ = ephemeral_range()
    top = min(low, 65000) - count
    for _ in range(500):
        base = random.randint(10000, max(10001, top))
        if ports_free(base, count, host):
            return base
    raise SupervisorError(f"no block of {count} free ports below {low}")


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# -- shared resources: databases and the bus vhost ---------------------------------
def _is_server_url(url: str) -> bool:
    return not url.startswith("sqlite")


def project_databases(info: StackInfo) -> list[str]:
    return [c["name"] for c in info.components.values() if c["kind"] == "database"]


def prepare_databases(info: StackInfo, config: StackConfig) -> list[str]:
    """Each project database exists on its server, migrated to the spec's schema; those created.

    Done once here, before the processes start, so that they do not race to create them.
    """
    from specstack_runtime import migrate

    created = []
    for db in project_databases(info):
        url = config.database_url(db)
        if _is_server_url(url) and migrate.ensure_database(url):
            created.append(db)
        tables = [TableSpec.of(t) for t in info.components[db]["tables"]]
        store = Store(url, tables, database=db)
        try:
            store.create_schema()
        finally:
            store.close()
    trace = config.trace_store_url()
    if trace is not None:  # every host's processes write their steps there
        from specstack_runtime import trace_sql

        if migrate.ensure_database(trace):
            created.append("trace")
        trace_sql.create_schema(trace)
    return created


def bus_vhost(url: str) -> str | None:
    """The vhost an amqp URL names, or None for the default vhost or another bus."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        return None
    vhost = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    return vhost if vhost and vhost != "/" else None


def _rabbitmqctl(*args: str) -> None:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise SupervisorError(
            "rabbitmqctl is not on PATH: create the bus vhost yourself, or name an "
            "existing one in bus_url"
        )
    proc = subprocess.run([exe, "-q", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SupervisorError(
            f"rabbitmqctl {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}"
        )


def ensure_vhost(config: StackConfig) -> str | None:
    """Create the stack's own RabbitMQ vhost (isolation from other stacks) if it names one."""
    vhost = bus_vhost(config.bus_url)
    if vhost is None:
        return None
    user = urlsplit(config.bus_url).username or "guest"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, unquote(user), ".*", ".*", ".*")
    return vhost


def drop_stack_resources(config: StackConfig, info: StackInfo | None = None) -> None:
    """Drop the stack's server databases and its vhost (tests clean up after themselves)."""
    from specstack_runtime import migrate

    info = info or load_generated()[0]
    for db in project_databases(info):
        url = config.database_url(db)
        if _is_server_url(url) and db not in config.database_urls:
            with contextlib.suppress(Exception):
                migrate.drop_database(url)
    trace = config.trace_store_url()
    if trace is not None and not config.trace_url:
        with contextlib.suppress(Exception):
            migrate.drop_database(trace)
    vhost = bus_vhost(config.bus_url)
    if vhost is not None:
        with contextlib.suppress(SupervisorError):
            _rabbitmqctl("delete_vhost", vhost)


# -- the supervisor -------------------------------------------------------------
def _state(m: Managed) -> str:
    if m.failed:
        return "failed"
    if m.restart_at is not None:
        return "restarting"
    if m.popen is None or m.popen.poll() is not None:
        return "stopped"
    return "running" if m.ready else "starting"


@dataclass
class Supervisor:
    config: StackConfig
    config_file: Path | None = None
    say: Callable[[str], None] = print
    nodes: str | None = None  # `--nodes`: this host's node instances; None: every one
    info: StackInfo = field(init=False)
    hosts: frozenset[str] | None = field(init=False, default=None)
    procs: list[Managed] = field(default_factory=list)
    failure: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _monitor: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.info, services, _ = load_generated()
        if self.nodes is not None:
            self.hosts = this_hosts(self.info, self.config, self.nodes)
        logs = self.config.data_dir / "logs"
        self.procs = [
            Managed(spec, logs / f"{spec.name}.log")
            for spec in layout(self.info, services, self.config, self.hosts)
        ]

    def runs_api(self, catalog_type: str) -> bool:
        """Whether the API of this catalog type is one of this host's processes."""
        return any(
            (self.info.components[m.spec.component].get("catalog") or {}).get("type")
            == catalog_type
            for m in self.procs
        )

    # preparing ------------------------------------------------------------------
    async def prepare(self) -> None:
        created = await asyncio.to_thread(prepare_databases, self.info, self.config)
        if created:
            self.say(f"databases created: {', '.join(created)}")
        vhost = await asyncio.to_thread(ensure_vhost, self.config)
        if vhost:
            self.say(f"bus: {self.config.bus_url.split('@')[-1]} (vhost {vhost})")

    # starting -------------------------------------------------------------------
    def _argv(self, spec: ProcessSpec) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "specstack_runtime.process",
            "--component",
            spec.component,
            "--node",
            spec.host,
            "--data-dir",
            str(self.config.data_dir),
        ]
        if self.config_file is not None:
            argv += ["--config", str(self.config_file)]
        if self.config.base_port is not None:
            argv += ["--port", str(self.config.base_port)]
        if self.config.computes is not None:
            argv += ["--computes", str(self.config.computes)]
        if self.config.driver is not None:
            argv += ["--driver", self.config.driver]
        return argv

    def _settings_env(self) -> dict[str, str]:
        """Settings given to the supervisor other than by the file, as SPECSTACK_* variables.

        The processes read the same file and environment; this carries what the
        command line (or a caller) set on top, so every process sees one configuration.
        """
        out = {}
        for name in sorted(self.config.explicit - {"data_dir", "base_port", "computes", "driver"}):
            value = getattr(self.config, name)
            if isinstance(value, tuple) and value and isinstance(value[0], tuple):
                text = json.dumps(dict(value))
            elif isinstance(value, tuple | list | dict):
                text = json.dumps(value)
            else:
                text = "" if value is None else str(value)
            out[f"SPECSTACK_{name.upper()}"] = text
        return out

    def _spawn(self, m: Managed) -> None:
        m.log_path.parent.mkdir(parents=True, exist_ok=True)
        ready_file(self.config.data_dir, m.spec.component, m.spec.host).unlink(missing_ok=True)
        m.ready = False
        m.restart_at = None
        m.started_at = time.monotonic()
        with m.log_path.open("ab") as fh:
            fh.write(
                f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {m.spec.name}"
                f" (start {m.restarts + 1}) ---\n".encode()
            )
            env = {**os.environ, **self._settings_env(), "PYTHONUNBUFFERED": "1"}
            m.popen = subprocess.Popen(
                self._argv(m.spec),
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # the supervisor alone decides when it stops
            )

    def _ready_file(self, m: Managed) -> Path:
        return ready_file(self.config.data_dir, m.spec.component, m.spec.host)

    async def _is_ready(self, m: Managed, http: httpx.AsyncClient) -> bool:
        if not self._ready_file(m).exists():
            return False
        if m.spec.port is None:
            return True
        url = f"http://{self.config.host_address}:{m.spec.port}/specstack/health"
        try:
            return (await http.get(url)).status_code == 200
        except httpx.TransportError:
            return False

    async def _wait_ready(self, group: list[Managed]) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                for m in group:
                    if m.ready:
                        continue
                    assert m.popen is not None
                    code = m.popen.poll()
                    if code is not None:
                        raise SupervisorError(self._death(m, code, "while starting"))
                    if await self._is_ready(m, http):
                        m.ready = True
                        pid = m.popen.pid
                        where = f" :{m.spec.port}" if m.spec.port else ""
                        width = max(11, *(len(x.spec.host) for x in self.procs))
                        self.say(f"{m.spec.component:<20} {m.spec.host:<{width}} pid {pid}{where}")
                if all(m.ready for m in group):
                    return
                if time.monotonic() > deadline:
                    late = [m for m in group if not m.ready]
                    raise SupervisorError(
                        f"not ready after {self.config.start_timeout_s:.0f} s: "
                        + ", ".join(m.spec.name for m in late)
                        + "".join(
                            f"\n--- {m.log_path} (tail) ---\n{tail(m.log_path)}" for m in late
                        )
                    )
                await asyncio.sleep(POLL_S)

    async def start(self) -> None:
        """Prepare, then start the identity API, then every other process; wait for all."""
        if not self.procs:
            raise SupervisorError("the spec's layout has no process to run")
        await self.prepare()
        first = [m for m in self.procs if m is self.procs[0]]
        rest = [m for m in self.procs if m is not self.procs[0]]
        for group in (first, rest):
            for m in group:
                self._spawn(m)
            await self._wait_ready(group)
        self.write_status()
        self._monitor = asyncio.create_task(self._watch())

    def _death(self, m: Managed, code: int, when: str = "") -> str:
        how = f"signal {-code}" if code < 0 else f"code {code}"
        return (
            f"{m.spec.name} (pid {m.popen.pid if m.popen else '?'}) exited with {how}"
            f"{' ' + when if when else ''}; last lines of {m.log_path}:\n{tail(m.log_path)}"
        )

    async def _watch(self) -> None:
        """Report processes that die and restart them after a growing pause; leave one down
        (reported failed, the rest serving) after restart_limit restarts in a row."""
        while not self._stopping:
            now = time.monotonic()
            for m in self.procs:
                if m.failed or m.popen is None or self._stopping:
                    continue
                if m.restart_at is not None:
                    if now >= m.restart_at:
                        self._spawn(m)
                        self.write_status()
                    continue
                code = m.popen.poll()
                if code is None:
                    if not m.ready and self._ready_file(m).exists():  # a restart came up
                        m.ready = True
                        self.say(f"{m.spec.name} ready again (pid {m.popen.pid})")
                        self.write_status()
                    continue
                self._died(m, code, now)
            await asyncio.sleep(POLL_S)

    def _died(self, m: Managed, code: int, now: float) -> None:
        self.say(f"[red]{self._death(m, code)}[/red]")
        if now - m.started_at >= self.config.restart_backoff_max_s:
            m.restarts = 0  # it had been up a good while: a new run of failures
        if code == EXIT_CONFIG or m.restarts >= self.config.restart_limit:
            how = f"signal {-code}" if code < 0 else f"code {code}"
            m.failed = f"exited with {how} after {m.restarts} restarts in a row"
            self.say(
                f"[red]{m.spec.name} FAILED ({m.failed}); left down, the rest of the stack "
                f"keeps serving; its log: {m.log_path}[/red]"
            )
            self.failure.set()
        else:
            pause = min(
                self.config.restart_backoff_s * 2**m.restarts, self.config.restart_backoff_max_s
            )
            m.restarts += 1
            m.restart_at = now + pause
            self.say(
                f"restarting {m.spec.name} in {pause:g} s "
                f"({m.restarts}/{self.config.restart_limit})"
            )
        self.write_status()

    # looking at it ------------------------------------------------------------
    def find(self, component: str, host: str | None = None) -> Managed:
        for m in self.procs:
            if m.spec.component == component and (host is None or m.spec.serves(host)):
                return m
        raise KeyError(f"{component} on {host}")

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "process": m.spec.name,
                "pid": m.popen.pid if m.popen else None,
                "alive": m.popen is not None and m.popen.poll() is None,
                "state": _state(m),
                "restarts": m.restarts,
                "failed": m.failed or None,
                "log": str(m.log_path),
            }
            for m in self.procs
        ]

    def status_file(self) -> Path:
        return self.config.data_dir / "run" / "status.json"

    def write_status(self) -> None:
        """The processes' states, for an operator (and `specstack` tests) to read."""
        text = json.dumps({"processes": self.status()}, indent=2) + "\n"
        path = self.status_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    # stopping -------------------------------------------------------------------
    async def stop(self) -> None:
        """SIGTERM every process (dependants first), SIGKILL what is left after the grace."""
        self._stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        alive = [m for m in reversed(self.procs) if m.popen and m.popen.poll() is None]
        for m in alive:
            assert m.popen is not None
            with contextlib.suppress(ProcessLookupError):
                m.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_grace_s
        while time.monotonic() < deadline and any(
            m.popen is not None and m.popen.poll() is None for m in alive
        ):
            await asyncio.sleep(POLL_S)
        for m in alive:
            assert m.popen is not None
            if m.popen.poll() is None:
                self.say(f"[yellow]{m.spec.name} ignored SIGTERM; killing it[/yellow]")
                with contextlib.suppress(ProcessLookupError):
                    m.popen.kill()
                m.popen.wait()
        with contextlib.suppress(OSError):
            self.write_status()
