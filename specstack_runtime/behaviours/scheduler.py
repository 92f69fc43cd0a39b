"""nova-scheduler: pick a compute host for an instance, claim its resources, send the build.

The message handler `scheduler.schedule_and_build` is step 7 of boot-vm (the sql
interaction with compute_nodes and instances); `scheduler.build_request` is
step 7.1 (the cast of build_and_run_instance to compute.<host>). Host states
are the `compute_nodes` documents (see conductor.py); a claim is recorded on the
chosen host's document with compare-and-set on its generation, and a lost race
means choosing again from fresh documents.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from specstack_runtime.behaviours.conductor import (
    CAS_ATTEMPTS,
    CLAIM_HOST,
    COMPUTE_NODES,
    INSTANCES,
    flavor_info,
    liveness,
    make_fault,
    migration_claim,
    node_figures,
    release_claim,
    usage_of,
)
from specstack_runtime.behaviours.nova_common import SERVER
from specstack_runtime.behaviours.scheduling import (
    DEFAULT_AVAILABILITY_ZONE,
    HostState,
    NoValidHost,
    RequestSpec,
    select_destinations,
)
from specstack_runtime.context import Call, Interaction
from specstack_runtime.messaging import send
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.store import AtLeast, Doc, Store, sortable

logger = logging.getLogger(__name__)

NO_VALID_HOST = "No valid host was found."


def host_state(doc: Mapping[str, Any]) -> HostState:
    """The scheduler's view of a compute_nodes document."""
    beat = doc.get("heartbeat")
    return HostState(
        host=str(doc["host"]),
        availability_zone=str(doc.get("availability_zone") or DEFAULT_AVAILABILITY_ZONE),
        total_ram_mb=int(doc.get("memory_mb") or 0),
        used_ram_mb=int(doc.get("memory_mb_used") or 0),
        total_disk_gb=int(doc.get("local_gb") or 0),
        used_disk_gb=int(doc.get("local_gb_used") or 0),
        total_vcpus=int(doc.get("vcpus") or 0),
        used_vcpus=int(doc.get("vcpus_used") or 0),
        enabled=bool(doc.get("enabled", True)),
        # A node that never reported a heartbeat is treated as down by ComputeFilter.
        updated_at=float(beat) if isinstance(beat, int | float) else 0.0,
        num_instances=int(doc.get("running_vms") or 0),
    )


def _host_names(given: Any) -> tuple[str, ...] | None:
    """Hosts named by the spec's `with: hosts:` (a list, or a map keyed by host)."""
    if given is None:
        return None
    if isinstance(given, dict):
        return tuple(str(k) for k in given)
    if isinstance(given, list | tuple):
        return tuple(str(h.get("name", h) if isinstance(h, dict) else h) for h in given)
    return (str(given),)


def request_spec_of(
    payload: Mapping[str, Any], args: Mapping[str, Any] | None = None
) -> RequestSpec:
    spec = payload["request_spec"]
    flavor = spec["flavor"]
    return RequestSpec(
        only_hosts=_host_names((args or {}).get("hosts")),
        memory_mb=int(flavor["ram"]),
        vcpus=int(flavor["vcpus"]),
        root_gb=int(flavor["disk"]),
        ephemeral_gb=int(flavor.get("ephemeral") or 0),
        availability_zone=spec.get("availability_zone") or None,
        ignore_hosts=tuple(spec.get("ignore_hosts") or ()),
        num_instances=1,
    )


#: The column of compute_nodes each weigher reads (conductor.node_figures keeps them).
WEIGHED_BY = {
    "RAMWeigher": "sort_free_ram_mb",
    "DiskWeigher": "sort_free_disk_gb",
    "CPUWeigher": "sort_usable_vcpus",
    "NumInstancesWeigher": "sort_running_vms",
}
#: Hosts read per choice when one weigher orders them in the query (as placement hands
#: nova's scheduler a bounded list of candidates); more are read only if all of them fail.
CANDIDATES = 20


