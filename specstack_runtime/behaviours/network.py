"""Networking (neutron v2.0): the agents' side, and the flow steps that tell them.

Networks, subnets and ports are served by the resource engine from
spec/resources/network.yaml; their algorithms are hooks in `netcheck` (segment ids,
CIDR, gateway and pool checks) and `netports` (MAC and IP allocation, binding state).
The port operations leave `call.vars["port"]` (the port as stored) for the steps
that tell the agents about it.

Agents (fanout and casts reach them; they keep their state in files):
- the DHCP agent keeps, per network, a dnsmasq hosts file
  `<data_dir>/dhcp/<network_id>/host` (`MAC,host-<ip with dashes>,IP`, IPv6
  addresses in brackets as dnsmasq wants them) and its own record of which
  port owns which lines, `ports.json`, beside it; both are rewritten atomically.
- the L2 agent of host H keeps `<data_dir>/l2/H.json`,
  `{"host": H, "ports": {port_id: {...}}}`, with the ports bound to H (wired);
  updates of ports bound elsewhere are ignored (and unwire a port that moved).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from specstack_runtime.batching import batch_of
from specstack_runtime.behaviours import netports
from specstack_runtime.context import Call, Interaction
from specstack_runtime.errors import StepFailed
from specstack_runtime.messaging import send
from specstack_runtime.registry import behaviour
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.statefile import StateFile, state_file
from specstack_runtime.store import utcnow

logger = logging.getLogger(__name__)

Doc = dict[str, Any]

_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


# -- steps: neutron-server tells its agents ------------------------------------------------------


def _flow_port(ix: Interaction) -> Doc:
    port = ix.vars.get("port")
    if not isinstance(port, dict) or "id" not in port:
        raise StepFailed("no port in this flow: the port operation did not leave one", code=500)
    return port


@behaviour("network.notify_port_update", via=("amqp-cast",))
async def notify_port_update(ix: Interaction) -> None:
    port = _flow_port(ix)
    # the network the port's create checked, if this flow made the port
    network = (ix.vars.get("port.refs") or {}).get("network_id")
    payload = await netports.port_update_payload(ix.rt.info, ix.rt.require_store(), port, network)
    # the port's host: its agent wires it (an unbound port goes to every agent)
    await ix.invoke(payload, host=str(port.get("binding:host_id") or "") or None)


# -- agents ----------------------------------------------------------------------------------------


def _read_json(path: Path) -> Doc:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        logger.warning("ignoring unreadable agent state %s", path)
        return {}
    return data if isinstance(data, dict) else {}


def _safe_component(value: Any, what: str) -> str:
    text = str(value)
    if not _SAFE_ID.match(text) or text in (".", ".."):
        raise ValueError(f"{what} {text!r} cannot name a directory")
    return text


def dhcp_host_line(mac: str, ip: str) -> str:
    """One dnsmasq dhcp-hostsfile line: `MAC,host-<ip with dashes>,IP` ([IP] for IPv6)."""
    name = "host-" + ip.replace(".", "-").replace(":", "-")
    shown = f"[{ip}]" if ":" in ip else ip
    return f"{mac},{name},{shown}"


def _dhcp_dir(call: Call, network_id: Any) -> Path:
    return call.rt.data_dir / "dhcp" / _safe_component(network_id, "network id")


def _hosts_text(ports: Doc) -> str:
    lines = [
        dhcp_host_line(p["mac_address"], f["ip_address"])
        for p in ports.values()
        for f in p.get("fixed_ips", [])
    ]
    return "".join(line + "\n" for line in lines)


def _dhcp_state(call: Call, network_id: Any) -> StateFile:
    directory = _dhcp_dir(call, network_id)
    state = state_file(call.rt.shared, directory / "ports.json")
    state.also_write(directory / "host", _hosts_text)
    return state


@behaviour("network.dhcp_port_create")
async def dhcp_port_create(call: Call) -> None:
    port = call.payload["port"]
    state = _dhcp_state(call, port["network_id"])
    state.data[port["id"]] = {
        "mac_address": port["mac_address"],
        "fixed_ips": list(port.get("fixed_ips") or []),
    }
    state.changed()


@behaviour("network.dhcp_port_delete")
async def dhcp_port_delete(call: Call) -> None:
    state = _dhcp_state(call, call.payload["network_id"])
    state.data.pop(call.payload["port_id"], None)
    state.changed()


def _l2_file(call: Call) -> Path:
    return call.rt.data_dir / "l2" / f"{_safe_component(call.rt.host, 'host')}.json"


def _l2_state(call: Call) -> tuple[StateFile, Doc]:
    state = state_file(call.rt.shared, _l2_file(call))
    state.data["host"] = call.rt.host
    ports = state.data.get("ports")
    if not isinstance(ports, dict):
        ports = state.data["ports"] = {}
    return state, ports


@behaviour("network.l2_port_update")
async def l2_port_update(call: Call) -> None:
    port = call.payload["port"]
    state, ports = _l2_state(call)
    if port.get("binding:host_id") != call.rt.host:
        if port["id"] in ports:  # bound elsewhere now: unwire it here
            del ports[port["id"]]
            state.changed()
        return
    params = {"now": utcnow()}  # what it records: the port's spec template `wired`
    ports[port["id"]] = call.rt.info.resources.resource("port").template(
        "wired", item=call.payload, params=params
    )
    state.changed()


@behaviour("network.l2_port_delete")
async def l2_port_delete(call: Call) -> None:
    state, ports = _l2_state(call)
    if ports.pop(call.payload["port_id"], None) is not None:
        state.changed()


# -- agents' resync (start-up): their state from neutron's database ---------------------------------


@behaviour("network.agent_ports")
async def agent_ports(call: Call) -> Doc:
    """get_agent_ports: every port (or those bound to `host`) as the agents' messages carry it."""
    store = call.rt.require_store()
    hosts: set[str] | None = None
    if "host" in call.payload or "hosts" in call.payload:
        hosts = {*call.payload.get("hosts", ()), *filter(None, [call.payload.get("host")])}
    networks = {n["id"]: n for n in await store.list("networks")}
    out = []
    for port in await store.list("ports"):
        if hosts is not None and port.get("binding:host_id") not in hosts:
            continue
        net = networks.get(port.get("network_id")) or {}
        out.append(netports.agent_payload(call.rt.info, port, net))
    return {"ports": out}


