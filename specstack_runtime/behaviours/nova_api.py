"""nova-api: creating a server (boot-vm 4.1, 5, 6).

- `compute.check_image` (boot-vm 4.1) keeps `vars["image"]` (and the new instance, for step 5);
- `compute.create_server` (step 5) writes the instance row and keeps
  `vars["instance"]`, `vars["flavor"]` and `vars["request_spec"]`;
- `compute.schedule_request` (step 6) casts schedule_and_build_instances.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from specstack_runtime.behaviours.conductor import (
    COMPUTE_NODES,
    INSTANCES,
    flavor_info,
    make_fault,
)
from specstack_runtime.behaviours.nova_common import SERVER, fail, project_auth, store_of
from specstack_runtime.behaviours.scheduling import DEFAULT_AVAILABILITY_ZONE
from specstack_runtime.context import Call, Interaction, Reply
from specstack_runtime.errors import StepFailed
from specstack_runtime.http import expect
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import collects, guards, quotas, relations, writes
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.resources.views import render
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import Doc

NEW_ROW = "new_row"  # the flow variable step 4.1 keeps the instance in, for step 5


def _new_row(rc: ResourceCall, call: Call) -> Doc:
    """The instance the request makes, as the spec's server template `new_row` describes it."""
    server = call.body.get("server") if isinstance(call.body, dict) else None
    if not isinstance(server, dict):
        raise rc.res.fail("body", envelope="server")
    row = rc.template("new_row", doc=rc.res.complete({}), changes=server, request=call.body)
    return dict(row)


def _hostname(name: str) -> str:
    """The guest's host name from the server's name, as nova sanitizes it."""
    name = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    name = re.sub(r"[^\w.-]+", "", re.sub(r"[ _.]", "-", name)).lower()
    return name.strip(".-")


@behaviour("compute.check_image", via=("http",))
async def check_image(ix: Interaction) -> None:
    """boot-vm 4.1: the image to boot from must exist in glance; keeps `vars["image"]`."""
    body = ix.call.body
    if not isinstance(body, dict) or not isinstance(body.get("server"), dict):
        return
    # the instance the request makes: step 5 records this one (its id included)
    row = ix.vars[NEW_ROW] = _new_row(engine_call(ix.call, SERVER), ix.call)
    image_id = row["image_ref"]
    if not image_id:
        return  # booting from a volume: no image to check
    resp = await ix.invoke(image_id=image_id, token=ix.call.token)
    if resp.status_code in (400, 403, 404):
        raise fail(ix.rt, "image_not_found", id=image_id)
    expect(resp, 200)
    ix.vars["image"] = resp.json()


async def _find_refs(rc: ResourceCall, row: Doc, zoned: bool) -> None:
    """What the spec's create rules check the request against (`refs`): the server's
    relations, the image glance gave (step 4.1), the hosts' zones (every host read, only
    when the request names a zone) and the limits a server group holds the project to."""
    await relations.load(rc, row)
    if "flavor" in rc.refs:  # as the message type Flavor
        rc.refs["flavor"] = row["flavor"] = flavor_info(rc.call.rt.info, rc.refs["flavor"])
    image = rc.call.vars.get("image")
    if row["image_ref"] and isinstance(image, dict) and str(image.get("id")) == row["image_ref"]:
        rc.refs["image"] = image
        # the image's kernel and ramdisk, as the instance keeps them (extended attributes)
        row.update(kernel_id=str(image.get("kernel_id") or ""))
        row.update(ramdisk_id=str(image.get("ramdisk_id") or ""))
    nodes = await rc.store.list(COMPUTE_NODES) if zoned else []
    zones = {
        str(n["host"]): str(n.get("availability_zone") or DEFAULT_AVAILABILITY_ZONE) for n in nodes
    }
    rc.refs["hosts"] = zones
    if "server_group" in rc.refs:  # as the project's quota set shows them
        rc.refs["limits"] = {}
        for name in {q.limits for q in quotas.of_resource(rc) if q.limits}:
            sets = rc.of(name)
            own = await sets.store.get(sets.res.res.table, str(row["project_id"]))
            rc.refs["limits"] = render(sets, own or {"id": row["project_id"]})


