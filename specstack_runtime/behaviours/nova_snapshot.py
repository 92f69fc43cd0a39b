"""createImage (a snapshot), spec/resources/compute.yaml: nova-api makes the glance image
(`compute.snapshot_image`, queued), the compute host writes the guest's root disk and
uploads it (`compute.rpc_snapshot_instance`), and the image becomes active with that data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

from specstack_runtime.behaviours.conductor import make_fault
from specstack_runtime.behaviours.nova_common import (
    IMAGE,
    SERVER,
    fail,
    fault_code,
    flow_token,
    glance_image,
    undo_action,
    update_instance,
)
from specstack_runtime.context import Call
from specstack_runtime.expr import compile_expr
from specstack_runtime.http import error_message, expect
from specstack_runtime.messaging import send
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent

logger = logging.getLogger(__name__)

PATCH = "application/openstack-images-v2.1-json-patch"


@behaviour("compute.snapshot_image", needs=(IMAGE,))
async def snapshot_image(event: ResourceEvent) -> None:
    """createImage (and shelve), nova-api: the glance image the snapshot fills (queued), kept as
    `vars["snapshot"]` (its id and URL, the answer's Location). If glance refuses, the
    server's task goes back and the caller hears why."""
    call, doc, rc = event.call, event.doc, event.engine
    token = await flow_token(call)
    api = call.rt.info.api_of_type(IMAGE)
    arg = (next(iter(call.body.values())) if isinstance(call.body, dict) else None) or {}
    try:
        base = await glance_image(call, str(doc.get("image_ref") or ""), token)
        body = rc.template("snapshot_image", doc=doc, refs={"base": base or {}}, request=arg)
        resp = await call.rt.clients.call(
            api,
            "createImage",
            body=dict(body),
            token=token,
            context=call.flow_context(),
        )
        if 400 <= resp.status_code < 500:
            raise fail(call.rt, "snapshot_refused", reason=error_message(resp))
        image = expect(resp, 201).json()
    except BaseException:
        await undo_action(event, "task_state")
        raise
    location = f"{call.rt.clients.base_url(api)}/images/{image['id']}"
    call.vars["snapshot"] = {"id": str(image["id"]), "location": location}


async def _upload(call: Call, image_id: str, path: Path, fmt: str, token: str) -> None:
    """The disk written into the queued image: its format first, then its data."""
    rt = call.rt
    api = rt.info.api_of_type(IMAGE)
    ids = {"image_id": image_id}
    image = expect(await rt.clients.call(api, "showImage", ids, token=token), 200).json()
    if image.get("disk_format") != fmt:
        patch = [{"op": "replace", "path": "/disk_format", "value": fmt}]
        resp = await rt.clients.call(
            api, "updateImage", ids, body=patch, headers={"Content-Type": PATCH}, token=token
        )
        expect(resp, 200)
    data = await asyncio.to_thread(path.read_bytes)
    resp = await rt.clients.call(
        api, "uploadImageData", ids, body=data, token=token, context=call.flow_context()
    )
    expect(resp, 204)


async def _snapshot_volumes(call: Call, uuid: str, image_id: str, token: str) -> bool:
    """A volume-backed instance's image (the server's template `volume_backed`; else
    False), as nova's API makes it: each attached volume snapshotted in cinder
    (`volume_snapshots`), the image given their mappings (`snapshot_mapping`) and
    activated with no data (size 0)."""
    rt = call.rt
    reply = await send(call, "instance_get", {"instance_uuid": uuid})
    assert reply is not None
    instance, server = reply["instance"], rt.info.resources.resource(SERVER)
    if not server.template("volume_backed", doc=instance):
        return False
    glance, cinder = rt.info.api_of_type(IMAGE), rt.info.api_of_type("block-storage")
    ids = {"image_id": image_id}
    image = expect(await rt.clients.call(glance, "showImage", ids, token=token), 200).json()
    asked = server.template("volume_snapshots", doc=instance, refs={"name": image["name"]})
    mappings = []
    for item, body in asked:
        params = {"project_id": instance["project_id"]}
        resp = await rt.clients.call(cinder, "createSnapshot", params, body=body, token=token)
        refs = {"snapshot": expect(resp, 202).json()["snapshot"]}
        mappings.append(server.template("snapshot_mapping", item=item, refs=refs))
    # glance's string properties (nova's v2 form: the mappings as JSON)
    props = {"block_device_mapping": json.dumps(mappings), "bdm_v2": "True",
             "root_device_name": "/dev/vda"}  # fmt: skip
    patch = [{"op": "add", "path": f"/{k}", "value": v} for k, v in props.items()]
    headers = {"Content-Type": PATCH}
    resp = await rt.clients.call(
        glance, "updateImage", ids, body=patch, headers=headers, token=token
    )
    expect(resp, 200)
    resp = await rt.clients.call(glance, "uploadImageData", ids, body=b"", token=token)
    expect(resp, 204)
    return True


@behaviour("compute.rpc_snapshot_instance", needs=(IMAGE, "block-storage"))
async def rpc_snapshot_instance(call: Call) -> None:
    """snapshot_instance (and shelve_instance), as the consumer's args say: the driver's
    `first` method if any (shelve powers the guest off), the root disk written (`pending`)
    and uploaded (`uploading`), the task cleared with the `done` fields (CEL over the
    payload). A failure clears the task with the fault, and the image that would have held
    the data is deleted (as nova does)."""
    rt, args = call.rt, call.args
    uuid, image_id = str(call.payload["instance"]["uuid"]), str(call.payload["image_id"])
    token = await flow_token(call)
    target = Path(rt.data_dir) / "snapshots" / rt.host / image_id
    guest = {"uuid": uuid, "name": uuid}
    task = str(args["pending"])
    await update_instance(call, uuid, {"task_state": task}, str(args["expected"]))
    try:
        if args.get("first"):
            await getattr(rt.driver, str(args["first"]))(guest)
        if not (args.get("volumes") and await _snapshot_volumes(call, uuid, image_id, token)):
            target.parent.mkdir(parents=True, exist_ok=True)
            fmt = await rt.driver.snapshot(guest, str(target))
            await update_instance(call, uuid, {"task_state": args["uploading"]}, task)
            task = str(args["uploading"])
            await _upload(call, image_id, target, str(fmt), token)
    except Exception as exc:
        fault = make_fault(fault_code(exc), f"snapshot failed: {exc}")
        with contextlib.suppress(Exception):
            await rt.clients.call(
                rt.info.api_of_type(IMAGE), "deleteImage", {"image_id": image_id}, token=token
            )
        await update_instance(call, uuid, {"task_state": None, "fault": fault}, task)
        raise
    finally:
        target.unlink(missing_ok=True)
    done = compile_expr(str(args.get("done") or "{}")).evaluate(request=dict(call.payload))
    await update_instance(call, uuid, {"task_state": None, **dict(done)}, task)
