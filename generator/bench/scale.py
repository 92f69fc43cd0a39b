"""Figures of a stack with many compute hosts: start-up, host selection, boots, memory.

`scale_figures(10000)` gives `startup_s_10k` (the stack started until every API answers
and every host is registered), `boot_p50_ms_10k`, `rss_mb_10k` (a `specstack run` process,
as in stack.py) and `select_p50_ms_10k` (the scheduler's step, filter and weigh, over a
nova database holding that many compute nodes, measured here). `sweep` gives start-up and
selection against host count and draws them (matplotlib, the `bench` extra).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from generator.bench.stack import (
    StackClient,
    _login,
    _rss_mb,
    _wait_for_line,
    boot_body,
    running,
    traced_p50_ms,
)
from specstack_runtime.config import StackConfig
from specstack_runtime.embedded import load_generated

SWEEP_HOSTS = (100, 1000, 3000, 10000)
PLOT_COMMAND = "specstack bench --hosts 100,1000,3000,10000 --plot docs/img/scale.png"


def suffix(hosts: int) -> str:
    """`10k` for 10,000 hosts, `3k`, `100`: the end of the figures' names."""
    return f"{hosts // 1000}k" if hosts % 1000 == 0 else str(hosts)


async def _select_ms(hosts: int, runs: int) -> list[float]:
    """Milliseconds of each host selection over `hosts` registered compute nodes."""
    from specstack_runtime.behaviours import conductor, scheduler
    from specstack_runtime.context import Call
    from specstack_runtime.services import ServiceRuntime
    from specstack_runtime.store import Store, TableSpec

    info, _, _ = load_generated()
    config = StackConfig()
    comp = info.components["nova-conductor"]
    db = info.components[comp["database"]]
    with tempfile.TemporaryDirectory(prefix="specstack-bench-") as tmp:
        tables = [TableSpec.of(t) for t in db["tables"]]
        store = Store(f"sqlite:///{tmp}/nova.sqlite", tables)
        store.create_schema()
        unused: Any = None  # the conductor's handler reaches its store only
        rt = ServiceRuntime(
            "nova-conductor",
            comp["project"],
            "controller",
            info,
            config,
            unused,
            unused,
            unused,
            store=store,
        )
        consumes = comp.get("consumes") or []
        args = next(
            dict(h.get("args") or {}) for h in consumes if h["message"] == "compute_node_update"
        )
        res = {"vcpus": 8, "memory_mb": 16384, "local_gb": 200}
        nodes = [{"host": f"compute-{i}", "resources": res} for i in range(1, hosts + 1)]
        for at in range(0, hosts, 1000):
            call = Call(
                rt,
                "compute_node_update",
                "message",
                "req-0",
                "req-0",
                payload={"nodes": nodes[at : at + 1000]},
                args=args,  # the spec's, as the consumer passes them
            )
            await conductor.compute_node_update(call)
        request = scheduler.RequestSpec(memory_mb=512, vcpus=1, root_gb=1)
        down_after_s = conductor.liveness(info, "service_down_time_s")
        took: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            filters, weighers = config.scheduler_filters, config.scheduler_weighers
            found = await scheduler.candidates(store, request, filters, weighers, down_after_s)
            scheduler.rank(found, request, filters, weighers, down_after_s)
            took.append((time.perf_counter() - t0) * 1000)
        store.close()
    return took


def select_p50_ms(hosts: int, runs: int = 200) -> float:
    return round(statistics.median(asyncio.run(_select_ms(hosts, runs))), 3)


async def _boots(identity: str, config: StackConfig, count: int) -> list[float]:
    async with httpx.AsyncClient(timeout=120) as http:
        token, urls = await _login(http, identity, config)
        body = (await boot_body(http, urls, token))("scale")
        client = StackClient(http, urls, token)
        took: list[float] = []
        for i in range(count + 3):  # the first three warm up
            seconds, sid, status = await client.boot(body)
            if status != "ACTIVE":
                raise RuntimeError(f"a boot at scale ended {status}")
            if i >= 3:
                took.append(seconds * 1000)
            await client.delete(sid)
    return took


def _cpu_s(pid: int) -> float:
    """CPU seconds the process has used (user and system): what start-up costs, however
    busy the machine's other processes keep its cores."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stack_at(hosts: int, boots: int = 0) -> dict[str, float]:
    """Start-up seconds of `specstack run --computes hosts`, and with `boots`, their p50 and
    the process's RSS after them."""
    with running(hosts, limit_s=900) as stack:
        _wait_for_line(stack.proc, "stack up in")  # every start-up behaviour done: hosts known
        figures = {
            "startup_s": round(time.perf_counter() - stack.t0, 3),
            "startup_cpu_s": round(_cpu_s(stack.proc.pid), 3),
        }
        if boots:
            _wait_for_line(stack.proc, "serving;")
            window = [time.time(), 0.0]
            took = asyncio.run(_boots(stack.identity, stack.config, boots))
            window[1] = time.time()
            figures["boot_p50_ms"] = round(statistics.median(took), 2)
            figures["boot_p50_ms_traced"] = traced_p50_ms(stack, window, boots)
            figures["rss_mb"] = round(_rss_mb(stack.proc.pid), 1)
    return figures


def scale_figures(hosts: int = 10000, boots: int = 20) -> dict[str, float]:
    """The `_10k` figures (or another host count's) of `specstack bench`."""
    at = stack_at(hosts, boots)
    figures = {f"{name}_{suffix(hosts)}": value for name, value in at.items()}
    figures[f"select_p50_ms_{suffix(hosts)}"] = select_p50_ms(hosts)
    return figures


def sweep(hosts: tuple[int, ...], plot: Path | None) -> dict[str, float]:
    """Start-up and selection at each host count; drawn into `plot` when given."""
    figures: dict[str, float] = {}
    for n in hosts:
        at = stack_at(n)
        figures[f"startup_s_{suffix(n)}"] = at["startup_s"]
        figures[f"startup_cpu_s_{suffix(n)}"] = at["startup_cpu_s"]
        figures[f"select_p50_ms_{suffix(n)}"] = select_p50_ms(n)
    if plot is not None:
        draw(hosts, figures, plot)
    return figures


def draw(hosts: tuple[int, ...], figures: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(7, 4), dpi=110)
    startup = [figures[f"startup_s_{suffix(n)}"] for n in hosts]
    select = [figures[f"select_p50_ms_{suffix(n)}"] for n in hosts]
    cpu = [figures[f"startup_cpu_s_{suffix(n)}"] for n in hosts]
    left.plot(hosts, startup, "o-", color="tab:blue", label="start-up, wall")
    left.plot(hosts, cpu, "^:", color="tab:green", label="start-up, CPU of the stack")
    left.legend(loc="upper left", fontsize=8)
    left.set_xlabel("compute hosts")
    left.set_ylabel("start-up, s")
    right = left.twinx()
    right.plot(hosts, select, "s--", color="tab:red", label="host selection p50 (ms)")
    right.set_ylabel("host selection p50, ms", color="tab:red")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    left.set_title("specstack run (embedded): start-up and host selection by host count")
    fig.text(0.01, 0.01, PLOT_COMMAND, fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
