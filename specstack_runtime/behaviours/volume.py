"""Block storage (cinder v3, microversion 3.0) behaviours: API, scheduler and file back end.

Rows (tables `volumes`, `attachments`, `volume_types` of the cinder database,
which cinder-api, cinder-scheduler and cinder-volume share) keep cinder's
internal fields. What a volume is (its fields, scope, lists, actions, delete rules,
quota) is spec/resources/block-storage.yaml's, served by the resource engine; what is
here is the algorithms it hooks (a clone's size, the zones, the type lookup, the
scheduler's cast, os-attach/os-detach bookkeeping), deleting through the back end,
volume types, the attachment API, the scheduler and the file back end.

A volume's life: createVolume records it `creating` and casts `create_volume`
to the scheduler; the scheduler picks a back-end host among the instances of the
component that consumes `volume_create` (least allocated GiB first), records it
in the `host` column and casts `volume_create` to it; that back end makes a
sparse raw file `<data_dir>/volumes/<host>/volume-<id>.img` and marks the volume
`available`. Attaching: createAttachment reserves the volume (`reserved`, or
`attaching` with a connector), the back end exports it (`attachment_update`
call → connection_info), completeAttachment marks it `in-use`, deleteAttachment
unexports it and makes it `available` again once no attachment is left.

Flow variables:
- createVolume and deleteVolume leave `call.vars["volume"]`;
- createAttachment, updateAttachment and deleteAttachment leave
  `call.vars["attachment"]` and `call.vars["volume"]` (rows as stored; for
  delete, as they were before the attachment row went away).

Inside a flow the exports are the steps `volume.export_attachment` and
`volume.unexport_attachment`. A request outside any flow (no sequence, e.g.
nova's `server add volume` path) is exported or unexported by the operation
itself, so the API answers the same whoever calls it and whatever steps run
after it; the steps then find nothing left to do (connection_info already set,
or the attachment var marked `unexported`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specstack_runtime.behaviours.cas import update_cas
from specstack_runtime.bus import BusError, MessagingTimeout, RemoteError
from specstack_runtime.context import AuthContext, Call, Interaction, Reply
from specstack_runtime.errors import (
    ApiError,
    BadRequest,
    NotFound,
    ServiceUnavailable,
    StepFailed,
)
from specstack_runtime.messaging import InvalidMessage, check, send
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import access, deleting, guards
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Store, utcnow

VOLUME = "volume"  # the resource (spec/resources/block-storage.yaml) of cinder's volumes
ATTACHMENT = "attachment"  # its attachments (the attachment API's rows)
VOLUME_TYPE = "volume_type"  # its types

logger = logging.getLogger(__name__)

Doc = dict[str, Any]

GIB = 1024**3
API_MICROVERSION = "3.0"
VERSION_UPDATED = "2023-05-01T00:00:00Z"
DEFAULT_AVAILABILITY_ZONE = "nova"  # cinder's storage_availability_zone default
BACKEND_NAME = "file"  # shown in os-vol-host-attr:host as host@backend#pool
CREATE_MESSAGE = "create_volume"
BACKEND_MESSAGE = "volume_create"
EXPORT_MESSAGE = "attachment_update"
UNEXPORT_MESSAGE = "attachment_delete"
DELETE_MESSAGE = "volume_delete"

_TRUE = ("true", "1", "yes", "on", "t", "y")
_FALSE = ("false", "0", "no", "off", "f", "n")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@#-]{0,127}$")


# -- helpers ---------------------------------------------------------------------------------


def _store(source: Call | ServiceRuntime) -> Store:
    rt = source.rt if isinstance(source, Call) else source
    return rt.require_store()


def _auth(call: Call) -> AuthContext:
    """The caller (the operation's policy rule has checked the path's project)."""
    return call.require_auth()


def _reply(status: int, body: Any) -> Reply:
    # The app adds OpenStack-API-Version to every answer (the spec's x-specstack-microversion).
    return Reply(status, body)


def _naive(ts: Any) -> Any:
    """Cinder shows naive UTC timestamps with microseconds: 2024-01-02T03:04:05.000000."""
    if isinstance(ts, str) and ts.endswith("Z"):
        return ts[:-1] + ".000000"
    return ts


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return True
    if isinstance(value, str) and value.strip().lower() in _FALSE:
        return False
    raise BadRequest(
        f"Invalid value '{value}' for {name}: it must be a boolean.", kind="InvalidParameterValue"
    )


def _body_of(call: Call, key: str) -> Doc:
    body = call.body
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(f"Missing required element '{key}' in request body.", kind="BadRequest")
    return dict(body[key])


def _volume_not_found(volume_id: str) -> NotFound:
    return NotFound(f"Volume {volume_id} could not be found.", kind="VolumeNotFound")


def _invalid_volume(reason: str) -> BadRequest:
    return BadRequest(f"Invalid volume: {reason}", kind="InvalidVolume")


async def _update_cas(
    store: Store,
    table: str,
    id_: str,
    change: Callable[[Doc], Doc | None],
) -> Doc | None:
    """Apply `change(doc)` with compare-and-set on the fields it changes (retried)."""
    return await update_cas(store, table, id_, change, revision="_rev", conflict=_conflicting)


def _conflicting(message: str) -> ApiError:
    return ApiError(message, status=409, kind="ConflictingRequest")


async def _set_status(
    store: Store, volume_id: str, status: str, *, expect: tuple[str, ...] | None = None, **more: Any
) -> Doc | None:
    """Set the status (and more fields) if the current status is one of `expect`."""

    def change(doc: Doc) -> Doc | None:
        if expect is not None and doc.get("status") not in expect:
            raise _StatusChanged(str(doc.get("status")))
        return {"status": status, **more}

    try:
        return await _update_cas(store, "volumes", volume_id, change)
    except _StatusChanged:
        return None


class _StatusChanged(Exception):
    pass


async def _visible_volume(call: Call, auth: AuthContext, volume_id: str) -> Doc:
    """The volume, if the caller may see it (the spec's scope); 404 otherwise."""
    return await access.lookup(engine_call(call, VOLUME), volume_id)


# -- views -----------------------------------------------------------------------------------


def _attachment_view(att: Doc) -> Doc:
    return {
        "id": att["id"],
        "status": att["attach_status"],
        "instance": att.get("instance_uuid"),
        "volume_id": att["volume_id"],
        "attach_mode": att.get("attach_mode"),
        "connection_info": att.get("connection_info"),
        "attached_at": _naive(att.get("attached_at") or "") or "",
        "detached_at": _naive(att.get("detached_at") or "") or "",
    }


# -- versions --------------------------------------------------------------------------------


def _version_doc(call: Call) -> Doc:
    return {
        "id": "v3.0",
        "status": "CURRENT",
        "version": API_MICROVERSION,
        "min_version": API_MICROVERSION,
        "updated": VERSION_UPDATED,
        "links": [
            {"href": f"{engine_call(call, VOLUME).base}/v3/", "rel": "self"},
            {"href": "https://docs.openstack.org/", "type": "text/html", "rel": "describedby"},
        ],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}
        ],
    }


