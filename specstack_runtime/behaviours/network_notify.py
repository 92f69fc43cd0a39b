"""neutron's nova notifier: a change to what a server's port carries (a floating IP
associated, moved or let go) is told to nova as a `network-changed` external event, so
that the server's addresses show it. Best effort, as neutron's: nova away is logged."""

from __future__ import annotations

import logging

from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent

logger = logging.getLogger(__name__)

#: neutron's device owner prefix of the ports nova made for its servers
COMPUTE_OWNER = "compute:"


@behaviour("network.notify_compute", needs=("compute",))
async def notify_compute(event: ResourceEvent) -> None:
    """After a write of a row naming a port (`port_id`, before and after): nova is told
    about each server whose port it names."""
    ports = event.engine.of("port")
    named = {(event.old or {}).get("port_id"), event.doc.get("port_id")} - {None, ""}
    events = []
    for port_id in sorted(str(p) for p in named):
        port = await ports.store.get(ports.res.res.table, port_id) or {}
        if str(port.get("device_owner") or "").startswith(COMPUTE_OWNER):
            server = str(port["device_id"])
            events.append({"name": "network-changed", "server_uuid": server, "tag": port_id})
    if not events:
        return
    rt = event.call.rt
    try:
        resp = await rt.clients.call(
            rt.info.api_of_type("compute"),
            "createServerExternalEvents",
            body={"events": events},
            token=await rt.service_token(),
        )
        if resp.status_code not in (200, 207):
            logger.warning("nova refused the events %s: %s", events, resp.text)
    except Exception:
        logger.warning("nova could not be told about %s", events, exc_info=True)
