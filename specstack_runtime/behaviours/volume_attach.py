"""Cinder's attachments: the volume's bookkeeping and the back end's exports, which the
attachment resource's hooks (spec/resources/block-storage.yaml), deleteAttachment, the
flows' steps and the old os-detach action do (os-attach is the spec's effects).

An attachment's life: createAttachment reserves the volume (`reserved`, or `attaching`
with a connector), the back end exports it (`attachment_update` call -> connection_info),
os-complete marks it attached and the volume `in-use`, deleteAttachment unexports it and
makes the volume `available` again once no attachment is left.

createAttachment and updateAttachment leave `call.vars["attachment"]` (the engine) and
`call.vars["volume"]`; deleteAttachment leaves both as they were before the attachment went
away. Inside a flow the exports are the steps `volume.export_attachment` and
`volume.unexport_attachment`; outside one (nova's `server add volume`) the operation
exports or unexports by itself, so the API answers the same whoever calls it, and the
steps then find nothing left to do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from specstack_runtime.behaviours.volume_base import (
    ATTACHMENT,
    EXPORT_MESSAGE,
    UNEXPORT_MESSAGE,
    Doc,
    backend_call,
    check_export_payload,
    export_payload,
    unexport,
)
from specstack_runtime.bus import BusError
from specstack_runtime.context import Call, Interaction, Reply
from specstack_runtime.errors import ApiError, StepFailed
from specstack_runtime.messaging import InvalidMessage
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import access, deleting, guards, hooks, relations, views
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.store import utcnow

# -- the attachment resource's hooks ---------------------------------------------------------


@behaviour("volume.reserve")
async def reserve(event: ResourceEvent) -> None:
    """createAttachment, before the row is written (the spec found the volume visible and
    with a back end; its effect then reserves it): a connector must fit the export message."""
    if event.doc.get("connector"):
        check_export_payload(event.engine, export_payload(event.doc))


@behaviour("volume.export_created")
async def export_created(event: ResourceEvent) -> None:
    """createAttachment with a connector, outside a flow (no step exports it): the back end
    exports the volume now, and the answer carries the connection info."""
    att, call = event.doc, event.call
    if att.get("connector") and call.sequence is None:
        att.update(await _export(event.engine, att, partial(backend_call, call, EXPORT_MESSAGE)))


@behaviour("volume.export_updated")
async def export_updated(event: ResourceEvent) -> None:
    """updateAttachment, before the change is written (the spec's `refuse` allowed its state
    and found a connector): the back end exports the volume to the connector's host."""
    call, changes = event.call, event.doc
    if call.args.get("action") != "update":
        return  # os-complete's change (actions run before_update too): nothing to export
    old, connector = event.old or {}, changes["connector"]  # the spec refused none given
    await relations.load(event.engine, old)
    guards.check(event.engine, "export", old)  # the spec's: a volume with a back end
    payload = export_payload({**old, "connector": connector})
    check_export_payload(event.engine, payload)
    reply = await backend_call(call, EXPORT_MESSAGE, payload, event.engine.refs["volume"]["host"])
    params = {"info": reply["connection_info"]}  # the row as the spec's `exported` says
    changes.update(event.engine.template("exported", item=connector, params=params))


async def _export(rc: ResourceCall, att: Doc, ask: Callable[[Doc, str], Awaitable[Any]]) -> Doc:
    """The back end exports the attachment's volume (`ask(payload, host)`) and the row records
    the connection info (the spec's after_update effect: a reserved volume is attaching);
    a failed export leaves the attachment error_attaching."""
    await relations.load(rc, att, only=("volume",))
    guards.check(rc, "export", att)  # the spec's: a volume with a back end
    try:
        reply = await ask(export_payload(att), rc.refs["volume"]["host"])
        info = reply["connection_info"] if isinstance(reply, dict) else None
        if not isinstance(info, dict):
            raise StepFailed(f"the back end answered no connection_info for {att['volume_id']}")
    except Exception:
        await rc.store.update("attachments", att["id"], {"attach_status": "error_attaching"})
        raise
    done = {"connection_info": info, "attach_status": "attaching"}
    new = await rc.store.update("attachments", att["id"], done)
    if new is None:
        raise rc.res.fail("not_found", id=att["id"])
    await hooks.run(rc, "after_update", new, att)
    return new


