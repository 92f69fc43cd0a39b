"""The algorithms of neutron's ports, as hooks of the resource engine.

spec/resources/network.yaml declares what a port is (fields, defaults, scope, policy,
refusals, filters); these hooks compute what the spec cannot state: a free MAC
address, the addresses of the requested fixed_ips (from ipam.allocate_ip; every
allocation is also a row of `ipallocations` whose id is `<subnet_id>:<ip>`, so two
servers that pick the same address at the same time collide on the primary key and
the loser takes one of the first free at random), the binding state, and the agents'
notification of an update (neutron's notifier tells them of every port update).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from specstack_runtime.behaviours import ipam, netcheck, secgroups
from specstack_runtime.bus import BusError
from specstack_runtime.errors import Conflict
from specstack_runtime.messaging import InvalidMessage, send, shaped
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import guards, relations, writes
from specstack_runtime.resources.compiled import Compiled
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import Store

logger = logging.getLogger(__name__)

Doc = dict[str, Any]

#: The owner of a router's interface ports: they hold their subnet's gateway address.
ROUTER_INTERFACE = "network:router_interface"
#: Attempts at a random MAC address not in use on the network (neutron retries too).
MAC_ATTEMPTS = 16


async def _allocate_one(
    store: Store,
    network_id: str,
    subnet: Doc,
    port_id: str,
    requested: str | None,
    router: bool = False,
    *,
    port: Compiled,
) -> str:
    """One address on `subnet` for `port_id`, claimed by inserting its ipallocations row
    (a router's interface may hold the subnet's gateway address, which no other port may);
    refused in the words of the `port` resource's errors."""
    sid = subnet["id"]
    if router and requested is not None and requested == subnet.get("gateway_ip"):
        row = {"id": f"{sid}:{requested}", "subnet_id": sid, "port_id": port_id}
        try:
            await store.create("ipallocations", {**row, "ip_address": requested})
        except Conflict:
            raise port.fail("ip_taken", ip_address=requested, subnet_id=sid) from None
        return requested

    async def taken() -> set[str]:  # allocation ids are "<subnet>:<ip>": no row decoded
        return {i.split(":", 1)[1] for i in await store.ids("ipallocations", {"subnet_id": sid})}

    in_use = await taken()
    window = 1  # the first free address, unless another server took it meanwhile
    while True:
        try:
            ip = ipam.allocate_ip(
                subnet["cidr"],
                subnet.get("allocation_pools") or [],
                subnet.get("gateway_ip"),
                in_use,
                requested,
                window,
            )
        except ipam.IpAddressInUse:
            raise port.fail("ip_taken", ip_address=requested, subnet_id=sid) from None
        except ipam.IpExhausted:
            raise port.fail("ip_exhausted", network_id=network_id) from None
        except ipam.IpamError as exc:
            raise port.fail("ip_unusable", reason=str(exc)) from None
        row = {
            "id": f"{sid}:{ip}",
            "subnet_id": sid,
            "port_id": port_id,
            "ip_address": ip,
            "network_id": network_id,
        }
        try:
            await store.create("ipallocations", row)
            return ip
        except Conflict:
            if requested is not None:
                raise port.fail("ip_taken", ip_address=ip, subnet_id=sid) from None
            # Another server took it between our read and our insert: one of the first free
            # at random, not the next one, which all who lost this race would take again
            in_use = await taken() | {ip}
            window = ipam.MAX_WINDOW


async def _release(store: Store, port_id: str, fixed_ips: Iterable[Doc]) -> None:
    for fixed in fixed_ips:
        row_id = f"{fixed['subnet_id']}:{fixed['ip_address']}"
        row = await store.get("ipallocations", row_id)
        if row is not None and row.get("port_id") == port_id:
            await store.delete("ipallocations", row_id)


async def _allocate_all(
    rc: ResourceCall, network: Doc, port_id: str, requests: list[Doc], router: bool = False
) -> list[Doc]:
    store = rc.store
    done: list[Doc] = []
    try:
        for req in requests:
            subnet = req["subnet"]
            ip = await _allocate_one(
                store, network["id"], subnet, port_id, req["ip_address"], router, port=rc.res
            )
            done.append({"subnet_id": subnet["id"], "ip_address": ip})
    except BaseException:
        await _release(store, port_id, done)
        raise
    return done


async def _free_mac(event: ResourceEvent, network_id: str) -> str:
    store, table = event.engine.store, event.engine.res.res.table
    for _ in range(MAC_ATTEMPTS):
        mac = ipam.generate_mac()
        if not await store.ids(table, {"network_id": network_id, "mac_address": mac}):
            return mac
    raise event.engine.res.fail("mac_exhausted", network_id=network_id)


