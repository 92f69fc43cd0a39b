"""`specstack run`: regenerate, start the stack, seed it, boot the demo VM step by step."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from specstack_runtime.config import StackConfig, config_file, load_config
from specstack_runtime.trace import TraceEvent, TraceRecorder

if TYPE_CHECKING:
    from specstack_runtime.demo import Demo
    from specstack_runtime.stackinfo import StackInfo
    from specstack_runtime.supervisor import Supervisor


@dataclass
class StepPrinter:
    """Prints main steps in order as soon as each and all before it have ended."""

    console: Console
    sequence: dict[str, Any]
    events: dict[str, list[TraceEvent]] = field(default_factory=dict)
    printed: int = 0
    # fed from the shared trace's poll threads and the main thread: one at a time
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def total(self) -> int:
        return len(self.sequence["steps"])

    def __call__(self, event: TraceEvent) -> None:
        with self.lock:
            self.events.setdefault(event.step, []).append(event)
            self.flush()

    def flush(self, final: bool = False) -> None:
        with self.lock:
            self._print(final)

    def _print(self, final: bool) -> None:
        steps = self.sequence["steps"]
        width = max(len(s["title"]) for s in steps)
        while self.printed < len(steps):
            step = steps[self.printed]
            label = str(step["label"])
            if label not in self.events:
                if not final:
                    return
                self.console.print(
                    f"[red][{label:>2}/{self.total}] {step['title']:<{width}}  not observed[/red]"
                )
                self.printed += 1
                continue
            e = self.events[label][0]
            colour = {"ok": "green", "skipped": "yellow"}.get(e.status, "red")
            self.console.print(
                f"[{colour}][{label:>2}/{self.total}][/{colour}] {step['title']:<{width}}  "
                f"{e.source} -> {e.target}  {e.via}  {e.duration_ms:.1f} ms"
                + ("" if e.status == "ok" else f"  [{colour}]{e.status}[/{colour}]")
            )
            self.printed += 1

    def complete(self) -> bool:
        return all(
            any(e.status in ("ok", "skipped") for e in self.events.get(str(s["label"]), []))
            for s in self.sequence["steps"]
        )


def _stop_on_signals() -> asyncio.Event:
    """Set by SIGINT or SIGTERM; installed before "serving" is printed, so that a signal
    sent as soon as the line shows stops the stack cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def exit_after(grace_s: float, console: Console) -> None:
    """End the process if stopping outlasts the grace (`stop_grace_s`): a request that never
    ends or a database call that hangs must not keep a signalled stack alive. A daemon
    thread, so that it fires even while the loop or the interpreter's exit is blocked."""

    def force(why: str) -> None:
        console.print(f"[yellow]{why}; exiting without waiting[/yellow]")
        os._exit(1)

    timer = threading.Timer(grace_s, force, (f"not stopped within {grace_s:g} s (stop_grace_s)",))
    timer.daemon = True
    timer.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal: no waiting at all
        loop.add_signal_handler(sig, force, f"{signal.Signals(sig).name} again while stopping")


async def _remove_previous(demo: Demo, console: Console) -> None:
    removed = await demo.remove_previous()
    if removed:
        console.print(f"deleted the demo VM of the previous run ({', '.join(removed)})")


def write_clouds(config: StackConfig, identity_url: str, path: Path | None = None) -> Path:
    """The clouds of the stack's users (default: clouds.yaml in the data directory)."""
    path = (path or config.data_dir / "clouds.yaml").resolve()

    def cloud(user: str, password: str, project: str) -> str:
        return (
            f"    auth:\n      auth_url: {identity_url}/v3\n      username: {user}\n"
            f"      password: {password}\n      project_name: {project}\n"
            "      user_domain_name: Default\n      project_domain_name: Default\n"
            f"    region_name: {config.region}\n    interface: public\n"
            "    identity_api_version: 3\n"
        )

    text = (
        "# Written by specstack: clouds for the openstack CLI and openstacksdk.\n"
        "clouds:\n  specstack:\n"
        + cloud("demo", config.demo_password, "demo")
        + "  specstack-admin:\n"
        + cloud("admin", config.admin_password, "admin")
        + "  specstack-service:\n"
        + cloud("admin", config.admin_password, "service")
    )
    # it holds passwords: readable by its owner only, from the first byte
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    path.chmod(0o600)  # an existing file keeps its mode through O_CREAT
    return path


