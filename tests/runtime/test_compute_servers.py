"""nova-api on its servers after create: show, list and update, delete, and the actions."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import event

from specstack_runtime.behaviours import nova_api, nova_delete
from specstack_runtime.bus import RemoteError
from specstack_runtime.context import AuthContext
from specstack_runtime.errors import BadRequest, Conflict, Forbidden, NotFound
from tests.aio import arun
from tests.runtime.test_compute_api import ADMIN_KEYS, SERVER_KEYS_21, Api
from tests.runtime.test_compute_api import api as api  # the fixture
from tests.runtime.test_compute_kit import (
    IMAGE_ID,
    OTHER_PROJECT,
    PROJECT,
    VOLUME_ID,
    Recorder,
    add_compute_node,
    auth_ctx,
    boot_body,
    op_call,
    run_spec_step,
    seed_flavors,
)

# -- show, list, update ----------------------------------------------------------------


@arun
async def test_server_view_has_exactly_the_21_field_set(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    body = (await api.run("showServer", path_params={"server_id": row["id"]})).body["server"]
    # no microversion negotiated (not over HTTP): the newest shapes, 2.9's `locked`, 2.19's
    # description, 2.26's tags, 2.47's embedded flavor, 2.71's server groups and 2.73's
    # locked_reason too
    newer = {"progress", "security_groups", "locked", "description", "tags"}
    newer |= {"server_groups", "locked_reason"}
    assert set(body) == SERVER_KEYS_21 | newer
    assert body["status"] == "BUILD" and body["OS-EXT-STS:task_state"] == "scheduling"
    assert body["flavor"]["original_name"] == "m1.tiny" and body["flavor"]["vcpus"] == 1
    assert body["image"]["id"] == IMAGE_ID
    assert body["hostId"] == "" and body["tenant_id"] == PROJECT
    assert body["tags"] == [] and "fault" not in body
    assert body["server_groups"] == [] and body["locked_reason"] is None

    row = await api.set(
        row,
        vm_state="active",
        task_state=None,
        power_state=1,
        host="compute-1",
        node="compute-1",
        launched_at="2026-01-01T00:00:00.000000",
        addresses={
            "private": [
                {
                    "version": 4,
                    "addr": "10.0.0.5",
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01",
                }
            ]
        },
    )
    body = (await api.run("showServer", path_params={"server_id": row["id"]})).body["server"]
    assert body["status"] == "ACTIVE"
    assert body["hostId"] == hashlib.sha224(f"{PROJECT}compute-1".encode()).hexdigest()
    assert body["addresses"]["private"][0]["OS-EXT-IPS-MAC:mac_addr"] == "fa:16:3e:00:00:01"
    assert not ADMIN_KEYS & set(body)
    admin = (
        await api.run(
            "showServer",
            path_params={"server_id": row["id"]},
            auth=auth_ctx(admin=True, project=OTHER_PROJECT),
        )
    ).body["server"]
    assert set(admin) >= ADMIN_KEYS and admin["OS-EXT-SRV-ATTR:host"] == "compute-1"

    fault = {
        "code": 500,
        "message": "No valid host was found. There are not enough hosts available.",
        "details": "RamFilter eliminated 2",
        "created": "2026-01-01T00:00:00Z",
    }
    row = await api.set(row, vm_state="error", task_state=None, fault=fault)
    body = (await api.run("showServer", path_params={"server_id": row["id"]})).body["server"]
    assert body["status"] == "ERROR"
    assert body["fault"] == {k: fault[k] for k in ("code", "message", "created")}
    assert "progress" not in body


@arun
async def test_show_hides_deleted_and_foreign_servers(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    with pytest.raises(NotFound, match=f"Instance {row['id']} could not be found."):
        await api.run(
            "showServer", path_params={"server_id": row["id"]}, auth=auth_ctx(project=OTHER_PROJECT)
        )
    await api.set(row, vm_state="deleted")
    with pytest.raises(NotFound):
        await api.run("showServer", path_params={"server_id": row["id"]})
    with pytest.raises(NotFound):
        await api.run("showServer", path_params={"server_id": "vm1"})


@arun
async def test_list_servers_reads_only_the_rows_it_lists(api: Api) -> None:
    """Live servers; every one with changes-since; only the deleted ones with deleted=true,
    for administrators (anyone else's is ignored). The database chooses them (spec
    `list.select`): a project's deleted servers are not read to list its live ones."""
    await seed_flavors(api.store)
    rows = [await api.boot(name=f"vm{i}") for i in range(5)]
    for row in rows[2:]:
        await api.set(row, vm_state="deleted")
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        sent.append(" ".join(sql.split()))

    event.listen(api.store.engine, "before_cursor_execute", record)

    async def names(query: dict[str, str], auth: AuthContext | None = None) -> list[str]:
        got = await api.run("listServers", query=query, auth=auth or auth_ctx())
        return sorted(s["name"] for s in got.body["servers"])

    assert await names({}) == ["vm0", "vm1"]
    listed = [q for q in sent if q.startswith("SELECT instances.data FROM instances")]
    # the caller's project's rows (it sees no other), live: index ranges (test_store_paging)
    assert listed and all(
        "instances.project_id = ?" in q and "instances.vm_state <" in q for q in listed
    )
    assert await names({"deleted": "true"}) == ["vm0", "vm1"]
    assert await names({"deleted": "true"}, auth_ctx(admin=True)) == ["vm2", "vm3", "vm4"]
    assert await names({"deleted": "false"}, auth_ctx(admin=True)) == ["vm0", "vm1"]
    every = [f"vm{i}" for i in range(5)]
    assert await names({"changes-since": "2000-01-01T00:00:00Z"}) == every
    event.remove(api.store.engine, "before_cursor_execute", record)


