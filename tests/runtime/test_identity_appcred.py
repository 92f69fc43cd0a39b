"""Keystone's application credentials through the stack: create (the secret shown once,
kept hashed; roles a subset of the creator's), list, show, delete, and the token method
`application_credential` (by id, by name and user; expiry and lost roles honoured)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from specstack_runtime.behaviours import identity
from specstack_runtime.context import AuthContext
from specstack_runtime.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from tests.aio import arun
from tests.runtime.fakes import Stack
from tests.runtime.test_identity import issue, started


def cred_auth(secret: str, **ref: Any) -> dict[str, Any]:
    method = {"application_credential": {**ref, "secret": secret}}
    return {"auth": {"identity": {"methods": ["application_credential"], **method}}}


async def create(stack: Stack, auth: AuthContext, **attrs: Any) -> dict[str, Any]:
    reply = await stack.invoke(
        "identity",
        "createApplicationCredential",
        auth=auth,
        path_params={"user_id": auth.user_id},
        body={"application_credential": attrs},
    )
    assert reply.status == 201
    cred: dict[str, Any] = reply.body["application_credential"]
    return cred


@arun
async def test_create_show_list_delete(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    cred = await create(stack, demo, name="monitoring", description="for the probe")
    assert cred["user_id"] == demo.user_id and cred["project_id"] == demo.project_id
    assert sorted(r["name"] for r in cred["roles"]) == sorted(demo.roles)
    assert cred["expires_at"] is None and cred["unrestricted"] is False
    assert len(cred["secret"]) >= 80  # 64 random bytes, URL-safe base64
    assert cred["links"]["self"].endswith(
        f"/v3/users/{demo.user_id}/application_credentials/{cred['id']}"
    )
    row = await stack.keystone.require_store().require("application_credentials", cred["id"])
    assert cred["secret"] not in str(row)
    # bcrypt reads 72 bytes of it (keystone hashes it the same way)
    assert bcrypt.checkpw(cred["secret"].encode()[:72], row["secret_hash"].encode())
    path = {"user_id": demo.user_id, "application_credential_id": cred["id"]}
    shown = (
        await stack.invoke("identity", "showApplicationCredential", auth=demo, path_params=path)
    ).body["application_credential"]
    assert "secret" not in shown and shown["name"] == "monitoring"
    listed = await stack.invoke(
        "identity",
        "listApplicationCredentials",
        auth=demo,
        path_params={"user_id": demo.user_id},
        query={"name": "monitoring"},
    )
    assert [c["id"] for c in listed.body["application_credentials"]] == [cred["id"]]
    assert "secret" not in listed.body["application_credentials"][0]
    with pytest.raises(Conflict, match="monitoring"):
        await create(stack, demo, name="monitoring")
    # another user's credentials: not for demo to see or make; the admin sees them
    with pytest.raises(Forbidden):
        await stack.invoke(
            "identity",
            "listApplicationCredentials",
            auth=demo,
            path_params={"user_id": admin.user_id},
        )
    with pytest.raises(Forbidden):
        await stack.invoke(
            "identity",
            "createApplicationCredential",
            auth=demo,
            path_params={"user_id": admin.user_id},
            body={"application_credential": {"name": "x"}},
        )
    with pytest.raises(NotFound, match="Could not find Application Credential"):
        await stack.invoke(
            "identity",
            "showApplicationCredential",
            auth=admin,
            path_params={"user_id": admin.user_id, "application_credential_id": cred["id"]},
        )
    assert (
        await stack.invoke("identity", "showApplicationCredential", auth=admin, path_params=path)
    ).status == 200
    assert (
        await stack.invoke("identity", "deleteApplicationCredential", auth=demo, path_params=path)
    ).status == 204
    with pytest.raises(NotFound):
        await stack.invoke("identity", "showApplicationCredential", auth=demo, path_params=path)


@arun
async def test_roles_and_expiry_are_checked_on_create(tmp_path: Path) -> None:
    stack, _, demo = await started(tmp_path)
    reader = await create(stack, demo, name="ro", roles=[{"name": "reader"}], secret="s3cret")
    assert [r["name"] for r in reader["roles"]] == ["reader"] and reader["secret"] == "s3cret"
    with pytest.raises(BadRequest, match="Could not find role assignment with role"):
        await create(stack, demo, name="escalate", roles=[{"name": "admin"}])
    with pytest.raises(NotFound, match="Could not find role: nope"):
        await create(stack, demo, name="typo", roles=[{"id": "nope"}])
    with pytest.raises(BadRequest, match="must not be before now"):
        await create(stack, demo, name="old", expires_at="2001-01-01T00:00:00")
    bad = "Invalid input for field 'expires_at': 'next tuesday' is not an ISO 8601 time."
    with pytest.raises(BadRequest, match=re.escape(bad)):
        await create(stack, demo, name="bad", expires_at="next tuesday")
    with pytest.raises(BadRequest, match="is not an ISO 8601 time"):  # beyond the calendar
        await create(stack, demo, name="far", expires_at="9999-12-31T23:59:59-01:00")
    names = [
        c["name"] for c in await stack.keystone.require_store().list("application_credentials")
    ]
    assert names == ["ro"]  # nothing refused was stored
    with pytest.raises(BadRequest):
        await create(stack, demo, description="no name")
    later = await create(stack, demo, name="later", expires_at="2099-05-01T12:00:00Z")
    assert later["expires_at"] == "2099-05-01T12:00:00.000000"


@arun
async def test_authenticating_with_a_credential(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    cred = await create(stack, demo, name="ci", roles=[{"name": "reader"}])
    token, body = await issue(stack, cred_auth(cred["secret"], id=cred["id"]))
    t = body["token"]
    assert t["methods"] == ["application_credential"]
    assert t["project"]["id"] == demo.project_id and t["user"]["id"] == demo.user_id
    assert [r["name"] for r in t["roles"]] == ["reader"]
    assert t["application_credential"] == {"id": cred["id"], "name": "ci", "restricted": True}
    ctx = await identity.token_context(stack.keystone, token)
    assert ctx.roles == ("reader",) and ctx.project_id == demo.project_id
    # by name, with its user by name and domain
    user = {"name": "demo", "domain": {"name": "Default"}}
    await issue(stack, cred_auth(cred["secret"], name="ci", user=user))
    with pytest.raises(Unauthorized):
        await issue(stack, cred_auth("wrong", id=cred["id"]))
    with pytest.raises(Unauthorized, match="cannot request a scope"):
        body = cred_auth(cred["secret"], id=cred["id"])
        body["auth"]["scope"] = {"project": {"id": demo.project_id}}
        await issue(stack, body)
    with pytest.raises(BadRequest, match="secret"):
        await issue(
            stack,
            {
                "auth": {
                    "identity": {
                        "methods": ["application_credential"],
                        "application_credential": {"id": cred["id"]},
                    }
                }
            },
        )
    # the user losing the role ends the credential's tokens and its use
    reader = next(r for r in cred["roles"] if r["name"] == "reader")
    member = await stack.invoke("identity", "listRoles", auth=admin, query={"name": "member"})
    member_id = member.body["roles"][0]["id"]
    grant = {"project_id": demo.project_id, "user_id": demo.user_id, "role_id": member_id}
    await stack.invoke("identity", "unassignProjectUserRole", auth=admin, path_params=grant)
    assert reader["name"] == "reader"  # implied by member, so gone with it
    with pytest.raises(Unauthorized):
        await identity.token_context(stack.keystone, token)
    with pytest.raises(Unauthorized):
        await issue(stack, cred_auth(cred["secret"], id=cred["id"]))


@arun
async def test_deleted_or_expired_credentials_stop_authenticating(tmp_path: Path) -> None:
    stack, admin, demo = await started(tmp_path)
    cred = await create(stack, demo, name="short")
    token, body = await issue(stack, cred_auth(cred["secret"], id=cred["id"]))
    assert stack.keystone.auth is not None
    assert (await stack.keystone.auth.validate(token)).user_id == demo.user_id
    path = {"user_id": demo.user_id, "application_credential_id": cred["id"]}
    await stack.invoke("identity", "deleteApplicationCredential", auth=demo, path_params=path)
    with pytest.raises(Unauthorized):
        await identity.token_context(stack.keystone, token)
    with pytest.raises(Unauthorized):  # the identity API itself, at once (nothing cached)
        await stack.keystone.auth.validate(token)
    with pytest.raises(Unauthorized):
        await issue(stack, cred_auth(cred["secret"], id=cred["id"]))
    # a credential that expires bounds its tokens, and past its time authenticates no more
    soon = datetime.now(UTC) + timedelta(hours=1)
    timed = await create(stack, demo, name="timed", expires_at=soon.isoformat())
    _, body = await issue(stack, cred_auth(timed["secret"], id=timed["id"]))
    expires = datetime.strptime(body["token"]["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert expires.replace(tzinfo=UTC) <= soon
    store = stack.keystone.require_store()
    await store.update(
        "application_credentials", timed["id"], {"expires_at": "2001-01-01T00:00:00.000000"}
    )
    with pytest.raises(Unauthorized):
        await issue(stack, cred_auth(timed["secret"], id=timed["id"]))
    # deleting the user deletes their credentials
    assert await store.list("application_credentials", {"user_id": demo.user_id})
    await stack.invoke("identity", "deleteUser", auth=admin, path_params={"user_id": demo.user_id})
    assert await store.list("application_credentials", {"user_id": demo.user_id}) == []


@arun
async def test_a_restricted_credential_manages_no_credentials(tmp_path: Path) -> None:
    stack, _, demo = await started(tmp_path)
    restricted = await create(stack, demo, name="restricted")
    free = await create(stack, demo, name="free", unrestricted=True)
    for cred, allowed in ((restricted, False), (free, True)):
        token, _ = await issue(stack, cred_auth(cred["secret"], id=cred["id"]))
        ctx = await identity.token_context(stack.keystone, token)
        path = {"user_id": demo.user_id, "application_credential_id": cred["id"]}
        if allowed:
            assert (await create(stack, ctx, name="child"))["name"] == "child"
            reply = await stack.invoke(
                "identity", "deleteApplicationCredential", auth=ctx, path_params=path
            )
            assert reply.status == 204
            continue
        with pytest.raises(Forbidden, match="not allowed for managing additional"):
            await create(stack, ctx, name="child")
        with pytest.raises(Forbidden, match="not allowed for managing additional"):
            await stack.invoke(
                "identity", "deleteApplicationCredential", auth=ctx, path_params=path
            )
        # reading them is allowed
        shown = await stack.invoke(
            "identity", "showApplicationCredential", auth=ctx, path_params=path
        )
        assert shown.body["application_credential"]["unrestricted"] is False
