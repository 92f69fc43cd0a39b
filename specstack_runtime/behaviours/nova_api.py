"""nova-api: creating a server (boot-vm 4.1, 5, 6).

- `compute.check_image` (boot-vm 4.1) keeps `vars["image"]`;
- `compute.create_server` (step 5) writes the instance row and keeps
  `vars["instance"]`, `vars["flavor"]` and `vars["request_spec"]`;
- `compute.schedule_request` (step 6) casts schedule_and_build_instances.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
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
from specstack_runtime.behaviours.nova_common import (
    SERVER,
    is_uuid,
    project_auth,
    store_of,
)
from specstack_runtime.behaviours.scheduling import DEFAULT_AVAILABILITY_ZONE
from specstack_runtime.context import Call, Interaction, Reply
from specstack_runtime.errors import (
    BadRequest,
    Forbidden,
    StepFailed,
)
from specstack_runtime.http import expect
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import quotas, writes
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.resources.views import render
from specstack_runtime.store import Doc, Store


def _ref_id(ref: Any) -> str:
    """An id given directly or as the URL of the resource (imageRef, flavorRef)."""
    text = str(ref).strip()
    if "/" in text:
        text = text.rstrip("/").rsplit("/", 1)[-1]
    return text


def _server_of(body: Any) -> dict[str, Any]:
    server = body.get("server") if isinstance(body, dict) else None
    if not isinstance(server, dict):
        raise BadRequest("Invalid input for field/attribute server: a server object is required.")
    return server


def _boot_index(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest(
            f"Invalid input for field/attribute boot_index. Value: {value}. "
            "It must be an integer or null."
        ) from None


def boot_image_id(server: Mapping[str, Any]) -> str | None:
    """The image a create request boots from: imageRef, or the bdm's boot image."""
    ref = server.get("imageRef")
    if ref not in (None, ""):
        return _ref_id(ref)
    for bdm in server.get("block_device_mapping_v2") or []:
        if (
            isinstance(bdm, dict)
            and bdm.get("source_type") == "image"
            and bdm.get("destination_type", "local") == "local"
            and str(bdm.get("boot_index")) == "0"
            and bdm.get("uuid")
        ):
            return str(bdm["uuid"])
    return None


def _block_devices(server: Mapping[str, Any], image_id: str | None) -> list[dict[str, Any]]:
    """block_device_mapping_v2 checked and normalised to the message type."""
    out: list[dict[str, Any]] = []
    boot_seen = False
    volumes: set[str] = set()
    for raw in server.get("block_device_mapping_v2") or []:
        if not isinstance(raw, dict):
            raise BadRequest("Block Device Mapping is Invalid: each mapping must be an object.")
        source = raw.get("source_type", "image" if raw.get("image_id") else "volume")
        dest = raw.get("destination_type", "local" if source == "image" else "volume")
        uuid = (
            raw.get("uuid") or raw.get("volume_id") or raw.get("image_id") or raw.get("snapshot_id")
        )
        index = _boot_index(raw.get("boot_index"))
        if index is not None and index < 0:
            index = -1
        if index == 0:
            if boot_seen:
                raise BadRequest(
                    "Block Device Mapping is Invalid: Boot sequence for the instance and "
                    "image/block device mapping combination is not valid."
                )
            boot_seen = True
        if source == "image" and dest == "local":
            if index != 0:
                raise BadRequest(
                    "Block Device Mapping is Invalid: an image mapped to a local disk must "
                    "be the boot device (boot_index 0)."
                )
            if not uuid:
                raise BadRequest("Block Device Mapping is Invalid: the image has no uuid.")
            if image_id and _ref_id(uuid) != image_id:
                raise BadRequest(
                    f"Block Device Mapping is Invalid: image {uuid} differs from imageRef {image_id}."
                )
        elif source == "volume" and dest == "volume":
            if not uuid or not isinstance(uuid, str):
                raise BadRequest("Block Device Mapping is Invalid: a volume mapping needs a uuid.")
            if uuid in volumes:
                raise BadRequest(f"Block Device Mapping is Invalid: volume {uuid} is given twice.")
            volumes.add(uuid)
        elif source == "blank" and dest == "local":
            raise BadRequest(
                "Block Device Mapping is Invalid: ephemeral and swap disks are not supported "
                "by this cloud."
            )
        else:
            raise BadRequest(
                f"Block Device Mapping is Invalid: source_type {source} with destination_type "
                f"{dest} (creating volumes at boot) is not supported by this cloud."
            )
        item: dict[str, Any] = {
            "source_type": source,
            "destination_type": dest,
            "uuid": str(uuid),
            "boot_index": index,
            "delete_on_termination": bool(raw.get("delete_on_termination", source == "image")),
        }
        size = raw.get("volume_size")
        if size not in (None, ""):
            try:
                item["volume_size"] = int(size)
            except (TypeError, ValueError):
                raise BadRequest(f"Invalid volume_size {size!r}: an integer is expected.") from None
        out.append(item)
    return out