def pushed_down(
    request: RequestSpec, filters: Sequence[str], now: float, down_after_s: float
) -> dict[str, AtLeast | str | bool | list[str]]:
    """What the filters require of a host as a query of compute_nodes' indexed columns.

    A necessary condition only: the filters still run on the hosts it returns.
    """
    where: dict[str, AtLeast | str | bool | list[str]] = {}
    if request.only_hosts is not None:
        where["host"] = list(request.only_hosts)
    if "ComputeFilter" in filters:
        where["sort_seen"] = AtLeast(sortable(now - down_after_s))
    zone = request.availability_zone
    if "AvailabilityZoneFilter" in filters and zone and zone != DEFAULT_AVAILABILITY_ZONE:
        where["availability_zone"] = zone  # the default zone also takes rows without one
    if "RamFilter" in filters:
        where["sort_usable_ram_mb"] = AtLeast(sortable(request.memory_mb))
    if "DiskFilter" in filters:
        where["sort_usable_disk_gb"] = AtLeast(sortable(request.disk_gb))
    return where


async def candidates(
    store: Store,
    request: RequestSpec,
    filters: Sequence[str],
    weighers: Sequence[tuple[str, float]],
    down_after_s: float,
) -> list[Doc]:
    """The compute nodes worth filtering and weighing: those the query finds, best first
    by the one weigher (at most CANDIDATES and the ignored hosts), or all that pass."""
    where = pushed_down(request, filters, time.time(), down_after_s)
    if len(weighers) != 1 or weighers[0][0] not in WEIGHED_BY:
        return await store.list(COMPUTE_NODES, where)
    name, multiplier = weighers[0]
    found = await store.list(
        COMPUTE_NODES,
        where,
        sort_key=WEIGHED_BY[name],
        reverse=multiplier > 0,
        by_index=True,
        limit=CANDIDATES + len(request.ignore_hosts),
    )
    # equal weights go to the host known longest, as when every host was weighed
    return sorted(found, key=lambda d: (str(d.get("created_at")), str(d["id"])))


def rank(
    docs: Sequence[Doc],
    request: RequestSpec,
    filters: Sequence[str],
    weighers: Sequence[tuple[str, float]],
    down_after_s: float,
) -> list[HostState]:
    return select_destinations(
        [host_state(d) for d in docs],
        request,
        list(filters),
        list(weighers),
        service_down_time=down_after_s,
    )


async def group_of(call: Call, group: str, uuid: str) -> tuple[str | None, dict[str, int]]:
    """The policy of the server group (the resource that collects instances, spec/resources)
    and how many of its other members each host holds or is claimed for, as now."""
    store = call.rt.require_store()
    servers = engine_call(call, SERVER)
    for other, field in servers.catalog.collectors(SERVER):
        doc = await store.get(other.res.table, group)
        if doc is None:
            continue
        hosts: dict[str, int] = {}
        for member in doc.get(field.name) or []:
            row = await store.get(INSTANCES, str(member)) if member != uuid else None
            host = (row or {}).get("host") or (row or {}).get(CLAIM_HOST)
            if host and row and row.get("vm_state") != "deleted":
                hosts[str(host)] = hosts.get(str(host), 0) + 1
        return (str((doc.get("policies") or [None])[0] or "") or None), hosts
    return None, {}


class InstanceChanged(Exception):
    """The instance stopped waiting to be scheduled (deleted, say) while a host was chosen."""


async def earlier_claim(
    store: Store,
    row: Doc,
    request: RequestSpec,
    filters: Sequence[str],
    weighers: Sequence[tuple[str, float]],
    down_after_s: float,
) -> Doc | None:
    """The node an earlier run of this request claimed the instance on (its `claim_host`:
    a lookup by instance, wherever that host ranks now), if it still takes the instance with
    that claim not counted; a claim it does not take any more is released."""
    host = row.get(CLAIM_HOST)
    doc = await store.get(COMPUTE_NODES, str(host)) if host else None
    uuid = str(row["id"])
    if doc is None or uuid not in (doc.get("claims") or {}):
        return None
    others = {k: v for k, v in (doc.get("claims") or {}).items() if k != uuid}
    try:
        rank([{**doc, **usage_of(others)}], request, filters, weighers, down_after_s)
    except NoValidHost:
        logger.info("instance %s: its earlier claim on %s is released", uuid, host)
        await release_claim(store, {"id": uuid, "host": host})
        return None
    return doc


