"""What a component does once it starts (`behaviours.startup` in spec/components.yaml).

An item is a behaviour of the library, or an interaction the spec writes out: a call of
another API's operation (`to`, `operation`, `with`, `as`), made with the component's
own service token once every server listens. A compute node reporting its inventory to
a new service is one line of spec. `with:` is as a step's: the operation's path parameters by name, then `body`, `query`
and `headers`; its placeholders may name `{host}`,
`{component}`, `{node.*}` (the topology node: role, availability_zone, resources...)
and what an earlier start-up interaction kept `as:`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from specstack_runtime import registry
from specstack_runtime.bindings import bind
from specstack_runtime.services import ServiceRuntime

log = logging.getLogger("specstack.startup")


_NOT_PATH = ("body", "query", "headers")


class StartupFailed(RuntimeError):
    """A start-up interaction the callee refused: the component cannot start as the spec says."""


def scope(rt: ServiceRuntime) -> dict[str, Any]:
    node = next(
        (
            i.node
            for i in rt.info.instances(rt.config)
            if i.host == rt.host and i.component == rt.component
        ),
        rt.host,
    )
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
