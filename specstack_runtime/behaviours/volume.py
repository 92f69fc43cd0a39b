"""Block storage (cinder v3, microversion 3.0): the volume resource's hooks.

What a volume, a snapshot, a volume type and an attachment are (fields, scope, lists,
actions, delete rules, quotas, policy) is spec/resources/block-storage.yaml's, served by
the resource engine. What is here is the algorithm its hook names (a clone's size, the
back ends' zones, the volume type's lookup).
Attachments are volume_attach.py's, the scheduler and the file back end volume_backend.py's.

A volume's life: createVolume records it `creating` and casts `create_volume` to the
scheduler, which places it on a back end (volume_backend.py) that makes its file and marks
it `available`; deleteVolume (the spec's `delete.handoff`) marks it `deleting` and the back
end removes the file and the rows. createVolume leaves `call.vars["volume"]`.
"""

from __future__ import annotations

from specstack_runtime.behaviours.volume_backend import availability_zones
from specstack_runtime.behaviours.volume_base import DEFAULT_AVAILABILITY_ZONE, VOLUME_TYPE
from specstack_runtime.errors import NotFound
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import access, guards
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.resources.serve import engine_call

# -- volumes ---------------------------------------------------------------------------------


@behaviour("volume.prepare_create", needs=("image",))
async def prepare_create(event: ResourceEvent) -> None:
    """createVolume, before the row is written (the spec has checked each attribute; its
    effect then gives a clone its source's size and bootable flag): the zone must be one the
    back ends' nodes are in, the type is looked up by name or id (the default one otherwise),
    and the request's scheduler hints are kept for the scheduler. A volume from an image
    (imageRef or image_id): glance's image, as the caller sees it, checked by the spec's
    `image` rules and kept as its template `from_image` says (the back end copies the data)."""
    call, volume, fail = event.call, event.doc, event.engine.res.fail
    hints = (call.body or {}).get("OS-SCH-HNT:scheduler_hints")
    if hints is not None and not isinstance(hints, dict):
        raise fail("bad_hints")
    volume["scheduler_hints"] = hints or {}
    zone = volume.get("availability_zone") or DEFAULT_AVAILABILITY_ZONE
    if zone not in availability_zones(call.rt):
        raise fail("bad_zone", zone=zone)
    volume["availability_zone"] = zone
    ref = volume.get("volume_type")
    try:  # by id or name, as the spec's volume_type resource finds it (default otherwise)
        vtype = await access.lookup(engine_call(call, VOLUME_TYPE), ref or "default")
    except NotFound:
        raise fail("type_not_found", name=ref) from None
    volume["volume_type"], volume["volume_type_id"] = vtype["name"], vtype["id"]
    image_ref = volume.get("imageRef") or volume.get("image_id")
    if image_ref:
        rt = call.rt
        ids = {"image_id": str(image_ref).rstrip("/").rsplit("/", 1)[-1]}
        resp = await rt.clients.call(
            rt.info.api_of_type("image"), "showImage", ids, token=call.token
        )
        if resp.status_code != 200:
            raise fail("image_not_found")
        event.engine.refs["image"] = resp.json()
        guards.check(event.engine, "image", volume)
        volume.update(event.engine.template("from_image"))
