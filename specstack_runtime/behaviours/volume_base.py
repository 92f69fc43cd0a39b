"""What cinder's behaviours share: its rows' compare-and-set, the volume's state changes,
the back end's calls and their errors (volume.py, volume_attach.py, volume_backend.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from specstack_runtime.bus import BusError, MessagingTimeout, RemoteError
from specstack_runtime.context import Call
from specstack_runtime.errors import ApiError, ServiceUnavailable
from specstack_runtime.messaging import InvalidMessage, check, send
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Store

Doc = dict[str, Any]

# the resources of spec/resources/block-storage.yaml
ATTACHMENT = "attachment"
VOLUME_TYPE = "volume_type"

GIB = 1024**3
DEFAULT_AVAILABILITY_ZONE = "nova"  # cinder's storage_availability_zone default
BACKEND_MESSAGE = "volume_create"
EXPORT_MESSAGE = "attachment_update"
UNEXPORT_MESSAGE = "attachment_delete"


def store_of(source: Call | ServiceRuntime) -> Store:
    rt = source.rt if isinstance(source, Call) else source
    return rt.require_store()


def volume_not_found(rt: ServiceRuntime, volume_id: str) -> ApiError:
    """The volume resource's not-found error, in the spec's words."""
    return rt.info.resources.resource("volume").fail("not_found", id=volume_id)


async def set_status(store: Store, volume_id: str, status: str, **more: Any) -> Doc | None:
    """Set the status (and more fields) while the volume is still `creating` (compare-and-set:
    None when it is gone or no longer creating)."""
    changes = {"status": status, **more}
    return await store.update("volumes", volume_id, changes, expect={"status": "creating"})


async def remove_volume_rows(store: Store, volume_id: str) -> None:
    for att in await store.list("attachments", {"volume_id": volume_id}):
        await store.delete("attachments", att["id"])
    await store.delete("volumes", volume_id)


def export_payload(att: Doc) -> Doc:
    return {
        "volume_id": att["volume_id"],
        "attachment_id": att["id"],
        "connector": att["connector"],
    }


def check_export_payload(rc: ResourceCall, payload: Doc) -> None:
    """The export message's schema, checked before anything changes: a bad connector is the
    attachment's `bad_connector` (400)."""
    try:
        check(rc.call.rt.info, EXPORT_MESSAGE, "payload", payload)
    except InvalidMessage as exc:
        raise rc.res.fail("bad_connector", reason=str(exc)) from None


async def backend_call(call: Call, message: str, payload: Doc, host: str) -> Doc:
    """A call to the back end on `host`; its failures become API errors."""
    try:
        reply = await send(call, message, payload, host=host)
    except MessagingTimeout as exc:
        raise ServiceUnavailable(
            f"The volume back end on {host} did not answer: {exc}", kind="VolumeBackendAPIException"
        ) from None
    except RemoteError as exc:
        raise ApiError(
            f"The volume back end on {host} failed: {exc.message}", kind="VolumeBackendAPIException"
        ) from None
    except (BusError, InvalidMessage) as exc:
        raise ApiError(
            f"Could not reach the volume back end on {host}: {exc}",
            kind="VolumeBackendAPIException",
        ) from None
    return reply or {}


async def unexport(ask: Callable[[Doc, str], Awaitable[Any]], volume: Doc, att: Doc) -> None:
    """The back end (`ask(payload, host)`) removes an attachment's export, if it had one."""
    if (att.get("connector") or att.get("connection_info")) and volume.get("host"):
        await ask({"volume_id": att["volume_id"], "attachment_id": att["id"]}, volume["host"])
