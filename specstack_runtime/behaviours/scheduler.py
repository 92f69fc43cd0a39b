"""nova-scheduler: pick a compute host for an instance, claim its resources, send the build.

The message handler `scheduler.schedule_and_build` is step 7 of boot-vm (the sql
interaction with compute_nodes and instances); `scheduler.build_request` is
step 7.1 (the cast of build_and_run_instance to compute.<host>). Host states
are the `compute_nodes` documents (see conductor.py); a claim is recorded on the
chosen host's document with compare-and-set on its generation, and a lost race
means choosing again from fresh documents.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from specstack_runtime.behaviours.conductor import (
    CAS_ATTEMPTS,
    COMPUTE_NODES,
    INSTANCES,
    liveness,
    make_fault,
    release_claim,
    usage_of,
)
from specstack_runtime.behaviours.scheduling import (
    DEFAULT_AVAILABILITY_ZONE,
    HostState,
    NoValidHost,
    RequestSpec,
    select_destinations,
)
from specstack_runtime.context import Call, Interaction
from specstack_runtime.registry import behaviour
from specstack_runtime.store import Doc, Store

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


async def claim_host(
    store: Store,
    request: RequestSpec,
    instance_uuid: str,
    filters: tuple[str, ...] | list[str],
    weighers: tuple[tuple[str, float], ...] | list[tuple[str, float]],
    down_after_s: float,
) -> Doc:
    """Choose the best host and record the instance's claim on it; its new document.

    NoValidHost when no host passes the filters.
    """
    claim = {"memory_mb": request.memory_mb, "vcpus": request.vcpus, "disk_gb": request.disk_gb}
    for _ in range(CAS_ATTEMPTS):
        docs = {str(d["host"]): d for d in await store.list(COMPUTE_NODES)}
        for doc in docs.values():
            if instance_uuid in (doc.get("claims") or {}):
                return doc  # claimed already (a redelivered request)
        ranked = select_destinations(
            [host_state(d) for d in docs.values()],
            request,
            list(filters),
            list(weighers),
            service_down_time=down_after_s,
        )
        doc = docs[ranked[0].host]
        claims = {**(doc.get("claims") or {}), instance_uuid: claim}
        generation = int(doc.get("generation") or 0)
        new = await store.update(
            COMPUTE_NODES,
            ranked[0].host,
            {"claims": claims, **usage_of(claims), "generation": generation + 1},
            expect={"generation": doc.get("generation")},
        )
        if new is not None:
            return new
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
    if (
        row is None
        or row.get("vm_state") != "building"
        or row.get("task_state") != "scheduling"
        or row.get("host")
    ):
        # Deleted meanwhile, or scheduled already (a redelivered request): build nothing.
        logger.info("instance %s is no longer waiting to be scheduled; skipping", uuid)
        return
    request = request_spec_of(payload, call.args)
    node_doc = await claim_host(
        store,
        request,
        uuid,
        rt.config.scheduler_filters,
        rt.config.scheduler_weighers,
        liveness(rt.info, "service_down_time_s"),
    )
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
    )
    if updated is None:
        # Deleted (or otherwise moved on) while we chose: give the claim back, build nothing.
        await release_claim(store, {"id": uuid, "host": host})
        logger.info("instance %s changed while it was scheduled; claim on %s released", uuid, host)
        return
    spec = payload["request_spec"]
    ignored = list(spec.get("ignore_hosts") or [])
    call.vars.update(
        host=host,
        node=node,
        instance=updated,
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
        for host in {claimed, (row or {}).get("host")} - {None}:
            await release_claim(store, {"id": uuid, "host": host})
    except Exception:
        logger.exception("could not put the unscheduled instance into ERROR")
