"""nova-api: attaching and detaching a server's volumes, through the server's compute host
(`compute.rpc_attach_volume`, `compute.rpc_detach_volume`); the spec's queries list them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from specstack_runtime.behaviours.conductor import instance_ref
from specstack_runtime.behaviours.nova_common import SERVER, instance_for, is_uuid, looked_up
from specstack_runtime.bus import BusError
from specstack_runtime.context import Call, Reply
from specstack_runtime.messaging import api_error, send
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import guards
from specstack_runtime.resources.serve import engine_call


def _attachment_view(row: Mapping[str, Any], volume_id: str, device: Any) -> dict[str, Any]:
    return {"id": volume_id, "serverId": row["id"], "volumeId": volume_id, "device": device}


async def _volume(call: Call, row: Mapping[str, Any], volume_id: Any) -> dict[str, Any] | None:
    """cinder's volume ({} when cinder does not know it; None when it cannot say)."""
    if not is_uuid(volume_id):
        return None
    params = {"project_id": row["project_id"], "volume_id": volume_id}
    return await looked_up(call, "block-storage", "showVolume", params, "volume")


@behaviour("compute.attach_volume", needs=("block-storage",))
async def attach_volume(call: Call) -> Reply:
    """Attach a volume through the server's compute host; 200 with the attachment."""
    row = await instance_for(call, call.path_params["server_id"])
    body = call.body if isinstance(call.body, dict) else {}
    given = body.get("volumeAttachment")
    spec: dict[str, Any] = given if isinstance(given, dict) else {}
    rc = engine_call(call, SERVER)
    volume = await _volume(call, row, spec.get("volumeId"))
    rc.refs = {} if volume is None else {"volume": volume}
    guards.check(rc, "attach_volume", row, changes=spec)  # the spec's rules, nova's messages
    volume_id, device = spec["volumeId"], spec.get("device")
    payload = {"instance": instance_ref(row), "volume_id": volume_id, "device": device}
    try:
        reply = await send(call, "attach_volume", payload, host=row["host"])
    except (BusError, TimeoutError) as exc:
        raise api_error(exc, "The compute host") from exc
    att = (reply or {}).get("attachment") or {}
    return Reply(200, {"volumeAttachment": _attachment_view(row, volume_id, att.get("device"))})


@behaviour("compute.detach_volume")
async def detach_volume(call: Call) -> Reply:
    row = await instance_for(call, call.path_params["server_id"])
    volume_id = call.path_params["volume_id"]
    guards.check(engine_call(call, SERVER), "detach_volume", row, changes={"volumeId": volume_id})
    payload = {"instance": instance_ref(row), "volume_id": volume_id}
    try:
        await send(call, "detach_volume", payload, host=row["host"])
    except (BusError, TimeoutError) as exc:
        raise api_error(exc, "The compute host") from exc
    return Reply(202)
