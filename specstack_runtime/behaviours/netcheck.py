"""The algorithms of neutron's networks and subnets, as hooks of the resource engine.

spec/resources/network.yaml declares the records (fields, defaults, scope, policy,
what deleting does); these hooks do what is computed: a network's segmentation id
under its type's rules, a subnet's CIDR, default gateway and allocation pools and
their checks, and the addresses (ipallocations rows) a deleted subnet or port held.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from specstack_runtime.behaviours import ipam
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.store import Store

Doc = dict[str, Any]

#: Device owners of the network's own ports (they go with the network or subnet).
DHCP_OWNER_PREFIX = "network:dhcp"


# -- networks ------------------------------------------------------------------------------------


async def _free_segment(event: ResourceEvent, network_type: str) -> int | None:
    """The lowest free segment id of this type, in its range (the spec's `segment_ranges`)."""
    ranges = event.engine.res.res.data["segment_ranges"]
    if network_type not in ranges:
        return None
    used = {
        n.get("provider:segmentation_id")
        for n in await event.engine.store.list(event.engine.res.res.table)
        if n.get("provider:network_type") == network_type
    }
    low, high = ranges[network_type]
    for candidate in range(low, high + 1):
        if candidate not in used:
            return candidate
    raise event.engine.res.fail("segment_exhausted", network_type=network_type)


@behaviour("network.segment")
async def segment(event: ResourceEvent) -> None:
    """A new network's lowest free segmentation id when none is given (the spec refuses
    what the network type does not allow), or the one given if no network of its type
    and physical network holds it."""
    doc = event.doc
    kind = str(doc.get("provider:network_type") or "vxlan")
    physnet = doc.get("provider:physical_network")
    seg = doc.get("provider:segmentation_id")
    if seg is None:
        seg = await _free_segment(event, kind)
    else:
        table = event.engine.res.res.table
        for other in await event.engine.store.list(table, {"provider:segmentation_id": seg}):
            if (other.get("provider:network_type"), other.get("provider:physical_network")) == (
                kind,
                physnet,
            ):
                raise event.engine.res.fail("segment_taken", segmentation_id=seg)
    doc["provider:network_type"] = kind
    doc["provider:segmentation_id"] = seg


# -- subnets -------------------------------------------------------------------------------------


def _ip(event: ResourceEvent, field: str, value: Any) -> ipam.IPAddress:
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise event.engine.res.fail("ip_invalid", field=field, value=value) from None


def _cidr(event: ResourceEvent, cidr: str, version: int) -> ipam.IPNetwork:
    fail, text = event.engine.res.fail, cidr.strip()
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise fail("cidr_invalid", value=cidr) from None
    try:
        if "/" not in text:
            raise ValueError(text)
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise fail("cidr_not_network", value=cidr, network=str(loose)) from None
    if net.version != version:
        raise fail("cidr_version", value=cidr, version=version)
    if net.prefixlen == 0:
        raise fail("cidr_zero")
    return net


def _gateway(event: ResourceEvent, net: ipam.IPNetwork, gateway: Any) -> str | None:
    if gateway is None:
        return None
    fail, ip = event.engine.res.fail, _ip(event, "gateway_ip", gateway)
    if ip.version != net.version:
        raise fail("gateway_version", value=gateway, version=net.version)
    if ip not in net:
        raise fail("gateway_outside", ip=str(ip), cidr=str(net))
    if net.num_addresses > 2 and (
        ip == net.network_address or (net.version == 4 and ip == net.broadcast_address)
    ):
        raise fail("gateway_reserved", ip=str(ip), cidr=str(net))
    return str(ip)


def _pools(
    event: ResourceEvent, net: ipam.IPNetwork, pools: list[Doc], gateway: str | None
) -> list[Doc]:
    fail = event.engine.res.fail
    first = int(net.network_address) + (1 if net.num_addresses > 2 else 0)
    last = int(net.broadcast_address) - (1 if net.version == 4 and net.num_addresses > 2 else 0)
    ranges: list[tuple[int, int]] = []
    out: list[Doc] = []
    for pool in pools:
        start = _ip(event, "allocation_pools", pool["start"])
        end = _ip(event, "allocation_pools", pool["end"])
        text = f"{start}-{end}"
        if start.version != net.version or end.version != net.version:
            raise fail("pool_version", pool=text, version=net.version)
        if int(start) > int(end):
            raise fail("pool_reversed", pool=text)
        if int(start) < first or int(end) > last:
            raise fail("pool_outside", pool=text, cidr=str(net))
        ranges.append((int(start), int(end)))
        out.append({"start": str(start), "end": str(end)})
    for (_start, prev_end), (start_, _end) in itertools.pairwise(sorted(ranges)):
        if start_ <= prev_end:
            raise fail("pool_overlap", cidr=str(net))
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        for pool, (start_, end_) in zip(out, ranges, strict=True):
            if start_ <= gw <= end_:
                raise fail("gateway_in_pool", ip=gateway, **pool)
    return out


def _routes(event: ResourceEvent, routes: list[Doc], version: int) -> list[Doc]:
    fail = event.engine.res.fail
    out: list[Doc] = []
    for route in routes:
        try:
            dest = ipaddress.ip_network(str(route["destination"]), strict=True)
        except ValueError:
            raise fail("route_invalid", value=route["destination"]) from None
        if dest.version != version:
            raise fail("route_version", value=str(dest), version=version)
        entry = {
            "destination": str(dest),
            "nexthop": str(_ip(event, "host_routes", route["nexthop"])),
        }
        if entry in out:
            raise fail("route_duplicate", value=route)
        out.append(entry)
    return out


@behaviour("network.subnet_checks")
async def subnet_checks(event: ResourceEvent) -> None:
    """A new subnet's CIDR (no overlap on its network), its gateway (by default the first
    address) and allocation pools (by default the rest of the range); on an update, the
    gateway and pools again, the new gateway not an address in use."""
    doc, old = event.doc, event.old
    store = event.engine.store
    if old is None:
        version = int(doc["ip_version"])
        net = _cidr(event, str(doc["cidr"]), version)
        doc["cidr"] = str(net)
        for other in await store.list(
            event.engine.res.res.table, {"network_id": doc["network_id"]}
        ):
            if ipaddress.ip_network(other["cidr"]).overlaps(net):
                raise event.engine.res.fail(
                    "cidr_overlap", cidr=str(net), network_id=doc["network_id"]
                )
        doc.pop("prefixlen", None)
        doc.pop("use_default_subnetpool", None)
        if "gateway_ip" in doc:
            gateway = _gateway(event, net, doc["gateway_ip"])
        else:
            try:
                gateway = ipam.default_gateway(str(net)) if net.num_addresses > 2 else None
            except ipam.IpamError:
                gateway = None
        doc["gateway_ip"] = gateway
        if "allocation_pools" in doc:
            doc["allocation_pools"] = _pools(event, net, doc["allocation_pools"], gateway)
        else:
            doc["allocation_pools"] = ipam.default_allocation_pools(str(net), gateway)
    else:
        net = ipaddress.ip_network(old["cidr"])
        gateway = old.get("gateway_ip")
        if "gateway_ip" in doc:
            gateway = doc["gateway_ip"] = _gateway(event, net, doc["gateway_ip"])
            if gateway is not None and await store.get("ipallocations", f"{old['id']}:{gateway}"):
                raise event.engine.res.fail("gateway_in_use", ip=gateway, id=old["id"])
        if "allocation_pools" in doc or "gateway_ip" in doc:
            pools = doc.get("allocation_pools", old.get("allocation_pools") or [])
            doc["allocation_pools"] = _pools(event, net, pools, gateway)
    if "host_routes" in doc:
        doc["host_routes"] = _routes(event, doc["host_routes"] or [], net.version)


@behaviour("network.subnet_release")
async def subnet_release(event: ResourceEvent) -> None:
    """A subnet going away: the network's DHCP ports lose their address on it (the spec
    refuses while any other port holds one), and its ipallocations rows go."""
    store = event.engine.store
    subnet_id = event.doc["id"]
    allocations = await store.list("ipallocations", {"subnet_id": subnet_id})
    for port_id in {a["port_id"] for a in allocations}:
        port = await store.get("ports", port_id)
        if port is not None:
            kept = [f for f in port.get("fixed_ips") or [] if f["subnet_id"] != subnet_id]
            await store.update("ports", port_id, {"fixed_ips": kept})
    for alloc in allocations:
        await store.delete("ipallocations", alloc["id"])


async def release_port(store: Store, port: Doc) -> None:
    """The addresses a port held go back to their subnets."""
    for fixed in port.get("fixed_ips") or []:
        row_id = f"{fixed['subnet_id']}:{fixed['ip_address']}"
        row = await store.get("ipallocations", row_id)
        if row is not None and row.get("port_id") == port["id"]:
            await store.delete("ipallocations", row_id)
    for alloc in await store.list("ipallocations", {"port_id": port["id"]}):
        await store.delete("ipallocations", alloc["id"])
