"""Figures of the distributed stack: boot latency and throughput over RabbitMQ and PostgreSQL.

`specstack run --mode distributed` starts the stack in its own processes (3 compute
nodes; `_100h` figures: 100, sharing `node_processes` processes per compute-node
component); the clients run here and use the HTTP API, as for the embedded figures.
`dist_boot_p50_ms_traced` is the same sequential boots as the trace store records them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from generator.bench.stack import _measure, _wait_for_line, start_stack, traced_p50
from specstack_runtime.config import StackConfig, load_config
from specstack_runtime.embedded import load_generated
from specstack_runtime.trace_sql import SqlTraceStore

START_TIMEOUT_S = 180


def dist_figures(
    *,
    sequential: int = 100,
    clients: int = 50,
    per_client: int = 1,
    computes: int = 3,
    suffix: str = "",
) -> dict[str, float]:
    from specstack_runtime.supervisor import (
        drop_stack_resources,
        free_port_block_outside_ephemeral,
    )

    info, _, _ = load_generated()
    apis = sum(1 for c in info.components.values() if c.get("api"))
    base = free_port_block_outside_ephemeral(apis)
    with tempfile.TemporaryDirectory(prefix="specstack-distbench-") as tmp:
        data = Path(tmp) / "data"
        config = load_config(data_dir=data, base_port=base, mode="distributed")
        identity = info.endpoint(info.api_of_type("identity"), config)
        proc = start_stack(data, base, computes, distributed=True)
        try:
            _wait_for_line(proc, "serving;")
            window = [0.0, 0.0]
            figures = asyncio.run(
                _measure(identity, config, sequential, clients, per_client, window, proc.pid)
            )
            figures["boot_p50_ms_traced"] = _traced(config, window, sequential)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            config.ensure_secrets()
            drop_stack_resources(config.for_mode(), info)
    names = {
        "dist_boot_p50_ms": "boot_p50_ms",
        "dist_boot_p95_ms": "boot_p95_ms",
        "dist_boot_p50_ms_traced": "boot_p50_ms_traced",
        "dist_boots_per_s": "boots_per_s",
        "dist_served_cpu_ms_per_boot": "served_cpu_ms_per_boot",
        "dist_boots_lost": "boots_lost",
        "dist_requests_unanswered": "requests_unanswered",
    }
    return {key + suffix: figures[name] for key, name in names.items()}


def _traced(config: StackConfig, window: list[float], boots: int) -> float:
    """The sequential boots' median as the stack's trace store (on the database server, where
    every process writes its steps) records them: without the polling client's steps."""
    config.ensure_secrets()  # the stack's name, which names its trace database
    url = config.for_mode().trace_store_url()
    if url is None:
        return -1.0
    store = SqlTraceStore(url)
    try:
        return traced_p50(store.sequence_events, window, boots)
    finally:
        store.close()


if __name__ == "__main__":  # pragma: no cover - manual use
    print(dist_figures(sequential=int(os.environ.get("N", "20"))))