# -- the flows' steps ------------------------------------------------------------------------


@behaviour("volume.export_attachment", via=("amqp-call",))
async def export_attachment(ix: Interaction) -> None:
    """Step: the back end exports the attachment's volume to its connector's host."""
    att = ix.vars.get("attachment")
    if not isinstance(att, dict) or "id" not in att:
        raise StepFailed("no attachment in this flow: createAttachment did not leave one")
    if not att.get("connector") or att.get("connection_info"):
        return  # nothing to export yet (no connector), or already exported
    rc = engine_call(ix.call, ATTACHMENT)
    try:
        att = await _export(rc, att, lambda payload, host: ix.invoke(payload, host=host))
    except (BusError, InvalidMessage) as exc:
        raise StepFailed(f"exporting volume {att['volume_id']} failed: {exc}") from None
    except ApiError as exc:
        raise StepFailed(exc.message, code=exc.status) from None
    ix.vars["attachment"] = att
    if ix.call.reply is not None:  # the createAttachment answer carries the connection info
        ix.call.reply.body = views.one(rc, att)


# -- deleteAttachment ------------------------------------------------------------------------


async def _forget(rc: ResourceCall, att: Doc) -> list[Doc]:
    """The attachment deleted (the spec's effect gives its volume back); those left."""
    await relations.load(rc, att, only=("siblings",))
    await deleting.delete(rc, att)
    return [a for a in rc.refs["siblings"] if a["id"] != att["id"]]


@behaviour("volume.delete_attachment")
async def delete_attachment(call: Call) -> Reply:
    """DELETE .../attachments/{id}: 200 {"attachments": [what remains]}; leaves vars."""
    rc = engine_call(call, ATTACHMENT)
    att = await access.lookup(rc)
    await relations.load(rc, att, only=("volume",))
    guards.check(rc, "forget", att)  # the spec's: a volume not being deleted
    volume = rc.refs["volume"]
    unexported = call.sequence is None  # outside a flow: here (the step then has nothing to do)
    if unexported:
        await unexport(partial(backend_call, call, UNEXPORT_MESSAGE), volume, att)
    remaining = await _forget(rc, att)
    call.vars["attachment"] = {
        **att,
        "attach_status": "detached",
        "detached_at": utcnow(),
        "unexported": unexported,
    }
    call.vars["volume"] = volume
    summaries = [views.render(rc, r, "summary") for r in remaining]
    return Reply(200, {"attachments": summaries})


@behaviour("volume.unexport_attachment", via=("amqp-call",))
async def unexport_attachment(ix: Interaction) -> None:
    """Step: the back end removes the export of a deleted attachment."""
    att = ix.vars.get("attachment")
    volume = ix.vars.get("volume")
    if not isinstance(att, dict) or not isinstance(volume, dict):
        raise StepFailed("no attachment in this flow: deleteAttachment did not leave one")
    if att.get("unexported"):
        return  # already unexported by the operation: nothing to undo
    try:
        await unexport(lambda payload, host: ix.invoke(payload, host=host), volume, att)
    except (BusError, InvalidMessage) as exc:
        raise StepFailed(f"unexporting volume {att['volume_id']} failed: {exc}") from None


# -- os-detach (nova's old attach API) ------------------------------------------------------


@behaviour("volume.detach")
async def detach(event: ResourceEvent) -> None:
    """os-detach: the volume's (only, or named) attachment unexported and removed."""
    call, volume = event.call, event.doc
    arg = call.body.get(event.point) if isinstance(call.body, dict) else None
    wanted = arg.get("attachment_id") if isinstance(arg, dict) else None
    # the spec's `detach` rules: the one named is the volume's, or it has exactly one
    await relations.load(event.engine, volume)
    guards.check(event.engine, "detach", volume, {"attachment_id": wanted})
    att = next(a for a in event.engine.refs["attachments"] if wanted in (None, a["id"]))
    await unexport(partial(backend_call, call, UNEXPORT_MESSAGE), volume, att)
    await _forget(event.engine.of(ATTACHMENT), att)
