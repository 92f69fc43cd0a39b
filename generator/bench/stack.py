"""Figures of the running embedded stack: boot latency, throughput, startup, memory.

The stack runs in its own process (as `specstack run` starts it); the clients
run here, on the other core, and use the HTTP API as any user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from specstack_conformance.harness import free_port_block
from specstack_runtime.auth import password_auth
from specstack_runtime.config import StackConfig
from specstack_runtime.embedded import load_generated
from specstack_runtime.trace import sequence_events

# The boot's last step: nova-conductor marks the instance ACTIVE (spec/sequences/boot-vm).
BOOT_LAST_STEP = ("boot-vm", "instance_update")
#: (sequence, since) -> the trace's events of that sequence's flows begun since then
EventReader = Callable[[str, float], list[dict[str, Any]]]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user and system) of process `pid` and of every descendant alive now:
    the whole stack, one process embedded or every component's in distributed mode."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:  # the name (in parentheses) may hold spaces: the fields are after it
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        one = todo.pop()
        total += cpu.get(one, 0.0)
        todo.extend(children.get(one, ()))
    return total


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class StackClient:
    def __init__(self, http: httpx.AsyncClient, urls: dict[str, str], token: str) -> None:
        self.http, self.urls, self.token = http, urls, token
        self.unanswered = 0  # requests that ended without a response (closed, reset)

    async def _send(self, method: str, url: str, **kw: Any) -> httpx.Response | None:
        try:
            return await self.http.request(method, url, headers={"X-Auth-Token": self.token}, **kw)
        except httpx.TransportError:
            self.unanswered += 1
            return None

    async def boot(
        self, body: dict[str, Any], timeout: float = 120.0, max_poll: float = 0.05
    ) -> tuple[float, str, str]:
        """(seconds from POST to ACTIVE, server id, final status)."""
        start = time.perf_counter()
        resp = await self._send("POST", f"{self.urls['compute']}/servers", json=body)
        if resp is None or resp.status_code != 202:
            code = "no response" if resp is None else f"HTTP {resp.status_code}"
            return time.perf_counter() - start, "", code
        sid = resp.json()["server"]["id"]
        delay = 0.001
        while True:
            got = await self._send("GET", f"{self.urls['compute']}/servers/{sid}")
            if got is None:
                status = "BUILD"  # counted; polled again
            else:
                status = got.json()["server"]["status"] if got.status_code == 200 else "GONE"
            if status in ("ACTIVE", "ERROR", "GONE"):
                return time.perf_counter() - start, sid, status
            if time.perf_counter() - start > timeout:
                return time.perf_counter() - start, sid, "TIMEOUT"
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, max_poll)

    async def delete(self, sid: str) -> None:
        await self._send("DELETE", f"{self.urls['compute']}/servers/{sid}")
        for _ in range(2000):
            got = await self._send("GET", f"{self.urls['compute']}/servers/{sid}")
            if got is not None and got.status_code == 404:
                return
            await asyncio.sleep(0.005)


async def _login(
    http: httpx.AsyncClient, identity: str, config: StackConfig
) -> tuple[str, dict[str, str]]:
    body = password_auth("demo", config.demo_password, "demo")
    resp = await http.post(f"{identity}/v3/auth/tokens", json=body)
    resp.raise_for_status()
    urls = {
        e["type"]: next(x["url"] for x in e["endpoints"] if x["interface"] == "public")
        for e in resp.json()["token"]["catalog"]
    }
    return resp.headers["X-Subject-Token"], urls


async def boot_body(
    http: httpx.AsyncClient, urls: dict[str, str], token: str
) -> Callable[[str], dict[str, Any]]:
    """The body of a `POST /servers` booting the demo image on the private network, by
    server name."""
    h = {"X-Auth-Token": token}
    images = (await http.get(f"{urls['image']}/v2/images?name=demo-image", headers=h)).json()
    nets = (await http.get(f"{urls['network']}/v2.0/networks?name=private", headers=h)).json()
    image_id, net_id = images["images"][0]["id"], nets["networks"][0]["id"]

    def body(name: str) -> dict[str, Any]:
        return {
            "server": {
                "name": name,
                "imageRef": image_id,
                "flavorRef": "1",
                "networks": [{"uuid": net_id}],
            }
        }

    return body


async def _measure(
    identity: str,
    config: StackConfig,
    sequential: int,
    clients: int,
    per_client: int,
    window: list[float],
    stack_pid: int,
) -> dict[str, float]:
    """The client's figures; `window` gets the wall-clock start and end of the sequential
    boots (the trace's clock); `stack_pid`, the stack's process (`tree_cpu_s`)."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        token, urls = await _login(http, identity, config)
        body = await boot_body(http, urls, token)
        client = StackClient(http, urls, token)

        # Warm up (connection pools, caches), not counted.
        for i in range(5):
            _, sid, _ = await client.boot(body(f"warm-{i}"))
            await client.delete(sid)

        latencies: list[float] = []
        lost = 0
        window[0] = time.time()
        for i in range(sequential):
            took, sid, status = await client.boot(body(f"seq-{i}"))
            if status != "ACTIVE":
                lost += 1
            else:
                latencies.append(took)
            if sid:
                await client.delete(sid)
        window[1] = time.time()

        async def worker(n: int) -> list[tuple[float, str, str]]:
            # Many clients poll gently, as real ones do (the CLI waits 5 s between polls).
            return [
                await client.boot(body(f"par-{n}-{j}"), max_poll=0.25) for j in range(per_client)
            ]

        t0, cpu0 = time.perf_counter(), tree_cpu_s(stack_pid)
        results = await asyncio.gather(*(worker(n) for n in range(clients)))
        wall, cpu = time.perf_counter() - t0, tree_cpu_s(stack_pid) - cpu0
        flat = [r for group in results for r in group]
        par_lost = sum(1 for r in flat if r[2] != "ACTIVE")
        par_done = len(flat) - par_lost
        if os.environ.get("SPECSTACK_BENCH_DEBUG"):
            print("lost:", [r for r in flat if r[2] != "ACTIVE"], "seq lost:", lost)
        for _, sid, _ in flat:
            if sid:
                await client.delete(sid)
    qs = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "boot_p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else -1.0,
        "boot_p95_ms": round(qs[94] * 1000, 2),
        "boots_per_s": round(par_done / wall, 1),
        # what serving one of those boots (its clients' polls too) costs the stack in CPU:
        # on N cores it serves at most N * 1000 / this boots a second
        "served_cpu_ms_per_boot": round(cpu * 1000 / par_done, 1) if par_done else -1.0,
        "boots_lost": float(lost + par_lost),
        "boots_measured": float(len(latencies) + len(flat)),
        "requests_unanswered": float(client.unanswered),
    }


