"""rebuild (spec/resources/compute.yaml): nova-api checks the new image with glance (the
action's `ask`) and records it, the compute host makes the guest again from it, on the
same host with the same ports and volumes (`compute.rpc_rebuild_instance`)."""

from __future__ import annotations

import contextlib
from typing import Any

from specstack_runtime.behaviours.conductor import make_fault, naive_now
from specstack_runtime.behaviours.nova_build import cache_image, wait_until_running
from specstack_runtime.behaviours.nova_common import (
    IMAGE,
    fault_code,
    flow_token,
    glance_image,
    is_gone,
    rehost_ports,
    update_instance,
)
from specstack_runtime.context import Call
from specstack_runtime.errors import StepFailed
from specstack_runtime.expr import compile_expr
from specstack_runtime.messaging import send
from specstack_runtime.registry import behaviour


@behaviour("compute.rpc_rebuild_instance", needs=(IMAGE, "object-store", "network"))
async def rpc_rebuild_instance(call: Call) -> None:
    """rebuild_instance (and unshelve_instance): the guest destroyed and spawned again from
    the image (its data into this host's cache first) with the instance's interfaces and
    volumes, as the consumer's args say; ACTIVE once it runs, SHUTOFF again if it was; the
    image deleted after (`delete_image`: unshelve's). A failure leaves the instance as
    `failed` says (rebuild: ERROR) with the fault, as nova does."""
    rt, args = call.rt, call.args
    uuid, image_id = str(call.payload["instance"]["uuid"]), str(call.payload["image_id"])
    reply = await send(call, "instance_get", {"instance_uuid": uuid})
    assert reply is not None
    instance, spawning = reply["instance"], str(args["spawning"])
    await update_instance(call, uuid, {"task_state": spawning}, str(args["expected"]))
    token = await flow_token(call)
    try:
        image = await glance_image(call, image_id, token)
        if image is None or image.get("status") != "active":
            raise StepFailed(f"Image {image_id} is not active any more", code=400)
        path = await cache_image(rt, image, _object_getter(call))
        refs = {"flavor": reply["flavor"], "image": image, "path": str(path)}
        spawn = compile_expr(str(args["spawn"])).evaluate(doc=instance, refs=refs)
        guest = spawn["instance"]
        with contextlib.suppress(Exception):
            await rt.driver.destroy(guest)
        if "ports_host" in args:  # unshelve: the ports bound to this host first
            await rehost_ports(call, uuid)
        await rt.driver.spawn(**spawn)  # named as the driver contract names them
        await wait_until_running(rt, guest)
        if instance.get("vm_state") == "stopped":  # nova leaves a stopped server stopped
            await rt.driver.power_off(guest)
        done = args["done"].get(instance.get("vm_state")) or args["done"]["active"]
    except Exception as exc:
        fault = make_fault(fault_code(exc), f"rebuild failed: {exc}")
        if is_gone(exc):
            fault = make_fault(404, f"rebuild failed: the guest is gone: {exc}")
        updates = {**args["failed"], "task_state": None, "fault": fault}
        await update_instance(call, uuid, updates, spawning)
        raise
    if args.get("delete_image"):  # unshelve: the shelved image has served
        with contextlib.suppress(Exception):
            api = rt.info.api_of_type(IMAGE)
            await rt.clients.call(api, "deleteImage", {"image_id": image_id}, token=token)
    await update_instance(
        call, uuid, {"task_state": None, "launched_at": naive_now(), **done}, spawning
    )


def _object_getter(call: Call) -> Any:
    rt = call.rt

    async def get_object(token: str, **path: str) -> Any:
        api = rt.info.api_of_type("object-store")
        return await rt.clients.call(api, "getObject", path, token=token)

    return get_object
