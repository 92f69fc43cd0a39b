"""nova-api: deleting a server (delete-vm 5, 6).

`compute.delete_server` (delete-vm 5) keeps `vars["instance"]` and `vars["terminate"]`,
which the spec's step 6 reads to cast terminate_instance to the instance's host. An
instance no compute host will clean up (never scheduled, or its host down) is deleted
at once by nova-api itself.
"""

from __future__ import annotations

import logging

from specstack_runtime.behaviours.conductor import (
    CAS_ATTEMPTS,
    COMPUTE_NODES,
    INSTANCES,
    naive_now,
    release_claim,
)
from specstack_runtime.behaviours.nova_common import (
    SERVER,
    fail,
    instance_for,
    release_instance,
    store_of,
)
from specstack_runtime.context import Call, Reply
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import collects, guards
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.resources.views import render
from specstack_runtime.store import Doc

logger = logging.getLogger(__name__)


async def _compute_is_up(call: Call, host: str) -> bool:
    """The spec's liveness rule (the compute service's `state`) on the host's record."""
    doc = await store_of(call).get(COMPUTE_NODES, host)
    return doc is not None and render(engine_call(call, "compute_service"), doc)["state"] == "up"


async def _local_delete(call: Call, row: Doc) -> Doc:
    """Delete an instance that no compute host will clean up (never scheduled, or host down)."""
    store = store_of(call)
    if call.token:
        ports = [str(p) for p in row.get("ports") or []]
        await release_instance(call.rt, row, ports, row.get("attachments") or [], call.token)
    rc = engine_call(call, SERVER)
    deleted = rc.template("deleted", params={"now": naive_now()})
    expect = {"vm_state": row.get("vm_state"), "task_state": row.get("task_state")}
    updated = await store.update(INSTANCES, row["id"], deleted, expect=expect)
    if updated is None:
        raise fail(call.rt, "delete_raced", id=row["id"])
    await release_claim(store, updated)
    await collects.removed(rc, updated)  # out of its server group
    return updated


@behaviour("compute.delete_server", needs=("block-storage", "network"))
async def delete_server(call: Call) -> Reply:
    """delete-vm step 5: mark the instance deleting (or delete it at once); 204.

    Leaves `vars["instance"]` (the row) and `vars["terminate"]` (whether step 6
    must cast terminate_instance to the instance's host).
    """
    store = store_of(call)
    server_id = call.path_params["server_id"]
    call.vars["terminate"] = False
    for _ in range(CAS_ATTEMPTS):
        row = await instance_for(call, server_id)
        guards.check(engine_call(call, SERVER), "delete", row)  # a locked server, say
        call.vars["instance"] = row
        if row.get("task_state") == "deleting":
            return Reply(204)  # already being deleted: nova ignores the repeat
        host = row.get("host")
        if not host or not await _compute_is_up(call, str(host)):
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
    raise fail(call.rt, "delete_busy", id=server_id)
