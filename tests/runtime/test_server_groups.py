"""nova's server groups (os-server-groups) through the engine, and a server's membership:
the scheduler hint `group` at create, the group's quotas, the scheduler's group policy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import conductor, nova_api, nova_delete, scheduler
from specstack_runtime.behaviours.scheduling import NoValidHost
from specstack_runtime.errors import BadRequest, Forbidden, NotFound
from tests.aio import arun
from tests.runtime.test_compute_api import Api
from tests.runtime.test_compute_api import api as api  # the fixture
from tests.runtime.test_compute_kit import (
    OTHER_PROJECT,
    PROJECT,
    USER,
    add_compute_node,
    auth_ctx,
    boot_body,
    make_runtime,
    msg_call,
    op_call,
    seed_flavors,
)

ADMIN = auth_ctx(admin=True)


async def new_group(api: Api, policy: str = "anti-affinity", name: str = "g") -> dict[str, Any]:
    body = {"server_group": {"name": name, "policies": [policy]}}
    reply = await api.run("createServerGroup", body=body)
    assert reply.status == 200
    group: dict[str, Any] = reply.body["server_group"]
    return group


async def boot_in(api: Api, group: str, **hints: Any) -> dict[str, Any]:
    body = {**boot_body(), "os:scheduler_hints": {"group": group, **hints}}
    call = op_call(api.rt, "createServer", body=body)
    call.vars["image"] = {"id": body["server"]["imageRef"], "status": "active", "size": 1}
    reply = await nova_api.create_server(call)
    assert reply.status == 202
    row: dict[str, Any] = call.vars["instance"]
    return row


async def members(api: Api, gid: str) -> list[str]:
    shown = await api.run("showServerGroup", path_params={"server_group_id": gid})
    found: list[str] = shown.body["server_group"]["members"]
    return found


@arun
async def test_create_show_list_delete(api: Api) -> None:
    group = await new_group(api)
    # no microversion negotiated: every version's fields (2.64's policy and rules too)
    assert set(group) == {
        "id", "name", "policies", "members", "metadata", "project_id", "user_id", "policy", "rules"
    }  # fmt: skip
    assert (group["policy"], group["rules"]) == ("anti-affinity", {})
    assert (group["name"], group["policies"], group["members"], group["metadata"]) == (
        "g",
        ["anti-affinity"],
        [],
        {},
    )
    assert (group["project_id"], group["user_id"]) == (PROJECT, USER)
    path = {"server_group_id": group["id"]}
    assert (await api.run("showServerGroup", path_params=path)).body["server_group"] == group
    listed = (await api.run("listServerGroups")).body["server_groups"]
    assert [g["id"] for g in listed] == [group["id"]]

    # another project's: not found, as a missing one; nor listed (all_projects: admins only)
    other = auth_ctx(project=OTHER_PROJECT)
    missing = re.escape(f"Instance group {group['id']} could not be found.")
    with pytest.raises(NotFound, match=missing):
        await api.run("showServerGroup", path_params=path, auth=other)
    with pytest.raises(NotFound, match=missing):
        await api.run("deleteServerGroup", path_params=path, auth=other)
    assert (await api.run("listServerGroups", auth=other)).body["server_groups"] == []
    everyone = {"all_projects": "True"}
    ignored = await api.run("listServerGroups", query=everyone, auth=other)
    assert ignored.body["server_groups"] == []
    admin_all = await api.run("listServerGroups", query=everyone, auth=ADMIN)
    assert [g["id"] for g in admin_all.body["server_groups"]] == [group["id"]]

    assert (await api.run("deleteServerGroup", path_params=path)).status == 204
    with pytest.raises(NotFound, match=missing):
        await api.run("showServerGroup", path_params=path)


@arun
async def test_create_refuses_bad_policies(api: Api) -> None:
    for policies in (["colocate"], ["affinity", "anti-affinity"], [], "affinity"):
        body = {"server_group": {"name": "g", "policies": policies}}
        with pytest.raises(BadRequest):
            await api.run("createServerGroup", body=body)
    with pytest.raises(BadRequest):
        await api.run("createServerGroup", body={"server_group": {"policies": ["affinity"]}})
    assert (await api.run("listServerGroups")).body["server_groups"] == []


@arun
async def test_server_groups_quota(api: Api) -> None:
    limit = {"quota_set": {"server_groups": 2}}
    await api.run("updateQuotaSet", path_params={"project_id": PROJECT}, body=limit, auth=ADMIN)
    await new_group(api, name="a")
    await new_group(api, name="b")
    with pytest.raises(Forbidden, match="Quota exceeded for server_groups"):
        await new_group(api, name="c")
    detail = await api.run("showQuotaSetDetail", path_params={"project_id": PROJECT}, auth=ADMIN)
    assert detail.body["quota_set"]["server_groups"] == {"limit": 2, "in_use": 2, "reserved": 0}
    # another project has its own count
    await api.run(
        "createServerGroup",
        body={"server_group": {"name": "c", "policies": ["affinity"]}},
        auth=auth_ctx(project=OTHER_PROJECT),
    )


@arun
async def test_a_server_joins_with_the_hint_and_leaves_when_deleted(
    api: Api, tmp_path: Path
) -> None:
    await seed_flavors(api.store)
    group = await new_group(api)
    row = await boot_in(api, group["id"])
    assert row["server_group"] == group["id"]
    assert await members(api, group["id"]) == [row["id"]]
    call = op_call(api.rt, "deleteServer", path_params={"server_id": row["id"]})
    assert (await nova_delete.delete_server(call)).status == 204
    assert await members(api, group["id"]) == []
    # deleted on its host: the conductor marks it deleted (delete-vm's last step)
    hosted = await api.set(await boot_in(api, group["id"]), vm_state="active", host="compute-1")
    assert await members(api, group["id"]) == [hosted["id"]]
    rt = make_runtime(api.info, "nova-conductor", store=api.store, data_dir=tmp_path)
    gone = {"instance_uuid": hosted["id"], "updates": {"vm_state": "deleted"}}
    await conductor.instance_update(msg_call(rt, "instance_update", gone))
    assert await members(api, group["id"]) == []


@arun
async def test_the_hint_names_a_group_the_caller_sees_which_has_room(api: Api) -> None:
    await seed_flavors(api.store)
    unknown = "44444444-4444-4444-8444-444444444444"
    with pytest.raises(BadRequest, match=f"Instance group {unknown} could not be found."):
        await boot_in(api, unknown)
    with pytest.raises(BadRequest, match="is not a 'uuid'"):
        await boot_in(api, "not-a-uuid")
    theirs = await api.run(
        "createServerGroup",
        body={"server_group": {"name": "t", "policies": ["affinity"]}},
        auth=auth_ctx(project=OTHER_PROJECT),
    )
    with pytest.raises(BadRequest, match="could not be found"):
        await boot_in(api, theirs.body["server_group"]["id"])
    limit = {"quota_set": {"server_group_members": 1}}
    await api.run("updateQuotaSet", path_params={"project_id": PROJECT}, body=limit, auth=ADMIN)
    group = await new_group(api)
    first = await boot_in(api, group["id"])
    with pytest.raises(Forbidden, match="Quota exceeded, too many servers in group"):
        await boot_in(api, group["id"])
    assert await members(api, group["id"]) == [first["id"]]
    assert len(await api.store.list("instances", {"project_id": PROJECT})) == 1


async def schedule(api: Api, row: dict[str, Any], tmp_path: Path) -> str:
    rt = make_runtime(api.info, "nova-scheduler", store=api.store, data_dir=tmp_path)
    call = msg_call(
        rt,
        "schedule_and_build_instances",
        nova_api.schedule_payload(rt.info, row),
    )
    await scheduler.schedule_and_build(call)
    return str(call.vars["host"])


@arun
async def test_the_scheduler_keeps_the_group_policy(api: Api, tmp_path: Path) -> None:
    await seed_flavors(api.store)
    for host in ("compute-1", "compute-2"):
        await add_compute_node(api.store, host)
    apart = await new_group(api, "anti-affinity", "apart")
    first = await schedule(api, await boot_in(api, apart["id"]), tmp_path)
    second = await schedule(api, await boot_in(api, apart["id"]), tmp_path)
    assert {first, second} == {"compute-1", "compute-2"}
    # a third member has no host left: No valid host, as for any unplaceable server
    third = await boot_in(api, apart["id"])
    with pytest.raises(NoValidHost, match="No valid host was found") as caught:
        await schedule(api, third, tmp_path)
    assert caught.value.eliminated["ServerGroupAntiAffinityFilter"] == 2

    together = await new_group(api, "affinity", "together")
    hosts = [await schedule(api, await boot_in(api, together["id"]), tmp_path) for _ in range(3)]
    assert len(set(hosts)) == 1
