"""`specstack bench`: measured figures, each named with its unit."""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time_generate(spec: Path, out: Path, *, force: bool) -> tuple[float, float]:
    """Wall seconds of one `generate` run, and the CPU seconds of all its processes."""
    cmd = [sys.executable, "-m", "generator", "generate", "--spec", str(spec), "--output", str(out)]
    if force:
        cmd.append("--force")
    cpu = _children_cpu_s()
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"generate failed:\n{proc.stderr}")
    return took, _children_cpu_s() - cpu


def generation_figures(spec: Path, runs: int) -> dict[str, float]:
    """Full generation (a new output directory each run) and a no-op re-run, as a user runs them."""
    full: list[float] = []
    full_cpu: list[float] = []
    noop: list[float] = []
    with tempfile.TemporaryDirectory(prefix="specstack-bench-") as tmp:
        for i in range(runs):
            out = Path(tmp) / f"out{i}"
            took, cpu = _time_generate(spec, out, force=True)
            full.append(took)
            full_cpu.append(cpu)
            noop.append(_time_generate(spec, out, force=False)[0])
    return {
        "generate_s": round(statistics.median(full), 3),
        # the CPU it takes, on every core together (the worker, ruff): less sensitive
        # than generate_s to what else the machine runs
        "generate_cpu_s": round(statistics.median(full_cpu), 3),
        "noop_generate_s": round(statistics.median(noop), 3),
    }


_LOOP = "import time\nt = time.perf_counter()\nfor i in range(10_000_000): pass\nprint(time.perf_counter() - t)"


def python_loop_s() -> float:
    """Seconds for a 10M-iteration loop at a script's top level, in a fresh interpreter.

    Shared machines change speed over a day; this says how fast this one is just now
    (it is the loop earlier figures in the README were quoted with).
    """
    proc = subprocess.run([sys.executable, "-c", _LOOP], capture_output=True, text=True, check=True)
    return round(float(proc.stdout), 3)


def run_bench(
    *,
    as_json: bool,
    runs: int,
    spec: Path = Path("spec"),
    boots: int = 200,
    stack: bool = True,
    hosts: tuple[int, ...] = (),
    plot: Path | None = None,
) -> int:
    if hosts:  # the sweep only: start-up and host selection against host count
        from generator.bench.scale import sweep

        figures = sweep(hosts, plot)
        print(json.dumps(figures, sort_keys=True))
        return 0
    figures = {"python_loop_s": python_loop_s()}
    if not as_json:
        print(f"measuring generation ({runs} runs)...", file=sys.stderr, flush=True)
    figures.update(generation_figures(spec, runs))
    if stack:
        from generator.bench.stack import stack_figures

        if not as_json:
            print(
                f"measuring the embedded stack ({boots} sequential boots, 50 clients)...",
                file=sys.stderr,
                flush=True,
            )
        figures.update(stack_figures(sequential=boots))
        # The distributed stack (RabbitMQ, PostgreSQL, 3 computes), in the same run.
        from generator.bench.distributed import dist_figures

        if not as_json:
            print("measuring the distributed stack...", file=sys.stderr, flush=True)
        figures.update(dist_figures(sequential=min(boots, 100)))
        if not as_json:
            print("measuring the distributed stack with 100 compute hosts...", file=sys.stderr)
        figures.update(dist_figures(sequential=min(boots, 50), computes=100, suffix="_100h"))

        # Ten thousand compute hosts: start-up, host selection, boots, memory (`_10k`).
        from generator.bench.scale import scale_figures

        if not as_json:
            print("measuring a stack of 10,000 compute hosts...", file=sys.stderr, flush=True)
        figures.update(scale_figures(10000))

        from generator.bench.guest import guest_figures  # real guests: guest_boot_s_<driver>

        if not as_json:
            print("measuring real guests (server create to console marker)...", file=sys.stderr)
        figures.update(guest_figures(lambda m: print(m, file=sys.stderr, flush=True)))
    if as_json:
        print(json.dumps(figures, sort_keys=True))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"specstack bench (median of {runs} runs)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, f"{value}")
    Console().print(table)
    return 0
