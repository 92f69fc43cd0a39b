from __future__ import annotations

import copy
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime import registry
from specstack_runtime.behaviours import identity
from specstack_runtime.context import AuthContext
from specstack_runtime.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from specstack_runtime.stackinfo import StackInfo
from tests.aio import arun
from tests.clock import FakeClock
from tests.runtime.fakes import Stack, ir_json, openapi

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def password_auth(
    user: str, password: str, project: str | None = "admin", **user_ref: Any
) -> dict[str, Any]:
    ref = user_ref or {"name": user, "domain": {"name": "Default"}}
    auth: dict[str, Any] = {
        "identity": {"methods": ["password"], "password": {"user": {**ref, "password": password}}}
    }
    if project is not None:
        auth["scope"] = {"project": {"name": project, "domain": {"name": "Default"}}}
    return {"auth": auth}


async def issue(stack: Stack, body: Any, **kw: Any) -> tuple[str, dict[str, Any]]:
    reply = await stack.invoke("identity", "issueToken", body=body, **kw)
    assert reply.status == 201
    return reply.headers["X-Subject-Token"], reply.body


async def started(tmp_path: Path, **config: Any) -> tuple[Stack, AuthContext, AuthContext]:
    stack = await Stack(tmp_path, **config).start()
    return stack, await stack.login(), await stack.login("demo", project="demo")


def test_every_identity_operation_is_served() -> None:
    """By the behaviour the spec names, or by the resource engine (spec/resources)."""
    ops = [
        op["operationId"]
        for item in openapi("identity")["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    ]
    assert len(ops) == 36
    handlers = {
        h["trigger"]: h for h in json.loads(ir_json())["handlers"] if h["component"] == "keystone"
    }
    engine = {"resource.serve", "resource.query"}
    for op in ops:
        behaviour = handlers[op]["behaviour"]
        assert registry.get(behaviour) is not None, op
        if behaviour not in engine:
            assert behaviour == "identity." + re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()
    served = sorted(op for op in ops if handlers[op]["behaviour"] in engine)
    assert "createProject" in served and "assignProjectUserRole" in served
    for extra in ("identity.bootstrap", "identity.token_context", "identity.issue_service_token"):
        assert registry.get(extra) is not None


# -- versions -------------------------------------------------------------------------


@arun
async def test_version_documents(tmp_path: Path) -> None:
    stack = await Stack(tmp_path).start()
    base = stack.info.endpoint("identity", stack.config)
    root = await stack.invoke("identity", "getIdentityVersions")
    assert root.status == 300
    (v3,) = root.body["versions"]["values"]
    assert v3["id"] == "v3.14" and v3["status"] == "stable"
    assert {"rel": "self", "href": base + "/v3/"} in v3["links"]
    assert v3["media-types"][0]["base"] == "application/json"
    assert root.headers["Location"] == base + "/v3/"
    one = await stack.invoke("identity", "getIdentityV3")
    assert one.status == 200 and one.body["version"] == v3


# -- tokens ---------------------------------------------------------------------------


@arun
async def test_issue_project_token_like_the_cli(tmp_path: Path) -> None:
    stack = await Stack(tmp_path, token_ttl_s=600).start()
    token, body = await issue(stack, password_auth("admin", "admin"))
    assert len(token) >= 32
    t = body["token"]
    assert t["methods"] == ["password"]
    assert HEX32.match(t["user"]["id"]) and HEX32.match(t["project"]["id"])
    assert t["user"]["name"] == "admin" and t["user"]["domain"] == {
        "id": "default",
        "name": "Default",
    }
    assert t["project"]["name"] == "admin"
    assert t["project"]["domain"] == {"id": "default", "name": "Default"}
    assert {r["name"] for r in t["roles"]} == {"admin", "member", "reader"}
    issued = datetime.fromisoformat(t["issued_at"])
    expires = datetime.fromisoformat(t["expires_at"])
    assert (expires - issued).total_seconds() == 600
    assert len(t["audit_ids"]) == 1
    # The token itself is never stored.
    rows = await stack.keystone.require_store().list("tokens")
    assert token not in json.dumps(rows)


@arun
async def test_catalog_comes_from_the_spec_with_the_project_id(tmp_path: Path) -> None:
    stack = await Stack(tmp_path).start()
    _, body = await issue(stack, password_auth("admin", "admin"))
    pid = body["token"]["project"]["id"]
    catalog = {e["type"]: e for e in body["token"]["catalog"]}
    expected = {
        c["catalog"]["type"]
        for c in stack.info.components.values()
        if c.get("catalog") and c.get("api")
    }
    assert set(catalog) == expected
    assert {"identity", "compute", "image", "network", "block-storage", "object-store"} <= set(
        catalog
    )
    for entry in catalog.values():
        assert {e["interface"] for e in entry["endpoints"]} == {"public", "internal", "admin"}
        for ep in entry["endpoints"]:
            assert ep["region"] == ep["region_id"] == "RegionOne"
    url = {t: e["endpoints"][0]["url"] for t, e in catalog.items()}
    info, cfg = stack.info, stack.config
    assert url["identity"] == info.endpoint("identity", cfg) + "/v3"
    assert url["object-store"] == info.endpoint("object-store", cfg) + f"/v1/AUTH_{pid}"
    assert url["block-storage"].endswith(f"/v3/{pid}")
    assert url["compute"].endswith("/v2.1")


@arun
async def test_user_by_id_project_by_id_and_unscoped(tmp_path: Path) -> None:
    stack, admin, _ = await started(tmp_path)
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"id": admin.user_id, "password": "admin"}},
            },
            "scope": {"project": {"id": admin.project_id}},
        }
    }
    _, scoped = await issue(stack, body)
    assert scoped["token"]["project"]["id"] == admin.project_id
    _, unscoped = await issue(stack, password_auth("admin", "admin", project=None))
    assert "project" not in unscoped["token"] and "roles" not in unscoped["token"]
    assert unscoped["token"]["catalog"] == []
    body["auth"]["scope"] = "unscoped"
    _, explicit = await issue(stack, body)
    assert "project" not in explicit["token"]
    _, nocatalog = await issue(stack, password_auth("admin", "admin"), query={"nocatalog": ""})
    assert "catalog" not in nocatalog["token"]


