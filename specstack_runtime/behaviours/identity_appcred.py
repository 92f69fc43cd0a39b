"""Application credentials (keystone v3): the algorithm beside their resource.

The resource (its table, owner, unique name, hashed secret shown once, policy) is the
spec's `application_credential` (spec/resources/identity.yaml). Here: the roles of a new
one (those asked, by id or name, which the user must hold on the project; else the
token's), and authenticating with one (the token method
`application_credential`, by id, or by name and user).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from specstack_runtime.auth import UNAUTHORIZED
from specstack_runtime.behaviours.identity_common import (
    Doc,
    active_user,
    domain_by_ref,
    project_roles,
    store_of,
    text,
    verify_password,
)
from specstack_runtime.errors import Unauthorized
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.services import ServiceRuntime

TABLE = "application_credentials"
#: How keystone shows a credential's expiry (naive UTC, microseconds).
EXPIRY_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def expires_ts(cred: Doc) -> float | None:
    """When the credential stops authenticating (epoch seconds); None if never."""
    raw = cred.get("expires_at")
    if not raw:
        return None
    return datetime.strptime(str(raw), EXPIRY_FORMAT).replace(tzinfo=UTC).timestamp()


def usable(cred: Doc | None) -> bool:
    expires = None if cred is None else expires_ts(cred)
    return cred is not None and (expires is None or expires > time.time())


@behaviour("identity.application_credential_roles")
async def application_credential_roles(event: ResourceEvent) -> None:
    """Before a credential is stored: its roles as {id, name, domain_id}, each held by the
    user on the project (400 otherwise, as keystone answers)."""
    call, doc = event.call, event.doc
    auth = call.require_auth()
    held = await project_roles(call.rt, doc["user_id"], doc["project_id"])
    body = call.body.get("application_credential") if isinstance(call.body, dict) else None
    if not isinstance(body, dict) or not body.get("roles"):
        chosen = [r for r in held if r["name"] in auth.roles]  # the token's
    else:
        chosen = []
        roles = {r["id"]: r for r in await store_of(call.rt).list("roles")}
        for ref in body["roles"]:
            if ref.get("id") is not None:
                role = roles.get(str(ref["id"]))
            else:
                role = next(
                    (
                        r
                        for r in roles.values()
                        if r["name"] == ref.get("name") and not r.get("domain_id")
                    ),
                    None,
                )
            if role is None:
                raise event.engine.of("role").res.fail(
                    "not_found", id=ref.get("id") or ref.get("name")
                )
            if role["id"] not in {r["id"] for r in held}:
                raise event.engine.res.fail("role_not_held", role_id=role["id"], **doc)
            chosen.append(role)
    unique = {r["id"]: r for r in chosen}
    doc["roles"] = [
        {"id": r["id"], "name": r["name"], "domain_id": r.get("domain_id")} for r in unique.values()
    ]


async def authenticate(rt: ServiceRuntime, identity: Doc) -> tuple[Doc, Doc, Doc]:
    """(the credential, its user, the user's domain) for the `application_credential`
    method's request; Unauthorized unless the secret matches a usable credential of an
    enabled user."""
    ref: Doc = identity["application_credential"]  # its shape: the spec's token `issue` rules
    secret: str = ref["secret"]
    store = store_of(rt)
    cred: Doc | None = None
    if ref.get("id") is not None:
        cred = await store.get(TABLE, text(ref["id"], "application_credential.id"))
    else:  # by name, with its user
        name = text(ref["name"], "application_credential.name")
        user_ref: Doc = ref["user"]
        user_id = user_ref.get("id")
        if user_id is None and user_ref.get("name") is not None:
            domain = await domain_by_ref(store, user_ref.get("domain"))
            found = await store.list(
                "users",
                {
                    "name": text(user_ref["name"], "user.name"),
                    "domain_id": (domain or {}).get("id", ""),
                },
            )
            user_id = found[0]["id"] if found else None
        if user_id is None:
            raise Unauthorized(UNAUTHORIZED)
        named = await store.list(TABLE, {"user_id": str(user_id), "name": name})
        cred = named[0] if named else None
    if cred is None or not usable(cred):
        raise Unauthorized(UNAUTHORIZED)
    if not await verify_password(rt, secret, cred.get("secret_hash")):
        raise Unauthorized(UNAUTHORIZED)
    active = await active_user(store, await store.get("users", cred["user_id"]))
    if active is None:
        raise Unauthorized(UNAUTHORIZED)
    return cred, active[0], active[1]


def token_roles(cred: Doc, current: list[Doc]) -> list[Doc] | None:
    """The roles a token of `cred` carries: its own, when the user still holds every one
    on the project (`current`); None otherwise."""
    held = {r["id"]: r for r in current}
    wanted = [r["id"] for r in cred.get("roles") or ()]
    if not wanted or any(i not in held for i in wanted):
        return None
    return [held[i] for i in wanted]