@behaviour("volume.get_volume_versions")
async def get_volume_versions(call: Call) -> Reply:
    """GET /: 300 Multiple Choices with the one version, v3.0."""
    return Reply(300, {"versions": [_version_doc(call)]})


@behaviour("volume.get_volume_v3")
async def get_volume_v3(call: Call) -> Reply:
    """GET /v3/: the versions list restricted to v3."""
    return Reply(200, {"versions": [_version_doc(call)]})


# -- volumes ---------------------------------------------------------------------------------


def _too_small(value: Any) -> BadRequest:
    return BadRequest(
        f"Invalid input received: Volume size '{value}' must be an integer and greater than 0.",
        kind="InvalidInput",
    )


@behaviour("volume.prepare_create")
async def prepare_create(event: ResourceEvent) -> None:
    """createVolume, before the row is written (the spec has checked each attribute): a clone
    takes its source's size and bootable flag, the zone must be one the back ends' nodes are
    in, the type is looked up by name or id (the default one otherwise), and the request's
    scheduler hints are kept for the scheduler."""
    call, volume = event.call, event.doc
    store = _store(call)
    hints = (call.body or {}).get("OS-SCH-HNT:scheduler_hints")
    if hints is not None and not isinstance(hints, dict):
        raise BadRequest("Invalid scheduler hints: an object is expected.", kind="InvalidInput")
    volume["scheduler_hints"] = hints or {}
    source_id = volume.get("source_volid")
    source = await store.get("volumes", source_id) if source_id else None
    if source is not None:  # the spec's `ref` found it visible
        if source["status"] not in ("available", "in-use"):
            raise _invalid_volume(
                f"Source volume {source['id']} status must be available or in-use "
                f"to clone, but the current status is {source['status']}."
            )
        volume["bootable"] = bool(source.get("bootable"))
        if volume.get("size") is None:
            volume["size"] = int(source["size"])
        elif volume["size"] < int(source["size"]):
            raise BadRequest(
                f"Invalid input received: Volume size {volume['size']}GB cannot be smaller "
                f"than the source volume size {source['size']}GB.",
                kind="InvalidInput",
            )
    if volume.get("size") is None:
        raise _too_small("")
    zone = volume.get("availability_zone") or DEFAULT_AVAILABILITY_ZONE
    if zone not in _availability_zones(call.rt):
        raise BadRequest(
            f"Invalid input received: Availability zone '{zone}' is invalid.",
            kind="InvalidAvailabilityZone",
        )
    volume["availability_zone"] = zone
    ref = volume.get("volume_type")
    try:  # by id or name, as the spec's volume_type resource finds it (default otherwise)
        vtype = await access.lookup(engine_call(call, VOLUME_TYPE), ref or "default")
    except NotFound:
        raise NotFound(
            f"Volume type with name {ref} could not be found.", kind="VolumeTypeNotFoundByName"
        ) from None
    volume["volume_type"], volume["volume_type_id"] = vtype["name"], vtype["id"]


