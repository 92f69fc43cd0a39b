"""The compute family (nova): nova-api's operations and steps, and nova-compute's part.

nova-api (operation behaviours, one per operation of spec/apis/compute.yaml,
and the api-side steps of boot-vm/delete-vm):
- `compute.check_image` (boot-vm 4.1) keeps `vars["image"]`;
- `compute.create_server` (step 5) writes the instance row and keeps
  `vars["instance"]`, `vars["flavor"]` and `vars["request_spec"]`;
- `compute.schedule_request` (step 6) casts schedule_and_build_instances;
- `compute.delete_server` (delete-vm 5) keeps `vars["instance"]` and
  `vars["terminate"]`; `compute.terminate_request` (6) casts terminate_instance.

nova-compute (one per compute host; `rt.driver` is the host's hypervisor driver):
- startup `compute.report_resources`, then a heartbeat every REPORT_INTERVAL_S;
- build_and_run_instance: `compute.begin_build` then the step behaviours of
  boot-vm 8-15.4 in order, `compute.build_failed` on error;
- terminate_instance: `compute.begin_terminate` then delete-vm 7-11,
  `compute.terminate_failed` on error;
- the RPC handlers of the server actions (`compute.rpc_*`).

The instance row (table `instances`, id = server uuid) holds: name, project_id,
user_id, image_ref ("" when booted from a volume), flavor_id, flavor (a copy,
message type Flavor), vm_state, task_state, power_state, host, node,
availability_zone, key_name, metadata, requested_networks (RequestedNetwork
items), block_device_mapping (BlockDeviceMapping items), security_groups,
addresses (nova's format), fault, launched_at, terminated_at, deleted_at, ports
(ids of the ports nova created), vifs (the guest's interfaces), attachments
(VolumeAttachment items), progress, access_ip_v4/v6, config_drive, disk_config,
instance_name, user_data, reservation_id, created_at, updated_at.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import string
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from specstack_runtime.batching import batch_of
from specstack_runtime.behaviours.conductor import (
    CAS_ATTEMPTS,
    COMPUTE_NODES,
    FLAVORS,
    INSTANCES,
    KEYPAIRS,
    flavor_info,
    flavor_is_disabled,
    instance_ref,
    make_fault,
    naive_now,
    node_is_up,
    release_claim,
)
from specstack_runtime.behaviours.scheduling import DEFAULT_AVAILABILITY_ZONE
from specstack_runtime.bus import BusError, RemoteError
from specstack_runtime.context import AuthContext, Call, Interaction, Reply
from specstack_runtime.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    StepFailed,
)
from specstack_runtime.http import error_message, expect
from specstack_runtime.messaging import api_error, send
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import access, guards, quotas
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Doc, Store, utcnow
from specstack_runtime.virt import DiskNotFound, InstanceNotFound

logger = logging.getLogger(__name__)

#: How long a compute node trusts a network name it looked up.
NETWORK_NAME_TTL_S = 30.0
SERVER = "server"  # the resource (spec/resources/compute.yaml) of nova's instances
#: Metadata items a server may have (nova's default quota).
QUOTA_METADATA_ITEMS = 128
#: The largest page nova answers (osapi_max_limit).
MAX_LIMIT = 1000
#: Seconds between two resource reports (heartbeats) of a compute node (nova: 10).
REPORT_INTERVAL_S = 10.0
#: What nova-compute tells cinder about its host when it attaches a volume.
CONNECTOR_BASE = {"ip": "127.0.0.1", "platform": "x86_64", "os_type": "linux", "multipath": False}

#: Every vm_state but deleted (an indexed filter for "the instances that exist").
_PROGRESS_STATUSES = frozenset(
    {"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"}
)
_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "off", "n", "no"})
_DEVICE = re.compile(r"^/dev/[a-z]+[a-z0-9]*$")
_RESOURCE_KEYS = (
    "vcpus",
    "vcpus_used",
    "memory_mb",
    "memory_mb_used",
    "local_gb",
    "local_gb_used",
    "running_vms",
    "hypervisor_type",
    "hypervisor_hostname",
)


# =====================================================================================
# helpers
# =====================================================================================


def _compute_api(rt: ServiceRuntime) -> str:
    comp = rt.info.components.get(rt.component) or {}
    return str(comp.get("api") or rt.info.api_of_type("compute"))


def _base_url(call: Call) -> str:
    """The URL clients reached nova-api at (links point back to it)."""
    host = call.header("host")
    if host:
        proto = call.header("x-forwarded-proto") or "http"
        return f"{proto}://{host}"
    return call.rt.info.endpoint(_compute_api(call.rt), call.rt.config)


def _links(base: str, collection: str, id_: str) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": f"{base}/v2.1/{collection}/{id_}"},
        {"rel": "bookmark", "href": f"{base}/{collection}/{id_}"},
    ]


def _ref_id(ref: Any) -> str:
    """An id given directly or as the URL of the resource (imageRef, flavorRef)."""
    text = str(ref).strip()
    if "/" in text:
        text = text.rstrip("/").rsplit("/", 1)[-1]
    return text


def _is_uuid(value: Any) -> bool:
    try:
        uuidlib.UUID(str(value))
    except ValueError:
        return False
    return True


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


def _store(call: Call | Interaction) -> Store:
    return call.rt.require_store()


def _project_auth(call: Call) -> AuthContext:
    auth = call.require_auth()
    if not auth.project_id:
        raise Forbidden("A project-scoped token is needed for the compute API.")
    return auth


def _api_error_from_remote(exc: BaseException) -> ApiError:
    """Turn what a compute node answered into an error for the API's caller."""
    return api_error(exc, "The compute host")


async def _token(call: Call) -> str:
    """The user token the flow carries, or this service's own."""
    if call.token:
        return call.token
    return await call.rt.service_token()


def _is_gone(exc: BaseException) -> bool:
    """A driver error that means the guest or disk is already gone."""
    return isinstance(exc, InstanceNotFound | DiskNotFound) or type(exc).__name__ in (
        "InstanceNotFound",
        "DiskNotFound",
    )


def _conflict(action: str, row: Mapping[str, Any]) -> Conflict:
    return Conflict(
        f"Cannot '{action}' instance {row['id']} while it is in vm_state {row.get('vm_state')}"
        + (f", task_state {row['task_state']}" if row.get("task_state") else "")
    )


async def _instance_for(call: Call, server_id: str) -> Doc:
    """The live instance, if the server resource's scope and rules let the caller see it;
    404 otherwise (spec/resources/compute.yaml: owner, see_all, live)."""
    _project_auth(call)
    return await access.lookup(engine_call(call, SERVER), server_id)


# =====================================================================================
# views
# =====================================================================================


# =====================================================================================
# versions
# =====================================================================================

_V20_UPDATED = "2011-01-21T11:33:21Z"
_V21_UPDATED = "2013-07-23T11:33:21Z"


def _v21(base: str) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": "2.1",
        "min_version": "2.1",
        "updated": _V21_UPDATED,
        "links": [{"rel": "self", "href": f"{base}/v2.1/"}],
    }


@behaviour("compute.get_compute_versions", needs=("compute",))
async def get_compute_versions(call: Call) -> Reply:
    base = _base_url(call)
    v20 = {
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": _V20_UPDATED,
        "links": [{"rel": "self", "href": f"{base}/v2/"}],
    }
    return Reply(200, {"versions": [v20, _v21(base)]})