async def claim_host(
    store: Store,
    request: RequestSpec,
    instance_uuid: str,
    filters: tuple[str, ...] | list[str],
    weighers: tuple[tuple[str, float], ...] | list[tuple[str, float]],
    down_after_s: float,
    claiming: str | None = None,
    waiting: Mapping[str, Any] | None = None,
    key: str | None = None,
    row: Doc | None = None,
) -> tuple[Doc, Doc | None]:
    """Choose the best host and record the instance's claim on it (over `row`, the instance as
    read): the node's new document and the instance's (`row` if the claim was recorded before).

    The host is written on the instance (`claim_host`) before it is claimed, so that a run
    that dies in between leaves its claim findable (`earlier_claim`); `claiming` is the
    host the instance names already; `waiting`, what the instance is while it waits (a
    build's by default); `key`, the claim's name when it is a migration's (its host is the
    migration's to record). NoValidHost when no host passes the filters;
    InstanceChanged when the instance stops waiting meanwhile.
    """
    claim = {"memory_mb": request.memory_mb, "vcpus": request.vcpus, "disk_gb": request.disk_gb}
    waiting = waiting or {"vm_state": "building", "task_state": "scheduling", "host": None}
    for _ in range(CAS_ATTEMPTS):
        found = await candidates(store, request, filters, weighers, down_after_s)
        docs = {str(d["host"]): d for d in found}
        try:
            ranked = rank(found, request, filters, weighers, down_after_s)
        except NoValidHost:
            # Rare: every candidate failed (a filter the query does not test), or none
            # passed the query. Every host, then: the choice, or the exact reasons why none.
            found = await store.list(COMPUTE_NODES)
            docs = {str(d["host"]): d for d in found}
            ranked = rank(found, request, filters, weighers, down_after_s)
        doc = docs[ranked[0].host]
        if key is None and ranked[0].host != claiming:
            claiming = ranked[0].host
            changes = {CLAIM_HOST: claiming}
            row = await store.update(INSTANCES, instance_uuid, changes, expect=waiting, current=row)
            if row is None:
                raise InstanceChanged(instance_uuid)
        claims = {**(doc.get("claims") or {}), key or instance_uuid: claim}
        generation = int(doc.get("generation") or 0)
        usage = usage_of(claims)
        new = await store.update(
            COMPUTE_NODES,
            ranked[0].host,
            {
                "claims": claims,
                **usage,
                **node_figures({**doc, **usage}),
                "generation": generation + 1,
            },
            expect={"generation": doc.get("generation")},
            current=doc,
        )
        if new is not None:
            return new, row
        logger.debug("lost the claim race on %s; choosing again", ranked[0].host)
    raise NoValidHost("Too many concurrent claims; no host could be claimed.")


@behaviour("scheduler.schedule_and_build")
async def schedule_and_build(call: Call) -> None:
    """Step 7: filter and weigh the hosts, claim the best, record host and node.

    The step's `with: hosts:` (a list or a map keyed by host name), when the spec gives
    it, restricts the choice to those hosts.

    Leaves `vars["host"]`, `vars["node"]` and `vars["build"]` (the
    build_and_run_instance payload) for step 7.1; `vars["host"]` is None when
    there is nothing to build (the instance was deleted meanwhile).
    """
    rt = call.rt
    store = rt.require_store()
    payload = call.payload
    uuid = str(payload["instance"]["uuid"])
    call.vars["instance_uuid"] = uuid
    call.vars["host"] = None
    row = await store.get(INSTANCES, uuid)
    if row is None or row.get("vm_state") != "building" or row.get("task_state") != "scheduling":
        # Deleted meanwhile, or built already (a redelivered request): build nothing.
        logger.info("instance %s is no longer waiting to be scheduled; skipping", uuid)
        return
    if row.get("host"):
        # Placed by a run of this request that died before it was acknowledged: whether that
        # run sent the build is not known, so it goes again to the same host (its claim
        # stands). Builds are delivered at least once: the compute takes one again, and one
        # already done is refused there (the instance is no longer building).
        logger.info("instance %s was placed on %s; its build is sent again", uuid, row["host"])
        _build_vars(call, row, str(row["host"]), str(row.get("node") or row["host"]))
        return
    request = request_spec_of(payload, call.args)
    group = (payload["request_spec"].get("instance_group") or {}).get("uuid")
    if group:
        policy, hosts = await group_of(call, str(group), uuid)
        request = dataclasses.replace(request, group_policy=policy, group_hosts=hosts)
    filters, weighers = rt.config.scheduler_filters, rt.config.scheduler_weighers
    down_after_s = liveness(rt.info, "service_down_time_s")
    try:
        node_doc = await earlier_claim(store, row, request, filters, weighers, down_after_s)
        if node_doc is None:
            node_doc, claimed = await claim_host(
                store, request, uuid, filters, weighers, down_after_s, row.get(CLAIM_HOST), row=row
            )
            row = claimed or row
    except InstanceChanged:
        await release_claim(store, await store.get(INSTANCES, uuid) or {"id": uuid})
        logger.info("instance %s changed while it was scheduled; nothing to build", uuid)
        return
    host = str(node_doc["host"])
    call.vars["claimed_host"] = host
    node = str(node_doc.get("hypervisor_hostname") or host)
    changes: dict[str, Any] = {"host": host, "node": node}
    if not row.get("availability_zone"):
        changes["availability_zone"] = (
            node_doc.get("availability_zone") or DEFAULT_AVAILABILITY_ZONE
        )
    updated = await store.update(
        INSTANCES,
        uuid,
        changes,
        expect={"vm_state": "building", "task_state": "scheduling", "host": None},
        current=row,
    )
    if updated is None:
        # Deleted (or otherwise moved on) while we chose: give the claim back, build nothing.
        await release_claim(store, {"id": uuid, "host": host})
        logger.info("instance %s changed while it was scheduled; claim on %s released", uuid, host)
        return
    _build_vars(call, updated, host, node)