def _wants_default_group(event: ResourceEvent) -> bool:
    """A new port names no group: with port security, it is in its project's default group
    (neutron's own ports, network:*, are in none)."""
    doc = event.doc
    return (
        bool(doc.get("port_security_enabled"))
        and not str(doc.get("device_owner") or "").startswith("network:")
        and "security_groups" not in writes.attributes(event.engine)
    )


@behaviour("network.port_addresses")
async def port_addresses(event: ResourceEvent) -> None:
    """A port's MAC address (a random free one unless given: the spec stores a given one as
    neutron writes it), its addresses (each fixed_ips request resolved to a subnet and allocated;
    without fixed_ips, one address of the network's first IPv4 subnet; on an update,
    addresses the port holds stay), its port security (the network's by default), its
    project's default security group when it names none (the spec computes its binding
    state)."""
    doc, old = event.doc, event.old
    engine = event.engine
    store = engine.store
    port_id = str((old or doc)["id"])
    network_id = str((old or doc)["network_id"])
    if old is None and doc.get("mac_address") is None:
        doc["mac_address"] = await _free_mac(event, network_id)
    # a create's network was read by its reference check (an update's network is the same)
    network = engine.refs.get("network_id") or await store.get("networks", network_id)
    network = network or {"id": network_id}
    if old is None and "port_security_enabled" not in doc:
        doc["port_security_enabled"] = bool(network.get("port_security_enabled", True))
    if old is None and _wants_default_group(event):
        doc["security_groups"] = [await secgroups.ensure_default(engine, str(doc["project_id"]))]
    if old is None or "fixed_ips" in doc:
        wanted = doc.get("fixed_ips") if old is None else doc["fixed_ips"]
        await relations.load(engine, {"network_id": network_id})
        if wanted is not None:
            guards.check(engine, "fixed_ips", {"network_id": network_id, "fixed_ips": wanted})
        requests = engine.template(
            "addresses", item={"fixed_ips": wanted}
        )  # each as subnet and address
        current = list((old or {}).get("fixed_ips") or [])
        kept: list[Doc] = []
        to_allocate: list[Doc] = []
        for req in requests:
            have = [
                f
                for f in current
                if f["subnet_id"] == req["subnet"]["id"]
                and (req["ip_address"] is None or f["ip_address"] == req["ip_address"])
                and f not in kept
            ]
            if have:  # an address the port already holds on that subnet stays
                kept.append(have[0])
            else:
                to_allocate.append(req)
        owner = (
            (old or doc).get("device_owner") if "device_owner" not in doc else doc["device_owner"]
        )
        router = owner == ROUTER_INTERFACE
        doc["fixed_ips"] = kept + await _allocate_all(engine, network, port_id, to_allocate, router)


def _added(doc: Doc, old: Doc | None) -> list[Doc]:
    before = list((old or {}).get("fixed_ips") or [])
    return [f for f in doc.get("fixed_ips") or [] if f not in before]


@behaviour("network.port_undo")
async def port_undo(event: ResourceEvent) -> None:
    """A port write that failed after its addresses were taken: they are given back."""
    port_id = str((event.old or event.doc)["id"])
    await _release(event.engine.store, port_id, _added(event.doc, event.old))


@behaviour("network.port_updated")
async def port_updated(event: ResourceEvent) -> None:
    """After an update: addresses the port no longer holds are released, and the L2 agents
    hear of the port (a (re)binding must be wired, as neutron's notifier tells them of
    every port update)."""
    doc, old = event.doc, event.old or {}
    store = event.engine.store
    gone = [f for f in old.get("fixed_ips") or [] if f not in (doc.get("fixed_ips") or [])]
    await _release(store, doc["id"], gone)
    try:
        # the agents concerned: the port's host and the one it was bound to (to unwire it)
        hosts = {str(p.get("binding:host_id") or "") for p in (doc, old)} - {""}
        payload = await port_update_payload(event.call.rt.info, store, doc)
        await send(event.call, "port_update", payload, hosts=sorted(hosts))
    except (BusError, InvalidMessage) as exc:
        logger.error("could not tell the L2 agents about port %s: %s", doc["id"], exc)


@behaviour("network.port_release")
async def port_release(event: ResourceEvent) -> None:
    """A port deleted (by itself or with its network): its addresses are released."""
    await netcheck.release_port(event.engine.store, event.doc)


def agent_payload(info: StackInfo, port: Doc, network: Doc) -> Doc:
    """What the L2 agents hear of a port: it (as the messages' `Port` type carries it), and
    its network's type and segment (the port's spec template `agent`)."""
    agent = info.resources.resource("port").template("agent", item=network)
    return {"port": shaped(info, "Port", port), **agent}


async def port_update_payload(info: StackInfo, store: Store, port: Doc, network: Any = None) -> Doc:
    """`network`: the port's network if the caller has it (else it is read)."""
    net = network if isinstance(network, dict) and network.get("id") == port["network_id"] else None
    return agent_payload(info, port, net or await store.get("networks", port["network_id"]) or {})
