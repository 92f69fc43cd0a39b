"""nova-api: attaching and detaching a server's volumes, through the server's compute host
(`compute.rpc_attach_volume`, `compute.rpc_detach_volume`); the spec's queries list them.
"""

from __future__ import annotations

from specstack_runtime.behaviours.nova_common import (
    SERVER,
    instance_for,
    is_uuid,
    looked_up,
    request_object,
    to_host,
)
from specstack_runtime.context import Call, Reply
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import guards
from specstack_runtime.resources.serve import engine_call


@behaviour("compute.attach_volume", needs=("block-storage",))
async def attach_volume(call: Call) -> Reply:
    """Attach a volume through the server's compute host; 200 with the attachment."""
    row = await instance_for(call, call.path_params["server_id"])
    spec = request_object(call, "volumeAttachment")
    rc = engine_call(call, SERVER)
    params = {"project_id": row["project_id"], "volume_id": spec.get("volumeId")}
    if is_uuid(params["volume_id"]):  # cinder's volume ({}: unknown; None: cinder cannot say)
        volume = await looked_up(call, "block-storage", "showVolume", params, "volume")
        rc.refs = {} if volume is None else {"volume": volume}
    guards.check(rc, "attach_volume", row, changes=spec)  # the spec's rules, nova's messages
    volume_id = spec["volumeId"]
    device, delete = spec.get("device"), spec.get("delete_on_termination") is True
    options = {"volume_id": volume_id, "device": device, "delete_on_termination": delete}
    reply = await to_host(call, row, "attach_volume", **options)
    item = {**((reply or {}).get("attachment") or {}), "volume_id": volume_id}
    return Reply(200, {"volumeAttachment": rc.template("attachment", doc=row, item=item)})


@behaviour("compute.detach_volume")
async def detach_volume(call: Call) -> Reply:
    row = await instance_for(call, call.path_params["server_id"])
    volume_id = call.path_params["volume_id"]
    guards.check(engine_call(call, SERVER), "detach_volume", row, changes={"volumeId": volume_id})
    await to_host(call, row, "detach_volume", volume_id=volume_id)
    return Reply(202)
