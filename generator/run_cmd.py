"""`specstack run`: regenerate, start the stack, seed it, boot the demo VM step by step."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from generator.runtime.config import StackConfig
from generator.runtime.trace import TraceEvent


@dataclass
class StepPrinter:
    """Prints main steps in order as soon as each and all before it have ended."""

    console: Console
    sequence: dict[str, Any]
    events: dict[str, list[TraceEvent]] = field(default_factory=dict)
    printed: int = 0

    @property
    def total(self) -> int:
        return len(self.sequence["steps"])

    def __call__(self, event: TraceEvent) -> None:
        self.events.setdefault(event.step, []).append(event)
        self.flush()

    def flush(self, final: bool = False) -> None:
        steps = self.sequence["steps"]
        width = max(len(s["title"]) for s in steps)
        while self.printed < len(steps):
            step = steps[self.printed]
            label = str(step["number"])
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
            any(e.status in ("ok", "skipped") for e in self.events.get(str(s["number"]), []))
            for s in self.sequence["steps"]
        )


def write_clouds(config: StackConfig, identity_url: str) -> Path:
    path = (config.data_dir / "clouds.yaml").resolve()

    def cloud(user: str, password: str, project: str) -> str:
        return (
            f"    auth:\n      auth_url: {identity_url}/v3\n      username: {user}\n"
            f"      password: {password}\n      project_name: {project}\n"
            "      user_domain_name: Default\n      project_domain_name: Default\n"
            f"    region_name: {config.region}\n    interface: public\n"
            "    identity_api_version: 3\n"
        )

    text = (
        "# Written by `specstack run`: clouds for the openstack CLI and openstacksdk.\n"
        "clouds:\n  specstack:\n"
        + cloud("demo", config.demo_password, "demo")
        + "  specstack-admin:\n"
        + cloud("admin", config.admin_password, "admin")
    )
    path.write_text(text)
    return path


async def run_stack(config: StackConfig, *, once: bool, console: Console) -> int:
    from generator.runtime.demo import Demo, DemoError
    from generator.runtime.embedded import EmbeddedStack, StackError

    try:
        stack = EmbeddedStack(config)
    except Exception as exc:  # a broken generated/ or driver choice
        console.print(f"[red]cannot assemble the stack: {exc}[/red]")
        return 2
    t0 = time.perf_counter()
    try:
        await stack.start(on_progress=lambda m: console.print(f"  [dim]{m}[/dim]"))
    except (StackError, OSError, RuntimeError, ValueError, ImportError) as exc:
        console.print(f"[red]the stack did not start: {type(exc).__name__}: {exc}[/red]")
        await stack.stop()
        return 2
    console.print(f"stack up in {time.perf_counter() - t0:.2f} s (data in {config.data_dir}/)")
    identity_url = stack.info.endpoint(stack.info.api_of_type("identity"), config)
    clouds = write_clouds(config, identity_url)
    code = 0
    try:
        demo = Demo.of(stack)
        ids = await demo.seed()
        console.print(
            "demo data ready: flavors m1.tiny/small/medium, image, network "
            "'private', volume; booting a VM through boot-vm:"
        )
        printer = StepPrinter(console, stack.info.sequences["boot-vm"])
        name = f"demo-vm-{int(time.time())}"
        flow_id, server_id, server = await demo.boot(ids, name, on_event=printer)
        await asyncio.sleep(0.05)  # let the last steps' events land
        printer.flush(final=True)
        ok = server["status"] == "ACTIVE" and printer.complete()
        fault = server.get("fault", {}).get("message", "")
        console.print(
            f"{'[green]' if ok else '[red]'}server {name} ({server_id}) is {server['status']}"
            f"{'[/green]' if ok else '[/red]'}{': ' + fault if fault else ''}"
        )
        console.print(f"trace: specstack trace {flow_id}")
        code = 0 if ok else 1
    except (DemoError, Exception) as exc:
        console.print(f"[red]demo failed: {type(exc).__name__}: {exc}[/red]")
        code = 1
    console.print(f"export OS_CLIENT_CONFIG_FILE={clouds}\nexport OS_CLOUD=specstack")
    if not once:
        console.print("serving; Ctrl-C stops the stack")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        console.print("stopping")
    await stack.stop()
    return code


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
    if args.mode != "embedded":
        console.print(f"[red]mode {args.mode!r} is not available yet; use --mode embedded[/red]")
        return 2
    try:
        config = StackConfig(
            data_dir=Path(args.data_dir),
            base_port=args.port,
            computes=args.computes,
            driver=args.driver,
            driver_options=driver_options(getattr(args, "driver_option", None) or []),
        ).apply_environment()
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    code: int = runner(run_stack(config, once=args.once, console=console))
    return code
