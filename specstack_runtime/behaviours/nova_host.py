"""nova-compute: the host's resource reports, terminating instances, the server actions.

- startup `compute.report_resources`, then every `report_interval_s` (spec) the
  process's one heartbeat loop reports all its hosts;
- terminate_instance: `compute.begin_terminate` then delete-vm 8 (`compute.delete_ports`;
  7, 7.1, 10 and 11 are the spec's steps), `compute.terminate_failed` on error;
- the RPC handlers of the server actions (`compute.rpc_*`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from specstack_runtime.batching import MAX_ITEMS, batch_of
from specstack_runtime.behaviours.conductor import (
    liveness,
    make_fault,
)
from specstack_runtime.behaviours.nova_common import (
    CONNECTOR_BASE,
    device_names,
    fail,
    fault_code,
    fault_of,
    flow_token,
    given_ports,
    host_availability_zone,
    instance_ports,
    is_gone,
    keep,
    rehost_ports,
    update_instance,
)
from specstack_runtime.context import Call, Interaction
from specstack_runtime.errors import (
    StepFailed,
)
from specstack_runtime.http import error_message, expect
from specstack_runtime.messaging import send, shaped
from specstack_runtime.registry import behaviour
from specstack_runtime.services import ServiceRuntime

logger = logging.getLogger(__name__)


async def _node(rt: ServiceRuntime) -> dict[str, Any]:
    """The host's report from its driver (raises if the driver cannot give it)."""
    if rt.driver is None:
        raise RuntimeError(f"{rt.component} on {rt.host} has no hypervisor driver")
    resources = await rt.driver.get_available_resource()
    return {
        "host": rt.host,
        "availability_zone": host_availability_zone(rt),
        "resources": shaped(rt.info, "Resources", resources),  # what the spec's type carries
    }


async def _send_nodes(rt: ServiceRuntime, nodes: list[dict[str, Any]]) -> Any:
    # built here from the drivers' reports: the conductor's consumer validates it once
    return await send(rt, "compute_node_update", {"nodes": nodes}, checked=True)


async def report_once(rt: ServiceRuntime) -> None:
    node = await _node(rt)

    async def flush(nodes: list[dict[str, Any]]) -> Any:
        return await _send_nodes(rt, nodes)

    # the hosts of this process reporting in the same turn: one message for all of them
    await batch_of(rt.shared, "compute_node_update", flush).submit(node)


class Heartbeat:
    """The process's one heartbeat loop for all its compute hosts.

    Every `report_interval_s` (the spec's) it asks each registered host's driver for its resources and
    sends them in one `compute_node_update` per MAX_ITEMS hosts. A host whose driver fails
    is left out of that period's report: its heartbeat ages and the scheduler's
    service_down_time check takes it for down, as with a per-host loop.
    """

    def __init__(self) -> None:
        self.hosts: dict[str, ServiceRuntime] = {}
        self.periods = 0
        self.retry_soon = False
        self.task: asyncio.Task[None] | None = None

    def add(self, rt: ServiceRuntime) -> asyncio.Task[None]:
        self.hosts[rt.host] = rt
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._loop(), name="compute-heartbeat")
        return self.task

    async def report(self) -> list[str]:
        """One period: the hosts reported (those whose driver answered)."""
        self.periods += 1
        hosts, reported = list(self.hosts.values()), []
        for at in range(0, len(hosts), MAX_ITEMS):
            nodes: list[dict[str, Any]] = []
            for rt in hosts[at : at + MAX_ITEMS]:
                try:
                    nodes.append(await _node(rt))
                except Exception as exc:
                    logger.warning("compute %s could not report its resources: %s", rt.host, exc)
            if nodes:
                await _send_nodes(hosts[0], nodes)
                reported += [n["host"] for n in nodes]
            await asyncio.sleep(0)  # a boot meanwhile waits for one batch, not for all
        return reported

    async def _loop(self) -> None:
        while True:
            some = next(iter(self.hosts.values()), None)
            interval = liveness(some.info, "report_interval_s") if some else 10.0
            delay = 1.0 if self.retry_soon else interval
            self.retry_soon = False
            await asyncio.sleep(delay)
            try:
                await self.report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("compute hosts could not report their resources: %s", exc)