def _build_vars(call: Call, instance: Doc, host: str, node: str) -> None:
    """What step 7.1 casts: the build_and_run_instance payload for `host`."""
    payload = call.payload
    spec = payload["request_spec"]
    ignored = list(spec.get("ignore_hosts") or [])
    call.vars.update(
        host=host,
        node=node,
        instance=instance,
        build={
            "instance": dict(payload["instance"]),
            "host": host,
            "node": node,
            "image_id": str(spec.get("image_id") or ""),
            "flavor_id": str(spec["flavor"]["id"]),
            "requested_networks": list(payload.get("requested_networks") or []),
            "block_device_mapping": list(payload.get("block_device_mapping") or []),
            "retry": {"num_attempts": len(ignored) + 1, "hosts": [*ignored, host]},
        },
    )


@behaviour("scheduler.build_request", via=("amqp-cast",))
async def build_request(ix: Interaction) -> None:
    """Step 7.1: cast build_and_run_instance to the chosen host's compute."""
    host = ix.vars.get("host")
    build = ix.vars.get("build")
    if not host or not build:
        return
    await ix.invoke(build, host=host)


@behaviour("scheduler.schedule_unshelve")
async def schedule_unshelve(call: Call) -> None:
    """unshelve: the request goes on (the consumer's `send`) to the host of a shelved
    instance; an offloaded one's host is chosen and claimed for its flavor as a build's is
    (in the zone the request names, else its own), and recorded first. No valid host: the
    instance stays offloaded, its task cleared, with the fault."""
    rt, store, payload, args = call.rt, call.rt.require_store(), call.payload, call.args
    uuid, expected = str(payload["instance"]["uuid"]), str(args["expected"])
    row = await store.get(INSTANCES, uuid)
    if row is None or row.get("task_state") != expected:
        return  # deleted meanwhile, or a redelivery of a request done
    host = row.get("host")
    if not host:
        zone = payload.get("availability_zone") or row.get("availability_zone")
        spec = {"flavor": row.get("flavor") or {}, "availability_zone": zone}
        request = request_spec_of({"request_spec": spec}, args)
        waiting = {"task_state": expected, "host": None}
        config, down = rt.config, liveness(rt.info, "service_down_time_s")
        filters, weighers = config.scheduler_filters, config.scheduler_weighers
        try:
            node, _ = await claim_host(store, request, uuid, filters, weighers, down, None, waiting)
        except (NoValidHost, InstanceChanged) as exc:
            fault = make_fault(500, f"{NO_VALID_HOST} {exc}" if str(exc) else NO_VALID_HOST)
            await store.update(
                INSTANCES, uuid, {"task_state": None, "fault": fault}, expect=waiting
            )
            await release_claim(store, await store.get(INSTANCES, uuid) or {"id": uuid})
            return
        host = str(node["host"])
        place = {"host": host, "node": str(node.get("hypervisor_hostname") or host)}
        if await store.update(INSTANCES, uuid, place, expect=waiting) is None:
            await release_claim(store, {"id": uuid, "host": host})
            return
    forward = {"instance": dict(payload["instance"]), "image_id": str(payload["image_id"])}
    await send(call, str(args["send"]), forward, host=str(host))


