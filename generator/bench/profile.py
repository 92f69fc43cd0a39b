"""`specstack bench --profile N`: what one boot costs, counted rather than timed.

Wall-clock figures move with whatever else a shared machine runs; a count of the
Python function calls a boot makes does not. The embedded stack runs in this
process; N servers are booted one after another through the compute API (the
stack's own in-process transport, as its components call each other), each
waited for through the trace (its last step, the instance marked ACTIVE) rather
than by polling, so every boot makes the same requests; every 50 boots they are
deleted, uncounted (the hosts' capacity would end a longer run). cProfile counts the
calls of the event loop's thread between the first boot and the last; the
stores' worker threads (the SQL) are not counted. The figures include the
client's own calls (one create, one show per boot), the same before and after
any change. SQL statements are those SQLAlchemy hands the (SQLite) driver, and
validations are the pydantic and JSON Schema checks of requests, messages and rows. A validated token stays cached for the count (a running stack validates
it again every `token_cache_s`, a fraction of a validation per boot), so that how
long the boots take, on a loaded machine or a quiet one, does not change the count;
a compute heartbeat (every 10 s) may still fall into it.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from generator.bench.stack import BOOT_LAST_STEP
from specstack_conformance.harness import free_port_block
from specstack_runtime.config import StackConfig
from specstack_runtime.expr import Expr
from specstack_runtime.store import Store
from specstack_runtime.trace import TraceEvent

# (module path ending, function): what a boot is made of, counted per boot.
_PARTS = {
    "http_requests": ("specstack_runtime/app.py", "handle"),
    "messages_sent": ("specstack_runtime/messaging.py", "send"),
    "message_checks": ("specstack_runtime/messaging.py", "check"),
    "trace_events": ("specstack_runtime/trace.py", "record"),
    "cel_evaluations": ("specstack_runtime/expr.py", "evaluate_in"),  # values asked for
    "cel_runs": ("specstack_runtime/expr.py", "_run"),  # of them, run by the CEL runtime
    "token_validations": ("specstack_runtime/auth.py", "validate"),
    "policy_checks": ("specstack_runtime/policy.py", "authorize"),
    "route_matches": ("starlette/routing.py", "matches"),  # routes tried (see routeindex)
}
# SQL statements, as SQLAlchemy or the driver speed path (driverdirect.py) hands them to the
# driver (the embedded stack's SQLite databases run them on the event loop's thread, so they
# are all counted).
_STATEMENTS = (
    ("specstack_runtime/driverdirect.py", "_on_driver"),
    ("sqlalchemy/engine/default.py", "do_execute"),
    ("sqlalchemy/engine/default.py", "do_executemany"),
    ("sqlalchemy/engine/default.py", "do_execute_no_params"),
)
# Validations of a request, message or row: pydantic models (generated) and JSON Schemas.
_VALIDATIONS = (
    ("~", "<method 'validate_python' of 'pydantic_core._pydantic_core.SchemaValidator' objects>"),
    ("~", "<method 'is_valid' of 'jsonschema_rs.Validator' objects>"),
    ("~", "<method 'iter_errors' of 'jsonschema_rs.Validator' objects>"),
    ("~", "<method 'validate' of 'jsonschema_rs.Validator' objects>"),
)


#: boots between deletes (uncounted): the demo hosts' capacity ends a longer run
_BATCH = 50
#: how long no trace event must come for the deleted servers' flows to be over
_QUIET_S = 0.05


def _count(stats: pstats.Stats, where: str, name: str) -> int:
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    return sum(
        ncalls
        for (path, _, func), (_, ncalls, _, _, _) in raw.items()
        if func == name and path.endswith(where)
    )


class _Timed:
    """The wall time spent in `owner.name` while it is entered (the boots only), by
    wrapping the method and putting it back after; `active` False: not wrapped (under the
    profiler, whose cost would be most of each time and which would count the wrapper).
    The embedded stack runs its SQLite work and CEL on the event loop's thread, so this
    wall time is that thread's CPU."""

    def __init__(self, owner: type, name: str, *, active: bool) -> None:
        self.owner, self.name, self.active, self.seconds = owner, name, active, 0.0
        self.original = getattr(owner, name)
        self.counting = True  # False: between batches of boots (their deletes)

    def __enter__(self) -> _Timed:
        if not self.active:
            return self
        original = self.original

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.counting:
                return original(*args, **kwargs)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(self.owner, self.name, timed)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.active:
            setattr(self.owner, self.name, self.original)