@arun
async def test_list_servers_filters_and_pages(api: Api) -> None:
    await seed_flavors(api.store)
    rows = [await api.boot(name=f"vm{i}") for i in range(5)]
    await api.set(rows[0], vm_state="active", task_state=None)
    await api.set(rows[4], vm_state="deleted")
    reply = await api.run("listServers", query={"deleted": "False"})
    items = reply.body["servers"]
    assert {i["name"] for i in items} == {"vm0", "vm1", "vm2", "vm3"}
    assert all(set(i) == {"id", "links", "name"} for i in items)
    reply = await api.run("listServersDetailed", query={"name": "^vm[12]$"})
    assert sorted(s["name"] for s in reply.body["servers"]) == ["vm1", "vm2"]
    reply = await api.run("listServersDetailed", query={"status": "ACTIVE"})
    assert [s["name"] for s in reply.body["servers"]] == ["vm0"]
    page = (await api.run("listServers", query={"limit": "2"})).body
    assert len(page["servers"]) == 2 and page["servers_links"][0]["rel"] == "next"
    marker = page["servers"][-1]["id"]
    rest = (await api.run("listServers", query={"limit": "2", "marker": marker})).body["servers"]
    assert {i["id"] for i in rest}.isdisjoint({i["id"] for i in page["servers"]})
    with pytest.raises(BadRequest, match="marker"):
        await api.run("listServers", query={"marker": "nope"})
    with pytest.raises(BadRequest):
        await api.run("listServers", query={"name": "("})
    with pytest.raises(BadRequest):
        await api.run("listServers", query={"sort_key": "bogus"})


@arun
async def test_list_servers_tenancy(api: Api) -> None:
    await seed_flavors(api.store)
    await api.boot(name="mine")
    other = op_call(
        api.rt, "createServer", body=boot_body(name="theirs"), auth=auth_ctx(project=OTHER_PROJECT)
    )
    await nova_api.create_server(other)
    names = [s["name"] for s in (await api.run("listServers")).body["servers"]]
    assert names == ["mine"]
    with pytest.raises(Forbidden, match="get_all_tenants"):
        await api.run("listServers", query={"all_tenants": "True"})
    with pytest.raises(BadRequest):
        await api.run("listServers", query={"all_tenants": "maybe"}, auth=auth_ctx(admin=True))
    admin = auth_ctx(admin=True)
    names = [
        s["name"]
        for s in (await api.run("listServers", query={"all_tenants": "1"}, auth=admin)).body[
            "servers"
        ]
    ]
    assert sorted(names) == ["mine", "theirs"]
    # host is an admin filter; members' unknown filters are ignored, as in nova.
    assert len((await api.run("listServers", query={"host": "x"})).body["servers"]) == 1
    assert (await api.run("listServers", query={"host": "x"}, auth=admin)).body["servers"] == []