@behaviour("volume.snapshot_of")
async def snapshot_of(event: ResourceEvent) -> None:
    """createSnapshot, before the row is written: the snapshot's size is its volume's, which
    must be available (or in-use, with force)."""
    snap = event.doc
    volume = await _store(event.call).get("volumes", snap["volume_id"])
    if volume is None:  # the spec's `ref` found it a moment ago
        raise NotFound(f"Volume {snap['volume_id']} could not be found.", kind="VolumeNotFound")
    force = _parse_bool("force", snap.pop("force", None) or False)
    allowed = ("available", "in-use") if force else ("available",)
    if volume["status"] not in allowed:
        raise _invalid_volume(
            f"Volume {volume['id']} status must be available, but the current status is "
            f"{volume['status']}."
        )
    snap["size"] = int(volume["size"])


@behaviour("volume.schedule_new")
async def schedule_new(event: ResourceEvent) -> None:
    """createVolume, once the row is written: the scheduler is asked to place it (a volume
    it cannot be asked about goes to error)."""
    volume = event.doc
    payload = {
        "volume_id": volume["id"],
        "size": volume["size"],
        "availability_zone": volume["availability_zone"],
        "volume_type": volume["volume_type"],
    }
    try:
        await send(event.call, CREATE_MESSAGE, payload)
    except (BusError, InvalidMessage) as exc:
        logger.error("could not ask the scheduler to create volume %s: %s", volume["id"], exc)
        failed = await _set_status(_store(event.call), volume["id"], "error")
        volume.update(failed or {"status": "error"})


@behaviour("volume.delete_volume")
async def delete_volume(call: Call) -> Reply:
    """202; the back end removes the file and the row (at once when the volume has no host).
    What may be deleted is the spec's (the volume's `refuse` and `delete.refuse` rules)."""
    rc = engine_call(call, VOLUME)
    volume = await access.modifiable(rc)
    guards.check(rc, "delete", volume)
    await deleting.refusals(rc, volume)
    store = _store(call)
    volume_id = volume["id"]
    gone = await _set_status(store, volume_id, "deleting", expect=(volume["status"],))
    if gone is None:
        raise _invalid_volume(f"Volume {volume_id} changed state meanwhile; it cannot be deleted.")
    call.vars["volume"] = gone
    host = gone.get("host")
    if not host:
        await _remove_volume_rows(store, volume_id)
        return _reply(202, None)
    try:
        await send(call, DELETE_MESSAGE, {"volume_id": volume_id}, host=host)
    except (BusError, InvalidMessage) as exc:
        logger.error("could not ask %s to delete volume %s: %s", host, volume_id, exc)
        await _set_status(store, volume_id, "error_deleting")
    return _reply(202, None)


async def _remove_volume_rows(store: Store, volume_id: str) -> None:
    for att in await store.list("attachments", {"volume_id": volume_id}):
        await store.delete("attachments", att["id"])
    await store.delete("volumes", volume_id)


