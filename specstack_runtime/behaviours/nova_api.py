"""nova-api: creating a server (boot-vm 4.1, 5, 6).

- `compute.check_image` (boot-vm 4.1) keeps `vars["image"]`;
- `compute.create_server` (step 5) writes the instance row and keeps
  `vars["instance"]`, `vars["flavor"]` and `vars["request_spec"]`;
- `compute.schedule_request` (step 6) casts schedule_and_build_instances.
"""

from __future__ import annotations

import copy
import re
import secrets
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from specstack_runtime.behaviours.conductor import (
    COMPUTE_NODES,
    FLAVORS,
    INSTANCES,
    KEYPAIRS,
    flavor_info,
    flavor_is_disabled,
    instance_ref,
    make_fault,
)
from specstack_runtime.behaviours.nova_common import SERVER, fail, project_auth, store_of
from specstack_runtime.behaviours.scheduling import DEFAULT_AVAILABILITY_ZONE
from specstack_runtime.context import AuthContext, Call, Interaction, Reply
from specstack_runtime.errors import StepFailed
from specstack_runtime.http import expect
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import access, collects, guards, quotas, writes
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.resources.views import render
from specstack_runtime.store import Doc, Store


def _ref_id(ref: Any) -> str:
    """An id given directly or as the URL of the resource (imageRef, flavorRef)."""
    text = str(ref).strip()
    if "/" in text:
        text = text.rstrip("/").rsplit("/", 1)[-1]
    return text


def boot_image_id(server: Mapping[str, Any]) -> str | None:
    """The image a create request boots from: imageRef, or the bdm's boot image."""
    ref = server.get("imageRef")
    if ref not in (None, ""):
        return _ref_id(ref)
    for bdm in _block_devices(server):
        if (bdm["source_type"], bdm["destination_type"], bdm["boot_index"]) == (
            "image",
            "local",
            0,
        ):
            return str(bdm["uuid"])
    return None


def _int_or_raw(value: Any) -> Any:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return value  # the spec's rules refuse it, quoting it


def _block_devices(server: Mapping[str, Any]) -> list[dict[str, Any]]:
    """block_device_mapping_v2 in the message type's shape (nova's defaults filled in);
    the spec's rules judge it."""
    out: list[dict[str, Any]] = []
    given = server.get("block_device_mapping_v2")
    for raw in given if isinstance(given, list) else []:
        bdm = raw if isinstance(raw, dict) else {}
        source = bdm.get("source_type", "image" if bdm.get("image_id") else "volume")
        keys = ("uuid", "volume_id", "image_id", "snapshot_id")
        index = _int_or_raw(bdm.get("boot_index"))
        item: dict[str, Any] = {
            "source_type": source,
            "destination_type": bdm.get(
                "destination_type", "local" if source == "image" else "volume"
            ),
            "uuid": str(next((bdm[k] for k in keys if bdm.get(k)), "")),
            "boot_index": max(index, -1) if isinstance(index, int) else index,
            "delete_on_termination": bool(bdm.get("delete_on_termination", source == "image")),
        }
        if bdm.get("volume_size") not in (None, ""):
            item["volume_size"] = _int_or_raw(bdm["volume_size"])
        out.append(item)
    return out


def _requested_networks(networks: Any) -> list[dict[str, Any]]:
    """`networks` as the message type's RequestedNetwork items; the spec's rules judge them."""
    out: list[dict[str, Any]] = []
    for net in networks if isinstance(networks, list) else []:
        if not isinstance(net, dict):
            continue
        port = net.get("port")
        item = {"port_id": str(port)} if port else {"network_id": str(net.get("uuid") or "")}
        if net.get("fixed_ip") is not None:
            item["fixed_ip"] = str(net["fixed_ip"])
        out.append(item)
    return out


@behaviour("compute.check_image", via=("http",))
async def check_image(ix: Interaction) -> None:
    """boot-vm 4.1: the image to boot from must exist in glance; keeps `vars["image"]`."""
    body = ix.call.body
    server = body.get("server") if isinstance(body, dict) else None
    image_id = boot_image_id(server) if isinstance(server, dict) else None
    if not image_id:
        return  # booting from a volume: no image to check
    resp = await ix.invoke(image_id=image_id, token=ix.call.token)
    if resp.status_code in (400, 403, 404):
        raise fail(ix.rt, "image_not_found", id=image_id)
    expect(resp, 200)
    ix.vars["image"] = resp.json()


