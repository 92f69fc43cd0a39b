"""Identity behaviours (keystone v3 semantics): the algorithm of token issue and validation.

The meaning is the spec's (spec/resources/identity.yaml): the token's row and body, a
request's shape and scope rules, the roles a user holds. Tokens are opaque random strings,
stored by their SHA-256 only. Validation recomputes what keystone does: the user, project
and domain must still exist and be enabled, the roles still be held (a role taken away
invalidates the token), an application credential's token needs the credential.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from specstack_runtime.auth import UNAUTHORIZED, auth_context
from specstack_runtime.behaviours import identity_appcred as appcred
from specstack_runtime.behaviours.identity_common import (
    Doc,
    active_user,
    by_ref,
    default_domain_id,
    domain_by_ref,
    iso,
    project_roles,
    store_of,
    verify_password,
)
from specstack_runtime.context import AuthContext, Call, Reply
from specstack_runtime.errors import Unauthorized
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import guards
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.resources.listing import query_bool
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.services import ServiceRuntime

PRUNE_EVERY_S = 60.0


class _InvalidToken(Exception):
    """A subject token that is unknown, expired, revoked or no longer backed by a role."""


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# -- tokens --------------------------------------------------------------------------


#: What a token stands for (the token template's `refs`): user, user_domain, and for a
#: project-scoped one project, project_domain and roles.
Scope = dict[str, Any]


def _render_token(rt: ServiceRuntime, doc: Doc, scope: Scope, *, catalog: bool) -> Doc:
    """The token's body, as the spec's token template `body` shows it; a catalog it shows
    is the stack's for the token's project (added here: converting it for CEL costs)."""
    token = rt.info.resources.resource("token")
    body = dict(token.template("body", doc=doc, refs=scope, params={"catalog": catalog}))
    if "catalog" in body["token"] and "project" in scope:
        body["token"]["catalog"] = rt.info.catalog(rt.config, scope["project"]["id"])
    return body


async def _project_scope(
    rt: ServiceRuntime, user_id: str, project: Doc | None, cred: Doc | None = None
) -> Scope | None:
    """The project's part of a scope: None if it or its domain is missing or disabled; its
    roles are the user's there (a credential's own, while the user holds them all)."""
    store = store_of(rt)
    if project is None or not project.get("enabled", True):
        return None
    pdomain = await store.get("domains", project["domain_id"])
    if pdomain is None or not pdomain.get("enabled", True):
        return None
    roles = await project_roles(rt, user_id, project["id"])
    if cred is not None and roles:
        roles = appcred.token_roles(cred, roles) or []
    return {"project": project, "project_domain": pdomain, "roles": roles}


async def expire_token(rt: ServiceRuntime, token: str, *, ago_s: float = 60.0) -> None:
    """End a token's lifetime now, as if its TTL had passed (tests of expiry use it).

    Keystone offers no API that issues a token shorter-lived than its TTL, so a
    test that needs an expired token asks the identity service's store directly.
    """
    store = store_of(rt)
    doc = await store.get("tokens", _token_key(token))
    if doc is None:
        raise KeyError("no such token")
    expires = time.time() - ago_s
    await store.update("tokens", doc["id"], {"expires_ts": expires, "expires_at": iso(expires)})


async def _load_token(
    rt: ServiceRuntime, token: str, *, allow_expired: bool = False
) -> tuple[Doc, Scope]:
    """The stored token and what it currently stands for; _InvalidToken if it is not valid."""
    if not isinstance(token, str) or not token:
        raise _InvalidToken
    store = store_of(rt)
    doc = await store.get("tokens", _token_key(token))
    params = {"now": time.time(), "allow_expired": allow_expired}  # the spec's token `valid`
    if doc is None or not rt.info.resources.resource("token").template(
        "valid", doc=doc, params=params
    ):
        raise _InvalidToken
    active = await active_user(store, await store.get("users", doc["user_id"]))
    if active is None:
        raise _InvalidToken
    scope: Scope = {"user": active[0], "user_domain": active[1]}
    if doc.get("project_id"):
        cred = None
        if doc.get("application_credential"):  # its roles, while it exists
            cred = await store.get(appcred.TABLE, doc["application_credential"]["id"])
            if cred is None:
                raise _InvalidToken
            scope["credential"] = cred
        project = await store.get("projects", doc["project_id"])
        found = await _project_scope(rt, doc["user_id"], project, cred)
        current = {r["id"] for r in (found or {}).get("roles", ())}
        if not current or any(r["id"] not in current for r in doc.get("roles", ())):
            raise _InvalidToken
        scope.update(found or {})
    return doc, scope


async def _issue(
    rt: ServiceRuntime, auth: Doc, *, catalog: bool = True, rc: ResourceCall | None = None
) -> tuple[str, Doc]:
    """Authenticate an `auth` request of the shape the spec's token `issue` rules accept;
    (token, token body) or Unauthorized/BadRequest. `rc`: the scope's rules are checked."""
    store = store_of(rt)
    identity: Doc = auth["identity"]
    methods: list[str] = identity["methods"]
    parent, cred, found = None, None, None
    if "token" in methods:
        try:
            parent, parent_scope = await _load_token(rt, identity["token"]["id"])
        except _InvalidToken:
            raise Unauthorized(UNAUTHORIZED) from None
        found = (parent_scope["user"], parent_scope["user_domain"])
        cred = parent_scope.get("credential")  # a rescoped application credential token's
    if "password" in methods:
        ref: Doc = identity["password"]["user"]  # its shape: the spec's token `issue` rules
        by_password = await active_user(store, await by_ref(store, "users", ref))
        hashed = by_password[0].get("password_hash") if by_password else None
        if by_password is None or not await verify_password(rt, ref["password"], hashed):
            raise Unauthorized(UNAUTHORIZED)
        if found is not None and found[0]["id"] != by_password[0]["id"]:
            raise Unauthorized("The token and the password belong to different users.")
        found = by_password
    if "application_credential" in methods:
        cred, cred_user, cred_domain = await appcred.authenticate(rt, identity)
        if found is not None and found[0]["id"] != cred_user["id"]:
            raise Unauthorized("The credentials given belong to different users.")
        found = (cred_user, cred_domain)
    assert found is not None
    user, user_domain = found
    scope: Scope = {"user": user, "user_domain": user_domain}

    requested = auth.get("scope")
    if cred is not None:
        if requested is not None:
            raise Unauthorized("Application credentials cannot request a scope.")
        project = await store.get("projects", cred["project_id"])
        part = await _project_scope(rt, user["id"], project, cred)
        if not part or not part["roles"]:
            raise Unauthorized(UNAUTHORIZED)
        scope.update(part)
    elif requested is None and user.get("default_project_id"):
        project = await store.get("projects", user["default_project_id"])
        part = await _project_scope(rt, user["id"], project)
        scope.update(part if part and part["roles"] else {})
    elif requested is not None and requested != "unscoped":
        if rc is not None:  # the spec's refusals: a scope on the system or a trust, say
            guards.check(rc, "scope", {"user_id": user["id"]}, changes={"scope": requested})
        if "project" in requested:
            project = await by_ref(store, "projects", requested["project"])
            part = await _project_scope(rt, user["id"], project)
            if part is None or project is None:
                raise Unauthorized(UNAUTHORIZED)
            if not part["roles"]:
                raise Unauthorized(f"User {user['id']} has no access to project {project['id']}.")
            scope.update(part)
        elif "domain" in requested:
            domain = await domain_by_ref(store, requested["domain"])
            if domain is None:
                raise Unauthorized(UNAUTHORIZED)
            raise Unauthorized(f"User {user['id']} has no access to domain {domain['id']}.")

    expires = (now := time.time()) + float(rt.config.token_ttl_s)
    audit_ids = [secrets.token_urlsafe(16)]
    method_names = list(dict.fromkeys(methods))
    if parent is not None:
        expires = min(expires, float(parent["expires_ts"]))
        audit_ids.append(parent["audit_ids"][-1])  # its chain's id: the chain's first token's
        method_names = list(dict.fromkeys([*method_names, *parent["methods"]]))
    if cred is not None and (cred_expires := appcred.expires_ts(rt, cred)) is not None:
        expires = min(expires, cred_expires)
    tokens = rt.info.resources.resource("token")
    token = str(tokens.res.data["prefix"]) + secrets.token_urlsafe(32)  # (never an option's "-")
    times = {"issued_at": iso(now), "expires_at": iso(expires), "expires_ts": expires}
    doc = {"id": _token_key(token), "methods": method_names, "audit_ids": audit_ids, **times}
    refs = {**scope, "credential": cred} if cred is not None else scope
    doc = dict(tokens.template("row", doc=doc, refs=refs))
    await store.create("tokens", doc)
    await _maybe_prune(rt, user["id"])
    return token, _render_token(rt, doc, scope, catalog=catalog)