@arun
async def test_rescoping_with_the_token_method(tmp_path: Path) -> None:
    stack = await Stack(tmp_path).start()
    unscoped, first = await issue(stack, password_auth("demo", "demo", project=None))
    body: dict[str, Any] = {
        "auth": {
            "identity": {"methods": ["token"], "token": {"id": unscoped}},
            "scope": {"project": {"name": "demo", "domain": {"id": "default"}}},
        }
    }
    _, scoped = await issue(stack, body)
    t = scoped["token"]
    assert t["project"]["name"] == "demo"
    assert t["methods"] == ["token", "password"]
    assert t["expires_at"] == first["token"]["expires_at"]
    assert t["audit_ids"][1] == first["token"]["audit_ids"][0]
    body["auth"]["identity"]["token"]["id"] = "not-a-token"
    with pytest.raises(Unauthorized):
        await issue(stack, body)


@arun
async def test_bad_credentials_are_401(tmp_path: Path) -> None:
    stack = await Stack(tmp_path).start()
    for body in (
        password_auth("admin", "wrong"),
        password_auth("nobody", "admin"),
        password_auth("admin", "admin", project="no-such-project"),
        password_auth("demo", "demo", project="admin"),  # no role there
        password_auth("admin", "admin", name="admin", domain={"name": "NoDomain"}),
        password_auth("admin", "admin", id="0" * 32),
        {"auth": {"identity": {"methods": ["totp"]}}},
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": "admin", "domain": {"id": "default"}, "password": "admin"}
                    },
                },
                "scope": {"domain": {"id": "default"}},
            }
        },
    ):
        with pytest.raises(Unauthorized):
            await stack.invoke("identity", "issueToken", body=body)


@arun
async def test_malformed_auth_requests_are_400(tmp_path: Path) -> None:
    stack = await Stack(tmp_path).start()
    body: dict[str, Any] | None
    for body in (
        None,
        {},
        {"auth": {}},
        {"auth": {"identity": {"methods": []}}},
        {"auth": {"identity": {"methods": ["password"]}}},
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "admin", "password": "admin"}},
                }
            }
        },
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "admin", "domain": {}, "password": "x"}},
                }
            }
        },
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "admin", "domain": {"name": "Default"}}},
                }
            }
        },
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": "a\ud800", "domain": {"name": "Default"}, "password": "x"}
                    },
                }
            }
        },
        {"auth": {"identity": {"methods": ["token"], "token": {}}}},
        {
            **password_auth("admin", "admin"),
            "auth": {
                **password_auth("admin", "admin")["auth"],
                "scope": {"project": {"id": "x"}, "domain": {"id": "default"}},
            },
        },
        {
            **password_auth("admin", "admin"),
            "auth": {
                **password_auth("admin", "admin")["auth"],
                "scope": {"project": {"name": "admin"}},
            },
        },
    ):
        with pytest.raises(BadRequest):
            await stack.invoke("identity", "issueToken", body=body)