def heartbeat_of(rt: ServiceRuntime) -> Heartbeat:
    """The heartbeat of `rt`'s process (in its `shared`), made on first use."""
    found = rt.shared.get("compute.heartbeat")
    if not isinstance(found, Heartbeat):
        found = rt.shared["compute.heartbeat"] = Heartbeat()
    return found


@behaviour("compute.report_resources")
async def report_resources(rt: ServiceRuntime) -> None:
    """Startup: report the host's capacity to the conductor, then every
    `report_interval_s` (the spec's) in the process's one heartbeat loop.

    The reports are the heartbeat the scheduler's ComputeFilter checks. A first
    report that fails (the conductor not consuming yet) is retried a second later
    rather than failing the start; a compute without a driver does fail it.
    """
    if rt.driver is None:
        raise RuntimeError(f"{rt.component} on {rt.host} has no hypervisor driver")
    heartbeat = heartbeat_of(rt)
    try:
        await report_once(rt)
    except Exception as exc:
        logger.warning("compute %s: first resource report failed (%s); retrying", rt.host, exc)
        heartbeat.retry_soon = True
    # the loop is the process's: cancelling it (a stop) stops every host's reports
    rt.local["compute.heartbeat"] = heartbeat.add(rt)


@behaviour("compute.begin_terminate")
async def begin_terminate(call: Call) -> None:
    """terminate_instance: keep the request's facts for the steps that follow."""
    call.vars.update(keep(call))


@behaviour("compute.delete_ports", via=("http",))
async def delete_ports(ix: Interaction) -> None:
    """delete-vm 8: the ports nova created released, those a build left unrecorded too."""
    token = await flow_token(ix.call)
    uuid = str(ix.vars["instance_uuid"])
    given = given_ports(ix.vars.get("requested_networks") or [])
    ports = dict.fromkeys(str(p) for p in ix.vars.get("ports") or [])
    ports.update(dict.fromkeys(str(p["id"]) for p in await instance_ports(ix.rt, uuid, token)))
    for port_id in ports:
        if port_id not in given:
            expect(await ix.invoke(port_id=port_id, token=token), 204, 404)


@behaviour("compute.terminate_failed")
async def terminate_failed(call: Call, error: BaseException) -> None:
    """The delete failed: the instance goes to ERROR with the fault; never raises."""
    try:
        uuid = str(call.payload["instance"]["uuid"])
        fault = fault_of(error, "Deleting the instance failed: ")
        await update_instance(call, uuid, {"vm_state": "error", "task_state": None, "fault": fault})
    except Exception:
        logger.exception("could not record the failed delete")


async def fetch_instance(call: Call) -> dict[str, Any]:
    reply = await send(call, "instance_get", {"instance_uuid": call.payload["instance"]["uuid"]})
    assert reply is not None
    instance: dict[str, Any] = reply["instance"]
    return instance


def guest_of(instance: Mapping[str, Any]) -> dict[str, Any]:
    return {"uuid": instance["uuid"], "name": instance.get("name") or instance["uuid"]}


@behaviour("compute.rpc_power_action", needs=("network",))
async def rpc_power_action(call: Call) -> None:
    """A server action on this host's hypervisor, as the consumer's `args` say: the driver
    `method` (with the payload's `pass` fields after the instance), the task state the API
    set (`expected`) and the instance's fields once it is done (`done`). A driver failure
    clears the task state and records the fault. With `ports_host` the instance's ports
    are bound to that host after (shelve offload: none). Without `expected` (nova's
    trigger_crash_dump: an NMI) no state changes, and a failure is the event's error only."""
    uuid, expected = str(call.payload["instance"]["uuid"]), call.args.get("expected")
    method = str(call.args["method"])
    extra = [call.payload[name] for name in call.args.get("pass", ())]
    try:
        await getattr(call.rt.driver, method)({"uuid": uuid, "name": uuid}, *extra)
        if "ports_host" in call.args:  # shelve offload: off this host
            await rehost_ports(call, uuid)
    except Exception as exc:
        if expected is not None:
            fault = make_fault(fault_code(exc), f"{method} failed: {exc}")
            await update_instance(call, uuid, {"task_state": None, "fault": fault}, expected)
        raise
    if expected is not None:
        done = {"task_state": None, **dict(call.args["done"])}
        await update_instance(call, uuid, done, str(expected))


