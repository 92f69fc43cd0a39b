"""nova's instance actions as the spec's `record:` rules write them (issue 15): a row per
server request nova-api answered, an event per handling by the scheduler or a compute host
(whichever comes first), and os-instance-actions answering them (policy, 404s)."""

from __future__ import annotations

from typing import Any

import pytest

from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import ApiError
from specstack_runtime.resources import records, serve
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import Store
from tests.aio import arun
from tests.runtime.test_compute_flow import new_instance
from tests.runtime.test_compute_kit import (
    auth_ctx,
    check_response,
    make_runtime,
    msg_call,
    nova_store,
    op_call,
    stack_info,
)

INFO = stack_info()


def _answered(store: Store, server: dict[str, Any], operation: str, **kw: Any) -> Call:
    call = op_call(make_runtime(INFO, "nova-api", store=store), operation, **kw)
    call.request_id, call.global_request_id = "req-api-1", "req-flow-1"
    call.reply = Reply(202, {"server": {"id": server["id"]}})
    call.vars["instances"] = [server]  # what createServer leaves
    return call


def _handled(store: Store, info: StackInfo, message: str, server: dict[str, Any]) -> Call:
    rt = make_runtime(info, "nova-compute", host="compute-1", store=store)
    call = msg_call(rt, message, {"instance": {"uuid": server["id"]}})
    call.global_request_id = "req-flow-1"
    return call


async def _show(store: Store, server_id: str, request_id: str, admin: bool = False) -> Any:
    rt = make_runtime(INFO, "nova-api", store=store)
    call = op_call(
        rt,
        "showInstanceAction",
        path_params={"server_id": server_id, "request_id": request_id},
        auth=auth_ctx(admin=admin),
    )
    reply = await serve.serve(call)
    check_response("showInstanceAction", reply)
    return reply.body["instanceAction"]


async def recorded_events(handled_by: dict[str, list[str]]) -> dict[str, list[str]]:
    """The events shown for each server action (its name -> the messages nova-compute
    handled for it) once nova-api answered it and the messages were handled."""
    store = nova_store(INFO)
    server = await new_instance(store)
    path = {"server_id": server["id"]}
    for n, (action, messages) in enumerate(handled_by.items()):
        flow = f"req-flow-{action}"
        call = _answered(store, server, "serverAction", body={action: None}, path_params=path)
        call.request_id, call.global_request_id = f"req-api-{action}", flow
        await records.handled(call, 1.0e9 + n)
        for message in messages:
            handled = _handled(store, INFO, message, server)
            handled.global_request_id = flow
            await records.handled(handled, 1.0e9 + n)
    found = {}
    for action in handled_by:
        shown = await _show(store, server["id"], f"req-api-{action}")
        found[shown["action"]] = [e["event"] for e in shown["events"]]
    return found


@arun
async def test_a_failed_build_event_before_the_api_row_meets_it() -> None:
    """The compute host's failure is recorded first; nova-api's row of the create joins it:
    one action with the request id the API answered, its event Error, message Error."""
    store = nova_store(INFO)
    server = await new_instance(store)
    build = _handled(store, INFO, "build_and_run_instance", server)
    await records.handled(build, 1.0e9, RuntimeError("spawn failed: no disk"))
    create = _answered(store, server, "createServer", body={"server": {"name": "x"}})
    await records.handled(create, 1.0e9)
    (row,) = await store.list("instance_actions")
    assert (row["action"], row["request_id"], row["instance_uuid"]) == (
        "create",
        "req-api-1",
        server["id"],
    )
    shown = await _show(store, server["id"], "req-api-1", admin=True)
    assert shown["message"] == "Error" and shown["start_time"] == "2001-09-09T01:46:40.000000"
    (event,) = shown["events"]
    assert event["event"] == "compute__do_build_and_run_instance"
    assert event["result"] == "Error"
    assert event["traceback"] == "RuntimeError: spawn failed: no disk"
    # the owner sees the event and its result; the failure's text is the administrator's
    (own,) = (await _show(store, server["id"], "req-api-1"))["events"]
    assert own["result"] == "Error" and "traceback" not in own