def _requested_networks(networks: Any) -> list[dict[str, Any]]:
    if networks is None:
        return []
    if not isinstance(networks, list):
        raise BadRequest("Bad networks format")
    out: list[dict[str, Any]] = []
    for net in networks:
        if not isinstance(net, dict):
            raise BadRequest("Bad networks format")
        item: dict[str, Any] = {}
        port = net.get("port")
        if port:
            if not is_uuid(port):
                raise BadRequest(f"Bad networks format: port uuid is not in proper format ({port})")
            item["port_id"] = str(port)
        else:
            uuid = net.get("uuid")
            if not uuid or not is_uuid(uuid):
                raise BadRequest(
                    f"Bad networks format: network uuid is not in proper format ({uuid})"
                )
            item["network_id"] = str(uuid)
        fixed = net.get("fixed_ip")
        if fixed is not None:
            try:
                ipaddress.ip_address(str(fixed))
            except ValueError:
                raise BadRequest(f"Invalid fixed IP address ({fixed})") from None
            item["fixed_ip"] = str(fixed)
        out.append(item)
    ports = [n["port_id"] for n in out if "port_id" in n]
    if len(ports) != len(set(ports)):
        raise BadRequest("Bad networks format: a port is requested twice.")
    return out


def _access_ip(server: Mapping[str, Any], key: str, version: int) -> str:
    value = server.get(key)
    if value in (None, ""):
        return ""
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        addr = None
    if addr is None or addr.version != version:
        raise BadRequest(
            f"Invalid input for field/attribute {key}. Value: {value}. Not an IPv{version} address."
        )
    return str(addr)


async def _flavor_for(store: Store, ref: Any) -> Doc:
    flavor_id = _ref_id(ref)
    doc = await store.get(FLAVORS, flavor_id) if flavor_id else None
    if doc is None or flavor_is_disabled(doc):
        raise BadRequest(f"Flavor {flavor_id} could not be found.")
    return doc


async def _availability_zone(call: Call, store: Store, value: Any) -> tuple[str | None, list[str]]:
    """The requested zone, and the hosts to ignore when a host is forced ("zone:host")."""
    if value in (None, ""):
        return None, []
    zone, _, rest = str(value).partition(":")
    host = rest.split(":", 1)[0] if rest else ""
    nodes = await store.list(COMPUTE_NODES)
    zones = {str(n.get("availability_zone") or DEFAULT_AVAILABILITY_ZONE) for n in nodes}
    if zone and zone not in zones:
        raise BadRequest("The requested availability zone is not available")
    if not host:
        return zone or None, []
    call.enforce("forced_host")
    hosts = {str(n["host"]) for n in nodes}
    if host not in hosts:
        raise BadRequest(f"Compute host {host} could not be found.")
    return zone or None, sorted(hosts - {host})


def _check_image(image: Mapping[str, Any], flavor: Mapping[str, Any]) -> None:
    image_id = image.get("id")
    if image.get("status") != "active":
        raise BadRequest(f"Image {image_id} is not active.")
    if int(image.get("min_ram") or 0) > flavor["ram"]:
        raise BadRequest("Flavor's memory is too small for requested image.")
    disk_bytes = flavor["disk"] * 1024**3
    if flavor["disk"] and int(image.get("min_disk") or 0) > flavor["disk"]:
        raise BadRequest(
            "Flavor's disk is too small for requested image. Flavor disk is "
            f"{disk_bytes} bytes, minimum requested disk is "
            f"{int(image.get('min_disk') or 0) * 1024**3} bytes."
        )
    size = int(image.get("size") or 0)
    if flavor["disk"] and size > disk_bytes:
        raise BadRequest(
            "Flavor's disk is too small for requested image. Flavor disk is "
            f"{disk_bytes} bytes, image is {size} bytes."
        )


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
        raise BadRequest(f"Image {image_id} could not be found.")
    expect(resp, 200)
    ix.vars["image"] = resp.json()