# -- volume actions --------------------------------------------------------------------------


def _detach_entry(volume: Doc, attachment_id: str) -> Doc:
    remaining = [a for a in volume.get("attachments") or [] if a["attachment_id"] != attachment_id]
    if remaining:
        return {"attachments": remaining}
    return {"attachments": [], "status": "available", "attach_status": "detached"}


@behaviour("volume.record_attach")
async def record_attach(event: ResourceEvent) -> None:
    """os-attach (nova's old attach API), once the volume went in-use: the attachment row
    and the volume's entry for it (the spec's `accept` checked the argument)."""
    arg = event.call.body[event.point]
    volume = event.doc
    store = _store(event.call)
    now = utcnow()
    att: Doc = {
        "id": str(uuid.uuid4()),
        "volume_id": volume["id"],
        "project_id": volume["project_id"],
        "instance_uuid": arg.get("instance_uuid"),
        "attach_status": "attached",
        "attach_mode": arg.get("mode", "rw"),
        "connector": None,
        "connection_info": None,
        "attached_at": now,
        "detached_at": "",
        "attached_host": arg.get("host_name"),
        "mountpoint": arg["mountpoint"],
    }
    entry = {
        "id": volume["id"],
        "attachment_id": att["id"],
        "volume_id": volume["id"],
        "server_id": att["instance_uuid"],
        "host_name": att["attached_host"],
        "device": arg["mountpoint"],
        "attached_at": _naive(now),
    }
    await store.create("attachments", att)
    await _update_cas(
        store,
        "volumes",
        volume["id"],
        lambda d: {"attachments": [*(d["attachments"] or []), entry]},
    )


@behaviour("volume.detach")
async def detach(event: ResourceEvent) -> None:
    """os-detach: the volume's (only, or named) attachment unexported and removed."""
    call, volume = event.call, event.doc
    arg = call.body.get(event.point) if isinstance(call.body, dict) else None
    store = _store(call)
    wanted = arg.get("attachment_id") if isinstance(arg, dict) else None
    rows = await store.list("attachments", {"volume_id": volume["id"]})
    if wanted is not None:
        rows = [r for r in rows if r["id"] == wanted]
        if not rows:
            raise NotFound(
                f"VolumeAttachment {wanted} could not be found.", kind="VolumeAttachmentNotFound"
            )
    if not rows:
        raise _invalid_volume(f"Volume {volume['id']} is not attached to anything.")
    if len(rows) > 1:
        raise _invalid_volume(f"Volume {volume['id']} has several attachments; give attachment_id.")
    att = rows[0]
    await _unexport(call, volume, att)
    await store.delete("attachments", att["id"])
    await _update_cas(store, "volumes", volume["id"], lambda d: _detach_entry(d, att["id"]))


def _connector(value: Any) -> Doc:
    if not isinstance(value, dict):
        raise BadRequest(
            "Invalid connector: an object with at least 'host' is expected.", kind="InvalidInput"
        )
    if not isinstance(value.get("host"), str) or not value["host"]:
        raise BadRequest(
            "Invalid connector: 'host' (the compute host's name) is required.", kind="InvalidInput"
        )
    return dict(value)


def _check_export_payload(rt: ServiceRuntime, payload: Doc) -> None:
    """The export message's schema, checked before anything changes: a bad connector is a 400."""
    try:
        check(rt.info, EXPORT_MESSAGE, "payload", payload)
    except InvalidMessage as exc:
        raise BadRequest(f"Invalid connector: {exc}", kind="InvalidInput") from None


# -- attachments -----------------------------------------------------------------------------


async def _visible_attachment(call: Call, auth: AuthContext, attachment_id: str) -> Doc:
    """The attachment, if the caller may see it (the spec's scope); 404 otherwise."""
    return await access.lookup(engine_call(call, ATTACHMENT), attachment_id)


async def _backend_call(call: Call, message: str, payload: Doc, host: str) -> Doc:
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


def _export_payload(att: Doc) -> Doc:
    return {
        "volume_id": att["volume_id"],
        "attachment_id": att["id"],
        "connector": att["connector"],
    }