def _new_row(
    rc: ResourceCall, body: Mapping[str, Any], server: Mapping[str, Any], auth: AuthContext
) -> Doc:
    """The instance the request makes: the spec's server defaults (building, for the
    scheduler, no host...), and the request's values."""
    uuid = str(uuidlib.uuid4())
    image_id = boot_image_id(server)
    bdms = _block_devices(server)
    if image_id and not any(b["source_type"] == "image" for b in bdms):
        bdms.insert(
            0,
            {
                "source_type": "image",
                "destination_type": "local",
                "uuid": image_id,
                "boot_index": 0,
                "delete_on_termination": True,
            },
        )
    zone = str(server.get("availability_zone") or "").split(":")[0]
    groups = [
        str(g["name"])
        for g in server.get("security_groups") or []
        if isinstance(g, dict) and g.get("name")
    ]
    row: Doc = copy.deepcopy(rc.res.complete({}))
    row.update(
        id=uuid,
        name=server["name"],
        project_id=auth.project_id,
        user_id=auth.user_id,
        image_ref=image_id or "",
        flavor_id=_ref_id(server.get("flavorRef")),
        flavor=None,
        availability_zone=zone or None,
        key_name=server.get("key_name"),
        metadata=server.get("metadata") or {},
        requested_networks=_requested_networks(server.get("networks")),
        block_device_mapping=bdms,
        security_groups=groups or ["default"],
        addresses={},
        fault=None,
        progress=0,
        access_ip_v4=str(server.get("accessIPv4") or ""),
        access_ip_v6=str(server.get("accessIPv6") or ""),
        config_drive="True" if server.get("config_drive") else "",
        disk_config=server.get("OS-DCF:diskConfig") or rc.res.fields["OS-DCF:diskConfig"].default,
        instance_name=f"instance-{uuid[:8]}",
        hostname=_hostname(str(server["name"])) or f"Server-{uuid}",
        user_data=server.get("user_data"),
        description=server.get("description"),
        reservation_id=f"r-{secrets.token_hex(4)}",
        server_group=_group_hint(body),
    )
    return row


def _hostname(name: str) -> str:
    """The guest's host name from the server's name, as nova sanitizes it."""
    name = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    name = re.sub(r"[^\w.-]+", "", re.sub(r"[ _.]", "-", name)).lower()
    return name.strip(".-")


def _group_hint(body: Mapping[str, Any]) -> Any:
    """The scheduler hint `group` (under either of nova's names); the spec's rules judge it."""
    for key in ("os:scheduler_hints", "OS-SCH-HNT:scheduler_hints"):
        hints = body.get(key)
        if isinstance(hints, dict) and hints.get("group") is not None:
            return hints["group"]
    return None


async def _group_refs(rc: ResourceCall, row: Doc) -> dict[str, Any]:
    """The group the hint names, if the caller sees it (the resource that collects servers,
    spec/resources), and the project's limits it is held to (`limits`, as its quota set
    shows them)."""
    gid = row.get("server_group")
    if not isinstance(gid, str):
        return {}
    for other, _ in rc.catalog.collectors(rc.res.name):
        groups = rc.of(other.name)
        doc = await groups.store.get(other.res.table, gid)
        if doc is None or not access.visible(groups, doc):
            continue
        refs: dict[str, Any] = {"server_group": doc, "limits": {}}
        for name in {q.limits for q in quotas.of_resource(rc) if q.limits}:
            sets = rc.of(name)
            own = await sets.store.get(sets.res.res.table, str(row["project_id"]))
            refs["limits"] = render(sets, own or {"id": row["project_id"]})
        return refs
    return {}


async def _find_refs(call: Call, store: Store, row: Doc, zoned: bool) -> dict[str, Any]:
    """What the spec's create rules check the request against (`refs`)."""
    refs: dict[str, Any] = {"hosts": {}}
    if zoned:  # the hosts' zones (every host read) only when the request names a zone
        for node in await store.list(COMPUTE_NODES):
            zone = node.get("availability_zone") or DEFAULT_AVAILABILITY_ZONE
            refs["hosts"][str(node["host"])] = str(zone)
    flavor = await store.get(FLAVORS, row["flavor_id"]) if row["flavor_id"] else None
    if flavor is not None and not flavor_is_disabled(flavor):
        refs["flavor"] = row["flavor"] = flavor_info(flavor)
    image = call.vars.get("image")
    if row["image_ref"] and isinstance(image, dict) and str(image.get("id")) == row["image_ref"]:
        refs["image"] = image
        # the image's kernel and ramdisk, as the instance keeps them (extended attributes)
        row.update(kernel_id=str(image.get("kernel_id") or ""))
        row.update(ramdisk_id=str(image.get("ramdisk_id") or ""))
    if row["key_name"] is not None:
        where = {"user_id": row["user_id"], "name": row["key_name"]}
        refs.update({"keypair": found[0]} if (found := await store.list(KEYPAIRS, where)) else {})
    return refs


