"""Keystone's resources through the stack: projects, users, roles and assignments,
the service catalog and domains, with their policy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from specstack_runtime.behaviours import identity, identity_bootstrap
from specstack_runtime.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from tests.aio import arun
from tests.runtime.test_identity import HEX32, issue, password_auth, started

# -- projects, users, roles, domains ---------------------------------------------------


@arun
async def test_project_crud_and_policy(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    reply = await stack.invoke(
        "identity",
        "createProject",
        auth=admin,
        body={"project": {"name": "p1", "description": "d", "tags": ["a", "b"]}},
    )
    assert reply.status == 201
    project = reply.body["project"]
    assert (
        HEX32.match(project["id"])
        and project["domain_id"] == "default"
        and project["parent_id"] == "default"
    )
    pid = project["id"]
    with pytest.raises(Conflict):
        await stack.invoke(
            "identity", "createProject", auth=admin, body={"project": {"name": "p1"}}
        )
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "createProject", auth=demo, body={"project": {"name": "p2"}})
    with pytest.raises(BadRequest):
        await stack.invoke(
            "identity",
            "createProject",
            auth=admin,
            body={"project": {"name": "p3", "domain_id": "nope"}},
        )
    with pytest.raises(BadRequest):
        await stack.invoke("identity", "createProject", auth=admin, body={"project": "p3"})
    # Show: admin, or a token scoped to the project.
    assert (
        await stack.invoke(
            "identity", "showProject", auth=demo, path_params={"project_id": demo.project_id or ""}
        )
    ).status == 200
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "showProject", auth=demo, path_params={"project_id": pid})
    with pytest.raises(NotFound):
        await stack.invoke(
            "identity", "showProject", auth=admin, path_params={"project_id": "f" * 32}
        )
    # List with filters and a limit.
    listed = (
        await stack.invoke("identity", "listProjects", auth=admin, query={"name": "p1"})
    ).body["projects"]
    assert [p["id"] for p in listed] == [pid]
    page = (await stack.invoke("identity", "listProjects", auth=admin, query={"limit": "2"})).body
    assert len(page["projects"]) == 2 and page["truncated"] is True
    rest = (
        await stack.invoke(
            "identity", "listProjects", auth=admin, query={"marker": page["projects"][-1]["id"]}
        )
    ).body
    assert len(page["projects"]) + len(rest["projects"]) == 4
    with pytest.raises(BadRequest):
        await stack.invoke("identity", "listProjects", auth=admin, query={"limit": "many"})
    with pytest.raises(BadRequest):
        await stack.invoke("identity", "listProjects", auth=admin, query={"enabled": "maybe"})
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "listProjects", auth=demo)
    # Update and delete.
    updated = await stack.invoke(
        "identity",
        "updateProject",
        auth=admin,
        path_params={"project_id": pid},
        body={"project": {"name": "p1b", "enabled": False}},
    )
    assert updated.body["project"]["name"] == "p1b" and updated.body["project"]["enabled"] is False
    with pytest.raises(Conflict):
        await stack.invoke(
            "identity",
            "updateProject",
            auth=admin,
            path_params={"project_id": pid},
            body={"project": {"name": "demo"}},
        )
    with pytest.raises(BadRequest):
        await stack.invoke(
            "identity",
            "updateProject",
            auth=admin,
            path_params={"project_id": pid},
            body={"project": {"domain_id": "other"}},
        )
    assert (
        await stack.invoke("identity", "deleteProject", auth=admin, path_params={"project_id": pid})
    ).status == 204
    with pytest.raises(NotFound):
        await stack.invoke("identity", "deleteProject", auth=admin, path_params={"project_id": pid})


@arun
async def test_user_crud_and_policy(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    reply = await stack.invoke(
        "identity",
        "createUser",
        auth=admin,
        body={"user": {"name": "alice", "password": "s3cret", "description": "A"}},
    )
    assert reply.status == 201
    user = reply.body["user"]
    assert (
        HEX32.match(user["id"]) and "s3cret" not in json.dumps(user) and "password_hash" not in user
    )
    with pytest.raises(Conflict):
        await stack.invoke("identity", "createUser", auth=admin, body={"user": {"name": "alice"}})
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "createUser", auth=demo, body={"user": {"name": "bob"}})
    with pytest.raises(BadRequest):
        await stack.invoke(
            "identity",
            "createUser",
            auth=admin,
            body={"user": {"name": "bob", "default_project_id": "x"}},
        )
    # Alice can authenticate (unscoped: no role anywhere yet) and see herself, nobody else.
    token, _ = await issue(stack, password_auth("alice", "s3cret", project=None))
    alice = await identity.token_context(stack.keystone, token)
    assert (
        await stack.invoke("identity", "showUser", auth=alice, path_params={"user_id": user["id"]})
    ).status == 200
    with pytest.raises(Forbidden):
        await stack.invoke(
            "identity", "showUser", auth=alice, path_params={"user_id": admin.user_id}
        )
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "listUsers", auth=demo)
    names = [
        u["name"]
        for u in (
            await stack.invoke("identity", "listUsers", auth=admin, query={"name": "alice"})
        ).body["users"]
    ]
    assert names == ["alice"]
    assert (await stack.invoke("identity", "listUsers", auth=admin, query={"idp_id": "x"})).body[
        "users"
    ] == []
    projects = await stack.invoke(
        "identity", "listUserProjects", auth=demo, path_params={"user_id": demo.user_id}
    )
    assert [p["name"] for p in projects.body["projects"]] == ["demo"]
    assert (
        await stack.invoke(
            "identity", "deleteUser", auth=admin, path_params={"user_id": user["id"]}
        )
    ).status == 204
    with pytest.raises(NotFound):
        await stack.invoke("identity", "showUser", auth=admin, path_params={"user_id": user["id"]})
    with pytest.raises(Unauthorized):
        await identity.token_context(stack.keystone, token)


@arun
async def test_roles_and_assignments(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    role = (
        await stack.invoke("identity", "createRole", auth=admin, body={"role": {"name": "auditor"}})
    ).body["role"]
    with pytest.raises(Conflict):
        await stack.invoke("identity", "createRole", auth=admin, body={"role": {"name": "auditor"}})
    assert (
        await stack.invoke("identity", "showRole", auth=admin, path_params={"role_id": role["id"]})
    ).body["role"]["name"] == "auditor"
    params = {"project_id": demo.project_id or "", "user_id": demo.user_id, "role_id": role["id"]}
    with pytest.raises(NotFound):
        await stack.invoke("identity", "checkProjectUserRole", auth=admin, path_params=params)
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "assignProjectUserRole", auth=demo, path_params=params)
    for _ in range(2):  # granting twice is fine
        assert (
            await stack.invoke("identity", "assignProjectUserRole", auth=admin, path_params=params)
        ).status == 204
    assert (
        await stack.invoke("identity", "checkProjectUserRole", auth=demo, path_params=params)
    ).status == 204
    with pytest.raises(NotFound):
        await stack.invoke(
            "identity",
            "assignProjectUserRole",
            auth=admin,
            path_params={**params, "role_id": "nope"},
        )
    roles = await stack.invoke(
        "identity",
        "listProjectUserRoles",
        auth=admin,
        path_params={"project_id": params["project_id"], "user_id": demo.user_id},
    )
    assert {r["name"] for r in roles.body["roles"]} == {"member", "auditor"}
    # Role assignments with OpenStack's filters.
    q = {"user.id": demo.user_id, "scope.project.id": demo.project_id}
    listed = (await stack.invoke("identity", "listRoleAssignments", auth=admin, query=q)).body[
        "role_assignments"
    ]
    assert {a["role"]["id"] for a in listed} == {r["id"] for r in roles.body["roles"]}
    assert all(
        a["scope"]["project"]["id"] == demo.project_id and a["user"]["id"] == demo.user_id
        for a in listed
    )
    assert all(a["links"]["assignment"].endswith(f"/roles/{a['role']['id']}") for a in listed)
    named = (
        await stack.invoke(
            "identity", "listRoleAssignments", auth=admin, query={**q, "include_names": "true"}
        )
    ).body
    assert {a["role"]["name"] for a in named["role_assignments"]} == {"member", "auditor"}
    assert named["role_assignments"][0]["user"]["name"] == "demo"
    effective = (
        await stack.invoke(
            "identity",
            "listRoleAssignments",
            auth=admin,
            query={**q, "effective": "", "include_names": "1"},
        )
    ).body
    assert {a["role"]["name"] for a in effective["role_assignments"]} == {
        "member",
        "reader",
        "auditor",
    }
    own = await stack.invoke(
        "identity", "listRoleAssignments", auth=demo, query={"user.id": demo.user_id}
    )
    assert len(own.body["role_assignments"]) == 2
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "listRoleAssignments", auth=demo)
    for query, message in (
        ({"include_subtree": "true"}, "scope.project.id must be given when include_subtree is."),
        ({"user.id": "u", "group.id": "g"}, "Specify only one of user.id and group.id."),
        (
            {"scope.project.id": "p", "scope.system": "all"},
            "Specify only one of scope.project.id, scope.domain.id and scope.system.",
        ),
    ):
        with pytest.raises(BadRequest) as refused:
            await stack.invoke("identity", "listRoleAssignments", auth=admin, query=query)
        assert refused.value.message == message
    assert (
        await stack.invoke("identity", "listRoleAssignments", auth=admin, query={"group.id": "g"})
    ).body["role_assignments"] == []
    # Unassign, then delete the role with what is left of it.
    assert (
        await stack.invoke("identity", "unassignProjectUserRole", auth=admin, path_params=params)
    ).status == 204
    with pytest.raises(NotFound):
        await stack.invoke("identity", "unassignProjectUserRole", auth=admin, path_params=params)
    await stack.invoke("identity", "assignProjectUserRole", auth=admin, path_params=params)
    assert (
        await stack.invoke(
            "identity", "deleteRole", auth=admin, path_params={"role_id": role["id"]}
        )
    ).status == 204
    assert (
        await stack.keystone.require_store().list("role_assignments", {"role_id": role["id"]}) == []
    )
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "listRoles", auth=demo)


@arun
async def test_the_role_assignment_report_follows_subtrees_and_implied_roles(
    tmp_path: Path,
) -> None:
    stack, admin, demo = await started(tmp_path)
    child = (
        await stack.invoke(
            "identity",
            "createProject",
            auth=admin,
            body={"project": {"name": "child", "parent_id": demo.project_id}},
        )
    ).body["project"]
    roles = (await stack.invoke("identity", "listRoles", auth=admin)).body["roles"]
    role_id = {r["name"]: r["id"] for r in roles}
    grant = {"project_id": child["id"], "user_id": demo.user_id, "role_id": role_id["admin"]}
    await stack.invoke("identity", "assignProjectUserRole", auth=admin, path_params=grant)

    async def report(**query: str) -> list[tuple[str, str, str | None]]:
        q = {"user.id": demo.user_id, **query}
        body = (await stack.invoke("identity", "listRoleAssignments", auth=demo, query=q)).body
        assert body["links"]["self"].endswith("/v3/role_assignments")
        return sorted(
            (a["scope"]["project"]["id"], a["role"]["id"], a["links"].get("prior_role"))
            for a in body["role_assignments"]
        )

    demo_pid = demo.project_id or ""
    assert await report(**{"scope.project.id": demo_pid}) == [(demo_pid, role_id["member"], None)]
    assert await report(**{"scope.project.id": demo_pid, "include_subtree": "1"}) == sorted(
        [(demo_pid, role_id["member"], None), (child["id"], role_id["admin"], None)]
    )
    effective = await report(**{"scope.project.id": child["id"], "effective": ""})
    base = str(effective[0][2] or "").rsplit("/v3/", 1)[0]
    granted = f"{base}/v3/roles/{role_id['admin']}"  # the grant's role: the implied ones' prior
    assert base.startswith("http") and effective == sorted(
        [
            (child["id"], role_id["admin"], None),
            (child["id"], role_id["member"], granted),
            (child["id"], role_id["reader"], granted),
        ]
    )
    assert await report(**{"role.id": role_id["reader"], "effective": "1"}) == sorted(
        [
            (demo_pid, role_id["reader"], f"{base}/v3/roles/{role_id['member']}"),
            (child["id"], role_id["reader"], granted),
        ]
    )
    assert await report(**{"role.id": role_id["reader"], "effective": "0"}) == []
    with pytest.raises(Forbidden):  # another user's assignments are the administrators'
        await stack.invoke(
            "identity", "listRoleAssignments", auth=demo, query={"user.id": admin.user_id}
        )


@arun
async def test_services_and_endpoints_are_the_spec_catalog(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    services = (await stack.invoke("identity", "listServices", auth=admin)).body["services"]
    catalog = stack.info.catalog(stack.config, "p")
    assert sorted((s["id"], s["type"], s["name"]) for s in services) == sorted(
        (e["id"], e["type"], e["name"]) for e in catalog
    )
    image = (
        await stack.invoke("identity", "listServices", auth=admin, query={"type": "image"})
    ).body["services"]
    assert [s["name"] for s in image] == ["glance"]
    shown = await stack.invoke(
        "identity", "showService", auth=admin, path_params={"service_id": image[0]["id"]}
    )
    assert shown.body["service"] == image[0]
    endpoints = (
        await stack.invoke("identity", "listEndpoints", auth=admin, query={"interface": "public"})
    ).body["endpoints"]
    assert len(endpoints) == len(services)
    swift = next(e for e in endpoints if e["service_id"] == "swift-proxy")
    assert swift["url"].endswith("/v1/AUTH_%(project_id)s")
    assert (
        await stack.invoke(
            "identity", "showEndpoint", auth=admin, path_params={"endpoint_id": swift["id"]}
        )
    ).body["endpoint"] == swift
    with pytest.raises(NotFound):
        await stack.invoke(
            "identity", "showEndpoint", auth=admin, path_params={"endpoint_id": "nope"}
        )
    with pytest.raises(Forbidden, match="spec"):
        await stack.invoke(
            "identity", "createService", auth=admin, body={"service": {"type": "dns"}}
        )
    with pytest.raises(BadRequest, match="could not find service nope"):
        await stack.invoke(
            "identity",
            "createEndpoint",
            auth=admin,
            body={"endpoint": {"interface": "public", "service_id": "nope", "url": "http://x"}},
        )
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "listServices", auth=demo)
    # start-up makes the tables the spec's catalog again: a row it lacks goes, a changed one
    # comes back
    store = stack.keystone.require_store()
    await store.create("services", {"id": "stale", "type": "dns", "name": "designate"})
    await store.update("endpoints", swift["id"], {"url": "http://elsewhere/"})
    await identity_bootstrap.bootstrap(stack.keystone)
    assert await store.get("services", "stale") is None
    assert (await store.require("endpoints", swift["id"]))["url"] == swift["url"]


@arun
async def test_domains(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    created = (
        await stack.invoke(
            "identity", "createDomain", auth=admin, body={"domain": {"name": "Other"}}
        )
    ).body["domain"]
    assert HEX32.match(created["id"]) and created["enabled"] is True
    with pytest.raises(Conflict):
        await stack.invoke(
            "identity", "createDomain", auth=admin, body={"domain": {"name": "Other"}}
        )
    names = {
        d["name"]
        for d in (await stack.invoke("identity", "listDomains", auth=admin)).body["domains"]
    }
    assert names == {"Default", "Other"}
    assert (
        await stack.invoke(
            "identity", "showDomain", auth=demo, path_params={"domain_id": "default"}
        )
    ).status == 200
    with pytest.raises(Forbidden):
        await stack.invoke(
            "identity", "showDomain", auth=demo, path_params={"domain_id": created["id"]}
        )
    with pytest.raises(NotFound):
        await stack.invoke("identity", "showDomain", auth=admin, path_params={"domain_id": "nope"})
    # A project and a user in the new domain; names only clash within a domain.
    project = await stack.invoke(
        "identity",
        "createProject",
        auth=admin,
        body={"project": {"name": "demo", "domain_id": created["id"]}},
    )
    assert project.body["project"]["domain_id"] == created["id"]
    await stack.invoke(
        "identity",
        "createUser",
        auth=admin,
        body={"user": {"name": "demo", "domain_id": created["id"], "password": "pw"}},
    )
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "demo", "domain": {"name": "Other"}, "password": "pw"}
                },
            }
        }
    }
    _, token = await issue(stack, body)
    assert token["token"]["user"]["domain"]["name"] == "Other"


@arun
async def test_a_token_past_the_allow_expired_window_is_404_and_pruned(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    store = stack.keystone.require_store()
    (row,) = await store.list("tokens", {"user_id": demo.user_id})
    await store.update("tokens", row["id"], {"expires_ts": time.time() - 2 * 24 * 3600 - 5})
    hdr = {"X-Subject-Token": demo.token}
    with pytest.raises(NotFound):  # keystone's window is two days, allow_expired or not
        query = {"allow_expired": "true"}
        await stack.invoke("identity", "validateToken", auth=admin, headers=hdr, query=query)
    stack.keystone.local.pop("identity.pruned", None)  # the user's next token prunes at once
    await stack.login("demo", project="demo")
    left = [r["id"] for r in await store.list("tokens", {"user_id": demo.user_id})]
    assert len(left) == 1 and row["id"] not in left