@arun
async def test_disabled_user_cannot_authenticate(tmp_path: Path) -> None:
    stack, admin, _ = await started(tmp_path)
    await stack.invoke(
        "identity",
        "createUser",
        auth=admin,
        body={"user": {"name": "off", "password": "pw", "enabled": False}},
    )
    with pytest.raises(Unauthorized):
        await stack.invoke("identity", "issueToken", body=password_auth("off", "pw", project=None))


@arun
async def test_validate_check_and_revoke(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    hdr = {"X-Subject-Token": demo.token}
    reply = await stack.invoke("identity", "validateToken", auth=admin, headers=hdr)
    assert reply.headers["X-Subject-Token"] == demo.token
    assert reply.body["token"]["user"]["name"] == "demo"
    assert reply.body["token"]["project"]["name"] == "demo"
    assert (await stack.invoke("identity", "checkToken", auth=admin, headers=hdr)).status == 200
    # The user may check its own token, but not somebody else's.
    assert (await stack.invoke("identity", "validateToken", auth=demo, headers=hdr)).status == 200
    with pytest.raises(Forbidden):
        await stack.invoke(
            "identity", "validateToken", auth=demo, headers={"X-Subject-Token": admin.token}
        )
    with pytest.raises(Forbidden):
        await stack.invoke(
            "identity", "revokeToken", auth=demo, headers={"X-Subject-Token": admin.token}
        )
    # Headers are case-insensitive; the header is required; the caller must be authenticated.
    assert (
        await stack.invoke(
            "identity", "checkToken", auth=admin, headers={"x-subject-token": demo.token}
        )
    ).status == 200
    with pytest.raises(BadRequest):
        await stack.invoke("identity", "validateToken", auth=admin)
    with pytest.raises(Unauthorized):
        await stack.invoke("identity", "validateToken", headers=hdr)
    with pytest.raises(NotFound):
        await stack.invoke(
            "identity", "validateToken", auth=admin, headers={"X-Subject-Token": "nope"}
        )
    # A user revokes its own token: 204, then 404 everywhere.
    assert (await stack.invoke("identity", "revokeToken", auth=demo, headers=hdr)).status == 204
    for op in ("validateToken", "checkToken", "revokeToken"):
        with pytest.raises(NotFound):
            await stack.invoke("identity", op, auth=admin, headers=hdr)
    with pytest.raises(Unauthorized):
        await identity.token_context(stack.keystone, demo.token)
    body = (
        await stack.invoke(
            "identity",
            "validateToken",
            auth=admin,
            headers={"X-Subject-Token": admin.token},
            query={"nocatalog": "1"},
        )
    ).body
    assert "catalog" not in body["token"]


@arun
async def test_expired_tokens_are_404_unless_allowed(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    store = stack.keystone.require_store()
    (row,) = [r for r in await store.list("tokens", {"user_id": demo.user_id})]
    await store.update("tokens", row["id"], {"expires_ts": time.time() - 5})
    hdr = {"X-Subject-Token": demo.token}
    with pytest.raises(NotFound):
        await stack.invoke("identity", "validateToken", auth=admin, headers=hdr)
    reply = await stack.invoke(
        "identity", "validateToken", auth=admin, headers=hdr, query={"allow_expired": "true"}
    )
    assert reply.status == 200
    with pytest.raises(Unauthorized):
        await identity.token_context(stack.keystone, demo.token)


@arun
async def test_real_expiry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = await Stack(tmp_path, token_ttl_s=1).start()
    clock = FakeClock()
    # The identity behaviours read the time module; they see the test's clock.
    monkeypatch.setattr(identity, "time", clock)
    token, _ = await issue(stack, password_auth("admin", "admin"))
    assert (await identity.token_context(stack.keystone, token)).user_name == "admin"
    clock.advance(0.9)
    assert (await identity.token_context(stack.keystone, token)).user_name == "admin"
    clock.advance(0.2)
    with pytest.raises(Unauthorized):
        await identity.token_context(stack.keystone, token)


@arun
async def test_losing_the_role_or_the_user_invalidates_tokens(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    member = (
        await stack.invoke("identity", "listRoles", auth=admin, query={"name": "member"})
    ).body["roles"][0]
    params = {"project_id": demo.project_id or "", "user_id": demo.user_id, "role_id": member["id"]}
    assert (
        await stack.invoke("identity", "unassignProjectUserRole", auth=admin, path_params=params)
    ).status == 204
    with pytest.raises(Unauthorized):
        await identity.token_context(stack.keystone, demo.token)
    with pytest.raises(Unauthorized):
        await stack.invoke(
            "identity", "issueToken", body=password_auth("demo", "demo", project="demo")
        )
    await stack.invoke("identity", "assignProjectUserRole", auth=admin, path_params=params)
    again = await stack.login("demo", project="demo")
    await stack.invoke("identity", "deleteUser", auth=admin, path_params={"user_id": demo.user_id})
    with pytest.raises(Unauthorized):
        await identity.token_context(stack.keystone, again.token)


@arun
async def test_auth_catalog_and_projects(tmp_path: Path) -> None:
    stack, _admin, demo = await started(tmp_path)
    reply = await stack.invoke("identity", "getAuthCatalog", auth=demo)
    assert any(e["type"] == "image" for e in reply.body["catalog"])
    unscoped = await identity.token_context(
        stack.keystone, (await issue(stack, password_auth("demo", "demo", None)))[0]
    )
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "getAuthCatalog", auth=unscoped)
    projects = (await stack.invoke("identity", "getAuthProjects", auth=unscoped)).body["projects"]
    assert [p["name"] for p in projects] == ["demo"]


# -- bootstrap ------------------------------------------------------------------------


async def _snapshot(stack: Stack) -> dict[str, list[str]]:
    store = stack.keystone.require_store()
    return {
        t: sorted(d["id"] for d in await store.list(t))
        for t in ("domains", "projects", "users", "roles", "role_assignments")
    }


@arun
async def test_bootstrap_is_idempotent_and_spec_driven(tmp_path: Path) -> None:
    stack = await Stack(tmp_path).start()
    first = await _snapshot(stack)
    await identity.bootstrap(stack.keystone)
    assert await _snapshot(stack) == first
    store = stack.keystone.require_store()
    users = {u["name"] for u in await store.list("users")}
    services = {
        c["project"]
        for c in stack.info.components.values()
        if c["kind"] in ("api", "worker", "agent") and c["project"] != "keystone"
    }
    assert services == {"nova", "glance", "swift", "neutron", "cinder"}
    assert users == {"admin", "demo"} | services
    assert {r["name"] for r in await store.list("roles")} == {
        "admin",
        "member",
        "reader",
        "service",
    }
    assert {p["name"] for p in await store.list("projects")} == {"admin", "service", "demo"}
    (domain,) = await store.list("domains")
    assert (domain["id"], domain["name"]) == ("default", "Default")
    for user in await store.list("users"):
        assert HEX32.match(user["id"])
        assert user["password_hash"].startswith("$2b$04$")  # bcrypt, rounds from the config
    for name in services:
        ctx = await stack.login(name, "x", "service")
        assert set(ctx.roles) >= {"admin", "service"}
    demo = await stack.login("demo", project="demo")
    assert demo.roles == ("member", "reader") and not demo.is_admin


@arun
async def test_bootstrap_follows_the_spec_and_the_configured_passwords(tmp_path: Path) -> None:
    ir = json.loads(ir_json())
    extra = copy.deepcopy(next(c for c in ir["components"] if c["name"] == "glance-api"))
    extra.update(
        name="heat-api", project="heat", api=None, catalog=None, database=None, kind="worker"
    )
    ir["components"].append(extra)
    stack = await Stack(tmp_path, info=StackInfo(ir)).start()
    ctx = await stack.login("heat", "x", "service")
    assert ctx.user_name == "heat"
    stack.config.admin_password = "changed"
    await identity.bootstrap(stack.keystone)
    with pytest.raises(Unauthorized):
        await stack.login("admin", "admin")
    assert (await stack.login("admin", "changed")).is_admin


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
    with pytest.raises(BadRequest):
        await stack.invoke(
            "identity", "listRoleAssignments", auth=admin, query={"include_subtree": "true"}
        )
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
async def test_services_and_endpoints_are_the_spec_catalog(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    services = (await stack.invoke("identity", "listServices", auth=admin)).body["services"]
    catalog = stack.info.catalog(stack.config, "p")
    assert [(s["id"], s["type"], s["name"]) for s in services] == [
        (e["id"], e["type"], e["name"]) for e in catalog
    ]
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
    with pytest.raises(BadRequest):
        await stack.invoke(
            "identity",
            "createEndpoint",
            auth=admin,
            body={"endpoint": {"interface": "public", "service_id": "nope", "url": "http://x"}},
        )
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "listServices", auth=demo)


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