async def _record_export(store: Store, att: Doc, connection_info: Doc) -> Doc:
    new = await _update_cas(
        store,
        "attachments",
        att["id"],
        lambda _d: {"connection_info": connection_info, "attach_status": "attaching"},
    )
    if new is None:
        raise NotFound(
            f"VolumeAttachment {att['id']} could not be found.", kind="VolumeAttachmentNotFound"
        )

    def attaching(doc: Doc) -> Doc | None:
        return {"status": "attaching"} if doc.get("status") == "reserved" else None

    await _update_cas(store, "volumes", att["volume_id"], attaching)
    return new


@behaviour("volume.create_attachment")
async def create_attachment(call: Call) -> Reply:
    """POST .../attachments: reserves the volume; leaves vars attachment and volume."""
    auth = _auth(call)
    store = _store(call)
    req = _body_of(call, "attachment")
    volume_id = req.get("volume_uuid")
    if not isinstance(volume_id, str) or not volume_id:
        raise BadRequest("Must specify 'volume_uuid' to create attachment.", kind="InvalidInput")
    instance = req.get("instance_uuid")
    if not isinstance(instance, str) or not instance:
        raise BadRequest("Must specify 'instance_uuid' to create attachment.", kind="InvalidInput")
    mode = req.get("mode", "rw")
    if mode not in ("rw", "ro"):
        raise BadRequest(f"Invalid attach mode {mode!r}: rw or ro.", kind="InvalidInput")
    connector = _connector(req["connector"]) if req.get("connector") is not None else None
    volume = await _visible_volume(call, auth, volume_id)
    if connector and not volume.get("host"):
        raise _invalid_volume(
            f"Volume {volume_id} has no back-end host yet (status "
            f"{volume['status']}); it cannot be exported."
        )
    att: Doc = {
        "id": str(uuid.uuid4()),
        "volume_id": volume_id,
        "project_id": volume["project_id"],
        "instance_uuid": instance,
        "attach_status": "attaching" if connector else "reserved",
        "attach_mode": mode,
        "connector": connector,
        "connection_info": None,
        "attached_at": "",
        "detached_at": "",
        "attached_host": connector.get("host") if connector else None,
        "mountpoint": connector.get("mountpoint") if connector else None,
        "_rev": 0,
    }
    if connector:
        _check_export_payload(call.rt, _export_payload(att))
    status = "attaching" if connector else "reserved"
    reserved = await _set_status(store, volume_id, status, expect=("available",))
    if reserved is None:
        raise _invalid_volume(
            f"Volume {volume_id} status must be available to reserve, but "
            f"the current status is {volume['status']}."
        )
    try:
        att = await store.create("attachments", att)
    except BaseException:
        await _set_status(store, volume_id, "available", expect=(status,))
        raise
    call.vars["attachment"] = att
    call.vars["volume"] = reserved
    if connector and call.sequence is None:  # outside a flow no step exports it: do it here
        try:
            reply = await _backend_call(call, EXPORT_MESSAGE, _export_payload(att), volume["host"])
        except ApiError:
            await _update_cas(
                store, "attachments", att["id"], lambda _d: {"attach_status": "error_attaching"}
            )
            raise
        att = await _record_export(store, att, reply["connection_info"])
        call.vars["attachment"] = att
    return _reply(200, {"attachment": _attachment_view(att)})


