"""Helpers the nova behaviours share: the API's caller, the flow's token, the instance a
request names, the ports and volume attachments nova makes for an instance, and what the
hypervisor driver needs to know of it. The instance row is the spec's `server` resource
(spec/resources/compute.yaml)."""

from __future__ import annotations

import logging
import string
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from specstack_runtime.behaviours.conductor import make_fault
from specstack_runtime.behaviours.scheduling import DEFAULT_AVAILABILITY_ZONE
from specstack_runtime.context import AuthContext, Call, Interaction
from specstack_runtime.errors import ApiError
from specstack_runtime.expr import compile_expr
from specstack_runtime.http import expect
from specstack_runtime.messaging import send
from specstack_runtime.resources import access
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Doc, Store
from specstack_runtime.virt import DiskNotFound, InstanceNotFound

logger = logging.getLogger(__name__)

SERVER = "server"  # the resource (spec/resources/compute.yaml) of nova's instances
IMAGE = "image"  # the catalog type of glance's API
#: What nova-compute tells cinder about its host when it attaches a volume.
CONNECTOR_BASE = {"ip": "127.0.0.1", "platform": "x86_64", "os_type": "linux", "multipath": False}


def store_of(call: Call | Interaction) -> Store:
    return call.rt.require_store()


def fail(rt: ServiceRuntime, kind: str, **values: Any) -> ApiError:
    """The server resource's error `kind`, in the spec's words (spec/resources/compute.yaml)."""
    return rt.info.resources.resource(SERVER).fail(kind, **values)


def project_auth(call: Call) -> AuthContext:
    auth = call.require_auth()
    if not auth.project_id:
        raise fail(call.rt, "project_scope")
    return auth


async def flow_token(call: Call) -> str:
    """The user token the flow carries, or this service's own."""
    if call.token:
        return call.token
    return await call.rt.service_token()


async def glance_image(call: Call, image_id: str, token: str) -> dict[str, Any] | None:
    """glance's image `image_id` as the token's holder sees it (None: not found, none named)."""
    if not image_id:
        return None
    api = call.rt.info.api_of_type(IMAGE)
    resp = await call.rt.clients.call(api, "showImage", {"image_id": image_id}, token=token)
    return dict(resp.json()) if resp.status_code == 200 else None


async def undo_action(event: ResourceEvent, *fields: str) -> None:
    """An action's `fields` put back as its hook found the row, unless its task moved on."""
    rc, old, task = event.engine, event.old or {}, event.doc.get("task_state")
    changes = {k: old.get(k) for k in fields}
    await rc.store.update(rc.res.res.table, event.doc["id"], changes, expect={"task_state": task})


def is_gone(exc: BaseException) -> bool:
    """A driver error that means the guest or disk is already gone."""
    gone = (InstanceNotFound, DiskNotFound)  # or a remote one of the same name
    return isinstance(exc, gone) or type(exc).__name__ in {t.__name__ for t in gone}


async def instance_for(call: Call, server_id: str) -> Doc:
    """The live instance, if the server resource's scope and rules let the caller see it;
    404 otherwise (spec/resources/compute.yaml: owner, see_all, live)."""
    project_auth(call)
    return await access.lookup(engine_call(call, SERVER), server_id)


def match(
    rt: ServiceRuntime, groups: Iterable[Mapping[str, Any]], wanted: str
) -> Mapping[str, Any] | None:
    """The project's security group `wanted` names: by name (two of that name are
    ambiguous, 409), else by id (nova's order)."""
    groups = list(groups)
    named = [g for g in groups if g.get("name") == wanted]
    if len(named) > 1:
        raise fail(rt, "group_ambiguous", name=wanted)
    if named:
        return named[0]
    return next((g for g in groups if g.get("id") == wanted), None)


def fault_code(error: BaseException) -> int:
    codes = (getattr(error, "code", None), getattr(error, "status", None))
    code = next((c for c in codes if isinstance(c, int)), None)
    return code if isinstance(code, int) and 400 <= code <= 599 else 500