@behaviour("compute.create_server", needs=("compute",))
async def create_server(call: Call) -> Reply:
    """boot-vm step 5: validate, check quota, record the instance (BUILD); 202."""
    auth = project_auth(call)
    store = store_of(call)
    server = _server_of(call.body)

    # the name and the disk config as the spec's server resource rules them (length,
    # pattern, enum, default); its `data` gives the metadata limit
    server_rc = engine_call(call, SERVER)
    fields = server_rc.res.fields
    name = server.get("name")
    if not isinstance(name, str):
        raise server_rc.res.fail("invalid", field="name", value=name)
    writes.check_value(server_rc, fields["name"], name)
    disk_field = fields["OS-DCF:diskConfig"]
    disk_config = server.get("OS-DCF:diskConfig") or disk_field.default
    writes.check_value(server_rc, disk_field, disk_config)
    max_metadata = int(server_rc.res.res.data["metadata_items"])
    for key in ("min_count", "max_count"):
        count = server.get(key, 1)
        if count != 1:
            raise BadRequest(
                f"Invalid {key} {count}: this cloud creates one server per request "
                "(min_count and max_count must be 1)."
            )
    flavor_doc = await _flavor_for(store, server.get("flavorRef"))
    flavor = flavor_info(flavor_doc)

    image_id = boot_image_id(server)
    bdms = _block_devices(server, image_id if server.get("imageRef") else None)
    boot_volume = next(
        (b for b in bdms if b["source_type"] == "volume" and b["boot_index"] == 0), None
    )
    if image_id and boot_volume is not None:
        raise BadRequest(
            "Block Device Mapping is Invalid: Boot sequence for the instance and "
            "image/block device mapping combination is not valid."
        )
    if not image_id and boot_volume is None:
        raise BadRequest("Missing imageRef attribute")
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
    image = call.vars.get("image")
    if image_id and isinstance(image, dict) and str(image.get("id")) == image_id:
        _check_image(image, flavor)

    networks = _requested_networks(server.get("networks"))

    key_name = server.get("key_name")
    if key_name is not None:
        found = await store.list(KEYPAIRS, {"user_id": auth.user_id, "name": key_name})
        if not found:
            raise BadRequest(f"Keypair {key_name} not found for user {auth.user_id}")

    zone, ignore_hosts = await _availability_zone(call, store, server.get("availability_zone"))

    metadata = server.get("metadata") or {}
    if not isinstance(metadata, dict) or any(
        not isinstance(k, str) or not 0 < len(k) <= 255 or not isinstance(v, str) or len(v) > 255
        for k, v in metadata.items()
    ):
        raise BadRequest(
            "Invalid input for field/attribute metadata: keys and values are "
            "strings of 1 to 255 (keys) and at most 255 (values) characters."
        )
    if len(metadata) > max_metadata:
        raise Forbidden(
            f"Quota exceeded for metadata_items: Requested {len(metadata)}, "
            f"but the limit is {max_metadata}"
        )
    user_data = server.get("user_data")
    if user_data is not None:
        try:
            base64.b64decode(str(user_data), validate=True)
        except ValueError:
            raise BadRequest("User data needs to be valid base 64.") from None
    access_v4 = _access_ip(server, "accessIPv4", 4)
    access_v6 = _access_ip(server, "accessIPv6", 6)
    groups = [
        str(g.get("name"))
        for g in server.get("security_groups") or [{"name": "default"}]
        if isinstance(g, dict) and g.get("name")
    ] or ["default"]

    # the spec's quotas on servers (instances, cores, RAM): refused before anything is written
    limits = quotas.of_resource(server_rc)
    wanted = {"project_id": auth.project_id, "flavor": flavor}
    for quota in limits:
        await quotas.check(server_rc, quota, wanted, inserted=False)

    uuid = str(uuidlib.uuid4())
    admin_pass = server.get("adminPass") or secrets.token_urlsafe(9)[:12]
    # what every new instance is (building, for the scheduler, no host, no ports...): the
    # spec's server resource defaults; the rest is the request's
    row: Doc = copy.deepcopy(server_rc.res.complete({}))
    row.update(
        id=uuid,
        name=name,
        project_id=auth.project_id,
        user_id=auth.user_id,
        image_ref=image_id or "",
        flavor_id=flavor["id"],
        flavor=flavor,
        availability_zone=zone,
        key_name=key_name,
        metadata=dict(metadata),
        requested_networks=networks,
        block_device_mapping=bdms,
        security_groups=groups,
        addresses={},
        fault=None,
        progress=0,
        access_ip_v4=access_v4,
        access_ip_v6=access_v6,
        config_drive="True" if server.get("config_drive") else "",
        disk_config=disk_config,
        instance_name=f"instance-{uuid[:8]}",
        user_data=user_data,
        reservation_id=f"r-{secrets.token_hex(4)}",
    )
    row = await store.create(INSTANCES, row)
    for quota in limits:  # counted again with the row in: of racing creates, the later goes
        await quotas.check(server_rc, quota, row, inserted=True)
    call.vars["instance"] = row
    call.vars["flavor"] = flavor
    call.vars["request_spec"] = {
        "flavor": flavor,
        "image_id": image_id,
        "availability_zone": zone,
        "num_instances": 1,
        "ignore_hosts": ignore_hosts,
    }
    links = render(server_rc, row)["links"]  # as the spec's server resource writes them
    return Reply(
        202,
        {
            "server": {
                "id": uuid,
                "links": links,
                "adminPass": admin_pass,
                "OS-DCF:diskConfig": disk_config,
                "security_groups": [{"name": g} for g in groups],
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