@behaviour("compute.create_server", needs=("compute",))
async def create_server(call: Call) -> Reply:
    """boot-vm step 5: validate, check quota, record the instance (BUILD); 202."""
    auth = project_auth(call)
    store = store_of(call)
    rc = engine_call(call, SERVER)
    server = call.body.get("server") if isinstance(call.body, dict) else None
    if not isinstance(server, dict):
        raise rc.res.fail("body", envelope="server")
    # the name and the disk config as the spec's server resource rules them
    fields = rc.res.fields
    if not isinstance(server.get("name"), str):
        raise rc.res.fail("invalid", field="name", value=server.get("name"))
    writes.check_value(rc, fields["name"], server["name"])
    row = _new_row(rc, call.body, server, auth)
    writes.check_value(rc, fields["OS-DCF:diskConfig"], row["disk_config"])
    zone = str(server.get("availability_zone") or "")
    rc.refs = await _find_refs(call, store, row, bool(zone)) | await _group_refs(rc, row)
    _, _, forced = zone.partition(":")
    forced_host = forced.split(":", 1)[0] or None
    guards.check(rc, "create", {**row, "forced_host": forced_host}, changes=server)

    # the spec's quotas on servers (instances, cores, RAM): refused before anything is written
    limits = quotas.of_resource(rc)
    for quota in limits:
        await quotas.check(rc, quota, row, inserted=False)
    row = await store.create(INSTANCES, row)
    for quota in limits:  # counted again with the row in: of racing creates, the later goes
        await quotas.check(rc, quota, row, inserted=True)
    await collects.added(rc, row)  # a member of its server group
    call.vars["instance"] = row
    call.vars["flavor"] = row["flavor"]
    call.vars["request_spec"] = {
        "flavor": row["flavor"],
        "image_id": row["image_ref"] or None,
        "availability_zone": row["availability_zone"],
        "num_instances": 1,
        "ignore_hosts": sorted(set(rc.refs["hosts"]) - {forced_host}) if forced_host else [],
    }
    links = render(rc, row, "summary")["links"]  # as the spec's server resource writes them
    groups = [{"name": g} for g in row["security_groups"]]
    admin_pass = server.get("adminPass") or secrets.token_urlsafe(9)[:12]
    return Reply(
        202,
        {
            "server": {
                "id": row["id"],
                "links": links,
                "adminPass": admin_pass,
                "OS-DCF:diskConfig": row["disk_config"],
                "security_groups": groups,
            }
        },
        headers={"Location": links[0]["href"]},
    )


def schedule_payload(
    row: Mapping[str, Any], spec: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The schedule_and_build_instances payload for an instance row."""
    flavor = flavor_info(row.get("flavor") or {"id": row["flavor_id"]})
    request_spec: dict[str, Any] = {
        "flavor": flavor,
        "image_id": row.get("image_ref") or None,
        "availability_zone": row.get("availability_zone"),
        "num_instances": 1,
    }
    if row.get("server_group"):
        request_spec["instance_group"] = {"uuid": str(row["server_group"])}
    if spec and spec.get("ignore_hosts"):
        request_spec["ignore_hosts"] = list(spec["ignore_hosts"])
    return {
        "instance": instance_ref(row),
        "request_spec": request_spec,
        "requested_networks": list(row.get("requested_networks") or []),
        "block_device_mapping": list(row.get("block_device_mapping") or []),
    }


@behaviour("compute.schedule_request", via=("amqp-cast",))
async def schedule_request(ix: Interaction) -> None:
    """boot-vm step 6: cast the provisioning request to the scheduler."""
    row = ix.vars.get("instance")
    if not row:
        return
    try:
        await ix.invoke(schedule_payload(row, ix.vars.get("request_spec")))
    except Exception as exc:
        fault = make_fault(500, f"The build request could not be sent: {exc}")
        await store_of(ix).update(
            INSTANCES,
            row["id"],
            {"vm_state": "error", "task_state": None, "fault": fault},
            expect={"task_state": "scheduling"},
        )
        raise StepFailed(f"the build request for {row['id']} could not be sent: {exc}") from exc