@behaviour("compute.create_server", needs=("compute",))
async def create_server(call: Call) -> Reply:
    """boot-vm step 5: validate, check quota, record the instance (BUILD); 202."""
    project_auth(call)
    store = store_of(call)
    rc = engine_call(call, SERVER)
    kept = call.vars.pop(NEW_ROW, None)  # step 4.1's, from this request's body
    row = kept if isinstance(kept, dict) else _new_row(rc, call)
    server = call.body["server"]
    # the name and the disk config as the spec's server resource rules them
    if not isinstance(row["name"], str):
        raise rc.res.fail("invalid", field="name", value=row["name"])
    writes.check_value(rc, rc.res.fields["name"], row["name"])
    writes.check_value(rc, rc.res.fields["OS-DCF:diskConfig"], row["disk_config"])
    zone = str(server.get("availability_zone") or "")
    await _find_refs(rc, row, bool(zone))
    _, _, forced = zone.partition(":")
    forced_host = forced.split(":", 1)[0] or None
    guards.check(rc, "create", {**row, "forced_host": forced_host}, changes=server)

    # multiple create: as many servers as the quotas leave room for, up to max_count; fewer
    # than min_count is refused before anything is written
    least, most = row.pop("min_count"), row.pop("max_count")
    limits = quotas.of_resource(rc)
    for quota in limits:  # (the room asked only when there is a choice: one count less)
        if most > least and (left := await quotas.room(rc, quota, row)) is not None:
            most = min(most, left)
        await quotas.check(rc, quota, row, inserted=False, times=least)
    rows = (
        [row]
        if most == 1
        else [rc.res.template("member", doc=row, refs={"index": i + 1}) for i in range(most)]
    )
    made: list[Doc] = []
    try:  # all or nothing: counted again with the rows in, of racing creates the later goes
        for one in rows:
            one["hostname"] = _hostname(one["name"]) or f"Server-{one['id']}"
            made.append(await store.create(INSTANCES, one))
        for quota in limits:
            await quotas.check(rc, quota, made[-1], inserted=True)
    except BaseException:  # (the quota check took the last row out already)
        for one in made:
            await store.delete(INSTANCES, one["id"])
        raise
    for one in made:
        await collects.added(rc, one)  # a member of its server group
    call.vars["instance"], call.vars["instances"] = made[0], made
    call.vars["flavor"] = made[0]["flavor"]
    ignore = sorted(set(rc.refs["hosts"]) - {forced_host}) if forced_host else []
    call.vars["request_spec"] = schedule_payload(rc.call.rt.info, made[0], ignore)["request_spec"]
    if server.get("return_reservation_id") in (True, "True", "true", "1"):
        return Reply(202, {"reservation_id": made[0]["reservation_id"]})
    answer = render(rc, made[0], "created")
    answer["adminPass"] = server.get("adminPass") or secrets.token_urlsafe(9)[:12]
    return Reply(202, {"server": answer}, headers={"Location": answer["links"][0]["href"]})


def schedule_payload(info: StackInfo, row: Doc, ignore_hosts: Iterable[str] = ()) -> Doc:
    """The schedule_and_build_instances payload for an instance row (the server's template)."""
    res = info.resources.resource(SERVER)
    flavor = flavor_info(info, row.get("flavor") or {"id": row["flavor_id"]})
    refs = {"flavor": flavor, "ignore_hosts": list(ignore_hosts)}
    return dict(res.template("schedule", doc=dict(row), refs=refs))


@behaviour("compute.schedule_request", via=("amqp-cast",))
async def schedule_request(ix: Interaction) -> None:
    """boot-vm step 6: cast the provisioning request to the scheduler."""
    first = ix.vars.get("instance")
    if not first:
        return
    row = first
    try:  # one request for each server a multiple create made
        ignore = (ix.vars.get("request_spec") or {}).get("ignore_hosts") or ()
        for row in ix.vars.get("instances") or [first]:
            await ix.invoke(schedule_payload(ix.rt.info, row, ignore))
    except Exception as exc:
        fault = make_fault(500, f"The build request could not be sent: {exc}")
        await store_of(ix).update(
            INSTANCES,
            row["id"],
            {"vm_state": "error", "task_state": None, "fault": fault},
            expect={"task_state": "scheduling"},
        )
        raise StepFailed(f"the build request for {row['id']} could not be sent: {exc}") from exc