@behaviour("compute.get_compute_v21", needs=("compute",))
async def get_compute_v21(call: Call) -> Reply:
    base = _base_url(call)
    version = _v21(base)
    version["links"] = [
        {"rel": "self", "href": f"{base}/v2.1/"},
        {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
    ]
    version["media-types"] = [
        {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}
    ]
    return Reply(200, {"version": version})


# =====================================================================================
# servers: create (boot-vm 4.1, 5, 6)
# =====================================================================================


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
            if not _is_uuid(port):
                raise BadRequest(f"Bad networks format: port uuid is not in proper format ({port})")
            item["port_id"] = str(port)
        else:
            uuid = net.get("uuid")
            if not uuid or not _is_uuid(uuid):
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
    auth = _project_auth(call)
    store = _store(call)
    server = _server_of(call.body)

    name = server.get("name")
    if not isinstance(name, str) or not name.strip() or name != name.strip() or len(name) > 255:
        raise BadRequest(
            f"Invalid input for field/attribute name. Value: {name}. "
            "The name must be 1 to 255 characters without leading or trailing whitespace."
        )
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
    if len(metadata) > QUOTA_METADATA_ITEMS:
        raise Forbidden(
            f"Quota exceeded for metadata_items: Requested {len(metadata)}, "
            f"but the limit is {QUOTA_METADATA_ITEMS}"
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
    disk_config = server.get("OS-DCF:diskConfig") or "MANUAL"
    if disk_config not in ("AUTO", "MANUAL"):
        raise BadRequest(
            f"Invalid input for field/attribute OS-DCF:diskConfig. Value: {disk_config}."
        )

    # the spec's quotas on servers (instances, cores, RAM): refused before anything is written
    server_rc = engine_call(call, SERVER)
    limits = quotas.of_resource(server_rc)
    wanted = {"project_id": auth.project_id, "flavor": flavor}
    for quota in limits:
        await quotas.check(server_rc, quota, wanted, inserted=False)

    uuid = str(uuidlib.uuid4())
    admin_pass = server.get("adminPass") or secrets.token_urlsafe(9)[:12]
    now = utcnow()
    row: Doc = {
        "id": uuid,
        "name": name,
        "project_id": auth.project_id,
        "user_id": auth.user_id,
        "image_ref": image_id or "",
        "flavor_id": flavor["id"],
        "flavor": flavor,
        "vm_state": "building",
        "task_state": "scheduling",
        "power_state": 0,
        "host": None,
        "node": None,
        "availability_zone": zone,
        "key_name": key_name,
        "metadata": dict(metadata),
        "requested_networks": networks,
        "block_device_mapping": bdms,
        "security_groups": groups,
        "addresses": {},
        "fault": None,
        "launched_at": None,
        "terminated_at": None,
        "deleted_at": None,
        "ports": [],
        "vifs": [],
        "attachments": [],
        "progress": 0,
        "access_ip_v4": access_v4,
        "access_ip_v6": access_v6,
        "config_drive": "True" if server.get("config_drive") else "",
        "disk_config": disk_config,
        "instance_name": f"instance-{uuid[:8]}",
        "user_data": user_data,
        "reservation_id": f"r-{secrets.token_hex(4)}",
        "created_at": now,
        "updated_at": now,
    }
    await store.create(INSTANCES, row)
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
    links = _links(_base_url(call), "servers", uuid)
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
        await _store(ix).update(
            INSTANCES,
            row["id"],
            {"vm_state": "error", "task_state": None, "fault": fault},
            expect={"task_state": "scheduling"},
        )
        raise StepFailed(f"the build request for {row['id']} could not be sent: {exc}") from exc


# =====================================================================================
# servers: list, show, update
# =====================================================================================


# =====================================================================================
# servers: delete (delete-vm 5, 6)
# =====================================================================================


async def _compute_is_up(store: Store, host: str) -> bool:
    doc = await store.get(COMPUTE_NODES, host)
    return doc is not None and node_is_up(doc)


async def _local_delete(call: Call, row: Doc) -> Doc:
    """Delete an instance that no compute host will clean up (never scheduled, or host down)."""
    store = _store(call)
    token = call.token
    if token:
        try:
            await release_instance_ports(
                call.rt,
                str(row["id"]),
                [str(p) for p in row.get("ports") or []],
                row.get("requested_networks") or [],
                token,
            )
        except Exception as exc:
            logger.warning("local delete of %s: ports not all deleted: %s", row["id"], exc)
        vol_api = call.rt.info.api_of_type("block-storage")
        for att in row.get("attachments") or []:
            try:
                await call.rt.clients.call(
                    vol_api,
                    "deleteAttachment",
                    {"project_id": row["project_id"], "attachment_id": att["attachment_id"]},
                    token=token,
                )
            except Exception:
                logger.warning("local delete of %s: attachment not deleted", row["id"])
    now = naive_now()
    updated = await store.update(
        INSTANCES,
        row["id"],
        {
            "vm_state": "deleted",
            "task_state": None,
            "power_state": 0,
            "deleted_at": now,
            "terminated_at": now,
        },
        expect={"vm_state": row.get("vm_state"), "task_state": row.get("task_state")},
    )
    if updated is None:
        raise Conflict(f"Instance {row['id']} changed while it was deleted; try again.")
    await release_claim(store, updated)
    return updated


@behaviour(
    "compute.delete_server",
    needs=(
        "block-storage",
        "network",
    ),
)
async def delete_server(call: Call) -> Reply:
    """delete-vm step 5: mark the instance deleting (or delete it at once); 204.

    Leaves `vars["instance"]` (the row) and `vars["terminate"]` (whether step 6
    must cast terminate_instance to the instance's host).
    """
    store = _store(call)
    server_id = call.path_params["server_id"]
    call.vars["terminate"] = False
    for _ in range(CAS_ATTEMPTS):
        row = await _instance_for(call, server_id)
        guards.check(engine_call(call, SERVER), "delete", row)  # a locked server, say
        call.vars["instance"] = row
        if row.get("task_state") == "deleting":
            return Reply(204)  # already being deleted: nova ignores the repeat
        host = row.get("host")
        if not host or not await _compute_is_up(store, str(host)):
            call.vars["instance"] = await _local_delete(call, row)
            return Reply(204)
        updated = await store.update(
            INSTANCES,
            server_id,
            {"task_state": "deleting"},
            expect={"vm_state": row.get("vm_state"), "task_state": row.get("task_state")},
        )
        if updated is not None:
            call.vars["instance"] = updated
            call.vars["terminate"] = True
            return Reply(204)
    raise Conflict(f"Instance {server_id} is changing too often to be deleted; try again.")


def _attachment_item(att: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "attachment_id": str(att["attachment_id"]),
        "volume_id": str(att["volume_id"]),
        "device": att.get("device"),
    }
    if isinstance(att.get("connection_info"), dict):
        item["connection_info"] = att["connection_info"]
    return item


@behaviour("compute.terminate_request", via=("amqp-cast",))
async def terminate_request(ix: Interaction) -> None:
    """delete-vm step 6: cast terminate_instance to the instance's host."""
    row = ix.vars.get("instance")
    if not row or not ix.vars.get("terminate") or not row.get("host"):
        return
    payload = {
        "instance": instance_ref(row),
        "ports": [str(p) for p in row.get("ports") or []],
        "keep_ports": sorted(_given_ports(row.get("requested_networks") or [])),
        "attachments": [_attachment_item(a) for a in row.get("attachments") or []],
    }
    await ix.invoke(payload, host=row["host"])


# =====================================================================================
# server actions
# =====================================================================================


# =====================================================================================
# flavors
# =====================================================================================


@behaviour("compute.list_flavor_extra_specs")
async def list_flavor_extra_specs(call: Call) -> Reply:
    call.require_auth()
    flavor_id = call.path_params["flavor_id"]
    doc = await _store(call).get(FLAVORS, flavor_id)
    if doc is None:
        raise NotFound(f"Flavor {flavor_id} could not be found.")
    specs = doc.get("extra_specs")
    extra = {str(k): str(v) for k, v in specs.items()} if isinstance(specs, dict) else {}
    return Reply(200, {"extra_specs": extra})


# =====================================================================================
# key pairs
# =====================================================================================


@behaviour("compute.keypair_material")
async def keypair_material(event: ResourceEvent) -> None:
    """A new key pair's keys: a generated RSA pair when none is given (the private key goes
    to the creator's answer only, never to the database), and its MD5 fingerprint."""
    doc = event.doc
    public_key = doc.get("public_key")
    if public_key is None:
        private_key, public_key = _generate_keypair()
        event.call.vars["private_key"] = private_key
    elif not isinstance(public_key, str):
        raise BadRequest("Keypair data is invalid: failed to generate fingerprint")
    doc["public_key"] = public_key.strip()
    doc["fingerprint"] = _fingerprint(public_key)
    # nova's key pairs have an integer id of their own
    others = await event.engine.store.list(event.engine.res.res.table)
    doc["seq"] = max((int(d.get("seq") or 0) for d in others), default=0) + 1


def _fingerprint(public_key: str) -> str:
    try:
        from cryptography.hazmat.primitives.serialization import load_ssh_public_key

        load_ssh_public_key(public_key.strip().encode())
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except Exception:
        raise BadRequest("Keypair data is invalid: failed to generate fingerprint") from None
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _generate_keypair() -> tuple[str, str]:
    """(private key PEM, public key in OpenSSH format), as nova generates them."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise ApiError(
            "This cloud cannot generate key pairs (the cryptography package is missing); "
            "import a public key instead.",
            status=501,
        ) from None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, f"{public} Generated-by-Nova"


# =====================================================================================
# availability zones, hypervisors
# =====================================================================================


@behaviour("compute.list_availability_zones")
async def list_availability_zones(call: Call) -> Reply:
    """The zones of the compute hosts; with `detail` (args), each zone's hosts and their
    nova-compute service's state."""
    call.require_auth()
    zones: dict[str, bool] = {}
    hosts: dict[str, dict[str, Any]] = {}
    for doc in await _store(call).list(COMPUTE_NODES):
        zone = str(doc.get("availability_zone") or DEFAULT_AVAILABILITY_ZONE)
        enabled, alive = bool(doc.get("enabled", True)), node_is_up(doc)
        zones[zone] = zones.get(zone, False) or (enabled and alive)
        service = {"available": alive, "active": enabled, "updated_at": doc.get("updated_at")}
        hosts.setdefault(zone, {})[str(doc["host"])] = {"nova-compute": service}
    detail = bool(call.args.get("detail"))
    return Reply(
        200,
        {
            "availabilityZoneInfo": [
                {
                    "zoneName": z,
                    "zoneState": {"available": up},
                    "hosts": dict(sorted(hosts[z].items())) if detail else None,
                }
                for z, up in sorted(zones.items())
            ]
        },
    )


# =====================================================================================
# volume attachments, interfaces
# =====================================================================================


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
    row = await _instance_for(call, call.path_params["server_id"])
    items = [_attachment_view(row, a["volume_id"], a["device"]) for a in _attached(row)]
    offset = _int_param(call, "offset") or 0
    limit = _int_param(call, "limit")
    items = items[offset:]
    if limit is not None:
        items = items[:limit]
    return Reply(200, {"volumeAttachments": items})


@behaviour("compute.show_volume_attachment")
async def show_volume_attachment(call: Call) -> Reply:
    row = await _instance_for(call, call.path_params["server_id"])
    volume_id = call.path_params["volume_id"]
    for att in _attached(row):
        if att["volume_id"] == volume_id:
            return Reply(200, {"volumeAttachment": _attachment_view(row, volume_id, att["device"])})
    raise NotFound(f"volume_id not found: {volume_id}")


_ATTACHABLE = frozenset({"active", "stopped", "paused", "suspended"})


@behaviour("compute.attach_volume", needs=("block-storage",))
async def attach_volume(call: Call) -> Reply:
    """Attach a volume through the server's compute host; 200 with the attachment."""
    row = await _instance_for(call, call.path_params["server_id"])
    body = call.body if isinstance(call.body, dict) else {}
    spec = body.get("volumeAttachment")
    if not isinstance(spec, dict) or not isinstance(spec.get("volumeId"), str):
        raise BadRequest(
            "Invalid input for field/attribute volumeAttachment: volumeId is required."
        )
    volume_id = spec["volumeId"]
    if not _is_uuid(volume_id):
        raise NotFound(f"Volume {volume_id} could not be found.")
    device = spec.get("device")
    if device is not None and (not isinstance(device, str) or not _DEVICE.match(device)):
        raise BadRequest(f"The supplied device path ({device}) is invalid.")
    if (
        row.get("vm_state") not in _ATTACHABLE
        or row.get("task_state") is not None
        or not row.get("host")
    ):
        raise _conflict("attach_volume", row)
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
    row = await _instance_for(call, call.path_params["server_id"])
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
    if (
        row.get("vm_state") not in _ATTACHABLE
        or row.get("task_state") is not None
        or not row.get("host")
    ):
        raise _conflict("detach_volume", row)
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


def _interface_of_port(port: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "port_id": port.get("id"),
        "net_id": port.get("network_id"),
        "mac_addr": port.get("mac_address") or port.get("address"),
        "port_state": port.get("status", "ACTIVE"),
        "fixed_ips": [
            {"ip_address": ip.get("ip_address"), "subnet_id": ip.get("subnet_id")}
            for ip in port.get("fixed_ips") or []
        ],
    }


@behaviour("compute.list_server_interfaces", needs=("network",))
async def list_server_interfaces(call: Call) -> Reply:
    """The server's ports as neutron reports them (the recorded ones if neutron is away)."""
    row = await _instance_for(call, call.path_params["server_id"])
    ports: list[Mapping[str, Any]] | None = None
    if call.token:
        try:
            resp = await call.rt.clients.call(
                call.rt.info.api_of_type("network"),
                "listPorts",
                query={"device_id": row["id"]},
                token=call.token,
            )
            if resp.status_code == 200:
                ports = list((resp.json() or {}).get("ports") or [])
        except Exception:
            logger.warning("neutron could not be asked for the ports of %s", row["id"])
    if ports is None:
        ports = list(row.get("vifs") or [])
    return Reply(200, {"interfaceAttachments": [_interface_of_port(p) for p in ports]})


# =====================================================================================
# nova-compute: resources
# =====================================================================================


def host_availability_zone(rt: ServiceRuntime) -> str:
    """The availability zone of the topology node this compute host belongs to."""
    node = rt.info.nodes.get(rt.info.node_of(rt.host, rt.config) or rt.host) or {}
    return str(node.get("availability_zone") or DEFAULT_AVAILABILITY_ZONE)


async def report_once(rt: ServiceRuntime) -> None:
    if rt.driver is None:
        raise RuntimeError(f"{rt.component} on {rt.host} has no hypervisor driver")
    resources = await rt.driver.get_available_resource()
    node = {
        "host": rt.host,
        "availability_zone": host_availability_zone(rt),
        "resources": {k: resources[k] for k in _RESOURCE_KEYS if k in resources},
    }

    async def flush(nodes: list[dict[str, Any]]) -> Any:
        # built here from the driver's report: the conductor's consumer validates it once
        return await send(rt, "compute_node_update", {"nodes": nodes}, checked=True)

    # the hosts of this process reporting in the same turn: one message for all of them
    await batch_of(rt.shared, "compute_node_update", flush).submit(node)


async def _heartbeat(rt: ServiceRuntime, first_delay: float = REPORT_INTERVAL_S) -> None:
    delay = first_delay
    while True:
        await asyncio.sleep(delay)
        delay = REPORT_INTERVAL_S
        try:
            await report_once(rt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("compute %s could not report its resources: %s", rt.host, exc)


@behaviour("compute.report_resources")
async def report_resources(rt: ServiceRuntime) -> None:
    """Startup: report the host's capacity to the conductor, then every REPORT_INTERVAL_S.

    The reports are the heartbeat the scheduler's ComputeFilter checks. A first
    report that fails (the conductor not consuming yet) is retried a second later
    rather than failing the start; a compute without a driver does fail it.
    """
    if rt.driver is None:
        raise RuntimeError(f"{rt.component} on {rt.host} has no hypervisor driver")
    first_delay = REPORT_INTERVAL_S
    try:
        await report_once(rt)
    except Exception as exc:
        logger.warning("compute %s: first resource report failed (%s); retrying", rt.host, exc)
        first_delay = 1.0
    task = rt.local.get("compute.heartbeat")
    if task is None or task.done():
        rt.local["compute.heartbeat"] = asyncio.create_task(
            _heartbeat(rt, first_delay), name=f"compute-heartbeat:{rt.host}"
        )


# =====================================================================================
# nova-compute: build (boot-vm 8-15.4)
# =====================================================================================


@behaviour("compute.begin_build")
async def begin_build(call: Call) -> None:
    """build_and_run_instance: keep the request's facts for the steps that follow."""
    p = call.payload
    call.vars.update(
        instance_uuid=str(p["instance"]["uuid"]),
        instance_ref=dict(p["instance"]),
        image_id=p.get("image_id") or None,
        flavor_id=p.get("flavor_id"),
        requested_networks=list(p.get("requested_networks") or []),
        block_device_mapping=list(p.get("block_device_mapping") or []),
        ports=[],
        bound_ports=[],
        attachments=[],
        attached=[],
        spawned=False,
    )


def _driver_instance(vars_: Mapping[str, Any]) -> dict[str, Any]:
    di = vars_.get("driver_instance")
    if di:
        return dict(di)
    uuid = str(vars_.get("instance_uuid"))
    return {"uuid": uuid, "name": str((vars_.get("instance") or {}).get("name") or uuid)}


@behaviour("compute.fetch_instance", via=("amqp-call",))
async def fetch_instance(ix: Interaction) -> None:
    """boot-vm 8: instance and flavor through the conductor; the instance must be building."""
    uuid = ix.vars["instance_uuid"]
    reply = await ix.invoke({"instance_uuid": uuid})
    instance, flavor = reply["instance"], reply["flavor"]
    if instance.get("vm_state") != "building" or instance.get("task_state") == "deleting":
        raise StepFailed(
            f"Instance {uuid} is no longer to be built (vm_state {instance.get('vm_state')}, "
            f"task_state {instance.get('task_state')})",
            code=409,
        )
    ix.vars["instance"] = instance
    ix.vars["flavor"] = flavor
    ix.vars["driver_instance"] = {
        "uuid": uuid,
        "name": instance.get("name") or uuid,
        "vcpus": int(flavor["vcpus"]),
        "memory_mb": int(flavor["ram"]),
        "root_gb": int(flavor["disk"]),
        "image_id": ix.vars.get("image_id") or instance.get("image_id"),
    }


class RescheduleBuild(StepFailed):
    """The hypervisor failed to build the guest: another host may succeed (nova reschedules)."""


@behaviour("compute.spawn", via=("native",))
async def spawn(ix: Interaction) -> None:
    """boot-vm 9: the driver starts building the guest.

    A driver failure raises RescheduleBuild, so that compute.build_failed tries
    another host (up to config.max_build_attempts hosts in all).
    """
    instance = _driver_instance(ix.vars)
    ix.vars["spawned"] = True  # a failed spawn may leave a half-made guest to clean up
    image_id = instance.get("image_id") or ""
    image: dict[str, Any] = {"id": image_id}
    if image_id:  # where step 12 puts the image's data: a real hypervisor boots from it
        path = image_cache_path(ix.rt, image_id)
        image.update(path=str(path), pending=not path.is_file())
    args: dict[str, Any] = {
        "instance": instance,
        "image": image,
        "network_info": [],
        "block_device_info": [],
    }
    try:
        try:
            await ix.invoke(**args)
        except Exception as exc:
            if type(exc).__name__ != "InstanceExists" or ix.rt.driver is None:
                raise
            # a build run again (redelivered after a crash): the guest its first run began goes
            await ix.rt.driver.destroy(instance)
            await ix.invoke(**args)
    except Exception as exc:
        raise RescheduleBuild(
            f"Build of instance {instance['uuid']} on host {ix.rt.host} failed in the "
            f"hypervisor: {exc}"
        ) from exc


@behaviour("compute.get_image", via=("http",))
async def get_image(ix: Interaction) -> None:
    """boot-vm 10: the image's metadata from glance (nothing to do when booting from a volume)."""
    image_id = ix.vars.get("image_id")
    if not image_id:
        return
    resp = expect(await ix.invoke(image_id=image_id, token=await _token(ix.call)), 200)
    image = resp.json()
    if image.get("status") != "active":
        raise StepFailed(f"Image {image_id} is not active (status {image.get('status')})", code=400)
    ix.vars["image"] = image


def swift_location(image: Mapping[str, Any]) -> tuple[str, str, str]:
    """(account, container, object) of an image's data, from direct_url or locations."""
    urls = [image.get("direct_url")] + [
        loc.get("url") for loc in image.get("locations") or [] if isinstance(loc, dict)
    ]
    for url in urls:
        if isinstance(url, str) and url.startswith("swift://"):
            parts = url[len("swift://") :].split("/", 2)
            if len(parts) == 3 and all(parts):
                return parts[0], parts[1], parts[2]
    raise StepFailed(f"Image {image.get('id')} has no location in the object store", code=400)


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def image_cache_path(rt: ServiceRuntime, image_id: str) -> Path:
    return Path(rt.data_dir) / "image-cache" / rt.host / image_id


@behaviour("compute.download_image", via=("http",))
async def download_image(ix: Interaction) -> None:
    """boot-vm 12: the image's data from swift into this host's image cache (md5 checked).

    An image already in the cache with the right checksum is not downloaded again.
    """
    image = ix.vars.get("image")
    if not image:
        return
    image_id = str(image["id"])
    checksum = image.get("checksum")
    if not checksum:
        raise StepFailed(f"Image {image_id} has no data to boot from", code=400)
    path = image_cache_path(ix.rt, image_id)
    ix.vars["image_path"] = str(path)
    if path.exists() and _md5_file(path) == checksum:
        return
    account, container, obj = swift_location(image)
    resp = expect(
        await ix.invoke(
            account=account, container=container, object=obj, token=await ix.rt.service_token()
        ),
        200,
    )
    data = resp.content
    got = hashlib.md5(data).hexdigest()
    if got != checksum:
        raise StepFailed(
            f"Image {image_id} is corrupt: its data has md5 {got}, glance says {checksum}"
        )
    _write_atomically(path, data)


def _vif(port: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(port["id"]),
        "address": str(port.get("mac_address") or ""),
        "network_id": str(port.get("network_id") or ""),
        "ip_addresses": [str(ip["ip_address"]) for ip in port.get("fixed_ips") or []],
    }


async def instance_ports(rt: ServiceRuntime, uuid: str, token: str) -> list[dict[str, Any]]:
    """The ports neutron has bound to the instance (device_id), whoever recorded them."""
    resp = await rt.clients.call(
        rt.info.api_of_type("network"), "listPorts", query={"device_id": uuid}, token=token
    )
    ports = expect(resp, 200).json().get("ports") or []
    return [p for p in ports if isinstance(p, dict) and p.get("device_id") == uuid]


def _given_ports(requested: Iterable[Mapping[str, Any]]) -> set[str]:
    """The ports the user gave (`networks: [{port: ID}]`): bound, never deleted by nova."""
    return {str(n["port_id"]) for n in requested if isinstance(n, Mapping) and n.get("port_id")}


async def release_instance_ports(
    rt: ServiceRuntime, uuid: str, recorded: Iterable[str], requested: Iterable[Any], token: str
) -> None:
    """Delete the ports nova made for the instance: those recorded, and any bound to it that a
    build interrupted before it recorded them (the user's own ports are left)."""
    net_api = rt.info.api_of_type("network")
    given = _given_ports(requested)
    ids = dict.fromkeys(str(p) for p in recorded)
    try:
        ids.update(dict.fromkeys(str(p["id"]) for p in await instance_ports(rt, uuid, token)))
    except Exception as exc:  # neutron away: the recorded ones at least
        logger.warning("ports of %s not listed: %s", uuid, exc)
    for port_id in ids:
        if port_id in given:
            continue
        resp = await rt.clients.call(net_api, "deletePort", {"port_id": port_id}, token=token)
        expect(resp, 204, 404)


@behaviour("compute.create_ports", needs=("network",), via=("http",))
async def create_ports(ix: Interaction) -> None:
    """boot-vm 13: one port per requested network, bound to this host (or bind a given port).

    Idempotent: a port is keyed by the instance (its device_id) and the request (network,
    fixed IP), so a build run again (redelivered after a compute crash) takes the port it
    made the first time instead of making a second one.
    """
    networks = ix.vars.get("requested_networks") or []
    if not networks:
        return
    uuid = ix.vars["instance_uuid"]
    instance = ix.vars.get("instance") or {}
    zone = instance.get("availability_zone") or host_availability_zone(ix.rt)
    token = await _token(ix.call)
    binding = {"device_id": uuid, "device_owner": f"compute:{zone}", "binding:host_id": ix.rt.host}
    given = _given_ports(networks)
    made = [p for p in await instance_ports(ix.rt, uuid, token) if str(p["id"]) not in given]
    for net in networks:
        if net.get("port_id"):
            resp = await ix.rt.clients.call(
                ix.rt.info.api_of_type("network"),
                "updatePort",
                {"port_id": net["port_id"]},
                body={"port": binding},
                token=token,
                context=ix.call.flow_context(ix.label),
            )
            port = expect(resp, 200).json()["port"]
            ix.vars["bound_ports"].append(port)
            continue
        again = next((p for p in made if _same_request(p, net)), None)
        if again is not None:  # made by an earlier run of this build
            made.remove(again)
            ix.vars["ports"].append(again)
            continue
        body: dict[str, Any] = {"port": {"network_id": net["network_id"], **binding}}
        if net.get("fixed_ip"):
            body["port"]["fixed_ips"] = [{"ip_address": net["fixed_ip"]}]
        resp = expect(await ix.invoke(body=body, token=token), 201)
        ix.vars["ports"].append(resp.json()["port"])


def _same_request(port: Mapping[str, Any], net: Mapping[str, Any]) -> bool:
    """The port answers this requested network (its network, and its fixed IP if one is asked)."""
    if port.get("network_id") != net.get("network_id"):
        return False
    ip = net.get("fixed_ip")
    return not ip or any(f.get("ip_address") == ip for f in port.get("fixed_ips") or [])


@behaviour("compute.plug_vifs", via=("native",))
async def plug_vifs(ix: Interaction) -> None:
    """boot-vm 14.3: the guest's interfaces plugged into their networks."""
    ports = [*ix.vars.get("ports", []), *ix.vars.get("bound_ports", [])]
    if not ports:
        return
    await ix.invoke(instance=_driver_instance(ix.vars), network_info=[_vif(p) for p in ports])


def _device_names(skip: Iterable[str]) -> Iterator[str]:
    taken = set(skip)
    for letter in string.ascii_lowercase[1:]:
        device = f"/dev/vd{letter}"
        if device not in taken:
            yield device


@behaviour("compute.create_attachments", via=("http",))
async def create_attachments(ix: Interaction) -> None:
    """boot-vm 15: a cinder attachment, with this host's connector, per volume to attach."""
    volumes = [
        b
        for b in ix.vars.get("block_device_mapping") or []
        if b.get("source_type") == "volume" and b.get("uuid")
    ]
    if not volumes:
        return
    uuid = ix.vars["instance_uuid"]
    project_id = (ix.vars.get("instance") or ix.vars.get("instance_ref") or {}).get("project_id")
    token = await _token(ix.call)
    names = _device_names(["/dev/vda"])
    for bdm in volumes:
        device = "/dev/vda" if bdm.get("boot_index") == 0 else next(names)
        body = {
            "attachment": {
                "volume_uuid": bdm["uuid"],
                "instance_uuid": uuid,
                # nova's connector names the disk: cinder shows it as the attachment's device.
                "connector": {"host": ix.rt.host, **CONNECTOR_BASE, "mountpoint": device},
                "mode": "rw",
            }
        }
        resp = expect(await ix.invoke(project_id=project_id, body=body, token=token), 200)
        att = resp.json()["attachment"]
        ix.vars["attachments"].append(
            {
                "attachment_id": str(att["id"]),
                "volume_id": str(bdm["uuid"]),
                "device": device,
                "connection_info": att.get("connection_info"),
            }
        )
        if not isinstance(att.get("connection_info"), dict):
            raise StepFailed(f"cinder gave no connection_info for volume {bdm['uuid']}")


@behaviour("compute.attach_volumes", via=("native",))
async def attach_volumes(ix: Interaction) -> None:
    """boot-vm 15.2: the volumes' disks attached to the guest (/dev/vdb, /dev/vdc...)."""
    attachments = ix.vars.get("attachments") or []
    if not attachments:
        return
    instance = _driver_instance(ix.vars)
    for att in attachments:
        await ix.invoke(
            instance=instance, connection_info=att["connection_info"], mountpoint=att["device"]
        )
        ix.vars["attached"].append(att)


@behaviour("compute.complete_attachments", via=("http",))
async def complete_attachments(ix: Interaction) -> None:
    """boot-vm 15.3: tell cinder the attachments are complete (volumes in-use)."""
    attachments = ix.vars.get("attachments") or []
    if not attachments:
        return
    project_id = (ix.vars.get("instance") or ix.vars.get("instance_ref") or {}).get("project_id")
    token = await _token(ix.call)
    for att in attachments:
        expect(
            await ix.invoke(
                project_id=project_id,
                attachment_id=att["attachment_id"],
                body={"os-complete": None},
                token=token,
            ),
            204,
        )


async def _network_names(
    call: Call, network_ids: Iterable[str], token: str | None
) -> dict[str, str]:
    """Network id -> name, asked of neutron (the id itself when neutron cannot say)."""
    names: dict[str, str] = {}
    api: str | None = None
    with contextlib.suppress(KeyError):
        api = call.rt.info.api_of_type("network")
    # Names change rarely: each compute node remembers them for a short while.
    cache: dict[str, tuple[float, str]] = call.rt.local.setdefault("network_names", {})
    now = time.monotonic()
    for net_id in dict.fromkeys(network_ids):
        hit = cache.get(net_id)
        if hit is not None and now - hit[0] < NETWORK_NAME_TTL_S:
            names[net_id] = hit[1]
            continue
        name = net_id
        if api is not None and token:
            try:
                resp = await call.rt.clients.call(
                    api, "showNetwork", {"network_id": net_id}, token=token
                )
                if resp.status_code == 200:
                    name = str(resp.json()["network"].get("name") or net_id)
            except Exception:
                logger.debug("could not look network %s up", net_id)
        names[net_id] = name
        if name != net_id:
            cache[net_id] = (now, name)
    return names


def nova_addresses(ports: Iterable[Mapping[str, Any]], names: Mapping[str, str]) -> dict[str, Any]:
    """nova's `addresses`: {network name: [{version, addr, OS-EXT-IPS:type, ...mac_addr}]}."""
    out: dict[str, list[dict[str, Any]]] = {}
    for port in ports:
        net = names.get(str(port.get("network_id")), str(port.get("network_id")))
        for ip in port.get("fixed_ips") or []:
            addr = str(ip["ip_address"])
            try:
                version = ipaddress.ip_address(addr).version
            except ValueError:
                version = 4
            out.setdefault(net, []).append(
                {
                    "version": version,
                    "addr": addr,
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": str(port.get("mac_address") or ""),
                }
            )
    return out


async def _wait_until_running(rt: ServiceRuntime, instance: dict[str, Any]) -> None:
    """ACTIVE only once the guest runs: a real hypervisor boots it after the build's steps.

    NOSTATE means still starting; any other state than RUNNING, or no RUNNING within
    config.guest_boot_timeout_s, fails the build on this host (and may reschedule it).
    """
    if rt.driver is None:
        return
    deadline = time.monotonic() + rt.config.guest_boot_timeout_s
    delay = 0.02
    while True:
        state = int(await rt.driver.get_power_state(instance))
        if state == 1:
            return
        if state != 0:
            raise RescheduleBuild(
                f"The guest of instance {instance['uuid']} on host {rt.host} did not start "
                f"(power state {state}): {_console_tail(await _console_or_empty(rt, instance))}"
            )
        if time.monotonic() > deadline:
            raise RescheduleBuild(
                f"The guest of instance {instance['uuid']} on host {rt.host} was not running "
                f"after {rt.config.guest_boot_timeout_s:g} s"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def _console_or_empty(rt: ServiceRuntime, instance: dict[str, Any]) -> str:
    try:
        return str(await rt.driver.get_console_output(instance))
    except Exception:
        return ""


def _console_tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no console output"


@behaviour("compute.mark_active", needs=("network",), via=("amqp-call",))
async def mark_active(ix: Interaction) -> None:
    """boot-vm 15.4: the instance becomes ACTIVE with its addresses, ports and volumes."""
    uuid = ix.vars["instance_uuid"]
    await _wait_until_running(ix.rt, _driver_instance(ix.vars))
    ports = [*ix.vars.get("ports", []), *ix.vars.get("bound_ports", [])]
    token = await _token(ix.call) if ports else None
    names = await _network_names(ix.call, [str(p.get("network_id")) for p in ports], token)
    updates = {
        "vm_state": "active",
        "task_state": None,
        "power_state": 1,
        "launched_at": naive_now(),
        "addresses": nova_addresses(ports, names),
        "ports": [str(p["id"]) for p in ix.vars.get("ports", [])],
        "vifs": [
            {
                **_vif(p),
                "mac_address": p.get("mac_address"),
                "fixed_ips": p.get("fixed_ips") or [],
                "status": p.get("status", "ACTIVE"),
            }
            for p in ports
        ],
        "attachments": [_attachment_item(a) for a in ix.vars.get("attachments", [])],
    }
    reply = await ix.invoke(
        {"instance_uuid": uuid, "expected_task_state": "scheduling", "updates": updates}
    )
    ix.vars["instance"] = reply["instance"]
    ix.vars["built"] = True


def _fault_code(error: BaseException) -> int:
    code = getattr(error, "code", None)
    if not isinstance(code, int):
        code = getattr(error, "status", None)
    return code if isinstance(code, int) and 400 <= code <= 599 else 500


async def _cleanup_build(call: Call) -> None:
    """Best effort: undo what a failed build made (guest, disks, attachments, ports)."""
    rt = call.rt
    vars_ = call.vars
    instance = _driver_instance(vars_)
    for att in reversed(vars_.get("attached") or []):
        try:
            await rt.driver.detach_volume(instance, att["connection_info"], att["device"])
        except Exception as exc:
            logger.debug("cleanup: detach %s: %s", att.get("device"), exc)
    if vars_.get("spawned") and rt.driver is not None:
        try:
            await rt.driver.destroy(instance)
        except Exception as exc:
            if not _is_gone(exc):
                logger.warning("cleanup: guest of %s not destroyed: %s", instance["uuid"], exc)
    attachments = vars_.get("attachments") or []
    ports = vars_.get("ports") or []
    if not attachments and not ports and not vars_.get("requested_networks"):
        return
    try:
        token = await _token(call)
    except Exception:
        logger.warning("cleanup of %s: no token to release ports and volumes", instance["uuid"])
        return
    project_id = (vars_.get("instance") or vars_.get("instance_ref") or {}).get("project_id")
    for att in attachments:
        try:
            await rt.clients.call(
                rt.info.api_of_type("block-storage"),
                "deleteAttachment",
                {"project_id": project_id, "attachment_id": att["attachment_id"]},
                token=token,
            )
        except Exception as exc:
            logger.warning("cleanup: attachment %s not deleted: %s", att["attachment_id"], exc)
    try:
        await release_instance_ports(
            rt,
            instance["uuid"],
            [str(p["id"]) for p in ports],
            vars_.get("requested_networks") or [],
            token,
        )
    except Exception as exc:
        logger.warning("cleanup: ports of %s not all deleted: %s", instance["uuid"], exc)


def _reschedulable(error: BaseException | None) -> bool:
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, RescheduleBuild):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


async def _reschedule(call: Call) -> bool:
    """Send the instance back to the scheduler, this host excluded; False when it may not."""
    payload = call.payload
    uuid = str(payload["instance"]["uuid"])
    retry = payload.get("retry") or {"num_attempts": 1, "hosts": [call.rt.host]}
    if int(retry.get("num_attempts") or 1) >= call.rt.config.max_build_attempts:
        return False
    flavor = call.vars.get("flavor")
    if not flavor:
        return False
    try:
        await send(
            call,
            "instance_update",
            {
                "instance_uuid": uuid,
                "expected_task_state": "scheduling",
                "updates": {"host": None, "node": None},
            },
        )
    except RemoteError:
        return False  # deleted meanwhile
    instance = call.vars.get("instance") or {}
    await send(
        call,
        "schedule_and_build_instances",
        {
            "instance": dict(payload["instance"]),
            "request_spec": {
                "flavor": flavor_info(flavor),
                "image_id": payload.get("image_id") or None,
                "availability_zone": instance.get("availability_zone"),
                "num_instances": 1,
                "ignore_hosts": list(dict.fromkeys([*retry.get("hosts", []), call.rt.host])),
            },
            "requested_networks": list(payload.get("requested_networks") or []),
            "block_device_mapping": list(payload.get("block_device_mapping") or []),
        },
    )
    logger.info("instance %s rescheduled away from %s", uuid, call.rt.host)
    return True


@behaviour(
    "compute.build_failed",
    needs=(
        "block-storage",
        "network",
    ),
)
async def build_failed(call: Call, error: BaseException) -> None:
    """The build failed: undo what was made, the instance goes to ERROR; never raises.

    A hypervisor failure (RescheduleBuild) sends the instance back to the
    scheduler instead while attempts remain. An instance that is being deleted
    meanwhile is left to its delete.
    """
    try:
        uuid = str(call.payload["instance"]["uuid"])
        try:
            await _cleanup_build(call)
        except Exception:
            logger.exception("cleanup after the failed build of %s", uuid)
        if _reschedulable(error) and await _reschedule(call):
            return
        message = getattr(error, "message", None) or str(error) or type(error).__name__
        fault = make_fault(_fault_code(error), str(message), f"{type(error).__name__}: {error}")
        try:
            await send(
                call,
                "instance_update",
                {
                    "instance_uuid": uuid,
                    "expected_task_state": "scheduling",
                    "updates": {
                        "vm_state": "error",
                        "task_state": None,
                        "power_state": 0,
                        "fault": fault,
                    },
                },
            )
        except RemoteError as exc:
            logger.info("instance %s not put into ERROR (%s): it is being deleted", uuid, exc)
    except Exception:
        logger.exception("could not handle the failed build")


@behaviour("compute.discard_build")
async def discard_build(event: ResourceEvent) -> None:
    """Start-up recovery (spec/resources/compute.yaml `recover`): the guest of a build this
    host had not finished is destroyed (its ports stay bound to the instance until delete)."""
    rt = event.call.rt
    if rt.driver is None:
        return
    try:
        await rt.driver.destroy({"uuid": str(event.doc["id"]), "name": str(event.doc["id"])})
    except Exception as exc:
        if not _is_gone(exc):
            raise


# =====================================================================================
# nova-compute: terminate (delete-vm 7-11)
# =====================================================================================


@behaviour("compute.begin_terminate")
async def begin_terminate(call: Call) -> None:
    """terminate_instance: keep the request's facts for the steps that follow."""
    p = call.payload
    uuid = str(p["instance"]["uuid"])
    call.vars.update(
        instance_uuid=uuid,
        instance_ref=dict(p["instance"]),
        ports=[str(x) for x in p.get("ports") or []],
        requested_networks=[{"port_id": str(x)} for x in p.get("keep_ports") or []],
        attachments=[dict(a) for a in p.get("attachments") or []],
        driver_instance={"uuid": uuid, "name": uuid},
    )


@behaviour("compute.detach_volumes", via=("native",))
async def detach_volumes(ix: Interaction) -> None:
    """delete-vm 7: the volumes' disks detached from the guest."""
    attachments = [
        a
        for a in ix.vars.get("attachments") or []
        if a.get("device") and isinstance(a.get("connection_info"), dict)
    ]
    if not attachments:
        return
    for att in attachments:
        try:
            await ix.invoke(
                instance=_driver_instance(ix.vars),
                connection_info=att["connection_info"],
                mountpoint=att["device"],
            )
        except Exception as exc:
            if not _is_gone(exc):
                raise
            logger.info("detach %s of %s: already gone", att["device"], ix.vars["instance_uuid"])


@behaviour("compute.delete_attachments", via=("http",))
async def delete_attachments(ix: Interaction) -> None:
    """delete-vm 7.1: the cinder attachments deleted (the volumes become available)."""
    attachments = ix.vars.get("attachments") or []
    if not attachments:
        return
    project_id = (ix.vars.get("instance_ref") or {}).get("project_id")
    token = await _token(ix.call)
    for att in attachments:
        expect(
            await ix.invoke(project_id=project_id, attachment_id=att["attachment_id"], token=token),
            200,
            204,
            404,
        )


@behaviour("compute.delete_ports", via=("http",))
async def delete_ports(ix: Interaction) -> None:
    """delete-vm 8: the ports nova created released, those a build left unrecorded too."""
    token = await _token(ix.call)
    uuid = str(ix.vars["instance_uuid"])
    given = _given_ports(ix.vars.get("requested_networks") or [])
    ports = dict.fromkeys(str(p) for p in ix.vars.get("ports") or [])
    ports.update(dict.fromkeys(str(p["id"]) for p in await instance_ports(ix.rt, uuid, token)))
    for port_id in ports:
        if port_id not in given:
            expect(await ix.invoke(port_id=port_id, token=token), 204, 404)


@behaviour("compute.destroy", via=("native",))
async def destroy(ix: Interaction) -> None:
    """delete-vm 10: the guest and its local disks removed (already gone is fine)."""
    try:
        await ix.invoke(instance=_driver_instance(ix.vars))
    except Exception as exc:
        if not _is_gone(exc):
            raise


@behaviour("compute.mark_deleted", via=("amqp-call",))
async def mark_deleted(ix: Interaction) -> None:
    """delete-vm 11: the conductor records the instance as deleted."""
    now = naive_now()
    reply = await ix.invoke(
        {
            "instance_uuid": ix.vars["instance_uuid"],
            "expected_task_state": "deleting",
            "updates": {
                "vm_state": "deleted",
                "task_state": None,
                "power_state": 0,
                "deleted_at": now,
                "terminated_at": now,
                "ports": [],
                "vifs": [],
                "attachments": [],
                "addresses": {},
            },
        }
    )
    ix.vars["instance"] = reply["instance"]


@behaviour("compute.terminate_failed")
async def terminate_failed(call: Call, error: BaseException) -> None:
    """The delete failed: the instance goes to ERROR with the fault; never raises."""
    try:
        uuid = str(call.payload["instance"]["uuid"])
        message = getattr(error, "message", None) or str(error) or type(error).__name__
        fault = make_fault(
            _fault_code(error),
            f"Deleting the instance failed: {message}",
            f"{type(error).__name__}: {error}",
        )
        await send(
            call,
            "instance_update",
            {
                "instance_uuid": uuid,
                "updates": {"vm_state": "error", "task_state": None, "fault": fault},
            },
        )
    except Exception:
        logger.exception("could not record the failed delete")


# =====================================================================================
# nova-compute: RPC handlers of the server actions
# =====================================================================================


async def _fetch(call: Call) -> dict[str, Any]:
    reply = await send(call, "instance_get", {"instance_uuid": call.payload["instance"]["uuid"]})
    assert reply is not None
    instance: dict[str, Any] = reply["instance"]
    return instance


def _guest(instance: Mapping[str, Any]) -> dict[str, Any]:
    return {"uuid": instance["uuid"], "name": instance.get("name") or instance["uuid"]}


@behaviour("compute.rpc_power_action")
async def rpc_power_action(call: Call) -> None:
    """A server action on this host's hypervisor, as the consumer's `args` say: the driver
    `method` (with the payload's `pass` fields after the instance), the task state the API
    set (`expected`) and the instance's fields once it is done (`done`). A driver failure
    clears the task state and records the fault."""
    uuid = str(call.payload["instance"]["uuid"])
    method, expected = str(call.args["method"]), str(call.args["expected"])
    extra = [call.payload[name] for name in call.args.get("pass", ())]
    try:
        await getattr(call.rt.driver, method)({"uuid": uuid, "name": uuid}, *extra)
    except Exception as exc:
        fault = make_fault(_fault_code(exc), f"{method} failed: {exc}")
        await send(
            call,
            "instance_update",
            {
                "instance_uuid": uuid,
                "expected_task_state": expected,
                "updates": {"task_state": None, "fault": fault},
            },
        )
        raise
    updates = {"task_state": None, **dict(call.args["done"])}
    await send(
        call,
        "instance_update",
        {"instance_uuid": uuid, "expected_task_state": expected, "updates": updates},
    )


@behaviour("compute.rpc_get_console_output")
async def rpc_get_console_output(call: Call) -> dict[str, Any]:
    uuid = str(call.payload["instance"]["uuid"])
    try:
        output = await call.rt.driver.get_console_output({"uuid": uuid, "name": uuid})
    except Exception as exc:
        if _is_gone(exc):
            raise NotFound("Guest does not have a console available.") from exc
        raise
    length = call.payload.get("length")
    if isinstance(length, int) and length >= 0:
        lines = str(output).splitlines(keepends=True)
        output = "".join(lines[-length:]) if length else ""
    return {"output": str(output)}


@behaviour("compute.rpc_attach_volume", needs=("block-storage",))
async def rpc_attach_volume(call: Call) -> dict[str, Any]:
    """Attach a volume: cinder attachment with this host's connector, disk, complete."""
    rt = call.rt
    instance = await _fetch(call)
    uuid = instance["uuid"]
    volume_id = str(call.payload["volume_id"])
    attachments = list(instance.get("attachments") or [])
    used = {a.get("device") for a in attachments} | {"/dev/vda"}
    device = call.payload.get("device")
    if device and device in used:
        raise BadRequest(f"The supplied device path ({device}) is in use.")
    device = device or next(iter(_device_names(d for d in used if d)))
    token = await _token(call)
    api = rt.info.api_of_type("block-storage")
    project_id = instance["project_id"]
    resp = await rt.clients.call(
        api,
        "createAttachment",
        {"project_id": project_id},
        body={
            "attachment": {
                "volume_uuid": volume_id,
                "instance_uuid": uuid,
                "connector": {"host": rt.host, **CONNECTOR_BASE, "mountpoint": device},
                "mode": "rw",
            }
        },
        token=token,
        context=call.flow_context(),
    )
    if resp.status_code == 404:
        raise NotFound(f"Volume {volume_id} could not be found.")
    if resp.status_code in (400, 409):
        raise Conflict(f"Invalid volume: {error_message(resp)}")
    att = expect(resp, 200).json()["attachment"]
    attachment_id = str(att["id"])
    connection_info = att.get("connection_info")
    try:
        if not isinstance(connection_info, dict):
            raise StepFailed(f"cinder gave no connection_info for volume {volume_id}")
        await rt.driver.attach_volume(_guest(instance), connection_info, device)
    except Exception:
        await rt.clients.call(
            api,
            "deleteAttachment",
            {"project_id": project_id, "attachment_id": attachment_id},
            token=token,
        )
        raise
    expect(
        await rt.clients.call(
            api,
            "completeAttachment",
            {"project_id": project_id, "attachment_id": attachment_id},
            body={"os-complete": None},
            token=token,
            context=call.flow_context(),
        ),
        204,
    )
    item = {
        "attachment_id": attachment_id,
        "volume_id": volume_id,
        "device": device,
        "connection_info": connection_info,
    }
    await send(
        call,
        "instance_update",
        {"instance_uuid": uuid, "updates": {"attachments": [*attachments, item]}},
    )
    return {"attachment": item}


@behaviour("compute.rpc_detach_volume", needs=("block-storage",))
async def rpc_detach_volume(call: Call) -> dict[str, Any]:
    """Detach a volume: disk off the guest, cinder attachment deleted."""
    rt = call.rt
    instance = await _fetch(call)
    volume_id = str(call.payload["volume_id"])
    attachments = list(instance.get("attachments") or [])
    att = next((a for a in attachments if a.get("volume_id") == volume_id), None)
    if att is None:
        raise NotFound(f"volume_id not found: {volume_id}")
    if att.get("device") and isinstance(att.get("connection_info"), dict):
        try:
            await rt.driver.detach_volume(_guest(instance), att["connection_info"], att["device"])
        except Exception as exc:
            if not _is_gone(exc):
                raise
    token = await _token(call)
    expect(
        await rt.clients.call(
            rt.info.api_of_type("block-storage"),
            "deleteAttachment",
            {"project_id": instance["project_id"], "attachment_id": att["attachment_id"]},
            token=token,
            context=call.flow_context(),
        ),
        200,
        204,
        404,
    )
    await send(
        call,
        "instance_update",
        {
            "instance_uuid": instance["uuid"],
            "updates": {"attachments": [a for a in attachments if a is not att]},
        },
    )
    return {"volume_id": volume_id}


# The other nova behaviours register when this module is imported, so that listing
# `compute` in the registry's LIBRARY_MODULES is enough.
from specstack_runtime.behaviours import cli as _cli  # noqa: E402
from specstack_runtime.behaviours import conductor as _conductor  # noqa: E402
from specstack_runtime.behaviours import scheduler as _scheduler  # noqa: E402

__all__ = ["_cli", "_conductor", "_scheduler", "boot_image_id"]
