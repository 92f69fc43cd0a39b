"""One process of a distributed stack: one component instance on one topology node.

    python -m specstack_runtime.process --component nova-compute --node compute-2 \\
        [--config FILE] [--data-dir DIR] [--port N] [--computes N] [--driver NAME]

`--node` may name several hosts of one component (`compute-1..compute-250`, or
`compute-1,compute-4`): the process serves them all, as embedded mode serves every host.

It reads the same configuration as every other process (config file, then
SPECSTACK_* variables, then these options), builds only its own component
instance from the generated package (the code embedded mode runs), starts it,
and then tells the supervisor it is ready by writing its ready file. SIGTERM or
SIGINT stops it cleanly; so does the death of its supervisor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from specstack_runtime.config import ConfigError, StackConfig, load_config
from specstack_runtime.ir_deploy import process_name

log = logging.getLogger("specstack.process")

#: Exit codes the supervisor tells apart.
EXIT_CONFIG = 2  # bad configuration or layout: restarting will not help
EXIT_START = 3  # the component did not start


class HostsError(ValueError):
    pass


def _numbered(host: str) -> tuple[str, int] | None:
    prefix, _, number = host.rpartition("-")
    return (prefix, int(number)) if prefix and number.isdigit() else None


def expand_hosts(text: str) -> list[str]:
    """`compute-1..compute-3,network` -> compute-1, compute-2, compute-3, network."""
    out: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, sep, last = part.partition("..")
        if not sep:
            out.append(part)
            continue
        a, b = _numbered(first), _numbered(last)
        if a is None or b is None or a[0] != b[0] or a[1] > b[1]:
            raise HostsError(
                f"{part!r}: a range of hosts is NAME-M..NAME-N with M <= N (e.g. compute-1..compute-40)"
            )
        out += [f"{a[0]}-{i}" for i in range(a[1], b[1] + 1)]
    if not out:
        raise HostsError(f"{text!r}: no host named")
    if len(set(out)) != len(out):
        raise HostsError(f"{text!r}: a host is named twice")
    return out


def hosts_label(hosts: list[str]) -> str:
    """The shortest `expand_hosts` text of these hosts: one host, or runs as ranges."""
    runs: list[list[str]] = []
    for host in hosts:
        here, prev = _numbered(host), _numbered(runs[-1][-1]) if runs else None
        if here and prev and here[0] == prev[0] and here[1] == prev[1] + 1:
            runs[-1].append(host)
        else:
            runs.append([host])
    return ",".join(r[0] if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


def ready_file(data_dir: Path, component: str, host: str) -> Path:
    """Written once the instance serves (servers listen, consumers subscribed, startup done)."""
    return data_dir / "run" / f"{process_name(component, host)}.ready"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m specstack_runtime.process")
    p.add_argument("--component", required=True, help="the component to run, e.g. nova-compute")
    p.add_argument(
        "--node",
        required=True,
        help="the node instance(s) it serves: compute-2, compute-1..compute-250, or a,b",
    )
    p.add_argument("--config", default=None, help="config file (default: SPECSTACK_CONFIG)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--port", type=int, default=None, help="first API port")
    p.add_argument("--computes", type=int, default=None)
    p.add_argument("--driver", default=None)
    return p.parse_args(argv)


def process_config(args: argparse.Namespace) -> StackConfig:
    config = load_config(
        args.config,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        base_port=args.port,
        computes=args.computes,
        driver=args.driver,
        mode="distributed",
    )
    config.ensure_secrets()
    return config.for_mode()


async def serve(config: StackConfig, component: str, hosts: list[str]) -> int:
    from specstack_runtime.embedded import (
        EmbeddedStack,
        StackError,
        coded_instances,
        web_instances,
    )

    start_errors = (StackError, OSError, RuntimeError, ValueError, ImportError)
    wanted = set(hosts)
    host = hosts_label(hosts)
    try:
        stack = EmbeddedStack(
            config, select=lambda i: i.component == component and i.host in wanted
        )
    except (StackError, ValueError, ImportError, OSError) as exc:
        log.error("cannot assemble %s on %s: %s: %s", component, host, type(exc).__name__, exc)
        return EXIT_CONFIG
    instances = coded_instances(stack.info, stack.services, config)
    instances += web_instances(stack.info, config)
    mine = {i.host for i in instances if i.component == component}
    if not wanted <= mine:
        log.error(
            "the layout has no instance of %s on %s (it runs on: %s)",
            component,
            hosts_label([h for h in hosts if h not in mine]),
            hosts_label(sorted(mine, key=lambda h: _numbered(h) or (h, 0)))
            if mine
            else "nothing; not a component with code",
        )
        return EXIT_CONFIG
    ready = ready_file(config.data_dir, component, host)
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.unlink(missing_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    async def orphaned() -> None:  # the supervisor died without stopping us
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        log.warning("the supervisor (pid %d) is gone; stopping", parent)
        stop.set()

    watch = asyncio.create_task(orphaned())
    # A stop asked for while starting (the supervisor gave up on another process) ends
    # the start: waiting for it first could outlast the supervisor's grace.
    starting = asyncio.create_task(stack.start(on_progress=lambda m: log.info("%s", m)))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, *start_errors):
            await starting
        log.info("%s on %s stopped while starting", component, host)
        watch.cancel()
        await stack.stop()
        return 0
    try:
        starting.result()
    except start_errors as exc:
        log.error("%s on %s did not start: %s: %s", component, host, type(exc).__name__, exc)
        watch.cancel()
        await stack.stop()
        return EXIT_START
    ready.write_text(f"{os.getpid()}\n")
    log.info("%s on %s is ready (pid %d)", component, host, os.getpid())
    await stop.wait()
    log.info("%s on %s stopping", component, host)
    ready.unlink(missing_ok=True)
    watch.cancel()
    await stack.stop()
    log.info("%s on %s stopped", component, host)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from specstack_runtime import logs

    # Libraries' records (aio-pika, httpx, uvicorn) as plain lines; the stack's own in
    # oslo.log's context format with request ids. Both go to stderr: the supervisor
    # keeps it as this process's log file.
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s %(process)d %(levelname)s {args.component}@{args.node} "
        "%(name)s: %(message)s",
    )
    logs.configure(
        stream=sys.stderr,
        level=logs.level_from_env(),
        component=args.component,
        request_level=logs.request_level_from_env(),
    )
    try:
        config = process_config(args)
        hosts = expand_hosts(args.node)
    except (ConfigError, HostsError) as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    code: int = runner(serve(config, args.component, hosts))
    return code


if __name__ == "__main__":
    sys.exit(main())
