"""A server's port interfaces (os-interface) on its compute host: nova-api's checks and its
call to the host are the server's `attach_interface` and `detach_interface` actions
(spec/resources/compute.yaml); the host (`compute.rpc_attach_interface`,
`compute.rpc_detach_interface`) binds the user's port (or makes one on the network), plugs
it into the guest and keeps it in the instance's network info (`vifs`, `ports` nova made,
`addresses`); detaching unplugs it and deletes the port nova made, or unbinds the user's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from specstack_runtime.behaviours.nova_build import group_ids, port_binding
from specstack_runtime.behaviours.nova_common import (
    SERVER,
    fail,
    flow_token,
    is_gone,
    update_instance,
)
from specstack_runtime.behaviours.nova_events import neutron_addresses
from specstack_runtime.behaviours.nova_host import fetch_instance, guest_of
from specstack_runtime.context import Call
from specstack_runtime.http import error_message, expect
from specstack_runtime.registry import behaviour


async def _port_call(call: Call, operation: str, port_id: str | None, **kw: Any) -> Any:
    """neutron's `operation` on the port `port_id` (None: a new one), with the flow's token."""
    params = {} if port_id is None else {"port_id": port_id}
    api, token = call.rt.info.api_of_type("network"), await flow_token(call)
    return await call.rt.clients.call(api, operation, params, token=token, **kw)


async def _give_back(call: Call, port_id: str, made: bool, **kw: Any) -> Any:
    """The port given back: deleted when nova made it, else the user's unbound."""
    if made:
        return await _port_call(call, "deletePort", port_id, **kw)
    unbound = call.rt.info.resources.resource(SERVER).template("unbound")
    return await _port_call(call, "updatePort", port_id, body=unbound, **kw)


def _lock(call: Call) -> asyncio.Lock:
    """One interface change of an instance at a time on its host (each rewrites its vifs)."""
    locks: dict[str, asyncio.Lock] = call.rt.local.setdefault("compute.interface_locks", {})
    return locks.setdefault(str(call.payload["instance"]["uuid"]), asyncio.Lock())


async def _record(call: Call, instance: Mapping[str, Any], vifs: Any, ports: Any) -> None:
    """The instance's network info as it now is: its `vifs`, the `ports` nova made."""
    uuid = str(instance["uuid"])
    addresses = await neutron_addresses(call, uuid, await flow_token(call))
    await update_instance(call, uuid, {"vifs": vifs, "ports": ports, "addresses": addresses})


@behaviour("compute.rpc_attach_interface", needs=("network",))
async def rpc_attach_interface(call: Call) -> dict[str, Any]:
    """Bind the user's port (or make one on the network), plug it, record it."""
    async with _lock(call):
        rt, instance, ctx = call.rt, await fetch_instance(call), call.flow_context()
        net, server = dict(call.payload["requested_network"]), rt.info.resources.resource(SERVER)
        binding = port_binding(rt, instance)
        if port_id := net.get("port_id"):
            body: Any = {"port": binding}
            resp = await _port_call(call, "updatePort", port_id, body=body, context=ctx)
            if resp.status_code == 404:
                raise fail(rt, "port_not_found", port_id=port_id)
        else:
            groups = await group_ids(call, instance, await flow_token(call))
            body = server.template("port", item=net, refs={"binding": binding, "groups": groups})
            resp = await _port_call(call, "createPort", None, body=body, context=ctx)
            if resp.status_code == 404:
                raise fail(rt, "network_not_found", net_id=net.get("network_id"))
        if resp.status_code in (400, 409):
            raise fail(rt, "interface_refused", reason=error_message(resp))
        port = expect(resp, 200 if port_id else 201).json()["port"]
        vif = dict(server.template("vif", item=port))
        try:
            await rt.driver.plug_vifs(guest_of(instance), [server.template("driver_vif", item=vif)])
        except Exception:  # the port goes back as it was
            await _give_back(call, str(port["id"]), made=not port_id)
            raise
        made = [] if port_id else [str(port["id"])]
        vifs = [*(instance.get("vifs") or []), vif]
        await _record(call, instance, vifs, [*(instance.get("ports") or []), *made])
        return {"port": port}


@behaviour("compute.rpc_detach_interface", needs=("network",))
async def rpc_detach_interface(call: Call) -> dict[str, Any]:
    """Unplug the port; delete it when nova made it, else unbind it; forget it."""
    async with _lock(call):
        instance, port_id = await fetch_instance(call), str(call.payload["port_id"])
        server = call.rt.info.resources.resource(SERVER)
        vifs = list(instance.get("vifs") or [])
        vif = next((v for v in vifs if v.get("id") == port_id), None)
        if vif is None:
            raise fail(call.rt, "port_not_found", port_id=port_id)
        try:
            driver_vif = server.template("driver_vif", item=vif)
            await call.rt.driver.unplug_vifs(guest_of(instance), [driver_vif])
        except Exception as exc:
            if not is_gone(exc):
                raise
        ports, ctx = [str(p) for p in instance.get("ports") or []], call.flow_context()
        made = port_id in ports
        expect(await _give_back(call, port_id, made, context=ctx), 204 if made else 200, 404)
        kept = [v for v in vifs if v is not vif]
        await _record(call, instance, kept, [p for p in ports if p != port_id])
        return {"port_id": port_id}
