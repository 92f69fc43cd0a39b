"""resize, cold migrate, confirmResize and revertResize on the compute hosts
(spec/components.yaml: nova-compute's prep_resize, resize_instance, finish_resize,
confirm_resize, revert_resize and finish_revert_resize): each step as its consumer's args
declare it; the scheduler's part is `scheduler.schedule_resize`."""

from __future__ import annotations

import inspect
from typing import Any

from specstack_runtime.behaviours.nova_common import fault_of, flow_token, update_instance
from specstack_runtime.context import Call
from specstack_runtime.errors import Dropped
from specstack_runtime.expr import compile_expr
from specstack_runtime.http import expect
from specstack_runtime.messaging import send
from specstack_runtime.registry import behaviour


def _cel(call: Call, name: str, doc: Any = None) -> Any:
    """The consumer's arg `name`: CEL over the instance (`doc`) and the payload (`request`);
    `refs.old`: the consumer's `old` (the old flavor's sizes are meant)."""
    refs = {"old": bool(call.args.get("old"))}
    return compile_expr(str(call.args[name])).evaluate(
        doc=doc, request=dict(call.payload), refs=refs
    )


@behaviour("compute.rpc_migration", needs=("network",))
async def rpc_migration(call: Call) -> None:
    """A step of a resize or cold migration on this host, as the consumer's args say: the
    task state it finds (`expected`, else stale: dropped) and sets (`running`), the driver
    method (`call`, its arguments `with`; `accept`: its errors that mean done already), the
    instance's fields once done (`done`) with the claims it changes (`claims`), and the
    message cast next (`send` to the host `to`); `bind_ports`: the instance's ports bound to
    this host first (nova's migrate_instance_finish). A failure: ERROR with the fault."""
    args, payload = call.args, call.payload
    uuid = str(payload["instance"]["uuid"])
    reply = await send(call, "instance_get", {"instance_uuid": uuid})
    assert reply is not None
    doc, expected = reply["instance"], args.get("expected")
    if expected is not None and doc.get("task_state") != expected:
        raise Dropped(f"instance {uuid} is {doc.get('task_state')}, not {expected}")
    state = args.get("running") or expected
    if args.get("running"):
        await update_instance(call, uuid, {"task_state": state}, expected)
    result: Any = None
    try:
        if args.get("bind_ports"):
            await _bind_ports(call, [str(v["id"]) for v in doc.get("vifs") or []])
        if args.get("call"):
            method = getattr(call.rt.driver, str(args["call"]))
            given = _cel(call, "with", doc)
            takes = inspect.signature(method).parameters  # what this method of the contract takes
            try:
                result = await method(**{k: v for k, v in given.items() if k in takes})
            except Exception as exc:
                if type(exc).__name__ not in args.get("accept", ()):
                    raise
        done = dict(_cel(call, "done", doc)) if "done" in args else {}
    except Exception as exc:
        fault = fault_of(exc, f"{call.trigger} failed: ")
        await update_instance(
            call, uuid, {"vm_state": "error", "task_state": None, "fault": fault}, state
        )
        raise
    update: dict[str, Any] = {"instance_uuid": uuid, "updates": done}
    if state is not None:
        update["expected_task_state"] = state
    if args.get("claims"):
        update["claims"] = list(_cel(call, "claims"))
    if done or args.get("claims"):
        await send(call, "instance_update", update)
    if args.get("send"):
        forward = {"instance": dict(payload["instance"]), "migration": payload["migration"]}
        if isinstance(result, str):
            forward["disk_info"] = result
        await send(call, str(args["send"]), forward, host=str(_cel(call, "to")))


async def _bind_ports(call: Call, ports: list[str]) -> None:
    """The ports bound to this host (neutron's binding:host_id): its L2 agent wires them."""
    rt, token = call.rt, await flow_token(call)
    api, body = rt.info.api_of_type("network"), {"port": {"binding:host_id": rt.host}}
    for port_id in ports:
        resp = await rt.clients.call(
            api, "updatePort", {"port_id": port_id}, body=body, token=token
        )
        expect(resp, 200, 404)  # (a port deleted meanwhile is not the move's to fail on)
