"""nova-conductor: the compute nodes' access to the nova database, over the bus; and the
message type Flavor of its rows (Instance is the consumers' `args`, CEL in
spec/components.yaml, as are the rules of an instance update) and the claims on a compute node.

The rows are the spec's resources (spec/resources/compute.yaml: server, flavor,
hypervisor). A compute node (`compute_nodes`, id = host) also keeps the scheduler's
`claims` (instance uuid -> {memory_mb, vcpus, disk_gb}), the used amounts summed from
them, a `generation` bumped on every write (compare-and-set) and its `heartbeat`;
`block_device_mappings` follow the instances' `attachments`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from specstack_runtime.behaviours.scheduling import HostState
from specstack_runtime.context import Call
from specstack_runtime.errors import Conflict
from specstack_runtime.expr import compile_expr
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import collects
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import Doc, Store, sortable, utcnow

logger = logging.getLogger(__name__)

INSTANCES = "instances"
FLAVORS = "flavors"
COMPUTE_NODES = "compute_nodes"
KEYPAIRS = "keypairs"
BLOCK_DEVICE_MAPPINGS = "block_device_mappings"

#: The instance's field naming the host the scheduler claims resources on (spec/resources).
CLAIM_HOST = "claim_host"

#: Compare-and-set attempts before giving up on a hot document.
CAS_ATTEMPTS = 50


def naive_now() -> str:
    """nova's naive UTC timestamp with microseconds (launched_at, deleted_at...)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def make_fault(code: int, message: str, details: str = "") -> dict[str, Any]:
    """An instance fault as nova stores it."""
    return {"code": int(code), "message": message, "details": details, "created": utcnow()}


# -- flavors -------------------------------------------------------------------------


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def flavor_info(info: StackInfo, doc: Mapping[str, Any]) -> dict[str, Any]:
    """A flavor document as the message type `Flavor` (the flavor's spec template)."""
    return dict(info.resources.resource("flavor").template("info", doc=dict(doc)))


def flavor_is_disabled(doc: Mapping[str, Any]) -> bool:
    return bool(doc.get("disabled", doc.get("OS-FLV-DISABLED:disabled", False)))


# -- instances -----------------------------------------------------------------------


def instance_ref(row: Mapping[str, Any]) -> dict[str, Any]:
    """The message type `InstanceRef` of an instance row."""
    return {"uuid": row["id"], "project_id": row["project_id"], "user_id": row["user_id"]}


def instance_info(call: Call, row: Mapping[str, Any]) -> dict[str, Any]:
    """The message type `Instance` of an instance row, as the consumer's args say (spec)."""
    return dict(compile_expr(str(call.args["instance"])).evaluate(doc=dict(row)))


async def require_instance(rt: ServiceRuntime, uuid: str) -> Doc:
    row = await rt.require_store().get(INSTANCES, uuid)
    if row is None:  # the server resource's not-found error, in the spec's words
        raise rt.info.resources.resource("server").fail("not_found", id=uuid)
    return row


# -- compute nodes and claims ----------------------------------------------------------


def migration_claim(uuid: str) -> str:
    """The name of the claim a resize or migration holds besides the instance's own (the new
    flavor's on the destination, then the old one's on the source)."""
    return f"{uuid}#migration"


