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


async def _to_host(call: Call, message: str, row: Mapping[str, Any], **payload: Any) -> Any:
    """The message to the server's compute host; its failure is the API's error."""
    try:
        return await send(
            call, message, {"instance": instance_ref(row), **payload}, host=row["host"]
        )
    except (BusError, TimeoutError) as exc:
        raise api_error(exc, "The compute host") from exc


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
    volume_id = spec["volumeId"]
    reply = await _to_host(
        call,
        "attach_volume",
        row,
        volume_id=volume_id,
        device=spec.get("device"),
        delete_on_termination=spec.get("delete_on_termination") is True,
    )
    item = {**((reply or {}).get("attachment") or {}), "volume_id": volume_id}
    return Reply(200, {"volumeAttachment": rc.template("attachment", doc=row, item=item)})


@behaviour("compute.detach_volume")
async def detach_volume(call: Call) -> Reply:
    row = await instance_for(call, call.path_params["server_id"])
    volume_id = call.path_params["volume_id"]
    guards.check(engine_call(call, SERVER), "detach_volume", row, changes={"volumeId": volume_id})
    await _to_host(call, "detach_volume", row, volume_id=volume_id)
    return Reply(202)