@arun
async def test_actions_listed_newest_first_and_what_is_not_recorded() -> None:
    store = nova_store(INFO)
    server = await new_instance(store)
    path = {"server_id": server["id"]}
    await records.handled(_answered(store, server, "createServer", body={}), 1.0e9)
    stop = _answered(store, server, "serverAction", body={"os-stop": None}, path_params=path)
    stop.request_id, stop.global_request_id = "req-api-2", "req-flow-2"
    await records.handled(stop, 1.0e9 + 5)
    console = _answered(
        store, server, "serverAction", body={"os-getConsoleOutput": {}}, path_params=path
    )
    console.request_id, console.global_request_id = "req-api-3", "req-flow-3"
    await records.handled(console, 1.0e9 + 9)  # nova records no action for it
    refused = _answered(store, server, "serverAction", body={"pause": None}, path_params=path)
    refused.request_id, refused.global_request_id = "req-api-4", "req-flow-4"
    refused.reply = Reply(409, {"conflictingRequest": {"message": "no", "code": 409}})
    await records.handled(refused, 1.0e9 + 10)  # refused: nothing was done
    rt = make_runtime(INFO, "nova-api", store=store)
    reply = await serve.serve(op_call(rt, "listInstanceActions", path_params=path))
    check_response("listInstanceActions", reply)
    actions = reply.body["instanceActions"]
    assert [(a["action"], a["request_id"]) for a in actions] == [
        ("stop", "req-api-2"),
        ("create", "req-api-1"),
    ]
    assert "events" not in actions[0]  # the list's view


@arun
async def test_another_projects_server_and_a_missing_action_are_404() -> None:
    store = nova_store(INFO)
    server = await new_instance(store)
    await records.handled(_answered(store, server, "createServer", body={}), 1.0e9)
    rt = make_runtime(INFO, "nova-api", store=store)
    other = auth_ctx(project="other-project", user="other-user")
    path = {"server_id": server["id"]}
    with pytest.raises(ApiError) as err:
        await serve.serve(op_call(rt, "listInstanceActions", path_params=path, auth=other))
    assert err.value.status == 404
    assert err.value.message == f"Instance {server['id']} could not be found."
    with pytest.raises(ApiError) as err:
        await _show(store, server["id"], "req-none")
    assert err.value.status == 404
    assert err.value.message == (
        f"Action for request_id req-none on instance {server['id']} not found"
    )


@arun
async def test_a_deleted_servers_actions_remain_listed() -> None:
    """nova reads a deleted server's actions (its delete among them); a server that never
    was is still 404."""
    store = nova_store(INFO)
    server = await new_instance(store)
    path = {"server_id": server["id"]}
    delete = _answered(store, server, "deleteServer", path_params=path)
    await records.handled(delete, 1.0e9)
    await store.update("instances", server["id"], {"vm_state": "deleted"})
    rt = make_runtime(INFO, "nova-api", store=store)
    reply = await serve.serve(op_call(rt, "listInstanceActions", path_params=path))
    assert [a["action"] for a in reply.body["instanceActions"]] == ["delete"]
    with pytest.raises(ApiError) as err:
        await serve.serve(
            op_call(rt, "listInstanceActions", path_params={"server_id": "no-such-server"})
        )
    assert err.value.status == 404


@arun
async def test_an_administrators_action_on_anothers_server_is_listed_to_its_owner() -> None:
    """nova records an action with the request's project and user (InstanceAction's
    pack_action_start: the context's), and lists a server's actions whoever made them
    (actions_get: by instance only): the owner sees the administrator's stop, with the
    administrator's project and user; another project still sees no server."""
    store = nova_store(INFO)
    server = await new_instance(store)
    path = {"server_id": server["id"]}
    await records.handled(_answered(store, server, "createServer", body={}), 1.0e9)
    admin = auth_ctx(project="admin-project", user="admin-user", admin=True)
    stop = _answered(
        store, server, "serverAction", body={"os-stop": None}, path_params=path, auth=admin
    )
    stop.request_id, stop.global_request_id = "req-api-2", "req-flow-2"
    await records.handled(stop, 1.0e9 + 5)
    rt = make_runtime(INFO, "nova-api", store=store)
    reply = await serve.serve(op_call(rt, "listInstanceActions", path_params=path))
    check_response("listInstanceActions", reply)
    listed = [(a["action"], a["project_id"], a["user_id"]) for a in reply.body["instanceActions"]]
    assert listed == [
        ("stop", "admin-project", "admin-user"),
        ("create", server["project_id"], server["user_id"]),
    ]
    shown = await _show(store, server["id"], "req-api-2")
    assert (shown["action"], shown["project_id"]) == ("stop", "admin-project")
    other = auth_ctx(project="other-project", user="other-user")
    with pytest.raises(ApiError) as err:
        await serve.serve(op_call(rt, "listInstanceActions", path_params=path, auth=other))
    assert err.value.status == 404