def usage_of(claims: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """The used amounts of a compute node: the sums of its claims (a migration's too)."""
    return {
        "vcpus_used": sum(_int(c.get("vcpus")) for c in claims.values()),
        "memory_mb_used": sum(_int(c.get("memory_mb")) for c in claims.values()),
        "local_gb_used": sum(_int(c.get("disk_gb")) for c in claims.values()),
        "running_vms": sum(1 for k in claims if not k.endswith("#migration")),
    }


def liveness(info: StackInfo, name: str) -> float:
    """The spec's timing of the compute hosts' reports (spec/resources/compute.yaml, the
    compute services' data): `service_down_time_s` (silent this long: down) or
    `report_interval_s`."""
    return float(info.resources.resource("compute_service").res.data[name])


async def mutate_node(
    store: Store, host: str, change: Callable[[Doc], dict[str, Any] | None]
) -> Doc | None:
    """Apply `change(doc)` to a compute node with compare-and-set on its generation.

    `change` returns the fields to set, or None for "nothing to do". Returns the
    new document (the unchanged one when there was nothing to do), or None when
    the node is not known.
    """
    for _ in range(CAS_ATTEMPTS):
        doc = await store.get(COMPUTE_NODES, host)
        if doc is None:
            return None
        changes = change(doc)
        if changes is None:
            return doc
        generation = _int(doc.get("generation"))
        new = await store.update(
            COMPUTE_NODES,
            host,
            {**changes, **node_figures({**doc, **changes}), "generation": generation + 1},
            expect={"generation": doc.get("generation")},
        )
        if new is not None:
            return new
    raise Conflict(f"compute node {host} is updated too often to be changed; try again")


async def release_claim(store: Store, row: Mapping[str, Any]) -> None:
    """Give back what the scheduler claimed for this instance (idempotent): on its host, on
    the host it was claiming (`claim_host`), recorded or not as the instance's host, and on
    the hosts of a migration under way."""
    uuid = str(row["id"])
    move = row.get("migration") or {}
    hosts = (row.get("host"), row.get(CLAIM_HOST), move.get("source_host"), move.get("dest_host"))
    for host in dict.fromkeys(h for h in hosts if h):
        await change_claims(store, str(host), uuid, "drop", "drop_migration")


async def change_claims(store: Store, host: str, uuid: str, *ops: str) -> None:
    """A migration's claims on `host` changed (instance_update's `claims`): `swap` exchanges
    the instance's claim and the migration's, `drop` removes the instance's and
    `drop_migration` the migration's."""
    mine, moving = uuid, migration_claim(uuid)

    def change(doc: Doc) -> dict[str, Any] | None:
        claims = dict(doc.get("claims") or {})
        for op in ops:
            if op == "swap":
                a, b = claims.pop(mine, None), claims.pop(moving, None)
                claims.update({k: v for k, v in ((mine, b), (moving, a)) if v is not None})
            else:
                claims.pop(moving if op == "drop_migration" else mine, None)
        if claims == (doc.get("claims") or {}):
            return None
        return {"claims": claims, **usage_of(claims)}

    await mutate_node(store, host, change)


# -- the conductor's message handlers -----------------------------------------------------


@behaviour("conductor.instance_get")
async def instance_get(call: Call) -> dict[str, Any]:
    """Reply {"instance": Instance, "flavor": Flavor} for payload {"instance_uuid"}."""
    store = call.rt.require_store()
    row = await require_instance(call.rt, str(call.payload["instance_uuid"]))
    flavor = row.get("flavor") or await store.get(FLAVORS, str(row.get("flavor_id")))
    if not flavor:
        raise call.rt.info.resources.resource("flavor").fail("not_found", id=row.get("flavor_id"))
    return {"instance": instance_info(call, row), "flavor": flavor_info(call.rt.info, flavor)}


@behaviour("conductor.instance_update")
async def instance_update(call: Call) -> dict[str, Any]:
    """Apply `updates` to an instance as the consumer's args say (spec/components.yaml), and
    compare-and-set on `expected_task_state` if given. An instance that leaves its host (a
    reschedule sets host to None) gives its claim there back too."""
    store, payload, args = call.rt.require_store(), call.payload, call.args
    uuid = str(payload["instance_uuid"])
    updates = {
        k: v for k, v in (payload.get("updates") or {}).items() if k not in args["protected"]
    }
    vm_state = updates.get("vm_state")
    now = naive_now()
    updates |= {f: now for f in args["stamp"].get(vm_state, ()) if f not in updates}
    expect = None
    if "expected_task_state" in payload:
        expect = {"task_state": payload["expected_task_state"]}
    moving = "host" in updates or "migration" in updates or vm_state in args["release"]
    before = await store.get(INSTANCES, uuid) if moving else None
    row = await store.update(INSTANCES, uuid, updates, expect=expect, current=before)
    if row is None:
        current = await require_instance(call.rt, uuid)
        expected = payload.get("expected_task_state")
        raise call.rt.info.resources.resource("server").fail(
            "task_state", expected=expected, **current
        )
    for change in payload.get("claims") or ():  # a migration's, before a move releases any
        await change_claims(store, str(change["host"]), uuid, str(change["op"]))
    if vm_state in args["release"]:
        await release_claim(store, before or row)
    if vm_state == "deleted":  # out of its server group
        await collects.removed(engine_call(call, "server"), row)
    if (
        before is not None
        and before.get("host")
        and before.get("host") != row.get("host")
        and not payload.get("claims")  # (a migration moves its claims itself)
    ):
        await release_claim(store, before)  # moved (rescheduled): the old host's claim goes
    if "attachments" in updates or vm_state == "deleted":
        await sync_block_device_mappings(store, row, args["block_devices"])
    return {"instance": instance_info(call, row)}


async def sync_block_device_mappings(
    store: Store, row: Mapping[str, Any], block_devices: str
) -> None:
    """Make the instance's block_device_mappings documents match its attachments."""
    if BLOCK_DEVICE_MAPPINGS not in store.specs:
        return
    uuid = str(row["id"])
    existing = {
        str(d["id"]): d for d in await store.list(BLOCK_DEVICE_MAPPINGS, {"instance_uuid": uuid})
    }
    rows = compile_expr(str(block_devices)).evaluate(doc=dict(row))  # the consumer's args
    wanted: dict[str, dict[str, Any]] = {str(d["id"]): dict(d) for d in rows}
    for id_ in existing.keys() - wanted.keys():
        await store.delete(BLOCK_DEVICE_MAPPINGS, id_)
    for id_, doc in wanted.items():
        if id_ not in existing:
            try:
                await store.create(BLOCK_DEVICE_MAPPINGS, doc)
            except Conflict:
                await store.update(BLOCK_DEVICE_MAPPINGS, id_, doc)
        elif existing[id_].get("device") != doc["device"]:
            await store.update(BLOCK_DEVICE_MAPPINGS, id_, doc)


def node_figures(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the scheduler's query filters and orders compute nodes by (indexed columns of
    compute_nodes): free and usable (overcommitted) amounts, from totals and usage."""
    state = HostState(
        host=str(doc.get("host") or ""),
        total_ram_mb=_int(doc.get("memory_mb")),
        used_ram_mb=_int(doc.get("memory_mb_used")),
        total_disk_gb=_int(doc.get("local_gb")),
        used_disk_gb=_int(doc.get("local_gb_used")),
        total_vcpus=_int(doc.get("vcpus")),
        used_vcpus=_int(doc.get("vcpus_used")),
    )
    beat = doc.get("heartbeat")
    figures = {
        "free_ram_mb": state.free_ram_mb,
        "free_disk_gb": state.free_disk_gb,
        "usable_ram_mb": state.usable_ram_mb,
        "usable_disk_gb": state.usable_disk_gb,
        "usable_vcpus": state.usable_vcpus,
        "running_vms": _int(doc.get("running_vms")),
        "seen": beat if isinstance(beat, int | float) else 0.0,
    }
    # text that sorts as the numbers do: the query compares and orders without a cast
    return {f"sort_{k}": sortable(v) for k, v in figures.items()}


@behaviour("conductor.compute_node_update")
async def compute_node_update(call: Call) -> dict[str, Any]:
    """Upsert the reporting hosts' compute nodes: totals from the reports, claims kept as
    they are. One transaction for all of them, however many hosts report together."""
    store = call.rt.require_store()
    now = time.time()
    node = compile_expr(str(call.args["node"]))  # a report's node, in the spec's words
    reports = {str(n["host"]): node.evaluate(item=n, now=now) for n in call.payload["nodes"]}
    next_id = [1]

    def merge(doc: Doc | None, report: Doc) -> Doc:
        if doc is None:
            doc = {"hypervisor_id": next_id[0], "enabled": True, "claims": {}, **usage_of({})}
            next_id[0] += 1
        merged = {**doc, **report, "generation": _int(doc.get("generation")) + 1}
        return {**merged, **node_figures(merged)}

    for _ in range(CAS_ATTEMPTS):
        last = await store.list(
            COMPUTE_NODES, sort_key="hypervisor_id", numeric=True, reverse=True, limit=1
        )
        next_id[0] = _int(last[0].get("hypervisor_id")) + 1 if last else 1
        try:
            await store.upsert_many(COMPUTE_NODES, reports, merge)
        except Conflict:
            continue  # a node created meanwhile by another report: merge into it
        return {"hosts": list(reports)}
    raise Conflict(f"{len(reports)} compute nodes could not be recorded; try again")
