"""The algorithms of neutron's networks and subnets, as hooks of the resource engine.

spec/resources/network.yaml declares the records (fields, defaults, scope, policy,
what deleting does); these hooks do what is computed: a network's segmentation id
under its type's rules, a subnet's default gateway and allocation pools and the checks
that read other rows (the spec's refusals check the addresses themselves), and the addresses (ipallocations rows) a deleted subnet or port held.
"""

from __future__ import annotations

import ipaddress

from specstack_runtime.behaviours import ipam
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.store import Doc, Store

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
    what the network type does not allow, and a segment another network holds)."""
    doc = event.doc
    kind = doc["provider:network_type"] = str(doc.get("provider:network_type") or "vxlan")
    if doc.get("provider:segmentation_id") is None:
        doc["provider:segmentation_id"] = await _free_segment(event, kind)


# -- subnets -------------------------------------------------------------------------------------


@behaviour("network.subnet_checks")
async def subnet_checks(event: ResourceEvent) -> None:
    """What the spec's refusals (which have checked the CIDR, its overlapping none of the
    network's, the gateway, pools and routes) cannot say: a new subnet's default gateway
    (the first address) and allocation pools (the rest of the range), a new gateway not an
    address in use; the addresses as neutron writes them."""
    doc, old = event.doc, event.old
    store = event.engine.store
    doc.update(event.engine.template("canonical", doc=doc))  # the spec's written forms
    if old is None:
        net = ipaddress.ip_network(doc["cidr"])
        doc.pop("prefixlen", None)
        doc.pop("use_default_subnetpool", None)
        if "gateway_ip" not in doc:
            try:
                gateway = ipam.default_gateway(str(net)) if net.num_addresses > 2 else None
            except ipam.IpamError:
                gateway = None
            doc["gateway_ip"] = gateway
        if "allocation_pools" not in doc:
            doc["allocation_pools"] = ipam.default_allocation_pools(str(net), doc["gateway_ip"])
    elif doc.get("gateway_ip") is not None and await store.get(
        "ipallocations", f"{old['id']}:{doc['gateway_ip']}"
    ):
        raise event.engine.res.fail("gateway_in_use", ip=doc["gateway_ip"], id=old["id"])


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
    """The addresses a port held go back to their subnets (its ipallocations rows go)."""
    for alloc in await store.list("ipallocations", {"port_id": port["id"]}):
        await store.delete("ipallocations", alloc["id"])