@behaviour("compute.rpc_get_console_output")
async def rpc_get_console_output(call: Call) -> dict[str, Any]:
    uuid = str(call.payload["instance"]["uuid"])
    try:
        output = await call.rt.driver.get_console_output({"uuid": uuid, "name": uuid})
    except Exception as exc:
        if is_gone(exc):
            raise fail(call.rt, "no_console") from exc
        raise
    length = call.payload.get("length")
    if isinstance(length, int) and length >= 0:
        lines = str(output).splitlines(keepends=True)
        output = "".join(lines[-length:]) if length else ""
    return {"output": str(output)}


async def _cinder(call: Call, operation: str, params: dict[str, Any], **kw: Any) -> Any:
    """cinder's `operation` (block-storage API) with the flow's token, in the flow's trace."""
    rt, token = call.rt, await flow_token(call)
    api = rt.info.api_of_type("block-storage")
    return await rt.clients.call(api, operation, params, token=token, **kw)


@behaviour("compute.rpc_attach_volume", needs=("block-storage",))
async def rpc_attach_volume(call: Call) -> dict[str, Any]:
    """Attach a volume: cinder attachment with this host's connector, disk, complete."""
    rt = call.rt
    instance = await fetch_instance(call)
    uuid = instance["uuid"]
    volume_id = str(call.payload["volume_id"])
    attachments = list(instance.get("attachments") or [])
    used = {a.get("device") for a in attachments} | {"/dev/vda"}
    device = call.payload.get("device")
    if device and device in used:
        raise fail(rt, "device_in_use", device=device)
    device = device or next(iter(device_names(d for d in used if d)))
    connector = {"host": rt.host, **CONNECTOR_BASE, "mountpoint": device}
    body = {"volume_uuid": volume_id, "instance_uuid": uuid, "connector": connector}
    project = {"project_id": instance["project_id"]}
    resp = await _cinder(
        call, "createAttachment", project, body={"attachment": body}, context=call.flow_context()
    )
    if resp.status_code == 404:
        raise fail(rt, "volume_not_found", volume_id=volume_id)
    if resp.status_code in (400, 409):
        raise fail(rt, "invalid_volume", reason=error_message(resp))
    att = expect(resp, 200).json()["attachment"]
    ids = {**project, "attachment_id": str(att["id"])}
    connection_info = att.get("connection_info")
    try:
        if not isinstance(connection_info, dict):
            raise StepFailed(f"cinder gave no connection_info for volume {volume_id}")
        await rt.driver.attach_volume(guest_of(instance), connection_info, device)
    except Exception:
        await _cinder(call, "deleteAttachment", ids)
        raise
    complete = {"os-complete": None}
    expect(
        await _cinder(call, "completeAttachment", ids, body=complete, context=call.flow_context()),
        204,
    )
    item = {"attachment_id": ids["attachment_id"], "volume_id": volume_id, "device": device,
            "delete_on_termination": call.payload.get("delete_on_termination") is True,
            "connection_info": connection_info}  # fmt: skip
    await update_instance(call, uuid, {"attachments": [*attachments, item]})
    return {"attachment": item}


@behaviour("compute.rpc_detach_volume", needs=("block-storage",))
async def rpc_detach_volume(call: Call) -> dict[str, Any]:
    """Detach a volume: disk off the guest, cinder attachment deleted."""
    rt = call.rt
    instance = await fetch_instance(call)
    volume_id = str(call.payload["volume_id"])
    attachments = list(instance.get("attachments") or [])
    att = next((a for a in attachments if a.get("volume_id") == volume_id), None)
    if att is None:
        raise fail(rt, "volume_not_attached", volume_id=volume_id)
    if att.get("device") and isinstance(att.get("connection_info"), dict):
        try:
            await rt.driver.detach_volume(guest_of(instance), att["connection_info"], att["device"])
        except Exception as exc:
            if not is_gone(exc):
                raise
    ids = {"project_id": instance["project_id"], "attachment_id": att["attachment_id"]}
    resp = await _cinder(call, "deleteAttachment", ids, context=call.flow_context())
    expect(resp, 200, 204, 404)
    remaining = [a for a in attachments if a is not att]
    await update_instance(call, instance["uuid"], {"attachments": remaining})
    return {"volume_id": volume_id}
