"""Keystone through the stack: versions, tokens (issue, validate, revoke, expiry) and bootstrap."""

from __future__ import annotations

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
from specstack_runtime.errors import BadRequest, Forbidden, NotFound, Unauthorized
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
    assert len(ops) == 40
    handlers = {
        h["trigger"]: h for h in json.loads(ir_json())["handlers"] if h["component"] == "keystone"
    }
    engine = {"resource.serve", "resource.query"}
    for op in ops:
        behaviour = handlers[op]["behaviour"]
        assert registry.get(behaviour) is not None, op
        if behaviour == "documents.constant":  # the version documents, stated in the spec
            assert op in ("getIdentityVersions", "getIdentityV3"), op
        elif behaviour not in engine:
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
async def test_tokens_never_begin_with_a_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token beginning with "-" is an option to a command line (`openstack token revoke
    TOKEN`): every token begins with the spec's prefix (a fernet token's "gAAAAA"), then
    32 random bytes, whatever they encode to."""
    stack = await Stack(tmp_path).start()
    first, _ = await issue(stack, password_auth("admin", "admin"))
    rescope = {"auth": {"identity": {"methods": ["token"], "token": {"id": first}}}}
    tokens = [first] + [(await issue(stack, rescope))[0] for _ in range(20)]
    assert all(re.fullmatch(r"gAAAAA[A-Za-z0-9_-]{43}", t) for t in tokens), tokens
    assert len(set(tokens)) == len(tokens)
    admin = await stack.login()
    dashed = "-" + "x" * 42  # what secrets.token_urlsafe(32) may well give
    monkeypatch.setattr(identity.secrets, "token_urlsafe", lambda n=32: dashed)
    token, _ = await issue(stack, rescope)
    assert token == "gAAAAA" + dashed
    hdr = {"X-Subject-Token": token}
    assert (await stack.invoke("identity", "validateToken", auth=admin, headers=hdr)).status == 200


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
async def test_the_spec_refuses_what_this_keystone_does_not_serve(tmp_path: Path) -> None:
    stack, admin, _ = await started(tmp_path)
    unsupported = {"auth": {"identity": {"methods": ["totp"], "totp": {}}}}
    with pytest.raises(Unauthorized, match="unsupported method"):
        await stack.invoke("identity", "issueToken", body=unsupported)

    def scoped(scope: Any) -> dict[str, Any]:
        return {"auth": {**password_auth("admin", "admin", None)["auth"], "scope": scope}}

    with pytest.raises(Unauthorized, match=f"User {admin.user_id} has no access to the system"):
        await stack.invoke("identity", "issueToken", body=scoped({"system": {"all": True}}))
    with pytest.raises(NotFound, match="trusts are not supported"):
        await stack.invoke("identity", "issueToken", body=scoped({"OS-TRUST:trust": {"id": "t"}}))
    with pytest.raises(BadRequest, match="expected an object or 'unscoped'"):
        await stack.invoke("identity", "issueToken", body=scoped(["project"]))
    with pytest.raises(BadRequest, match="Specify only one scope"):
        await stack.invoke("identity", "issueToken", body=scoped({"system": {}, "domain": {}}))
    with pytest.raises(BadRequest, match=re.escape("field 'scope.project': expected an object")):
        await stack.invoke("identity", "issueToken", body=scoped({"project": "admin"}))
    with pytest.raises(BadRequest, match=re.escape("Expecting to find id or name in project.")):
        await stack.invoke("identity", "issueToken", body=scoped({"project": {}}))
    with pytest.raises(BadRequest, match=re.escape("Expecting to find domain in project")):
        await stack.invoke("identity", "issueToken", body=scoped({"project": {"name": "admin"}}))
    with pytest.raises(Unauthorized):  # the password is checked before the scope's shape
        await stack.invoke(
            "identity",
            "issueToken",
            body={"auth": {**password_auth("admin", "wrong", None)["auth"], "scope": 5}},
        )
    unscoped = await stack.invoke("identity", "issueToken", body=scoped("unscoped"))
    assert "project" not in unscoped.body["token"]


@arun
async def test_each_methods_part_of_the_request_is_checked_with_keystones_words(
    tmp_path: Path,
) -> None:
    stack, _, _ = await started(tmp_path)
    user = {"name": "demo", "domain": {"id": "default"}}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("Expecting to find id in token.", {"token": {"id": 7}}),
        ("Expecting to find user in password.", {"password": {"user": "demo"}}),
        ("Expecting to find password in user.", {"password": {"user": user}}),
        ("Expecting to find application_credential in identity.", {}),
        ("Expecting to find secret in application_credential.", {"application_credential": {}}),
        (
            "Expecting to find id or name in application_credential.",
            {"application_credential": {"secret": "s", "id": None}},
        ),
        (
            "Expecting to find user in application_credential (one named by name needs it).",
            {"application_credential": {"secret": "s", "name": "n"}},
        ),
        ("Expecting to find id or name in user.", {"password": {"user": {"password": "p"}}}),
        (
            "Expecting to find domain in user (a user named by name needs it).",
            {"password": {"user": {"name": "demo", "password": "p"}}},
        ),
    ]
    for message, part in cases:
        method = next(iter(part), "application_credential")
        body = {"auth": {"identity": {"methods": [method], **part}}}
        with pytest.raises(BadRequest, match=re.escape(message)):
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
    # the spec's cascade: the deleted user's tokens are forgotten
    assert await stack.keystone.require_store().list("tokens", {"user_id": demo.user_id}) == []


@arun
async def test_auth_catalog_and_projects(tmp_path: Path) -> None:
    stack, _admin, demo = await started(tmp_path)
    reply = await stack.invoke("identity", "getAuthCatalog", auth=demo)
    assert any(e["type"] == "image" for e in reply.body["catalog"])
    assert reply.body["catalog"] == stack.info.catalog(stack.config, str(demo.project_id))
    assert reply.body["links"]["self"].endswith("/v3/auth/catalog")
    unscoped = await identity.token_context(
        stack.keystone, (await issue(stack, password_auth("demo", "demo", None)))[0]
    )
    with pytest.raises(Forbidden):
        await stack.invoke("identity", "getAuthCatalog", auth=unscoped)
    projects = (await stack.invoke("identity", "getAuthProjects", auth=unscoped)).body["projects"]
    assert [p["name"] for p in projects] == ["demo"]