def start_stack(
    data_dir: str | Path, base_port: int, computes: int, *, distributed: bool = False
) -> subprocess.Popen[str]:
    """`specstack run` of the generated stack as a bench measures it: its output piped
    (the bench waits for its lines), room for as many instances as the bench boots."""
    mode = ["--mode", "distributed"] if distributed else []
    where = ["--data-dir", str(data_dir), "--port", str(base_port), "--computes", str(computes)]
    return subprocess.Popen(
        [sys.executable, "-m", "generator", "run", *mode, "--no-generate", *where],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SPECSTACK_QUOTAS": '{"instances": 100000}'},
    )


@dataclass(frozen=True)
class BenchStack:
    """A stack `running` started: where its APIs are, its process, and its start-up."""

    config: StackConfig
    identity: str
    proc: subprocess.Popen[str]
    t0: float  # when it was started (time.perf_counter)
    startup_s: float  # until every API answered
    data_dir: Path  # its trace.sqlite among the rest


@contextlib.contextmanager
def running(computes: int, limit_s: float = 60) -> Iterator[BenchStack]:
    """The generated stack started in a temporary data directory on free ports, every API
    answering (within `limit_s`); terminated after."""
    info, _, _ = load_generated()
    base = free_port_block(len(info.listening))  # the APIs and the dashboard
    config = StackConfig(base_port=base)
    identity = info.endpoint(info.api_of_type("identity"), config)
    with tempfile.TemporaryDirectory(prefix="specstack-bench-") as tmp:
        t0 = time.perf_counter()
        proc = start_stack(tmp, base, computes)
        try:
            startup = _wait_ready(info, config, t0, proc, limit_s)
            yield BenchStack(config, identity, proc, t0, startup, Path(tmp))
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def stack_figures(
    *, sequential: int = 200, clients: int = 50, per_client: int = 2, computes: int = 4
) -> dict[str, float]:
    with running(computes) as stack:
        _wait_for_line(stack.proc, "serving;")
        window = [0.0, 0.0]
        figures = asyncio.run(
            _measure(
                stack.identity,
                stack.config,
                sequential,
                clients,
                per_client,
                window,
                stack.proc.pid,
            )
        )
        figures["rss_mb"] = round(_rss_mb(stack.proc.pid), 1)
        figures["startup_s"] = round(stack.startup_s, 3)
        figures["boot_p50_ms_traced"] = traced_p50_ms(stack, window, sequential)
    return figures


#: servers kept through the rounds (what a project's list shows beside those it deleted)
KEPT = 3
#: lists of the project's servers timed after each round
LISTS = 20