async def run_stack(config: StackConfig, *, once: bool, console: Console) -> int:
    from specstack_runtime.demo import SERVER_NAME, Demo, DemoError
    from specstack_runtime.embedded import EmbeddedStack, StackError

    try:
        stack = EmbeddedStack(config)
        if config.database_server or config.database_urls:
            # Server databases (e.g. PostgreSQL in embedded mode): created if missing.
            from specstack_runtime.supervisor import prepare_databases

            await asyncio.to_thread(prepare_databases, stack.info, config)
    except Exception as exc:  # a broken generated/, driver choice or database server
        console.print(f"[red]cannot assemble the stack: {exc}[/red]")
        return 2
    from specstack_runtime import logs

    logs.configure(
        directory=config.data_dir / "logs",
        level=logs.level_from_env(),
        request_level=logs.request_level_from_env(),
    )
    t0 = time.perf_counter()
    try:
        await stack.start(on_progress=lambda m: console.print(f"  [dim]{m}[/dim]"))
    except (StackError, OSError, RuntimeError, ValueError, ImportError) as exc:
        console.print(f"[red]the stack did not start: {type(exc).__name__}: {exc}[/red]")
        await stack.stop()
        return 2
    console.print(
        f"stack up in {time.perf_counter() - t0:.2f} s "
        f"(data in {config.data_dir}/, one log per service in {config.data_dir}/logs/)"
    )
    identity_url = stack.info.endpoint(stack.info.api_of_type("identity"), config)
    clouds = write_clouds(config, identity_url)
    code = 0
    try:
        demo = Demo.of(stack)
        await _remove_previous(demo, console)
        ids = await demo.seed()
        console.print(
            "demo data ready: flavors m1.tiny/small/medium, image, network "
            "'private', volume; booting a VM through boot-vm:"
        )
        printer = StepPrinter(console, stack.info.sequences["boot-vm"])
        name = SERVER_NAME
        flow_id, server_id, server = await demo.boot(ids, name, on_event=printer)
        await asyncio.sleep(0.05)  # let the last steps' events land
        ok = _report_boot(console, printer, name, server_id, server)
        console.print(f"trace: specstack trace {flow_id}")
        _print_osprofiler(console, config, flow_id)
        code = 0 if ok else 1
    except (DemoError, Exception) as exc:
        console.print(f"[red]demo failed: {type(exc).__name__}: {exc}[/red]")
        code = 1
    console.print(f"export OS_CLIENT_CONFIG_FILE={clouds}\nexport OS_CLOUD=specstack")
    _print_dashboards(console, stack.info, config)
    if not once:
        stop = _stop_on_signals()
        console.print("serving; Ctrl-C stops the stack")
        await stop.wait()
        console.print("stopping")
        exit_after(config.stop_grace_s, console)
    await stack.stop()
    console.print("stopped")
    return code


class SharedTraceFeed:
    """Feeds a StepPrinter the flow's events from the shared trace store, as processes write them.

    The client's own steps arrive through the listener; the first one names the
    flow, and from then on the store is read until every step is seen.
    """

    def __init__(self, recorder: TraceRecorder, printer: StepPrinter) -> None:
        self.recorder = recorder
        self.printer = printer
        self.flow_id: str | None = None
        self.seen: set[tuple[str, float, str]] = set()
        # a poll of `follow` may still run in its thread when `settle` polls (a cancelled
        # to_thread goes on): two polls at once would each feed the same event
        self._polling = threading.Lock()

    def __call__(self, event: TraceEvent) -> None:
        self.flow_id = self.flow_id or event.flow_id

    def poll(self) -> None:
        with self._polling:
            self._poll()

    def _poll(self) -> None:
        if self.flow_id is None:
            return
        for d in self.recorder.events(self.flow_id):
            key = (d["step"], d["started_at"], d["source"])
            if key in self.seen:
                continue
            self.seen.add(key)
            d.pop("duration_ms", None)
            self.printer(TraceEvent(**d))

    async def follow(self) -> None:
        while True:
            await asyncio.to_thread(self.poll)
            await asyncio.sleep(0.1)

    async def settle(self, timeout: float = 5.0) -> None:
        """Read until every step showed up (the last ones land just after the server is ACTIVE)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.to_thread(self.poll)
            if self.printer.complete():
                return
            await asyncio.sleep(0.1)


async def _serve_until_stopped(sup: Supervisor, console: Console, what: str) -> int:
    """Serve until a signal; 1 if a process failed for good meanwhile. Such a process is
    reported by the supervisor and left down; the rest keeps serving until the user stops it."""
    stop = _stop_on_signals()
    console.print(f"serving; Ctrl-C stops {what}")
    await stop.wait()
    failed = [p for p in sup.status() if p["state"] == "failed"]
    if failed:
        console.print(
            "[red]failed for good: "
            + ", ".join(f"{p['process']} (log {p['log']})" for p in failed)
            + "[/red]"
        )
    console.print("stopping")
    return 1 if failed else 0


async def serve_nodes(sup: Supervisor, config: StackConfig, *, once: bool, console: Console) -> int:
    """`--nodes`: this host's processes serve until a signal; no demo (the other hosts'
    nodes may not be up yet). clouds.yaml is written where the identity API runs."""
    info = sup.info
    if sup.runs_api("identity"):
        clouds = write_clouds(config, info.endpoint(info.api_of_type("identity"), config))
        console.print(f"export OS_CLIENT_CONFIG_FILE={clouds}\nexport OS_CLOUD=specstack")
    _print_dashboards(console, info, config, sup)
    code = 0
    if not once:
        code = await _serve_until_stopped(sup, console, "this host's processes")
    await sup.stop()
    console.print("stopped")
    return code


def shared_secrets_missing(sup: Supervisor, config: StackConfig) -> str | None:
    """Why a host without the identity API cannot join the stack, if it cannot: its
    processes log in with the identity host's service password and find the bus vhost
    and databases by the stack's name, neither of which it can make up itself."""
    if sup.hosts is None or sup.runs_api("identity"):
        return None
    missing = [n for n in ("stack_name", "service_password") if n not in config.explicit]
    if not missing:
        return None
    return (
        f"--nodes {sup.nodes}: this host does not run the identity API; set "
        + " and ".join(missing)
        + " to those of the host that does (its data directory's secrets.json)"
    )


