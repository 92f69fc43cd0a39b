"""Component instances with their runtimes and servers: the whole stack, or part of it.

The same generated code runs here as in any other mode; what this module chooses
are the bindings that the configuration names. Embedded mode runs every instance
in one process (in-process bus, SQLite stores, calls between own APIs without a
socket); in distributed mode each process builds only its own instance
(`select`), with the RabbitMQ bus, server databases and HTTP over TCP.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import uvicorn

from specstack_runtime import otel, registry
from specstack_runtime.app import ApiApp
from specstack_runtime.auth import TokenValidator
from specstack_runtime.bus import Bus, Subscription, make_bus
from specstack_runtime.config import StackConfig
from specstack_runtime.consumers import start_consumers
from specstack_runtime.http import ClientSet
from specstack_runtime.ir import CODED_KINDS, IR
from specstack_runtime.localhttp import LocalTransport
from specstack_runtime.osprofiler_export import PointExport
from specstack_runtime.resources.recovery import recover_all
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import Instance, StackInfo
from specstack_runtime.startup import run_startup
from specstack_runtime.statefile import flush_all
from specstack_runtime.store import Store, TableSpec
from specstack_runtime.trace import TraceRecorder
from specstack_runtime.virt import VirtError

#: keyword arguments of a driver the stack gives each host, not options
_STACK_SET = frozenset({"state_file", "hostname"})

log = logging.getLogger("specstack.stack")


class StackError(RuntimeError):
    pass


@dataclass
class Running:
    rt: ServiceRuntime
    module: ModuleType
    server: uvicorn.Server | None = None
    subscriptions: list[Subscription] = field(default_factory=list)


def load_generated(package: str = "generated") -> tuple[StackInfo, dict[str, ModuleType], Any]:
    """The generated code of the working directory (commands run from the repository root)."""
    import sys

    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    pkg = importlib.import_module(package)
    info = StackInfo.load(Path(pkg.__file__ or "").parent / "ir.json")
    services = importlib.import_module(f"{package}.services").SERVICES
    drivers = importlib.import_module(f"{package}.drivers").DRIVERS
    return info, services, drivers


def generated_dir(package: str = "generated") -> Path:
    """The folder of the generated package (its `ir.json`, `openapi/`)."""
    return Path(importlib.import_module(package).__file__ or "").parent


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def coded_instances(
    info: StackInfo, services: dict[str, Any], config: StackConfig
) -> list[Instance]:
    """The component instances that run code (APIs, workers, agents, clients), spec order."""
    return [
        inst
        for inst in info.instances(config)
        if inst.component in services and info.components[inst.component]["kind"] in CODED_KINDS
    ]


def export_steps(trace: TraceRecorder, model: IR, config: StackConfig) -> list[Callable[[], None]]:
    """Each step `trace` records sent on as an OpenTelemetry span and an OSProfiler trace
    point, as `config` asks; returned: the exports' closers (blocking), to call at the end."""
    closers: list[Callable[[], None]] = []
    if config.otlp_endpoint:
        spans = otel.provider("specstack", endpoint=config.otlp_endpoint)
        trace.listen(otel.SpanExport(spans))
        closers.append(spans.shutdown)
    if config.osprofiler_connection:
        points = PointExport(model, config.osprofiler_connection)
        trace.listen(points)
        closers.append(points.close)
    return closers


def web_instances(info: StackInfo, config: StackConfig) -> list[Instance]:
    """The instances of the web clients (the dashboard): one per node they are placed on."""
    names = {c["name"] for c in info.web_clients}
    return [inst for inst in info.instances(config) if inst.component in names]