async def _maybe_prune(rt: ServiceRuntime, user_id: str) -> None:
    """Drop a user's tokens that can never validate again (at most once a minute per user)."""
    last: dict[str, float] = rt.local.setdefault("identity.pruned", {})
    now = time.monotonic()
    if now - last.get(user_id, -PRUNE_EVERY_S) < PRUNE_EVERY_S:
        return
    last[user_id] = now
    store, token, params = store_of(rt), rt.info.resources.resource("token"), {"now": time.time()}
    for doc in await store.list("tokens", {"user_id": user_id}):
        if token.template("dead", doc=doc, params=params):  # the spec's: it never validates again
            await store.delete("tokens", doc["id"])


async def token_body(rt: ServiceRuntime, token: str, *, catalog: bool = True) -> Doc:
    """The body of a valid token, as validateToken answers it; Unauthorized otherwise."""
    try:
        doc, scope = await _load_token(rt, token)
    except _InvalidToken:
        raise Unauthorized(UNAUTHORIZED) from None
    return _render_token(rt, doc, scope, catalog=catalog)


@behaviour("identity.token_context")
async def token_context(rt: ServiceRuntime, token: str) -> AuthContext:
    """Validate a token locally (the identity service's own TokenValidator `local`)."""
    return auth_context(await token_body(rt, token), token)