def fault_of(error: BaseException, prefix: str = "") -> dict[str, Any]:
    """The instance fault recording `error` (its message after `prefix`, its type in details)."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return make_fault(fault_code(error), f"{prefix}{message}", f"{type(error).__name__}: {error}")


async def update_instance(
    call: Call, uuid: str, updates: Mapping[str, Any], expected: str | None = None
) -> Any:
    """conductor.instance_update: `updates` on the instance, compare-and-set on its task
    state when `expected` is given (a RemoteError when it has moved on)."""
    payload: dict[str, Any] = {"instance_uuid": uuid, "updates": dict(updates)}
    if expected is not None:
        payload["expected_task_state"] = expected
    return await send(call, "instance_update", payload)


def keep(call: Call) -> dict[str, Any]:
    """The request's facts the steps that follow read: the consumer's args `keep`, CEL over
    the payload (`request`)."""
    return dict(compile_expr(str(call.args["keep"])).evaluate(request=dict(call.payload)))


def driver_instance(vars_: Mapping[str, Any]) -> dict[str, Any]:
    di = vars_.get("driver_instance")
    if di:
        return dict(di)
    uuid = str(vars_.get("instance_uuid"))
    return {"uuid": uuid, "name": str((vars_.get("instance") or {}).get("name") or uuid)}


def device_names(skip: Iterable[str]) -> Iterator[str]:
    taken = set(skip)
    for letter in string.ascii_lowercase[1:]:
        device = f"/dev/vd{letter}"
        if device not in taken:
            yield device


async def instance_ports(rt: ServiceRuntime, uuid: str, token: str) -> list[dict[str, Any]]:
    """The ports neutron has bound to the instance (device_id), whoever recorded them."""
    api = rt.info.api_of_type("network")
    resp = await rt.clients.call(api, "listPorts", query={"device_id": uuid}, token=token)
    ports = expect(resp, 200).json().get("ports") or []
    return [p for p in ports if isinstance(p, dict) and p.get("device_id") == uuid]


async def rehost_ports(call: Call, uuid: str) -> None:
    """The instance's ports bound to the host the consumer's `ports_host` names (CEL over
    `host`; '' unbinds them, the device kept): nova's network API as shelve offload leaves
    a host and unshelve lands on one (the server's template `rehosted`)."""
    rt, token = call.rt, await flow_token(call)
    host = compile_expr(str(call.args["ports_host"])).evaluate(host=rt.host)
    body = rt.info.resources.resource(SERVER).template("rehosted", refs={"host": host})
    api, context = rt.info.api_of_type("network"), call.flow_context()
    for port in await instance_ports(rt, uuid, token):
        ids = {"port_id": str(port["id"])}
        resp = await rt.clients.call(
            api, "updatePort", ids, body=body, token=token, context=context
        )
        expect(resp, 200)


def given_ports(requested: Iterable[Mapping[str, Any]]) -> set[str]:
    """The ports the user gave (`networks: [{port: ID}]`): bound, never deleted by nova."""
    return {str(n["port_id"]) for n in requested if isinstance(n, Mapping) and n.get("port_id")}


async def release_instance(
    rt: ServiceRuntime,
    instance: Mapping[str, Any],
    ports: Iterable[str],
    attachments: Iterable[Mapping[str, Any]],
    token: str,
) -> None:
    """Best effort, for an instance no compute host will clean up: its cinder attachments
    deleted, and the ports nova made for it: those recorded (`ports`), and any bound to it
    that a build interrupted before it recorded them; the user's own ports are left
    (`instance`: uuid or id, project_id, requested_networks)."""
    uuid = str(instance.get("uuid") or instance["id"])
    for att in attachments:
        params = {"project_id": instance.get("project_id"), "attachment_id": att["attachment_id"]}
        try:
            api = rt.info.api_of_type("block-storage")
            await rt.clients.call(api, "deleteAttachment", params, token=token)
        except Exception as exc:
            logger.warning("%s: attachment %s not deleted: %s", uuid, att["attachment_id"], exc)
    ids = dict.fromkeys(str(p) for p in ports)
    try:
        ids.update(dict.fromkeys(str(p["id"]) for p in await instance_ports(rt, uuid, token)))
    except Exception as exc:  # neutron away: the recorded ones at least
        logger.warning("ports of %s not listed: %s", uuid, exc)
    try:
        net, given = (
            rt.info.api_of_type("network"),
            given_ports(instance.get("requested_networks") or []),
        )
        for port_id in (p for p in ids if p not in given):
            resp = await rt.clients.call(net, "deletePort", {"port_id": port_id}, token=token)
            expect(resp, 204, 404)
    except Exception as exc:
        logger.warning("%s: ports not all deleted: %s", uuid, exc)


def host_availability_zone(rt: ServiceRuntime) -> str:
    """The availability zone of the topology node this compute host belongs to."""
    node = rt.info.nodes.get(rt.info.node_of(rt.host, rt.config) or rt.host) or {}
    return str(node.get("availability_zone") or DEFAULT_AVAILABILITY_ZONE)