class EmbeddedStack:
    """Component instances of the stack in this process: all of them, or those `select` keeps."""

    def __init__(
        self,
        config: StackConfig,
        package: str = "generated",
        *,
        select: Callable[[Instance], bool] | None = None,
    ) -> None:
        self.config = config
        self.select = select
        self.info, self.services, self.drivers = load_generated(package)
        self.generated_dir = generated_dir(package)
        self.web_servers: list[uvicorn.Server] = []
        self._closers: list[Callable[[], Any]] = []
        self.bus: Bus = make_bus(config.bus_url)
        # Every process of a distributed stack writes to (and reads) the one trace store,
        # on the database server: the stack's hosts share no file.
        self.trace = TraceRecorder(
            config.data_dir / "trace.sqlite",
            shared=config.mode == "distributed",
            url=config.trace_store_url(),
        )
        self._exports = export_steps(self.trace, self.info.model, config)
        self.local_http = LocalTransport() if config.internal_http == "local" else None
        self.clients = ClientSet(
            self.info, config, transport=self.local_http, local=self.local_http
        )
        self.stores: dict[str, Store] = {}
        self.shared: dict[str, Any] = {}
        self.running: list[Running] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self.started_at = 0.0
        self._hypervisors_made = False

    # assembly --------------------------------------------------------------
    def _store(self, database: str | None) -> Store | None:
        if not database:
            return None
        if database not in self.stores:
            comp = self.info.components[database]
            tables = [TableSpec.of(t) for t in comp["tables"]]
            # one process serves every component here: its store is the database's only
            # writer (a distributed stack's processes may share an SQLite file)
            sole = self.config.mode == "embedded"
            url = self.config.database_url(database)
            store = Store(url, tables, database=database, sole_writer=sole)
            store.create_schema()
            self.stores[database] = store
        return self.stores[database]

    def _driver(self, node: str, host: str) -> Any:
        spec = self.info.nodes[node]
        # --driver chooses the hypervisor of compute nodes, not of other nodes' workers.
        override = self.config.driver if spec.get("role") == "compute" else None
        name = override or spec.get("driver")
        if not name:
            return None
        if name not in self.drivers:
            raise StackError(f"unknown driver {name!r}; the spec has {', '.join(self.drivers)}")
        res = self.info.nodes[node].get("resources") or {}
        folder = self.config.data_dir / "hypervisors"
        if not self._hypervisors_made:  # once, not once a host
            folder.mkdir(parents=True, exist_ok=True)
            self._hypervisors_made = True
        options = self.config.driver_options.get(name, {})
        if fixed := sorted(_STACK_SET.intersection(options)):
            raise StackError(
                f"driver option {name}.{fixed[0]} is the stack's to set, not an option"
            )
        # the topology node's sizes, unless an option gives the driver's hosts their own;
        # neither: the driver's default (libvirt's: the real host's)
        given = ((k, options.get(k, res.get(k))) for k in ("vcpus", "memory_mb", "local_gb"))
        sizes = {key: value for key, value in given if value is not None}
        for key, value in sizes.items():
            try:
                sizes[key] = int(value)
            except ValueError:
                raise StackError(
                    f"driver option {name}.{key}: {value!r} is not a whole number"
                ) from None
        try:
            return self.drivers[name].create(
                **{**options, **sizes}, state_file=folder / f"{host}.json", hostname=host
            )
        except (TypeError, ValueError, RuntimeError, VirtError) as exc:  # bad option, no libvirtd
            raise StackError(f"driver {name} for compute host {host}: {exc}") from exc

    def _validator(self, rt: ServiceRuntime, comp: dict[str, Any]) -> TokenValidator:
        catalog = comp.get("catalog") or {}
        if catalog.get("type") == "identity":

            async def local(token: str) -> Any:
                return await registry.get("identity.token_context")(rt, token)

            async def issue(user: str, password: str, project: str) -> Any:
                return await registry.get("identity.issue_service_token")(
                    rt, user, password, project
                )

            return TokenValidator(
                self.info,
                self.config,
                self.clients,
                service_user=comp["project"],
                local=local,
                local_issue=issue,
            )
        # A component's instances in this process (its compute hosts) share one validator:
        # one service token and one cache, not a token issued on each host's first call.
        key = f"auth.validator:{rt.component}"
        if key not in self.shared:
            self.shared[key] = TokenValidator(
                self.info, self.config, self.clients, service_user=comp["project"]
            )
        validator: TokenValidator = self.shared[key]
        return validator

    def check_behaviours(self) -> None:
        """Every behaviour the spec names must be registered before anything starts."""
        known = set(registry.names())
        missing: dict[str, list[str]] = {}
        for h in self.info.ir["handlers"]:
            where = f"{h['component']} {h['kind']} {h['trigger']}"
            for name in (h["behaviour"], h["on_error"]):
                if name and name not in known:
                    missing.setdefault(name, []).append(where)
            for st in h["steps"]:
                if st["behaviour"] and st["behaviour"] not in known:
                    missing.setdefault(st["behaviour"], []).append(
                        f"{where}, step to {st['target']}"
                    )
        misfits: list[str] = []
        for c in self.info.components.values():
            for item in c["startup"]:
                name = item.get("behaviour")
                if name and name not in known:
                    missing.setdefault(name, []).append(f"{c['name']} startup")
                elif name and (kind := registry.kind_of(registry.get(name))) != "startup":
                    misfits.append(f"{name} (a {kind} behaviour) as {c['name']}'s start-up")
        if missing:
            lines = "; ".join(
                f"{n} (used by {', '.join(w[:3])})" for n, w in sorted(missing.items())
            )
            raise StackError(f"the spec names behaviours the library does not have: {lines}")
        if misfits:
            raise StackError(
                "the spec uses behaviours where they cannot run (run `specstack validate`): "
                + "; ".join(misfits)
            )

    def build(self) -> None:
        self.check_behaviours()
        # The resource model and the policy rules, compiled once, before any request.
        _ = (self.info.resources, self.info.policy)
        self.config.ensure_secrets()
        for inst in coded_instances(self.info, self.services, self.config):
            if self.select is not None and not self.select(inst):
                continue
            comp = self.info.components[inst.component]
            module = self.services[inst.component]
            rt = ServiceRuntime(
                component=inst.component,
                project=comp["project"],
                host=inst.host,
                info=self.info,
                config=self.config,
                bus=self.bus,
                trace=self.trace,
                clients=self.clients,
                store=self._store(comp.get("database")),
                data_dir=self.config.data_dir,
                shared=self.shared,
            )
            rt.auth = self._validator(rt, comp)
            if comp["kind"] == "worker":
                rt.driver = self._driver(inst.node, inst.host)
            self.running.append(Running(rt, module))

    async def start(self, on_progress: Callable[[str], None] | None = None) -> None:
        self.started_at = time.perf_counter()
        say = on_progress or (lambda _m: None)
        self.build()
        await self.bus.start()
        self._tasks.append(asyncio.create_task(self.trace.run_flusher()))
        # What a crash left mid-transition, put right before anything is served (the spec's
        # `states.recover` rules; nova-compute's init_host).
        for component, group in itertools.groupby(self.running, key=lambda r: r.rt.component):
            done = await recover_all([r.rt for r in group])
            for count in done.values():
                if count > 0:
                    say(f"{component:<16} recovered {count} interrupted row(s)")
        identity_url = self.info.endpoint(self.info.api_of_type("identity"), self.config)
        for r in self.running:
            if r.module.ROUTES:
                comp = self.info.components[r.rt.component]
                port = self.info.port(r.rt.component, self.config)
                if not port_free(self.config.bind_address(), port):
                    raise StackError(
                        f"{r.rt.component}: port {port} on {self.config.bind_address()} is in use "
                        "(another stack?); pick free ports with --port N"
                    )
                app = ApiApp(
                    r.rt, error_format=r.module.ERROR_FORMAT, identity_url=identity_url + "/v3"
                ).build(r.module.ROUTES, title=comp["title"])
                r.server = await self._listen(r.rt.component, app, port)
                host = self.info.endpoint_host(r.rt.component, self.config)
                if self.local_http is not None:
                    self.local_http.mount(host, port, app)
                say(f"{r.rt.component:<16} http://{host}:{port}")
            if r.module.CONSUMERS:
                r.subscriptions = await start_consumers(r.rt, r.module.CONSUMERS)
        await self._start_dashboards(say)
        # Startup behaviours run once every server listens (keystone's bootstrap first).
        ordered = sorted(
            self.running,
            key=lambda r: (
                0
                if (self.info.components[r.rt.component].get("catalog") or {}).get("type")
                == "identity"
                else 1
            ),
        )
        # The instances of one component (ten thousand compute hosts) start side by side,
        # so what they report together goes out together (see batching.py).
        for _, group in itertools.groupby(ordered, key=lambda r: r.rt.component):
            await asyncio.gather(*(self._startup(r) for r in group))

    async def _startup(self, r: Running) -> None:
        for item in self.info.components[r.rt.component]["startup"]:
            await run_startup(r.rt, item)

    async def _listen(self, component: str, app: Any, port: int) -> uvicorn.Server:
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=self.config.bind_address(),
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                date_header=False,
                timeout_keep_alive=self.config.http_keep_alive_s,
                # requests in flight at a stop get half the grace (uvicorn waits for ever
                # without it); the rest is for the bus, the files and the stores
                timeout_graceful_shutdown=max(1, int(self.config.stop_grace_s / 2)),
            )
        )
        config = server.config
        if not config.loaded:
            config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup()
        if not server.started:
            raise StackError(f"{component} could not listen on port {port}")
        return server

    async def _start_dashboards(self, say: Callable[[str], None]) -> None:
        """The spec's web clients (the dashboard), each on its port, on real sockets."""
        from specstack_runtime.dashboard import build_app

        for inst in web_instances(self.info, self.config):
            if self.select is not None and not self.select(inst):
                continue
            name = inst.component
            port = self.info.port(name, self.config)
            if not port_free(self.config.bind_address(), port):
                raise StackError(
                    f"{name}: port {port} on {self.config.bind_address()} is in use "
                    "(another stack?); pick free ports with --port N"
                )
            app = build_app(self.info, self.config, name, self.generated_dir / "openapi")
            self.web_servers.append(await self._listen(name, app, port))
            self._closers.append(app.state.close)
            say(f"{name:<16} http://{self.info.endpoint_host(name, self.config)}:{port}/")

    async def stop(self) -> None:
        # Background work a behaviour started for its component (e.g. heartbeats).
        local_tasks = [
            v for r in self.running for v in r.rt.local.values() if isinstance(v, asyncio.Task)
        ]
        for task in local_tasks:
            task.cancel()
        await asyncio.gather(*local_tasks, return_exceptions=True)
        servers = [*self.web_servers, *(r.server for r in self.running if r.server)]
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*(server.shutdown() for server in servers))  # side by side
        for closer in self._closers:
            await closer()
        await self.bus.close()
        for r in self.running:
            close = getattr(getattr(r.rt.driver, "impl", None), "close", None)
            if callable(close):
                close()
        # joins and waits on threads, off the loop: a signal is still heard meanwhile
        await asyncio.to_thread(flush_all, self.shared)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.trace.flush()
        self.trace.close()
        for export in self._exports:  # sends what is batched or queued
            await asyncio.to_thread(export)
        await self.clients.aclose()
        await asyncio.gather(*(asyncio.to_thread(s.close) for s in self.stores.values()))

    def runtime_of(self, component: str, host: str | None = None) -> ServiceRuntime:
        for r in self.running:
            if r.rt.component == component and (host is None or r.rt.host == host):
                return r.rt
        raise KeyError(component)
