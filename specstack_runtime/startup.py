"""What a component does once it starts (`behaviours.startup` in spec/components.yaml).

An item is a behaviour of the library, or an interaction the spec writes out: a call of
another API's operation (`to`, `operation`, `with`, `as`), made with the component's
own service token once every server listens. A compute node reporting its inventory to
a new service is one line of spec. `with:` is as a step's: the operation's path parameters by name, then `body`, `query`
and `headers`; its placeholders may name `{host}`,
`{component}`, `{node.*}` (the topology node: role, availability_zone, resources...)
and what an earlier start-up interaction kept `as:`.

An item may instead send a queue message (`message`, to the component that consumes it)
whose array field `batch` carries one item a host: the hosts of a process that start
together send one message (batching.py). With `every: S` the process's one loop sends
every S seconds the items of all its hosts of that component, bound again each period
(`{first}` is true at start-up only): neutron's agents' report_state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from specstack_runtime import registry
from specstack_runtime.batching import MAX_ITEMS, batch_of
from specstack_runtime.bindings import bind
from specstack_runtime.messaging import send
from specstack_runtime.services import ServiceRuntime

log = logging.getLogger("specstack.startup")


_NOT_PATH = ("body", "query", "headers")


class StartupFailed(RuntimeError):
    """A start-up interaction the callee refused: the component cannot start as the spec says."""


def scope(rt: ServiceRuntime) -> dict[str, Any]:
    # a lookup, not a scan of every instance: each of 10,000 compute hosts asks at start-up
    node = rt.info.node_of(rt.host, rt.config)
    if node is None or node not in rt.info.model.component(rt.component).nodes:
        node = rt.host
    found: dict[str, Any] = dict(rt.local.get("startup") or {})
    found.update(
        {
            "host": rt.host,
            "component": rt.component,
            "node": dict(rt.info.nodes.get(node) or {}),
            "region": rt.config.region,
        }
    )
    return found


async def run_startup(rt: ServiceRuntime, item: dict[str, Any]) -> None:
    name = item.get("behaviour")
    if name:
        await registry.get(name)(rt)
        return
    if item.get("message"):
        await _report(rt, item)
        return
    args = bind(item.get("bindings") or {}, scope(rt))
    api, operation = str(item["api"]), str(item["operation"])
    # The callee may still be starting (distributed mode starts processes side by side):
    # unreachable or 503 is tried again, for as long as the stack waits for its processes.
    deadline = time.monotonic() + rt.config.start_timeout_s
    pause = 0.2
    while True:
        try:
            resp = await rt.clients.call(
                api,
                operation,
                {k: v for k, v in args.items() if k not in _NOT_PATH},
                body=args.get("body"),
                query=args.get("query"),
                headers=args.get("headers"),
                token=await rt.service_token(),
            )
            if resp.status_code != 503:
                break
            why = "503"
        except httpx.TransportError as exc:
            why = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise StartupFailed(
                f"{rt.component} on {rt.host}: start-up call {operation} to {item['target']} "
                f"did not get through ({why})"
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)
    if resp.status_code >= 400:
        raise StartupFailed(
            f"{rt.component} on {rt.host}: start-up call {operation} to {item['target']} "
            f"answered {resp.status_code}: {resp.text[:300]}"
        )
    log.info("startup %s -> %s %s: %s", rt.component, item["target"], operation, resp.status_code)
    if item.get("save_as"):
        saved: dict[str, Any] = rt.local.setdefault("startup", {})
        saved[str(item["save_as"])] = resp.json() if resp.content else None


class Periodic:
    """The process's one loop for a repeating start-up message of one component: every
    `every` seconds, the items of all its registered hosts in one message per MAX_ITEMS."""

    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item
        self.hosts: dict[str, ServiceRuntime] = {}
        self.periods = 0
        self.task: asyncio.Task[None] | None = None

    def add(self, rt: ServiceRuntime) -> asyncio.Task[None]:
        self.hosts[rt.host] = rt
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._loop(), name=f"every-{self.item['message']}")
        return self.task

    async def report(self) -> int:
        """One period: the hosts reported."""
        self.periods += 1
        hosts = list(self.hosts.values())
        items = [_bound(rt, self.item, first=False) for rt in hosts]
        for at in range(0, len(items), MAX_ITEMS):
            await _send(hosts[0], self.item, items[at : at + MAX_ITEMS])
        return len(items)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(float(self.item["every"]))
            try:
                await self.report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next period tries again; the reports' age shows it
                log.warning("%s could not be sent: %s", self.item["message"], exc)


def periodic_of(rt: ServiceRuntime, item: dict[str, Any]) -> Periodic:
    """The loop of `item` in `rt`'s process, made on first use."""
    key = f"every:{rt.component}:{item['message']}"
    found = rt.shared.get(key)
    if not isinstance(found, Periodic):
        found = rt.shared[key] = Periodic(item)
    return found


def _bound(rt: ServiceRuntime, item: dict[str, Any], *, first: bool) -> Any:
    return bind(item.get("bindings") or {}, {**scope(rt), "first": first})


async def _send(rt: ServiceRuntime, item: dict[str, Any], items: list[Any]) -> Any:
    return await send(rt, str(item["message"]), {str(item["batch"]): items})


async def _report(rt: ServiceRuntime, item: dict[str, Any]) -> None:
    async def flush(items: list[Any]) -> Any:
        return await _send(rt, item, items)

    # the hosts of this process starting in the same turn: one message for all of them
    key = f"startup:{rt.component}:{item['message']}"
    try:
        await batch_of(rt.shared, key, flush).submit(_bound(rt, item, first=True))
    except Exception as exc:
        if not item.get("every"):
            raise
        log.warning("%s on %s: %s not sent (%s); next period", rt.component, rt.host, key, exc)
    if item.get("every"):
        rt.local[f"every:{item['message']}"] = periodic_of(rt, item).add(rt)
