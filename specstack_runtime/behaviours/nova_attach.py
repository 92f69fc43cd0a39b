"""nova-api: a server's volume attachments.

Attaching and detaching go to the server's compute host (`compute.rpc_attach_volume`,
`compute.rpc_detach_volume`); the listings read the instance row.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from specstack_runtime.behaviours.conductor import (
    instance_ref,
)
from specstack_runtime.behaviours.nova_common import (
    SERVER,
    instance_for,
    is_uuid,
)
from specstack_runtime.bus import BusError
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import (
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
)
from specstack_runtime.messaging import api_error, send
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.compiled import fill
from specstack_runtime.resources.serve import engine_call

logger = logging.getLogger(__name__)

_DEVICE = re.compile(r"^/dev/[a-z]+[a-z0-9]*$")


def _int_param(call: Call, name: str, *, minimum: int = 0) -> int | None:
    raw = call.q(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} param must be an integer") from None
    if value < minimum:
        raise BadRequest(f"{name} param must be {'positive' if minimum else 'non-negative'}")
    return value


def _api_error_from_remote(exc: BaseException) -> ApiError:
    """Turn what a compute node answered into an error for the API's caller."""
    return api_error(exc, "The compute host")


def _check_attachable(call: Call, action: str, row: Mapping[str, Any]) -> None:
    """Volumes are attached and detached in the vm_states the spec's server data names
    (`attachable`), with no task running, on a host; else 409 in the state machine's words."""
    res = engine_call(call, SERVER).res.res
    state, task = row.get("vm_state"), row.get("task_state")
    if state in res.data["attachable"] and task is None and row.get("host"):
        return
    assert res.states is not None
    raise Conflict(fill(res.states.conflict, {**row, "action": action}))


def _attachment_view(row: Mapping[str, Any], volume_id: str, device: Any) -> dict[str, Any]:
    return {"id": volume_id, "serverId": row["id"], "volumeId": volume_id, "device": device}


def _attached(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """(volume id, device) of every volume attached to or mapped for the server."""
    seen: dict[str, dict[str, Any]] = {}
    for att in row.get("attachments") or []:
        seen.setdefault(
            str(att["volume_id"]), {"volume_id": str(att["volume_id"]), "device": att.get("device")}
        )
    if not row.get("launched_at"):
        for b in row.get("block_device_mapping") or []:
            if b.get("source_type") == "volume" and b.get("uuid"):
                seen.setdefault(str(b["uuid"]), {"volume_id": str(b["uuid"]), "device": None})
    return list(seen.values())


@behaviour("compute.list_volume_attachments")
async def list_volume_attachments(call: Call) -> Reply:
    row = await instance_for(call, call.path_params["server_id"])
    items = [_attachment_view(row, a["volume_id"], a["device"]) for a in _attached(row)]
    offset = _int_param(call, "offset") or 0
    limit = _int_param(call, "limit")
    items = items[offset:]
    if limit is not None:
        items = items[:limit]
    return Reply(200, {"volumeAttachments": items})


@behaviour("compute.show_volume_attachment")
async def show_volume_attachment(call: Call) -> Reply:
    row = await instance_for(call, call.path_params["server_id"])
    volume_id = call.path_params["volume_id"]
    for att in _attached(row):
        if att["volume_id"] == volume_id:
            return Reply(200, {"volumeAttachment": _attachment_view(row, volume_id, att["device"])})
    raise NotFound(f"volume_id not found: {volume_id}")


@behaviour("compute.attach_volume", needs=("block-storage",))
async def attach_volume(call: Call) -> Reply:
    """Attach a volume through the server's compute host; 200 with the attachment."""
    row = await instance_for(call, call.path_params["server_id"])
    body = call.body if isinstance(call.body, dict) else {}
    spec = body.get("volumeAttachment")
    if not isinstance(spec, dict) or not isinstance(spec.get("volumeId"), str):
        raise BadRequest(
            "Invalid input for field/attribute volumeAttachment: volumeId is required."
        )
    volume_id = spec["volumeId"]
    if not is_uuid(volume_id):
        raise NotFound(f"Volume {volume_id} could not be found.")
    device = spec.get("device")
    if device is not None and (not isinstance(device, str) or not _DEVICE.match(device)):
        raise BadRequest(f"The supplied device path ({device}) is invalid.")
    _check_attachable(call, "attach_volume", row)
    if any(a["volume_id"] == volume_id for a in _attached(row)):
        raise Conflict(
            f"Invalid volume: volume {volume_id} is already attached to instance {row['id']}."
        )
    if call.token:
        try:
            resp = await call.rt.clients.call(
                call.rt.info.api_of_type("block-storage"),
                "showVolume",
                {"project_id": row["project_id"], "volume_id": volume_id},
                token=call.token,
            )
        except Exception:
            resp = None
        if resp is not None and resp.status_code == 404:
            raise NotFound(f"Volume {volume_id} could not be found.")
        if resp is not None and resp.status_code == 200:
            volume = (resp.json() or {}).get("volume") or {}
            if volume.get("status") != "available" and not volume.get("multiattach"):
                raise Conflict(
                    f"Invalid volume: volume {volume_id} status must be 'available' "
                    f"(it is '{volume.get('status')}')."
                )
    try:
        reply = await send(
            call,
            "attach_volume",
            {"instance": instance_ref(row), "volume_id": volume_id, "device": device},
            host=row["host"],
        )
    except (BusError, TimeoutError) as exc:
        raise _api_error_from_remote(exc) from exc
    att = (reply or {}).get("attachment") or {}
    return Reply(200, {"volumeAttachment": _attachment_view(row, volume_id, att.get("device"))})


@behaviour("compute.detach_volume")
async def detach_volume(call: Call) -> Reply:
    row = await instance_for(call, call.path_params["server_id"])
    volume_id = call.path_params["volume_id"]
    if not any(a["volume_id"] == volume_id for a in _attached(row)):
        raise NotFound(f"volume_id not found: {volume_id}")
    for b in row.get("block_device_mapping") or []:
        if (
            b.get("uuid") == volume_id
            and b.get("source_type") == "volume"
            and b.get("boot_index") == 0
        ):
            raise BadRequest("Can't detach root device volume")
    _check_attachable(call, "detach_volume", row)
    try:
        await send(
            call,
            "detach_volume",
            {"instance": instance_ref(row), "volume_id": volume_id},
            host=row["host"],
        )
    except (BusError, TimeoutError) as exc:
        raise _api_error_from_remote(exc) from exc
    return Reply(202)