def client_demo(
    info: StackInfo, config: StackConfig, services: dict[str, Any], recorder: TraceRecorder
) -> Demo:
    """The demo, run from outside a distributed stack as its CLI client (the spec's client
    that runs boot-vm), calling the APIs where the catalog places them."""
    from specstack_runtime.demo import Demo
    from specstack_runtime.http import ClientSet
    from specstack_runtime.services import ServiceRuntime

    clients = ClientSet(info, config)
    cli_name = next(
        name
        for name, m in services.items()
        if getattr(m, "KIND", "") == "client" and "boot-vm" in getattr(m, "HANDLERS", {})
    )
    cli = ServiceRuntime(
        component=cli_name,
        project=info.components[cli_name]["project"],
        host=info.components[cli_name]["nodes"][0],
        info=info,
        config=config,
        bus=None,  # type: ignore[arg-type]  # the client casts nothing
        trace=recorder,
        clients=clients,
        data_dir=config.data_dir,
    )
    return Demo(clients, info, config, services, cli)


async def run_distributed(
    config: StackConfig,
    config_path: Path | None,
    *,
    once: bool,
    console: Console,
    nodes: str | None = None,
) -> int:
    """A supervisor starts the layout's processes (those of `nodes` only, if given); the
    demo then runs from here, as a client."""
    from specstack_runtime.demo import SERVER_NAME
    from specstack_runtime.embedded import export_steps, load_generated
    from specstack_runtime.supervisor import Supervisor, SupervisorError

    try:
        sup = Supervisor(config, config_path, say=console.print, nodes=nodes)
    except Exception as exc:  # a broken generated/, or --nodes names no node
        console.print(f"[red]cannot lay out the stack: {exc}[/red]")
        return 2
    why = shared_secrets_missing(sup, config)
    if why is not None:
        console.print(f"[red]{why}[/red]")
        return 2
    where = f" on {config.host_address} ({nodes})" if nodes is not None else ""
    console.print(
        f"distributed stack{where}: {len(sup.procs)} processes, logs in {config.data_dir / 'logs'}/"
    )
    t0 = time.perf_counter()
    try:
        await sup.start()
    except (SupervisorError, OSError, ValueError, RuntimeError) as exc:
        console.print(f"[red]the stack did not start: {exc}[/red]")
        await sup.stop()
        return 2
    except Exception as exc:  # the database or bus server refused us
        console.print(f"[red]the stack did not start: {type(exc).__name__}: {exc}[/red]")
        await sup.stop()
        return 2
    console.print(f"stack up in {time.perf_counter() - t0:.2f} s (data in {config.data_dir}/)")
    if nodes is not None:
        return await serve_nodes(sup, config, once=once, console=console)
    info = sup.info
    clouds = write_clouds(config, info.endpoint(info.api_of_type("identity"), config))
    services = load_generated()[1]
    recorder = TraceRecorder(
        config.data_dir / "trace.sqlite", shared=True, url=config.trace_store_url()
    )
    # the client's own steps (the user's token and request) are exported as the stack's are
    exports = export_steps(recorder, info.model, config)
    demo = client_demo(info, config, services, recorder)
    clients = demo.clients
    code = 0
    try:
        await _remove_previous(demo, console)
        ids = await demo.seed()
        console.print(
            "demo data ready: flavors m1.tiny/small/medium, image, network "
            "'private', volume; booting a VM through boot-vm:"
        )
        printer = StepPrinter(console, info.sequences["boot-vm"])
        feed = SharedTraceFeed(recorder, printer)
        follower = asyncio.create_task(feed.follow())
        name = SERVER_NAME
        try:
            flow_id, server_id, server = await demo.boot(ids, name, on_event=feed)
            recorder.flush()
            await feed.settle()
        finally:
            follower.cancel()
        ok = _report_boot(console, printer, name, server_id, server)
        console.print(f"trace: specstack trace {flow_id} --data-dir {config.data_dir}")
        _print_osprofiler(console, config, flow_id)
        code = 0 if ok else 1
    except Exception as exc:
        console.print(f"[red]demo failed: {type(exc).__name__}: {exc}[/red]")
        code = 1
    finally:
        recorder.flush()
        recorder.close()
        for export in exports:
            await asyncio.to_thread(export)
    console.print(f"export OS_CLIENT_CONFIG_FILE={clouds}\nexport OS_CLOUD=specstack")
    _print_dashboards(console, info, config)
    if not once:
        code = await _serve_until_stopped(sup, console, "the stack") or code
    await clients.aclose()
    await sup.stop()
    console.print("stopped")
    return code