@behaviour("identity.issue_service_token")
async def issue_service_token(
    rt: ServiceRuntime, user_name: str, password: str, project_name: str
) -> tuple[str, AuthContext]:
    """A project-scoped token for a user of the default domain, without HTTP."""
    asked = {"user": user_name, "password": password, "project": project_name}
    params = {**asked, "domain": default_domain_id(rt)}
    auth = rt.info.resources.resource("token").template("service_request", params=params)
    token, body = await _issue(rt, auth)
    return token, auth_context(body, token)


async def _subject_token(call: Call, *, expired_ok: bool = True) -> tuple[str, Doc, Scope]:
    """The subject token of a token request (`expired_ok`: with allow_expired, one within
    the window), checked against the caller's rights."""
    rc = engine_call(call, "token")
    subject = call.header("X-Subject-Token")
    if not subject:
        raise rc.res.fail("no_subject")
    allow_expired = expired_ok and bool(query_bool(rc, "allow_expired"))
    try:
        doc, scope = await _load_token(call.rt, subject, allow_expired=allow_expired)
    except _InvalidToken:
        raise rc.res.fail("subject_not_found") from None
    call.authorize({"user_id": doc["user_id"]})
    return subject, doc, scope


# -- the token API ------------------------------------------------------------------


@behaviour("identity.issue_token")
async def issue_token(call: Call) -> Reply:
    rc = engine_call(call, "token")
    request = call.body if isinstance(call.body, dict) else {}
    guards.check(rc, "issue", {}, changes=request)  # the spec's: the request's shape
    catalog = "nocatalog" not in call.query
    token, body = await _issue(call.rt, request["auth"], catalog=catalog, rc=rc)
    return Reply(rc.success(), body, headers={"X-Subject-Token": token})


@behaviour("identity.validate_token")
async def validate_token(call: Call) -> Reply:
    subject, doc, scope = await _subject_token(call)
    body = _render_token(call.rt, doc, scope, catalog="nocatalog" not in call.query)
    return Reply(200, body, headers={"X-Subject-Token": subject})


@behaviour("identity.check_token")
async def check_token(call: Call) -> Reply:
    subject, _, _ = await _subject_token(call)
    return Reply(200, None, headers={"X-Subject-Token": subject})


@behaviour("identity.revoke_token")
async def revoke_token(call: Call) -> Reply:
    _, doc, _ = await _subject_token(call, expired_ok=False)
    await store_of(call.rt).update(
        "tokens", doc["id"], {"revoked": True, "revoked_at": iso(time.time())}
    )
    return Reply(204)  # (this service's own validation reads the row: nothing to forget)