@arun
async def test_update_server_name(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    reply = await api.run(
        "updateServer", path_params={"server_id": row["id"]}, body={"server": {"name": "renamed"}}
    )
    assert reply.body["server"]["name"] == "renamed"
    assert "OS-EXT-STS:vm_state" not in reply.body["server"]
    with pytest.raises(BadRequest):
        await api.run(
            "updateServer", path_params={"server_id": row["id"]}, body={"server": {"name": " x"}}
        )


# -- delete ----------------------------------------------------------------------------


@arun
async def test_delete_without_host_deletes_at_once(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    call = op_call(api.rt, "deleteServer", path_params={"server_id": row["id"]})
    reply = await nova_delete.delete_server(call)
    assert reply.status == 204
    assert call.vars["instance"]["vm_state"] == "deleted"
    invoke = Recorder()
    await run_spec_step(call, "delete-vm", "6", invoke)
    assert invoke.calls == []
    with pytest.raises(NotFound):
        await api.run("showServer", path_params={"server_id": row["id"]})


@arun
async def test_delete_with_host_marks_deleting_and_casts_terminate(api: Api) -> None:
    await seed_flavors(api.store)
    await add_compute_node(api.store, "compute-1")
    row = await api.boot()
    att = {
        "attachment_id": "a1",
        "volume_id": VOLUME_ID,
        "device": "/dev/vdb",
        "connection_info": {"driver_volume_type": "iscsi", "data": {}},
    }
    row = await api.set(
        row, vm_state="active", task_state=None, host="compute-1", ports=["p1"], attachments=[att]
    )
    call = op_call(api.rt, "deleteServer", path_params={"server_id": row["id"]})
    assert (await nova_delete.delete_server(call)).status == 204
    assert call.vars["instance"]["task_state"] == "deleting"
    invoke = Recorder()
    await run_spec_step(call, "delete-vm", "6", invoke)
    (((payload,), kwargs),) = invoke.calls
    assert kwargs == {"host": "compute-1"}
    from specstack_runtime.messaging import check

    check(api.info, "terminate_instance", "payload", payload)
    assert payload["ports"] == ["p1"]
    assert payload["attachments"] == [{**att, "delete_on_termination": False}]
    # A repeated delete is accepted and sends nothing more.
    again = op_call(api.rt, "deleteServer", path_params={"server_id": row["id"]})
    assert (await nova_delete.delete_server(again)).status == 204
    assert again.vars["terminate"] is False


@arun
async def test_delete_is_for_the_owner_or_admin(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    call = op_call(
        api.rt,
        "deleteServer",
        path_params={"server_id": row["id"]},
        auth=auth_ctx(project=OTHER_PROJECT),
    )
    with pytest.raises(NotFound):
        await nova_delete.delete_server(call)
    call = op_call(
        api.rt,
        "deleteServer",
        path_params={"server_id": row["id"]},
        auth=auth_ctx(project=OTHER_PROJECT, admin=True),
    )
    assert (await nova_delete.delete_server(call)).status == 204


@arun
async def test_delete_when_the_compute_host_is_down_is_local(api: Api) -> None:
    await seed_flavors(api.store)
    await add_compute_node(api.store, "compute-1", heartbeat=1.0)
    row = await api.boot()
    await api.set(row, vm_state="active", task_state=None, host="compute-1")
    call = op_call(api.rt, "deleteServer", path_params={"server_id": row["id"]})
    await nova_delete.delete_server(call)
    assert call.vars["instance"]["vm_state"] == "deleted" and call.vars["terminate"] is False


# -- actions ---------------------------------------------------------------------------


@arun
async def test_stop_start_reboot_go_to_the_host(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    sid = {"server_id": row["id"]}
    with pytest.raises(Conflict, match="Cannot 'stop' instance"):
        await api.run("serverAction", path_params=sid, body={"os-stop": None})
    row = await api.set(row, vm_state="active", task_state=None, host="compute-1", power_state=1)
    with pytest.raises(Conflict, match="Cannot 'start' instance"):
        await api.run("serverAction", path_params=sid, body={"os-start": None})
    reply = await api.run("serverAction", path_params=sid, body={"os-stop": None})
    assert reply.status == 202
    assert api.bus.sent[-1][:2] == ("cast", "stop_instance")
    assert api.bus.sent[-1][3] == "compute-1"
    assert (await api.store.get("instances", row["id"]))["task_state"] == "powering-off"  # type: ignore[index]
    with pytest.raises(Conflict):
        await api.run("serverAction", path_params=sid, body={"os-stop": None})
    await api.set(row, vm_state="stopped", task_state=None, power_state=4)
    assert (await api.run("serverAction", path_params=sid, body={"os-start": None})).status == 202
    assert api.bus.sent[-1][1] == "start_instance"
    await api.set(row, vm_state="active", task_state=None, power_state=1)
    reply = await api.run("serverAction", path_params=sid, body={"reboot": {"type": "HARD"}})
    assert reply.status == 202 and api.bus.sent[-1][2]["reboot_type"] == "HARD"
    with pytest.raises(BadRequest, match="There is no such action: os-migrateLive"):
        await api.run("serverAction", path_params=sid, body={"os-migrateLive": None})


@arun
async def test_console_output(api: Api) -> None:
    await seed_flavors(api.store)
    row = await api.boot()
    row = await api.set(row, vm_state="active", task_state=None, host="compute-1")
    api.bus.replies["get_console_output"] = lambda p: {"output": f"len={p['length']}\n"}
    reply = await api.run(
        "serverAction",
        path_params={"server_id": row["id"]},
        body={"os-getConsoleOutput": {"length": "5"}},
    )
    assert reply.status == 200 and reply.body == {"output": "len=5\n"}
    reply = await api.run(
        "serverAction",
        path_params={"server_id": row["id"]},
        body={"os-getConsoleOutput": {"length": -1}},
    )
    assert reply.body == {"output": "len=None\n"}
    with pytest.raises(BadRequest):
        await api.run(
            "serverAction",
            path_params={"server_id": row["id"]},
            body={"os-getConsoleOutput": {"length": "x"}},
        )
    api.bus.replies["get_console_output"] = RemoteError(
        "NotFound", "Guest does not have a console available."
    )
    with pytest.raises(NotFound):
        await api.run(
            "serverAction", path_params={"server_id": row["id"]}, body={"os-getConsoleOutput": {}}
        )


@arun
async def test_host_status_is_the_hosts_compute_service(api: Api) -> None:
    """2.16's host_status (the `service` join): "" without a host (or one with no service),
    then UP, MAINTENANCE (disabled) and UNKNOWN (not heard from), as nova tells them (DOWN
    is a forced-down service, which the services API here cannot make)."""
    await seed_flavors(api.store)
    row = await api.boot()
    admin = auth_ctx(admin=True)  # of the server's project: its list has it

    async def status() -> str:
        path = {"server_id": row["id"]}
        body = (await api.run("showServer", path_params=path, auth=admin)).body["server"]
        listed = (await api.run("listServersDetailed", auth=admin)).body["servers"]
        assert [s["host_status"] for s in listed if s["id"] == row["id"]] == [body["host_status"]]
        return str(body["host_status"])

    assert await status() == ""
    await add_compute_node(api.store, "compute-1")
    row = await api.set(row, host="compute-1")
    assert await status() == "UP"
    await api.store.update("compute_nodes", "compute-1", {"enabled": False})
    assert await status() == "MAINTENANCE"
    await api.store.update("compute_nodes", "compute-1", {"enabled": True, "heartbeat": 1.0})
    assert await status() == "UNKNOWN"
    await api.set(row, host="compute-gone")  # a host nova has no service of
    assert await status() == ""