@behaviour("volume.export_attachment", via=("amqp-call",))
async def export_attachment(ix: Interaction) -> None:
    """Step: the back end exports the attachment's volume to its connector's host."""
    att = ix.vars.get("attachment")
    if not isinstance(att, dict) or "id" not in att:
        raise StepFailed("no attachment in this flow: createAttachment did not leave one")
    if not att.get("connector") or att.get("connection_info"):
        return  # nothing to export yet (no connector), or already exported
    store = ix.rt.require_store()
    volume = await store.get("volumes", att["volume_id"])
    if volume is None or not volume.get("host"):
        raise StepFailed(f"volume {att['volume_id']} has no back-end host to export it from")
    try:
        reply = await ix.invoke(_export_payload(att), host=volume["host"])
    except (BusError, InvalidMessage) as exc:
        await _update_cas(
            store, "attachments", att["id"], lambda _d: {"attach_status": "error_attaching"}
        )
        raise StepFailed(f"exporting volume {att['volume_id']} failed: {exc}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("connection_info"), dict):
        raise StepFailed(f"the back end answered no connection_info for volume {att['volume_id']}")
    try:
        att = await _record_export(store, att, reply["connection_info"])
    except ApiError as exc:
        raise StepFailed(exc.message, code=exc.status) from None
    ix.vars["attachment"] = att
    if ix.call.reply is not None:  # the createAttachment answer carries the connection info
        ix.call.reply.body = {"attachment": _attachment_view(att)}


@behaviour("volume.show_attachment")
async def show_attachment(call: Call) -> Reply:
    auth = _auth(call)
    att = await _visible_attachment(call, auth, call.path_params.get("attachment_id", ""))
    return _reply(200, {"attachment": _attachment_view(att)})


@behaviour("volume.update_attachment")
async def update_attachment(call: Call) -> Reply:
    """PUT .../attachments/{id} with the connector: the back end exports the volume."""
    auth = _auth(call)
    store = _store(call)
    req = _body_of(call, "attachment")
    att = await _visible_attachment(call, auth, call.path_params.get("attachment_id", ""))
    connector = _connector(req.get("connector"))
    if att["attach_status"] not in ("reserved", "attaching", "error_attaching"):
        raise ApiError(
            f"Invalid attachment {att['id']}: its status {att['attach_status']} does "
            "not allow an update.",
            status=409,
            kind="ConflictingRequest",
        )
    volume = await store.get("volumes", att["volume_id"])
    if volume is None:
        raise _volume_not_found(att["volume_id"])
    if not volume.get("host"):
        raise _invalid_volume(
            f"Volume {volume['id']} has no back-end host yet (status {volume['status']})."
        )
    payload = {"volume_id": att["volume_id"], "attachment_id": att["id"], "connector": connector}
    _check_export_payload(call.rt, payload)
    reply = await _backend_call(call, EXPORT_MESSAGE, payload, volume["host"])
    new = await _update_cas(
        store,
        "attachments",
        att["id"],
        lambda _d: {
            "connector": connector,
            "attached_host": connector["host"],
            "mountpoint": connector.get("mountpoint"),
            "connection_info": reply["connection_info"],
            "attach_status": "attaching",
        },
    )
    if new is None:
        raise NotFound(
            f"VolumeAttachment {att['id']} could not be found.", kind="VolumeAttachmentNotFound"
        )

    def attaching(doc: Doc) -> Doc | None:
        return {"status": "attaching"} if doc.get("status") == "reserved" else None

    call.vars["volume"] = await _update_cas(store, "volumes", volume["id"], attaching)
    call.vars["attachment"] = new
    return _reply(200, {"attachment": _attachment_view(new)})


@behaviour("volume.complete_attachment")
async def complete_attachment(call: Call) -> Reply:
    """POST .../attachments/{id}/action {"os-complete": null}: attached, volume in-use."""
    auth = _auth(call)
    store = _store(call)
    body = call.body
    if not isinstance(body, dict) or "os-complete" not in body:
        raise BadRequest(
            'Invalid request: the body must be {"os-complete": null}.', kind="InvalidInput"
        )
    if len(body) != 1:
        extra = ", ".join(sorted(k for k in body if k != "os-complete"))
        raise BadRequest(f"There is no such action: {extra}", kind="InvalidInput")
    att = await _visible_attachment(call, auth, call.path_params.get("attachment_id", ""))
    if att["attach_status"] == "attached":
        return _reply(204, None)
    if att["attach_status"] != "attaching":
        raise _invalid_volume(
            f"Attachment {att['id']} is {att['attach_status']}; only an "
            "exported (attaching) attachment can be completed."
        )
    now = utcnow()
    new = await _update_cas(
        store,
        "attachments",
        att["id"],
        lambda _d: {"attach_status": "attached", "attached_at": now},
    )
    if new is None:
        raise NotFound(
            f"VolumeAttachment {att['id']} could not be found.", kind="VolumeAttachmentNotFound"
        )
    connector = att.get("connector") or {}
    entry = {
        "id": att["volume_id"],
        "attachment_id": att["id"],
        "volume_id": att["volume_id"],
        "server_id": att.get("instance_uuid"),
        "host_name": connector.get("host"),
        "device": att.get("mountpoint") or connector.get("mountpoint"),
        "attached_at": _naive(now),
    }

    def in_use(doc: Doc) -> Doc:
        others = [a for a in doc.get("attachments") or [] if a["attachment_id"] != att["id"]]
        return {"status": "in-use", "attach_status": "attached", "attachments": [*others, entry]}

    if await _update_cas(store, "volumes", att["volume_id"], in_use) is None:
        raise _volume_not_found(att["volume_id"])
    return _reply(204, None)


async def _unexport(call: Call, volume: Doc, att: Doc) -> None:
    if (att.get("connector") or att.get("connection_info")) and volume.get("host"):
        payload = {"volume_id": att["volume_id"], "attachment_id": att["id"]}
        await _backend_call(call, UNEXPORT_MESSAGE, payload, volume["host"])


@behaviour("volume.delete_attachment")
async def delete_attachment(call: Call) -> Reply:
    """DELETE .../attachments/{id}: 200 {"attachments": [what remains]}; leaves vars."""
    auth = _auth(call)
    store = _store(call)
    att = await _visible_attachment(call, auth, call.path_params.get("attachment_id", ""))
    volume = await store.get("volumes", att["volume_id"])
    if volume is None:
        raise _volume_not_found(att["volume_id"])
    if volume["status"] == "deleting":
        raise ApiError(
            f"Volume {volume['id']} is being deleted.", status=409, kind="ConflictingRequest"
        )
    unexported = False
    if call.sequence is None:  # outside a flow: unexport here (the step then has nothing to do)
        await _unexport(call, volume, att)
        unexported = True
    await store.delete("attachments", att["id"])
    remaining = await store.list("attachments", {"volume_id": att["volume_id"]})

    def detach(doc: Doc) -> Doc:
        entries = [a for a in doc.get("attachments") or [] if a["attachment_id"] != att["id"]]
        if remaining:
            attached = any(r["attach_status"] == "attached" for r in remaining)
            status = "in-use" if attached else doc["status"]
            return {"attachments": entries, "status": status}
        return {"attachments": [], "status": "available", "attach_status": "detached"}

    new_volume = await _update_cas(store, "volumes", att["volume_id"], detach)
    call.vars["attachment"] = {
        **att,
        "attach_status": "detached",
        "detached_at": utcnow(),
        "unexported": unexported,
    }
    call.vars["volume"] = volume
    call.vars["volume_after"] = new_volume
    summaries = [
        {
            "id": r["id"],
            "status": r["attach_status"],
            "instance": r.get("instance_uuid"),
            "volume_id": r["volume_id"],
        }
        for r in remaining
    ]
    return _reply(200, {"attachments": summaries})


@behaviour("volume.unexport_attachment", via=("amqp-call",))
async def unexport_attachment(ix: Interaction) -> None:
    """Step: the back end removes the export of a deleted attachment."""
    att = ix.vars.get("attachment")
    volume = ix.vars.get("volume")
    if not isinstance(att, dict) or not isinstance(volume, dict):
        raise StepFailed("no attachment in this flow: deleteAttachment did not leave one")
    exported = att.get("connector") or att.get("connection_info")
    if not exported or att.get("unexported") or not volume.get("host"):
        return  # never exported, or already unexported by the operation: nothing to undo
    try:
        await ix.invoke(
            {"volume_id": att["volume_id"], "attachment_id": att["id"]}, host=volume["host"]
        )
    except (BusError, InvalidMessage) as exc:
        raise StepFailed(f"unexporting volume {att['volume_id']} failed: {exc}") from None


# -- cinder-scheduler ------------------------------------------------------------------------


def _backend_hosts(rt: ServiceRuntime) -> list[tuple[str, str]]:
    """(host, availability zone) of every instance of the components that create volumes."""
    hosts: list[tuple[str, str]] = []
    for comp in rt.info.components.values():
        if not any(c.get("message") == BACKEND_MESSAGE for c in comp.get("consumes") or []):
            continue
        for node in comp.get("nodes") or []:
            zone = rt.info.nodes[node].get("availability_zone") or DEFAULT_AVAILABILITY_ZONE
            hosts += [
                (h, zone) for h in rt.info.node_hosts(node, rt.config) if (h, zone) not in hosts
            ]
    return hosts


def _availability_zones(rt: ServiceRuntime) -> set[str]:
    return {zone for _host, zone in _backend_hosts(rt)} or {DEFAULT_AVAILABILITY_ZONE}


@behaviour("volume.schedule_create")
async def schedule_create(call: Call) -> None:
    """cinder-scheduler: pick the back end with the fewest allocated GiB; cast volume_create."""
    rt = call.rt
    store = _store(call)
    volume_id = call.payload["volume_id"]
    volume = await store.get("volumes", volume_id)
    if volume is None or volume.get("status") != "creating":
        logger.info("volume %s is gone or no longer creating; not scheduling it", volume_id)
        return
    zone = call.payload.get("availability_zone")
    candidates = [h for h, z in _backend_hosts(rt) if zone is None or z == zone]
    if not candidates:
        logger.error("no volume back end for volume %s (zone %s)", volume_id, zone)
        await _set_status(store, volume_id, "error", expect=("creating",))
        return
    allocated: dict[str, int] = {}
    for host in candidates:
        rows = await store.list("volumes", {"host": host})
        allocated[host] = sum(int(v.get("size") or 0) for v in rows)
    chosen = min(candidates, key=lambda h: allocated[h])
    placed = await _set_status(store, volume_id, "creating", expect=("creating",), host=chosen)
    if placed is None:
        return
    await send(
        call, BACKEND_MESSAGE, {"volume_id": volume_id, "size": int(volume["size"])}, host=chosen
    )


# -- cinder-volume (file back end) -----------------------------------------------------------


def volume_path(rt: ServiceRuntime, volume_id: str) -> Path:
    """The back end's file for a volume: <data_dir>/volumes/<host>/volume-<id>.img."""
    for part, what in ((rt.host, "host"), (volume_id, "volume id")):
        if not _SAFE_NAME.match(part) or part in (".", ".."):
            raise ValueError(f"{what} {part!r} cannot name a file")
    return rt.data_dir / "volumes" / rt.host / f"volume-{volume_id}.img"


@behaviour("volume.backend_create")
async def backend_create(call: Call) -> None:
    """cinder-volume on rt.host: a sparse raw file of `size` GiB; the volume becomes available."""
    store = _store(call)
    volume_id = call.payload["volume_id"]
    size = int(call.payload["size"])
    volume = await store.get("volumes", volume_id)
    if volume is None:
        logger.info("volume %s was deleted before its back end created it", volume_id)
        return
    path = volume_path(call.rt, volume_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        source_id = volume.get("source_volid")
        source = volume_path(call.rt, source_id) if source_id else None
        if source is not None and source.exists():
            shutil.copyfile(source, path)
        else:
            with open(path, "wb"):
                pass
        os.truncate(path, size * GIB)
    except OSError as exc:
        logger.error("creating the file of volume %s failed: %s", volume_id, exc)
        await _set_status(store, volume_id, "error", expect=("creating",))
        return
    if await _set_status(store, volume_id, "available", expect=("creating",)) is None:
        current = await store.get("volumes", volume_id)
        if current is None:  # deleted meanwhile: do not leave the file behind
            path.unlink(missing_ok=True)


@behaviour("volume.backend_export")
async def backend_export(call: Call) -> Doc:
    """The connection info of a volume file for an attachment (grown first if extended)."""
    store = _store(call)
    volume_id = call.payload["volume_id"]
    volume = await store.get("volumes", volume_id)
    if volume is None:
        raise _volume_not_found(volume_id)
    path = volume_path(call.rt, volume_id)
    if not path.exists():
        raise NotFound(
            f"Volume {volume_id} has no data file on {call.rt.host}.",
            kind="VolumeBackendAPIException",
        )
    wanted = int(volume["size"]) * GIB
    if path.stat().st_size < wanted:  # os-extend changed the size: grow the sparse file
        os.truncate(path, wanted)
    att = await store.get("attachments", call.payload["attachment_id"])
    mode = (att or {}).get("attach_mode") or "rw"
    return {
        "connection_info": {
            "driver_volume_type": "file",
            "data": {
                "device_path": str(path.resolve()),
                "volume_id": volume_id,
                "serial": volume_id,
                "access_mode": mode,
                "format": "raw",
            },
        }
    }


@behaviour("volume.backend_unexport")
async def backend_unexport(call: Call) -> Doc:
    """The file back end keeps no export state: acknowledge."""
    return {"volume_id": call.payload["volume_id"]}


@behaviour("volume.backend_delete")
async def backend_delete(call: Call) -> None:
    """Remove the volume's file and its rows."""
    volume_id = call.payload["volume_id"]
    volume_path(call.rt, volume_id).unlink(missing_ok=True)
    await _remove_volume_rows(_store(call), volume_id)
