"""nova's os-server-external-events: what neutron tells nova about a server's ports.

At `network-changed` nova reads the server's ports and the floating IPs on them from
neutron again and keeps them as the server's `addresses` (nova's network info cache), so
a floating IP associated after the boot shows as `OS-EXT-IPS:type: floating`.
"""

from __future__ import annotations

import logging
from typing import Any

from specstack_runtime.behaviours.nova_build import nova_addresses
from specstack_runtime.behaviours.nova_common import SERVER
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import NotFound
from specstack_runtime.http import expect
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import guards
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.store import Doc

logger = logging.getLogger(__name__)


@behaviour("compute.server_external_events", needs=("network",))
async def server_external_events(call: Call) -> Reply:
    """POST /v2.1/os-server-external-events: each event's server refreshed as the event
    asks; 200, 207 when some servers are unknown (code 404 each), 404 when all are."""
    rc = engine_call(call)
    guards.check(rc, "external_events", {}, changes=call.body)  # the spec's version rules
    table = rc.res.res.table
    answered: list[Doc] = []
    for event in call.body["events"]:
        server = await rc.store.get(table, str(event["server_uuid"]))
        found = server is not None and server.get("vm_state") != "deleted"
        if found and event["name"] == "network-changed" and server and server.get("launched_at"):
            addresses = await neutron_addresses(call, str(server["id"]))
            await rc.store.update(table, str(server["id"]), {"addresses": addresses})
        answered.append(rc.template("event_answer", item=event, refs={"found": found}))
    if all(e["code"] == 404 for e in answered):
        raise NotFound("No instances found for any event")
    status = 200 if all(e["code"] == 200 for e in answered) else 207
    return Reply(status, {"events": answered})


async def neutron_addresses(call: Call, server_id: str, token: str | None = None) -> dict[str, Any]:
    """The server's addresses as neutron holds them now: fixed ones, then the floating
    IPs associated with them (neutron answers the service's token in full)."""
    rt = call.rt
    api = rt.info.api_of_type("network")
    token = token or call.token

    async def listed(operation: str, key: str, query: dict[str, Any]) -> list[Doc]:
        resp = await rt.clients.call(api, operation, query=query, token=token)
        return list(expect(resp, 200).json().get(key) or [])

    ports = await listed("listPorts", "ports", {"device_id": server_id})
    names: dict[str, str] = {}
    for net_id in {str(p.get("network_id")) for p in ports}:
        nets = await listed("listNetworks", "networks", {"id": net_id})
        names[net_id] = str(nets[0].get("name") or net_id) if nets else net_id
    addresses = nova_addresses(rt, ports, names)
    server = rt.info.resources.resource(SERVER)
    for port in ports:
        fips = await listed("listFloatingIPs", "floatingips", {"port_id": port["id"]})
        net = names[str(port.get("network_id"))]
        refs = {"fips": fips, "port": port}
        addresses.setdefault(net, []).extend(server.template("floating", refs=refs))
    return addresses