def rss_rounds(rounds: int, boots: int, computes: int = 4) -> dict[str, Any]:
    """The stack's RSS after each of `rounds` rounds of `boots` sequential boots and deletes
    (a stack that keeps something of each boot grows round after round), and its growth a
    round from the second round on (the first also fills caches up to their bounds). Also,
    each round, the boots' median and then the median of `LISTS` lists of the project's
    servers (`GET /servers/detail`; `KEPT` of them booted first and kept): nova keeps a
    deleted server's row, and neither a boot (its quota counts the live ones) nor a list
    should slow down as they add up."""

    async def run(stack: BenchStack) -> tuple[list[float], list[float], list[float]]:
        async with httpx.AsyncClient(timeout=120) as http:
            token, urls = await _login(http, stack.identity, stack.config)
            body = await boot_body(http, urls, token)
            client = StackClient(http, urls, token)
            kept = {f"kept-{i}" for i in range(KEPT)}
            for name in sorted(kept):
                await client.boot(body(name))
            listing = f"{urls['compute']}/servers/detail"
            after, boot_ms, list_ms = [_rss_mb(stack.proc.pid)], [], []
            for r in range(rounds):
                took = []
                for i in range(boots):
                    seconds, sid, status = await client.boot(body(f"round-{r}-{i}"))
                    if status != "ACTIVE":
                        raise RuntimeError(f"a boot of round {r} ended {status}")
                    took.append(seconds)
                    await client.delete(sid)
                after.append(_rss_mb(stack.proc.pid))
                boot_ms.append(statistics.median(took) * 1000)
                lists = []
                for _ in range(LISTS):
                    start = time.perf_counter()
                    got = await http.get(listing, headers={"X-Auth-Token": token})
                    lists.append(time.perf_counter() - start)
                    names = {s["name"] for s in got.json()["servers"]}
                    if kept - names or any(n.startswith("round-") for n in names):
                        raise RuntimeError(f"the list after round {r}: {sorted(names)}")
                list_ms.append(statistics.median(lists) * 1000)
            return after, boot_ms, list_ms

    with running(computes) as stack:
        _wait_for_line(stack.proc, "serving;")
        after, boot_ms, list_ms = asyncio.run(run(stack))
    grown = (after[-1] - after[1]) / (rounds - 1) if rounds > 1 else after[-1] - after[0]
    return {
        "boots_a_round": boots,
        "rss_mb_started": round(after[0], 1),
        "rss_mb_after_rounds": [round(mb, 1) for mb in after[1:]],
        "rss_mb_growth_a_round": round(grown, 2),
        "boot_p50_ms_rounds": [round(ms, 2) for ms in boot_ms],
        "list_servers_p50_ms_rounds": [round(ms, 2) for ms in list_ms],
    }


def traced_p50_ms(stack: BenchStack, window: list[float], boots: int) -> float:
    """The median of `traced_boot_latencies` in ms, once the trace holds `boots` boots
    (the stack writes its trace in batches, a few times a second)."""
    trace_file = stack.data_dir / "trace.sqlite"
    return traced_p50(
        lambda sequence, since: sequence_events(trace_file, sequence, since), window, boots
    )


def traced_p50(events: EventReader, window: list[float], boots: int) -> float:
    """The median in ms of `boot_latencies` over the events `events` reads, once they hold
    `boots` boots; -1 when none is traced."""
    traced: list[float] = []
    for _ in range(50):
        traced = boot_latencies(events, *window)
        if len(traced) >= boots:
            break
        time.sleep(0.1)
    return round(statistics.median(traced) * 1000, 2) if traced else -1.0


def traced_boot_latencies(trace_file: Path, since: float, until: float) -> list[float]:
    """`boot_latencies` from a stack's trace file."""
    return boot_latencies(lambda seq, t: sequence_events(trace_file, seq, t), since, until)


def boot_latencies(events: EventReader, since: float, until: float) -> list[float]:
    """Seconds from the stack receiving each boot's POST (its flow's first event) to the
    instance marked ACTIVE (the boot's last step), as the stack's own trace records them, for
    the boots begun in [since, until]: the boot without the polling client's steps.
    `events(sequence, since)` reads the trace's events of that sequence's flows."""
    sequence, last = BOOT_LAST_STEP
    began: dict[str, float] = {}
    ended: dict[str, float] = {}
    # a minute's margin: a flow begun before `since` is seen whole, and left out
    for event in events(sequence, since - 60):
        flow_id = event["flow_id"]
        began[flow_id] = min(began.get(flow_id, event["started_at"]), event["started_at"])
        if event["name"] == last and event["status"] == "ok":
            ended[flow_id] = max(ended.get(flow_id, 0.0), event["ended_at"])
    return sorted(ended[f] - t0 for f, t0 in began.items() if f in ended and since <= t0 <= until)


def _wait_ready(
    info: Any, config: StackConfig, t0: float, proc: subprocess.Popen[str], limit_s: float = 60
) -> float:
    urls = [
        info.endpoint(c["api"], config) + "/specstack/health"
        for c in info.components.values()
        if c.get("api")
    ]
    with httpx.Client(timeout=1) as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the stack exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if all(http.get(u).status_code == 200 for u in urls):
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            if time.perf_counter() - t0 > limit_s:
                raise RuntimeError(f"the stack did not answer within {limit_s:.0f} s")
            time.sleep(0.01)


def _wait_for_line(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise RuntimeError("the stack stopped before serving:\n" + "".join(seen))


if __name__ == "__main__":  # pragma: no cover - manual use
    print(stack_figures(sequential=int(os.environ.get("N", "20"))))
