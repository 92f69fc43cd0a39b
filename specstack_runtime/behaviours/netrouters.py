"""The algorithms of neutron's routers and floating IPs (spec/resources/network.yaml).

A router's gateway and each of its interfaces is a port (device_id the router; owner
network:router_gateway / network:router_interface); a floating IP's address is held by a
port of its own on the external network (owner network:floatingip), so addresses come
from the same allocation as every port's. Associating a floating IP finds the router
that joins the port's subnet to the floating IP's network.
"""

from __future__ import annotations

from typing import Any

from specstack_runtime.registry import behaviour
from specstack_runtime.resources import access, deleting, guards, relations, serve
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.resources.hooks import ResourceEvent

Doc = dict[str, Any]

GATEWAY = "network:router_gateway"
INTERFACE = "network:router_interface"
FLOATING = "network:floatingip"


async def _new_port(rc: ResourceCall, attrs: Doc) -> Doc:
    """A port neutron makes for itself, made as the port API makes one (its address
    allocated by the port's hooks)."""
    ports = rc.of("port")
    await serve.create(ports, attrs)
    port: Doc = rc.call.vars["port"]
    return port


async def _drop_ports(rc: ResourceCall, device_id: str, owner: str) -> None:
    ports = rc.of("port")
    for port in await ports.store.list(ports.res.res.table, {"device_id": device_id}):
        if port.get("device_owner") == owner:
            await deleting.delete(ports, port)


@behaviour("network.router_gateway")
async def router_gateway(event: ResourceEvent) -> None:
    """external_gateway_info naming an external network: a gateway port on it, whose
    addresses the router shows; null or {} removes the gateway port."""
    if "external_gateway_info" not in event.doc:
        return
    info = event.doc["external_gateway_info"] or {}
    router_id = str((event.old or event.doc)["id"])
    old_info = (event.old or {}).get("external_gateway_info") or {}
    if old_info and old_info.get("network_id") == info.get("network_id"):
        event.doc["external_gateway_info"] = {**old_info, **info}
        return
    if old_info:
        await _drop_ports(event.engine, router_id, GATEWAY)
    if not info.get("network_id"):
        event.doc["external_gateway_info"] = None
        return
    # the spec's `gateway` rules: a network the caller sees, external
    gateway = {"external_gateway_info": {"network_id": str(info["network_id"])}}
    await relations.load(event.engine, gateway, only=("gateway_network",))
    guards.check(event.engine, "gateway", gateway)
    router = event.old or event.doc
    port = await _new_port(
        event.engine, event.engine.template("gateway_port", doc=router, item=info)
    )
    event.doc["external_gateway_info"] = event.engine.template(
        "gateway_info", item=info, refs={"port": port}
    )


def _target(event: ResourceEvent) -> tuple[str | None, str | None]:
    """The subnet or the port the request names (the spec accepted exactly one)."""
    body = event.call.body if isinstance(event.call.body, dict) else {}
    return body.get("subnet_id") or None, body.get("port_id") or None


@behaviour("network.add_router_interface")
async def add_router_interface(event: ResourceEvent) -> None:
    """A port holding the subnet's gateway address, or the caller's unused port, becomes
    an interface of the router; it is the flow's `port`, which the spec's answer shows."""
    rc, router = event.engine, event.doc
    subnet_id, port_id = _target(event)
    await relations.load(rc, router, only=("interfaces",))
    ports = rc.of("port")
    if port_id:
        port = await access.lookup(ports, str(port_id))
        guards.check(rc, "add_interface", router, {"port": port})  # the spec's rules
        attrs = {"device_id": router["id"], "device_owner": INTERFACE}
        event.call.vars["port"] = (
            await ports.store.update(ports.res.res.table, port["id"], attrs) or port
        )
    else:
        subnet = await access.lookup(rc.of("subnet"), str(subnet_id))
        guards.check(rc, "add_interface", router, {"subnet": subnet})
        await _new_port(rc, rc.template("interface_port", doc=router, item=subnet))


@behaviour("network.remove_router_interface")
async def remove_router_interface(event: ResourceEvent) -> None:
    """The interface on the subnet (or the port named) is deleted, its address released;
    it is the flow's `port`, which the spec's answer shows."""
    rc, router = event.engine, event.doc
    subnet_id, port_id = _target(event)
    await relations.load(rc, router, only=("interfaces",))
    guards.check(rc, "remove_interface", router, {"subnet_id": subnet_id, "port_id": port_id})
    found = [
        p
        for p in rc.refs["interfaces"]
        if p["id"] == port_id or any(f["subnet_id"] == subnet_id for f in p["fixed_ips"])
    ]
    await deleting.delete(rc.of("port"), found[0])
    event.call.vars["port"] = found[0]


# -- floating IPs ---------------------------------------------------------------------------


@behaviour("network.floatingip_allocate")
async def floatingip_allocate(event: ResourceEvent) -> None:
    """A new floating IP: an address of the external network (of the subnet or address
    asked for), held by a port of its own; associated at once when port_id is given (the
    spec refused a network that is not external)."""
    doc = event.doc
    network_id = str(doc["floating_network_id"])
    attrs = event.engine.template("port", doc=doc)
    port = await _new_port(event.engine, attrs)
    if not port["fixed_ips"]:
        await _drop_ports(event.engine, doc["id"], FLOATING)
        raise event.engine.res.fail("no_subnet", network_id=network_id)
    doc["floating_ip_address"] = port["fixed_ips"][0]["ip_address"]
    doc.pop("subnet_id", None)
    await _associate(event.engine, doc, doc)


@behaviour("network.floatingip_undo")
async def floatingip_undo(event: ResourceEvent) -> None:
    """A floating IP not stored after all: its address is given back."""
    await _drop_ports(event.engine, str(event.doc["id"]), FLOATING)


@behaviour("network.floatingip_associate")
async def floatingip_associate(event: ResourceEvent) -> None:
    """port_id changed: associated (the fixed address, the router) or let go."""
    if "port_id" not in event.doc and "fixed_ip_address" not in event.doc:
        return
    await _associate(event.engine, {**(event.old or {}), **event.doc}, event.doc)


async def _associate(rc: ResourceCall, fip: Doc, changes: Doc) -> None:
    port_id = fip.get("port_id")
    if not port_id:
        changes.update(port_id=None, fixed_ip_address=None, router_id=None, status="DOWN")
        return
    await relations.load(rc, fip, only=("port",))
    guards.check(rc, "associate", fip)  # the spec's: an IPv4 address of the port
    chosen = rc.template("fixed_ip", doc=fip)
    router = await _router_for(rc, str(fip["floating_network_id"]), chosen["subnet_id"])
    if router is None:
        raise rc.res.fail("unreachable", **{**fip, "subnet_id": chosen["subnet_id"]})
    address = chosen["ip_address"]
    changes.update(port_id=port_id, fixed_ip_address=address, router_id=router, status="ACTIVE")


async def _router_for(rc: ResourceCall, network_id: str, subnet_id: str) -> str | None:
    """The router with a gateway on `network_id` and an interface on `subnet_id`."""
    ports = rc.of("port")
    rows = await ports.store.list(ports.res.res.table, {"device_owner": INTERFACE})
    for port in rows:
        if not any(f["subnet_id"] == subnet_id for f in port.get("fixed_ips") or []):
            continue
        router = await rc.store.get("routers", str(port["device_id"])) or {}
        if (router.get("external_gateway_info") or {}).get("network_id") == network_id:
            return str(router["id"])
    return None
