"""rebuild (spec/resources/compute.yaml): nova-api checks the new image with glance
(`compute.rebuild_image`) and records it, the compute host makes the guest again from it,
on the same host with the same ports and volumes (`compute.rpc_rebuild_instance`)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from specstack_runtime.behaviours.conductor import make_fault, naive_now
from specstack_runtime.behaviours.nova_build import cache_image, wait_until_running
from specstack_runtime.behaviours.nova_common import (
    IMAGE,
    fail,
    fault_code,
    flow_token,
    glance_image,
    is_gone,
    update_instance,
)
from specstack_runtime.context import Call
from specstack_runtime.errors import StepFailed
from specstack_runtime.messaging import send
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent


@behaviour("compute.rebuild_image", needs=(IMAGE,))
async def rebuild_image(event: ResourceEvent) -> None:
    """rebuild, nova-api: the image must be glance's (the caller's to see) and active; else
    the row goes back as it was (nova checks before it changes anything) and 400."""
    call, doc, rc = event.call, event.doc, event.engine
    image_id = str(doc["image_ref"])
    try:
        image = await glance_image(call, image_id, await flow_token(call))
        if image is None:
            raise fail(call.rt, "rebuild_image")
        if image.get("status") != "active":
            raise fail(call.rt, "rebuild_image_inactive", id=image_id)
    except BaseException:
        old = event.old or {}
        undo = {k: old.get(k) for k in ("task_state", "image_ref", "name", "metadata")}
        await rc.store.update(
            rc.res.res.table, doc["id"], undo, expect={"task_state": "rebuilding"}
        )
        raise


def _vifs(instance: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The instance's interfaces as the driver takes them (the Vif type)."""
    keys = ("id", "address", "network_id", "ip_addresses")
    return [{k: v[k] for k in keys if k in v} for v in instance.get("vifs") or []]


def _volumes(instance: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The attached volumes as the driver takes them at spawn."""
    return [
        {"mountpoint": a["device"], "connection_info": a["connection_info"],
         "serial": str(a.get("volume_id") or "")}
        for a in instance.get("attachments") or []
        if a.get("device") and isinstance(a.get("connection_info"), dict)
    ]  # fmt: skip


@behaviour("compute.rpc_rebuild_instance", needs=(IMAGE, "object-store"))
async def rpc_rebuild_instance(call: Call) -> None:
    """rebuild_instance: the guest destroyed and spawned again from the new image (its data
    into this host's cache first) with the instance's interfaces and volumes; ACTIVE once it
    runs, SHUTOFF again if it was. A failure leaves the instance in ERROR with the fault,
    as nova does."""
    rt = call.rt
    uuid, image_id = str(call.payload["instance"]["uuid"]), str(call.payload["image_id"])
    reply = await send(call, "instance_get", {"instance_uuid": uuid})
    assert reply is not None
    instance, flavor = reply["instance"], reply["flavor"]
    await update_instance(call, uuid, {"task_state": "rebuild_spawning"}, "rebuilding")
    guest = {
        "uuid": uuid,
        "name": str(instance.get("name") or uuid),
        "vcpus": int(flavor["vcpus"]),
        "memory_mb": int(flavor["ram"]),
        "root_gb": int(flavor["disk"]),
        "image_id": image_id,
    }
    try:
        image = await glance_image(call, image_id, await flow_token(call))
        if image is None or image.get("status") != "active":
            raise StepFailed(f"Image {image_id} is not active any more", code=400)
        path = await cache_image(rt, image, _object_getter(call))
        with contextlib.suppress(Exception):
            await rt.driver.destroy(guest)
        meta = {"id": image_id, "name": str(image.get("name") or ""), "path": str(path),
                "disk_format": str(image.get("disk_format") or "raw"), "pending": False}  # fmt: skip
        await rt.driver.spawn(guest, meta, _vifs(instance), _volumes(instance))
        await wait_until_running(rt, guest)
        done: dict[str, Any] = {"vm_state": "active", "power_state": 1}
        if instance.get("vm_state") == "stopped":  # nova leaves a stopped server stopped
            await rt.driver.power_off(guest)
            done = {"vm_state": "stopped", "power_state": 4}
    except Exception as exc:
        fault = make_fault(fault_code(exc), f"rebuild failed: {exc}")
        if is_gone(exc):
            fault = make_fault(404, f"rebuild failed: the guest is gone: {exc}")
        updates = {"vm_state": "error", "task_state": None, "power_state": 0, "fault": fault}
        await update_instance(call, uuid, updates, "rebuild_spawning")
        raise
    await update_instance(
        call, uuid, {"task_state": None, "launched_at": naive_now(), **done}, "rebuild_spawning"
    )


def _object_getter(call: Call) -> Any:
    rt = call.rt

    async def get_object(token: str, **path: str) -> Any:
        api = rt.info.api_of_type("object-store")
        return await rt.clients.call(api, "getObject", path, token=token)

    return get_object