async def _boots(boots: int, data_dir: Path, top: int, profiled: bool = True) -> dict[str, Any]:
    from specstack_runtime.demo import Demo
    from specstack_runtime.embedded import EmbeddedStack

    config = StackConfig(
        data_dir=data_dir,
        base_port=free_port_block(16),
        computes=4,
        quotas={"instances": 100000},
        token_cache_s=3600,
    )
    stack = EmbeddedStack(config)
    await stack.start()
    try:
        demo = Demo.of(stack)
        ids = await demo.seed()
        token, _ = await demo.token("demo", config.demo_password, "demo")
        done = asyncio.Event()
        last_event = [time.monotonic()]

        def on_event(event: TraceEvent) -> None:
            last_event[0] = time.monotonic()
            if (event.sequence, event.name) == BOOT_LAST_STEP and event.status == "ok":
                done.set()
            elif event.sequence == BOOT_LAST_STEP[0] and event.status == "error":
                done.set()  # a step failed: the boot ends in ERROR

        stack.trace.listen(on_event)
        compute = demo.api("compute")

        async def boot(name: str) -> str:
            done.clear()
            body = {
                "server": {
                    "name": name,
                    "imageRef": ids.image_id,
                    "flavorRef": "1",
                    "networks": [{"uuid": ids.network_id}],
                }
            }
            resp = await stack.clients.call(compute, "createServer", body=body, token=token)
            if resp.status_code != 202:
                raise RuntimeError(f"boot {name}: HTTP {resp.status_code} {resp.text[:200]}")
            await asyncio.wait_for(done.wait(), 60)
            sid = resp.json()["server"]["id"]
            for _ in range(500):  # a failed step's error is traced before the server's status
                got = await stack.clients.call(
                    compute, "showServer", {"server_id": sid}, token=token
                )
                server = got.json()["server"]
                if server["status"] != "BUILD":
                    break
                await asyncio.sleep(0.01)
            if server["status"] != "ACTIVE":
                fault = server.get("fault", {}).get("message", "")
                raise RuntimeError(f"boot {name}: {server['status']} {fault}".rstrip())
            return str(sid)

        async def delete(sids: list[str]) -> None:
            """Delete these servers and wait until the stack is quiet again (uncounted)."""
            for sid in sids:
                await stack.clients.call(compute, "deleteServer", {"server_id": sid}, token=token)
            for sid in sids:
                for _ in range(2000):
                    got = await stack.clients.call(
                        compute, "showServer", {"server_id": sid}, token=token
                    )
                    if got.status_code == 404:
                        break
                    await asyncio.sleep(0.002)
                else:
                    raise RuntimeError(f"server {sid} still there 4 s after its delete")
            while time.monotonic() - last_event[0] < _QUIET_S:  # their last steps
                await asyncio.sleep(_QUIET_S / 4)
            sids.clear()

        booted = [await boot(f"warm-{i}") for i in range(3)]  # caches, first-use imports
        profile = cProfile.Profile()
        timed = not profiled
        cpu = 0.0
        with (
            _Timed(Store, "_transaction", active=timed) as sql,
            _Timed(Expr, "_run", active=timed) as cel,
        ):
            for first in range(0, boots, _BATCH):
                sql.counting = cel.counting = True
                began = time.process_time()
                if profiled:
                    profile.enable()
                for i in range(first, min(first + _BATCH, boots)):
                    booted.append(await boot(f"prof-{i}"))
                profile.disable()
                cpu += time.process_time() - began
                sql.counting = cel.counting = False
                await delete(booted)
    finally:
        await stack.stop()
    if not profiled:  # what a boot costs as it runs: no profiler's cost, nothing counted
        return {
            "boots": boots,
            "cpu_ms_per_boot": round(cpu * 1000 / boots, 2),
            # of it: the stores' transactions (SQL and the store around it), CEL programs
            "sql_ms_per_boot": round(sql.seconds * 1000 / boots, 2),
            "cel_ms_per_boot": round(cel.seconds * 1000 / boots, 2),
        }
    stats = pstats.Stats(profile)
    total: int = stats.total_calls  # type: ignore[attr-defined]
    figures: dict[str, Any] = {
        "boots": boots,
        "calls_per_boot": round(total / boots),
        # every thread's CPU (SQL too) and the profiler's own cost: a rough figure only
        "cpu_ms_per_boot_profiled": round(cpu * 1000 / boots, 1),
    }
    for key, (where, name) in _PARTS.items():
        figures[f"{key}_per_boot"] = round(_count(stats, where, name) / boots, 2)
    checked = sum(_count(stats, where, name) for where, name in _VALIDATIONS)
    figures["validations_per_boot"] = round(checked / boots, 2)
    statements = sum(_count(stats, where, name) for where, name in _STATEMENTS)
    figures["sql_statements_per_boot"] = round(statements / boots, 2)
    if top:
        raw = stats.stats  # type: ignore[attr-defined]
        ranked = sorted(raw.items(), key=lambda kv: kv[1][3], reverse=True)[:top]
        figures["top_cumulative"] = [
            f"{Path(path).name}:{line} {func} calls={nc / boots:.1f} cum_ms={ct * 1000 / boots:.2f}"
            for (path, line, func), (_, nc, _, ct, _) in ranked
        ]
    return figures


def profile_figures(boots: int, top: int = 0, *, profiled: bool = True) -> dict[str, Any]:
    """The counts per boot; `profiled=False`: only the CPU seconds per boot of this
    process (every thread), the same boots run without the profiler."""
    with tempfile.TemporaryDirectory(prefix="specstack-profile-") as tmp:
        return asyncio.run(_boots(boots, Path(tmp), top, profiled))