def _report_boot(
    console: Console, printer: StepPrinter, name: str, server_id: str, server: dict[str, Any]
) -> bool:
    """The demo server's last word: ACTIVE with every step printed, or its fault."""
    printer.flush(final=True)
    ok = server["status"] == "ACTIVE" and printer.complete()
    fault = server.get("fault", {}).get("message", "")
    colour = "green" if ok else "red"
    console.print(
        f"[{colour}]server {name} ({server_id}) is {server['status']}[/{colour}]"
        f"{': ' + fault if fault else ''}"
    )
    return ok


def _print_osprofiler(console: Console, config: StackConfig, flow_id: str) -> None:
    """How to read the flow back as OpenStack's tools do (its base id is the flow's uuid)."""
    if config.osprofiler_connection:
        # a collector's password (redis://:PASSWORD@host) is not printed
        shown = re.sub(r"//[^/@]*@", "//***@", config.osprofiler_connection)
        console.print(
            "osprofiler: osprofiler trace show --json --connection-string "
            f"{shown} {flow_id.removeprefix('req-')}",
            markup=False,
            highlight=False,
        )


def _print_dashboards(
    console: Console, info: Any, config: StackConfig, sup: Supervisor | None = None
) -> None:
    """The web dashboard's URL, beside the API endpoints (log in as the clouds.yaml users)."""
    for comp in info.web_clients:
        if sup is not None and not any(m.spec.component == comp["name"] for m in sup.procs):
            continue  # another host's
        url = f"http://{config.host_address}:{info.port(comp['name'], config)}/"
        console.print(f"{comp['name']}: {url} (log in as a user of clouds.yaml)")


def driver_options(items: list[str]) -> dict[str, dict[str, str]]:
    """`--driver-option libvirt.uri=qemu:///session` ... -> {"libvirt": {"uri": ...}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        driver, dot, option = key.partition(".")
        if not sep or not dot or not driver or not option.isidentifier():
            raise ValueError(f"--driver-option {item!r} is not DRIVER.KEY=VALUE")
        out.setdefault(driver, {})[option] = value
    return out


def main(args: Any) -> int:
    console = Console(highlight=False, file=sys.stdout, soft_wrap=True)
    if not args.no_generate:
        from generator.pipeline import generate

        result = generate(Path("spec"), Path("generated"))
        if result.status == "invalid":
            for d in result.diagnostics:
                print(d, file=sys.stderr)
            return 2
        console.print(f"generated/ {'regenerated' if result.status == 'written' else 'up to date'}")
    try:
        config = load_config(
            getattr(args, "config", None),
            data_dir=Path(args.data_dir) if args.data_dir else None,
            base_port=args.port,
            computes=args.computes,
            driver=args.driver,
            driver_options=driver_options(getattr(args, "driver_option", None) or []) or None,
            mode=args.mode,
        )
        config.ensure_secrets()
        config.for_mode()
    except ValueError as exc:  # ConfigError, or a bad --driver-option
        console.print(f"[red]{exc}[/red]")
        return 2
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    if config.mode == "distributed":
        found = config_file(getattr(args, "config", None))
        path = found.resolve() if found else None
        code: int = runner(
            run_distributed(
                config, path, once=args.once, console=console, nodes=getattr(args, "nodes", None)
            )
        )
        return code
    if getattr(args, "nodes", None) is not None:
        console.print(
            "[red]--nodes starts one host's share of a distributed stack: "
            "use it with --mode distributed[/red]"
        )
        return 2
    code = runner(run_stack(config, once=args.once, console=console))
    return code