@behaviour("scheduler.schedule_resize")
async def schedule_resize(call: Call) -> None:
    """resize and cold migrate: a host for the migration's new flavor (only the one the
    request names, if any; the current one only for a resize where allow_resize_to_same_host),
    claimed as the migration's claim and recorded in the instance's migration, then the
    consumer's `send` to it. No valid host: the task cleared, the server left as it was with
    the fault (nova's)."""
    rt, store, payload, args = call.rt, call.rt.require_store(), call.payload, call.args
    uuid, expected = str(payload["instance"]["uuid"]), str(args["expected"])
    row = await store.get(INSTANCES, uuid)
    if row is None or row.get("task_state") != expected or not row.get("migration"):
        return  # deleted meanwhile, or a redelivery of a request done
    move = dict(row["migration"])
    move.update(
        old_flavor=flavor_info(rt.info, move.get("old_flavor") or row["flavor"]),
        new_flavor=flavor_info(rt.info, move.get("new_flavor") or row["flavor"]),
    )
    same = move["kind"] == "resize" and rt.config.allow_resize_to_same_host
    spec = {
        "flavor": move["new_flavor"],
        "availability_zone": row.get("availability_zone"),
        "ignore_hosts": [] if same else [str(row["host"])],
    }
    only = {"hosts": [payload["host"]]} if payload.get("host") else {}
    request = request_spec_of({"request_spec": spec}, only)
    waiting = {"task_state": expected, "host": row["host"]}
    config, down = rt.config, liveness(rt.info, "service_down_time_s")
    filters, weighers = config.scheduler_filters, config.scheduler_weighers
    key = migration_claim(uuid)
    try:
        node, _ = await claim_host(
            store, request, uuid, filters, weighers, down, None, waiting, key
        )
    except NoValidHost as exc:
        fault = make_fault(500, f"{NO_VALID_HOST} {exc}" if str(exc) else NO_VALID_HOST)
        changes = {"task_state": None, "migration": None, "fault": fault}
        await store.update(INSTANCES, uuid, changes, expect=waiting)
        raise  # the instance action's event: an error
    host = str(node["host"])
    move.update(dest_host=host, dest_node=str(node.get("hypervisor_hostname") or host))
    if await store.update(INSTANCES, uuid, {"migration": move}, expect=waiting) is None:
        await release_claim(store, {"id": uuid, "host": host})
        return
    await send(call, str(args["send"]), {"instance": dict(payload["instance"]),
                                         "migration": move}, host=host)  # fmt: skip


@behaviour("scheduler.set_instance_error")
async def set_instance_error(call: Call, error: BaseException) -> None:
    """The instance goes to ERROR with a "No valid host was found" fault; never raises."""
    try:
        store = call.rt.require_store()
        uuid = str(call.payload["instance"]["uuid"])
        if isinstance(error, NoValidHost):
            message = str(error)
            details = ", ".join(f"{k} eliminated {v}" for k, v in error.eliminated.items() if v)
        else:
            message = f"{NO_VALID_HOST} {type(error).__name__}: {error}"
            details = repr(error)
        fault = make_fault(500, message, details)
        claimed = call.vars.get("claimed_host")
        row: Doc | None = None
        for _ in range(CAS_ATTEMPTS):
            row = await store.get(INSTANCES, uuid)
            if row is None:
                break
            if row.get("vm_state") == "deleted" or row.get("task_state") == "deleting":
                break  # being deleted: the delete wins
            updated = await store.update(
                INSTANCES,
                uuid,
                {"vm_state": "error", "task_state": None, "fault": fault},
                expect={"vm_state": row.get("vm_state"), "task_state": row.get("task_state")},
            )
            if updated is not None:
                break
        for host in {claimed, (row or {}).get("host"), (row or {}).get(CLAIM_HOST)} - {None}:
            await release_claim(store, {"id": uuid, "host": host})
    except Exception:
        logger.exception("could not put the unscheduled instance into ERROR")
