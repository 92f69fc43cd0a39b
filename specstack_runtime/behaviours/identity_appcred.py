"""Application credentials (keystone v3): the algorithm beside their resource.

The resource (its table, owner, unique name, hashed secret shown once, policy) is the
spec's `application_credential` (spec/resources/identity.yaml). Here: the roles of a new
one (those asked, by id or name, which the user must hold on the project; else the
token's), and authenticating with one (the token method
`application_credential`, by id, or by name and user).
"""

from __future__ import annotations

import time
from typing import Any

from specstack_runtime.auth import UNAUTHORIZED
from specstack_runtime.behaviours.identity_common import (
    Doc,
    active_user,
    by_ref,
    project_roles,
    store_of,
    verify_password,
)
from specstack_runtime.errors import Unauthorized
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import guards
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.services import ServiceRuntime

TABLE = "application_credentials"


def expires_ts(rt: ServiceRuntime, cred: Doc) -> float | None:
    """When the credential stops authenticating (epoch seconds; None if never), as the
    spec's application_credential template `expires_ts` says."""
    res = rt.info.resources.resource("application_credential")
    value = res.template("expires_ts", doc=cred)
    return None if value is None else float(value)


@behaviour("identity.application_credential_roles")
async def application_credential_roles(event: ResourceEvent) -> None:
    """Before a credential is stored: its roles as {id, name, domain_id}, as the spec's
    template `roles` chooses them and its rules `on: roles` allow (each held by the user
    on the project)."""
    rc, doc = event.engine, event.doc
    held = await project_roles(rc.call.rt, doc["user_id"], doc["project_id"])
    refs: dict[str, Any] = {"held": held, "roles": await store_of(rc.call.rt).list("roles")}
    rc.refs = refs
    chosen: list[Doc] = rc.template("roles", doc=doc)
    refs["chosen"] = chosen
    guards.check(rc, "roles", doc)
    doc["roles"] = list(rc.template("stored_roles", doc=doc))


async def authenticate(rt: ServiceRuntime, identity: Doc) -> tuple[Doc, Doc, Doc]:
    """(the credential, its user, the user's domain) for the `application_credential`
    method's request; Unauthorized unless the secret matches a usable credential of an
    enabled user."""
    ref: Doc = identity["application_credential"]  # its shape: the spec's token `issue` rules
    secret: str = ref["secret"]
    store = store_of(rt)
    cred: Doc | None = None
    if ref.get("id") is not None:
        cred = await store.get(TABLE, ref["id"])
    else:  # by name, with its user
        name = ref["name"]
        user_ref: Doc = ref["user"]
        named_by = user_ref.get("id") is not None or user_ref.get("name") is not None
        user = await by_ref(store, "users", user_ref) if named_by else None
        if user is None:
            raise Unauthorized(UNAUTHORIZED)
        user_id = user["id"]
        named = await store.list(TABLE, {"user_id": str(user_id), "name": name})
        cred = named[0] if named else None
    if cred is None or ((expires := expires_ts(rt, cred)) is not None and expires <= time.time()):
        raise Unauthorized(UNAUTHORIZED)
    active = await active_user(store, await store.get("users", cred["user_id"]))
    if active is None or not await verify_password(rt, secret, cred.get("secret_hash")):
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