async def _resync(
    rt: ServiceRuntime, host: str | None, apply: Callable[[Call, list[Doc]], Any], what: str
) -> None:
    """Ask neutron-server for the ports, then apply them; retried in the background (with
    backoff) while neutron-server is not answering yet (another process starting)."""

    async def once() -> None:
        call = Call(rt, "resync", "startup", f"req-{uuid.uuid4()}", f"req-{uuid.uuid4()}")
        if host is None:
            reply = await send(call, "get_agent_ports", {})
            await apply(call, list((reply or {}).get("ports") or []))
            return

        async def ask(hosts: list[str]) -> dict[str, list[Doc]]:
            reply = await send(call, "get_agent_ports", {"hosts": sorted(set(hosts))})
            by_host: dict[str, list[Doc]] = {h: [] for h in hosts}
            for item in (reply or {}).get("ports") or []:
                by_host.setdefault(str(item["port"].get("binding:host_id")), []).append(item)
            return by_host

        # the agents of this process resyncing together ask once for all their hosts
        by_host = await batch_of(rt.shared, "get_agent_ports", ask).submit(host)
        await apply(call, list(by_host.get(host) or []))

    try:
        await once()
        return
    except Exception as exc:
        logger.warning("%s resync failed (%s); retrying in the background", what, exc)

    async def retry() -> None:
        pause = 1.0
        while True:
            await asyncio.sleep(pause)
            try:
                await once()
                return
            except Exception as exc:
                logger.warning("%s resync failed again: %s", what, exc)
                pause = min(pause * 2, 30.0)

    rt.local[f"{what}.resync"] = asyncio.create_task(retry(), name=f"{what}-resync:{rt.host}")


def _dhcp_known(rt: ServiceRuntime) -> dict[str, str]:
    """Port -> network of the DHCP agent's files as they are (before the resync)."""
    known: dict[str, str] = {}
    for path in (rt.data_dir / "dhcp").glob("*/ports.json"):
        for port_id in _read_json(path):
            known[port_id] = path.parent.name
    return known


@behaviour("network.dhcp_resync")
async def dhcp_resync(rt: ServiceRuntime) -> None:
    """Startup: the DHCP agent's hosts files hold every port neutron has, and no other."""

    async def apply(call: Call, items: list[Doc]) -> None:
        stale = _dhcp_known(rt)
        for item in items:
            stale.pop(item["port"]["id"], None)
            await dhcp_port_create(replace(call, payload={"port": item["port"]}))
        for port_id, network_id in stale.items():
            await dhcp_port_delete(
                replace(call, payload={"port_id": port_id, "network_id": network_id})
            )

    await _resync(rt, None, apply, "dhcp-agent")


@behaviour("network.l2_resync")
async def l2_resync(rt: ServiceRuntime) -> None:
    """Startup: the L2 agent has wired every port bound to its host, and no other."""

    async def apply(call: Call, items: list[Doc]) -> None:
        _, wired = _l2_state(call)
        stale = set(wired)
        for item in items:
            stale.discard(item["port"]["id"])
            await l2_port_update(replace(call, payload=item))
        for port_id in stale:
            await l2_port_delete(replace(call, payload={"port_id": port_id}))

    await _resync(rt, rt.host, apply, "l2-agent")
