"""Identity behaviours (keystone v3 semantics): tokens, catalog, projects, users, roles.

Tables (the identity component's database, declared in the spec): `domains`,
`projects`, `users`, `roles`, `role_assignments`, `tokens`.

- Users and projects get keystone's ids: 32 hex characters without dashes.
- Passwords are bcrypt hashes (`config.bcrypt_rounds`), hashed and checked in a
  worker thread so the event loop never waits on them.
- Tokens are opaque random strings. The `tokens` table keys each one by the
  SHA-256 of the token (the token itself is never stored) and keeps its user,
  scope, methods, audit ids, roles, issue and expiry times and revocation.
  Validation recomputes what keystone recomputes: the user, project and domain
  must still exist and be enabled, and the roles are the current ones (a role
  taken away since the token was issued invalidates it, like keystone's
  revocation events).
- Roles imply others as keystone-manage bootstrap sets them up: admin implies
  member, member implies reader; tokens list the implied roles too.
- Services and endpoints are the catalog that the spec describes
  (`rt.info.catalog`); they cannot be created at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import bcrypt

from specstack_runtime.auth import UNAUTHORIZED, auth_context
from specstack_runtime.context import AuthContext, Call, Reply
from specstack_runtime.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from specstack_runtime.registry import behaviour
from specstack_runtime.resources.hooks import ResourceEvent
from specstack_runtime.resources.ids import stable_id
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Store

Doc = dict[str, Any]

DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"
#: Role implications created by keystone-manage bootstrap (prior role -> implied roles).
IMPLIED_ROLES: dict[str, tuple[str, ...]] = {"admin": ("member",), "member": ("reader",)}
BOOTSTRAP_ROLES = ("admin", "member", "reader", "service")
SERVICE_PROJECT = "service"
#: How long after expiry a token may still be validated with allow_expired (keystone: 2 days).
ALLOW_EXPIRED_WINDOW_S = 2 * 24 * 3600
PRUNE_EVERY_S = 60.0
VERIFIED_CACHE_MAX = 1024
#: Component kinds that run as a service user of their project.
SERVICE_KINDS = ("api", "worker", "agent")
_BOOTSTRAP_NS = uuid.UUID("6f1c2b9e-4d3a-5b7c-8e9f-0a1b2c3d4e5f")
IDENTITY_MEDIA_TYPE = "application/vnd.openstack.identity-v3+json"
IDENTITY_VERSION_UPDATED = "2020-04-07T00:00:00Z"


class _InvalidToken(Exception):
    """A subject token that is unknown, expired, revoked or no longer backed by a role."""


# -- small helpers -------------------------------------------------------------------


def _store(rt: ServiceRuntime) -> Store:
    return rt.require_store()


def _api(rt: ServiceRuntime) -> str:
    comp = rt.info.components.get(rt.component) or {}
    return str(comp.get("api") or rt.info.api_of_type("identity"))


def _base(rt: ServiceRuntime) -> str:
    return rt.info.endpoint(_api(rt), rt.config)


def _new_id() -> str:
    return uuid.uuid4().hex


def _stable_id(kind: str, *parts: str) -> str:
    return uuid.uuid5(_BOOTSTRAP_NS, "|".join((kind, *parts))).hex


def _iso(ts: float) -> str:
    """Keystone's timestamp format, with microseconds: 2015-08-27T09:49:58.000000Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _text(value: Any, what: str, *, max_length: int | None = None, empty: bool = False) -> str:
    """A string from client input that the database can hold, or BadRequest naming `what`."""
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for field '{what}': expected a string.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"Invalid input for field '{what}': not valid UTF-8.") from None
    if not empty and not value.strip():
        raise BadRequest(f"Invalid input for field '{what}': must not be empty.")
    if max_length is not None and len(value) > max_length:
        raise BadRequest(f"Invalid input for field '{what}': longer than {max_length} characters.")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"Invalid input for field '{what}': expected true or false.")
    return value


def _q_bool(call: Call, name: str) -> bool | None:
    raw = call.q(name)
    if raw is None:
        return None
    low = raw.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"Invalid value {raw!r} for query parameter {name}: expected true or false.")


def _q_flag(call: Call, name: str) -> bool:
    """Keystone's flag parameters: present means true unless it says 0 or false."""
    if name not in call.query:
        return False
    raw = (call.q(name) or "").strip().lower()
    return raw not in ("0", "false", "no", "off")


def _q_text(call: Call, name: str) -> str | None:
    raw = call.q(name)
    return None if raw is None else _text(raw, name, empty=True)


def _q_limit(call: Call) -> int | None:
    raw = call.q("limit")
    if raw is None:
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"Invalid value {raw!r} for limit: expected an integer.") from None
    if limit < 0:
        raise BadRequest("Invalid value for limit: must not be negative.")
    return limit


def _links(rt: ServiceRuntime, path: str) -> dict[str, str]:
    return {"self": _base(rt) + path}


def _collection(
    rt: ServiceRuntime, key: str, items: list[Doc], path: str, *, truncated: bool = False
) -> Doc:
    body: Doc = {key: items, "links": {"self": _base(rt) + path, "previous": None, "next": None}}
    if truncated:
        body["truncated"] = True
    return body


# -- passwords -----------------------------------------------------------------------


def _password_bytes(password: str) -> bytes:
    # bcrypt reads at most 72 bytes; keystone (passlib) truncates the same way.
    return password.encode("utf-8", "surrogatepass")[:72]


async def hash_password(rt: ServiceRuntime, password: str) -> str:
    rounds = max(4, min(31, int(rt.config.bcrypt_rounds)))
    hashed = await asyncio.to_thread(
        bcrypt.hashpw, _password_bytes(password), bcrypt.gensalt(rounds)
    )
    return hashed.decode("ascii")


async def verify_password(rt: ServiceRuntime, password: str, hashed: str | None) -> bool:
    """True if `password` matches the bcrypt `hashed`; recent successes are remembered.

    The memory holds SHA-256 digests of (hash, password), never a password, and
    is keyed by the stored hash, so a password change forgets it.
    """
    if not hashed or not isinstance(password, str):
        return False
    key = hashlib.sha256(
        hashed.encode("ascii", "replace") + b"\0" + password.encode("utf-8", "surrogatepass")
    ).digest()
    seen: OrderedDict[bytes, bool] = rt.local.setdefault("identity.verified", OrderedDict())
    if key in seen:
        seen.move_to_end(key)
        return True
    try:
        ok = await asyncio.to_thread(
            bcrypt.checkpw, _password_bytes(password), hashed.encode("ascii")
        )
    except (ValueError, UnicodeEncodeError):
        return False
    if ok:
        seen[key] = True
        while len(seen) > VERIFIED_CACHE_MAX:
            seen.popitem(last=False)
    return bool(ok)


# -- lookups -------------------------------------------------------------------------


async def _domain_by_ref(store: Store, ref: Any) -> Doc | None:
    """A domain named by {"id"} or {"name"}; None if there is none."""
    if not isinstance(ref, dict):
        raise BadRequest("Invalid input for field 'domain': expected an object with id or name.")
    if ref.get("id") is not None:
        return await store.get("domains", _text(ref["id"], "domain.id"))
    if ref.get("name") is not None:
        found = await store.list("domains", {"name": _text(ref["name"], "domain.name")})
        return found[0] if found else None
    raise BadRequest("Expecting to find id or name in domain.")


async def _roles_by_id(store: Store) -> dict[str, Doc]:
    return {r["id"]: r for r in await store.list("roles")}


def _expand_implied(direct: list[Doc], roles: Mapping[str, Doc]) -> list[Doc]:
    """The roles held directly plus the ones they imply, each once, direct ones first."""
    by_name = {r["name"]: r for r in roles.values() if r.get("domain_id") is None}
    out: dict[str, Doc] = {}
    queue = list(direct)
    while queue:
        role = queue.pop(0)
        if role["id"] in out:
            continue
        out[role["id"]] = role
        for implied in IMPLIED_ROLES.get(role["name"], ()):
            if implied in by_name and by_name[implied]["id"] not in out:
                queue.append(by_name[implied])
    return list(out.values())


async def _project_roles(store: Store, user_id: str, project_id: str) -> list[Doc]:
    assignments = await store.list(
        "role_assignments", {"user_id": user_id, "project_id": project_id}
    )
    if not assignments:
        return []
    roles = await _roles_by_id(store)
    direct = [roles[a["role_id"]] for a in assignments if a["role_id"] in roles]
    return _expand_implied(direct, roles)


# -- tokens --------------------------------------------------------------------------


@dataclass
class _Scope:
    user: Doc
    user_domain: Doc
    project: Doc | None = None
    project_domain: Doc | None = None
    roles: tuple[Doc, ...] = ()


def _render_token(rt: ServiceRuntime, doc: Doc, scope: _Scope, *, catalog: bool) -> Doc:
    user, ud = scope.user, scope.user_domain
    t: Doc = {
        "methods": list(doc["methods"]),
        "user": {
            "id": user["id"],
            "name": user["name"],
            "domain": {"id": ud["id"], "name": ud["name"]},
            "password_expires_at": user.get("password_expires_at"),
        },
        "audit_ids": list(doc["audit_ids"]),
        "expires_at": doc["expires_at"],
        "issued_at": doc["issued_at"],
    }
    if scope.project is not None and scope.project_domain is not None:
        p, pd = scope.project, scope.project_domain
        t["project"] = {
            "id": p["id"],
            "name": p["name"],
            "domain": {"id": pd["id"], "name": pd["name"]},
        }
        t["is_domain"] = False
        t["roles"] = [{"id": r["id"], "name": r["name"]} for r in scope.roles]
        if catalog:
            t["catalog"] = rt.info.catalog(rt.config, p["id"])
    elif catalog:
        t["catalog"] = []
    return {"token": t}


async def _active_user(store: Store, user: Doc | None) -> tuple[Doc, Doc] | None:
    """(user, its domain) if the user exists and both are enabled."""
    if user is None or not user.get("enabled", True):
        return None
    domain = await store.get("domains", user["domain_id"])
    if domain is None or not domain.get("enabled", True):
        return None
    return user, domain


async def expire_token(rt: ServiceRuntime, token: str, *, ago_s: float = 60.0) -> None:
    """End a token's lifetime now, as if its TTL had passed (tests of expiry use it).

    Keystone offers no API that issues a token shorter-lived than its TTL, so a
    test that needs an expired token asks the identity service's store directly.
    """
    store = _store(rt)
    doc = await store.get("tokens", _token_key(token))
    if doc is None:
        raise KeyError("no such token")
    expires = time.time() - ago_s
    await store.update("tokens", doc["id"], {"expires_ts": expires, "expires_at": _iso(expires)})


async def _load_token(
    rt: ServiceRuntime, token: str, *, allow_expired: bool = False
) -> tuple[Doc, _Scope]:
    """The stored token and what it currently stands for; _InvalidToken if it is not valid."""
    if not isinstance(token, str) or not token:
        raise _InvalidToken
    store = _store(rt)
    doc = await store.get("tokens", _token_key(token))
    if doc is None or doc.get("revoked"):
        raise _InvalidToken
    now = time.time()
    expires = float(doc["expires_ts"])
    if expires <= now and not (allow_expired and expires + ALLOW_EXPIRED_WINDOW_S > now):
        raise _InvalidToken
    active = await _active_user(store, await store.get("users", doc["user_id"]))
    if active is None:
        raise _InvalidToken
    scope = _Scope(user=active[0], user_domain=active[1])
    if doc.get("project_id"):
        project = await store.get("projects", doc["project_id"])
        if project is None or not project.get("enabled", True):
            raise _InvalidToken
        pdomain = await store.get("domains", project["domain_id"])
        if pdomain is None or not pdomain.get("enabled", True):
            raise _InvalidToken
        roles = await _project_roles(store, scope.user["id"], project["id"])
        current = {r["id"] for r in roles}
        if not roles or any(r["id"] not in current for r in doc.get("roles", ())):
            raise _InvalidToken
        scope.project, scope.project_domain, scope.roles = project, pdomain, tuple(roles)
    return doc, scope


async def _user_for_password(rt: ServiceRuntime, identity: Doc) -> tuple[Doc, Doc]:
    store = _store(rt)
    pw = identity.get("password")
    if not isinstance(pw, dict) or not isinstance(pw.get("user"), dict):
        raise BadRequest("Expecting to find user in password.")
    ref: Doc = pw["user"]
    password = ref.get("password")
    if not isinstance(password, str):
        raise BadRequest("Expecting to find password in user.")
    if ref.get("id") is not None:
        user = await store.get("users", _text(ref["id"], "user.id"))
    elif ref.get("name") is not None:
        name = _text(ref["name"], "user.name")
        if "domain" not in ref:
            raise BadRequest("Expecting to find domain in user (a user named by name needs it).")
        domain = await _domain_by_ref(store, ref["domain"])
        if domain is None:
            raise Unauthorized(UNAUTHORIZED)
        found = await store.list("users", {"name": name, "domain_id": domain["id"]})
        user = found[0] if found else None
    else:
        raise BadRequest("Expecting to find id or name in user.")
    active = await _active_user(store, user)
    if active is None or not await verify_password(rt, password, active[0].get("password_hash")):
        raise Unauthorized(UNAUTHORIZED)
    return active


async def _scope_project(rt: ServiceRuntime, ref: Any) -> tuple[Doc, Doc]:
    store = _store(rt)
    if not isinstance(ref, dict):
        raise BadRequest("Invalid input for field 'scope.project': expected an object.")
    if ref.get("id") is not None:
        project = await store.get("projects", _text(ref["id"], "scope.project.id"))
    elif ref.get("name") is not None:
        name = _text(ref["name"], "scope.project.name")
        if "domain" not in ref:
            raise BadRequest(
                "Expecting to find domain in project (a project named by name needs it)."
            )
        domain = await _domain_by_ref(store, ref["domain"])
        if domain is None:
            raise Unauthorized(UNAUTHORIZED)
        found = await store.list("projects", {"name": name, "domain_id": domain["id"]})
        project = found[0] if found else None
    else:
        raise BadRequest("Expecting to find id or name in project.")
    if project is None or not project.get("enabled", True):
        raise Unauthorized(UNAUTHORIZED)
    pdomain = await store.get("domains", project["domain_id"])
    if pdomain is None or not pdomain.get("enabled", True):
        raise Unauthorized(UNAUTHORIZED)
    return project, pdomain


async def _issue(rt: ServiceRuntime, auth: Any, *, catalog: bool = True) -> tuple[str, Doc]:
    """Authenticate an `auth` request; (token, token body) or Unauthorized/BadRequest."""
    store = _store(rt)
    if not isinstance(auth, dict):
        raise BadRequest("Expecting to find auth in the request body.")
    identity = auth.get("identity")
    if not isinstance(identity, dict):
        raise BadRequest("Expecting to find identity in auth.")
    methods = identity.get("methods")
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise BadRequest("Expecting to find methods in identity: a non-empty list of strings.")
    if any(m not in ("password", "token") for m in methods):
        raise Unauthorized("Attempted to authenticate with an unsupported method.")

    parent: Doc | None = None
    found: tuple[Doc, Doc] | None = None
    if "token" in methods:
        tok = identity.get("token")
        if not isinstance(tok, dict) or not isinstance(tok.get("id"), str):
            raise BadRequest("Expecting to find id in token.")
        try:
            parent, parent_scope = await _load_token(rt, tok["id"])
        except _InvalidToken:
            raise Unauthorized(UNAUTHORIZED) from None
        found = (parent_scope.user, parent_scope.user_domain)
    if "password" in methods:
        by_password = await _user_for_password(rt, identity)
        if found is not None and found[0]["id"] != by_password[0]["id"]:
            raise Unauthorized("The token and the password belong to different users.")
        found = by_password
    assert found is not None
    user, user_domain = found
    scope = _Scope(user=user, user_domain=user_domain)

    requested = auth.get("scope")
    if requested is None and user.get("default_project_id"):
        project = await store.get("projects", user["default_project_id"])
        if project is not None and project.get("enabled", True):
            pdomain = await store.get("domains", project["domain_id"])
            roles = await _project_roles(store, user["id"], project["id"])
            if pdomain is not None and pdomain.get("enabled", True) and roles:
                scope.project, scope.project_domain, scope.roles = project, pdomain, tuple(roles)
    elif requested is not None and requested != "unscoped":
        if not isinstance(requested, dict):
            raise BadRequest("Invalid input for field 'scope': expected an object or 'unscoped'.")
        kinds = [k for k in ("project", "domain", "system", "OS-TRUST:trust") if k in requested]
        if len(kinds) > 1:
            raise BadRequest("Specify only one scope: project, domain, system or trust.")
        if kinds == ["project"]:
            project, pdomain = await _scope_project(rt, requested["project"])
            roles = await _project_roles(store, user["id"], project["id"])
            if not roles:
                raise Unauthorized(f"User {user['id']} has no access to project {project['id']}.")
            scope.project, scope.project_domain, scope.roles = project, pdomain, tuple(roles)
        elif kinds == ["domain"]:
            domain = await _domain_by_ref(store, requested["domain"])
            if domain is None:
                raise Unauthorized(UNAUTHORIZED)
            raise Unauthorized(f"User {user['id']} has no access to domain {domain['id']}.")
        elif kinds == ["system"]:
            raise Unauthorized(f"User {user['id']} has no access to the system scope.")
        elif kinds == ["OS-TRUST:trust"]:
            raise NotFound("Could not find trust: trusts are not supported by this deployment.")

    now = time.time()
    expires = now + float(rt.config.token_ttl_s)
    audit_ids = [secrets.token_urlsafe(16)]
    method_names = list(dict.fromkeys(methods))
    if parent is not None:
        expires = min(expires, float(parent["expires_ts"]))
        audit_ids.append(
            parent["audit_ids"][-1] if len(parent["audit_ids"]) > 1 else parent["audit_ids"][0]
        )
        method_names = list(dict.fromkeys([*method_names, *parent["methods"]]))
    token = secrets.token_urlsafe(32)
    doc: Doc = {
        "id": _token_key(token),
        "user_id": user["id"],
        "project_id": scope.project["id"] if scope.project else None,
        "methods": method_names,
        "audit_ids": audit_ids,
        "roles": [{"id": r["id"], "name": r["name"]} for r in scope.roles],
        "issued_at": _iso(now),
        "expires_at": _iso(expires),
        "expires_ts": expires,
        "revoked": False,
        "revoked_at": None,
    }
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
    store = _store(rt)
    wall = time.time()
    for doc in await store.list("tokens", {"user_id": user_id}):
        expires = float(doc.get("expires_ts", 0))
        if expires + ALLOW_EXPIRED_WINDOW_S < wall or (doc.get("revoked") and expires < wall):
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
    auth = {
        "identity": {
            "methods": ["password"],
            "password": {
                "user": {
                    "name": user_name,
                    "domain": {"id": DEFAULT_DOMAIN_ID},
                    "password": password,
                }
            },
        },
        "scope": {"project": {"name": project_name, "domain": {"id": DEFAULT_DOMAIN_ID}}},
    }
    token, body = await _issue(rt, auth)
    return token, auth_context(body, token)


def _subject(call: Call) -> str:
    subject = call.header("X-Subject-Token")
    if not subject:
        raise BadRequest("The X-Subject-Token header is required: it names the token to check.")
    return subject


async def _subject_token(call: Call, *, allow_expired: bool = False) -> tuple[str, Doc, _Scope]:
    """The subject token of a token request, checked against the caller's rights."""
    subject = _subject(call)
    try:
        doc, scope = await _load_token(call.rt, subject, allow_expired=allow_expired)
    except _InvalidToken:
        raise NotFound("The token could not be found: it is invalid, expired or revoked.") from None
    call.authorize({"user_id": doc["user_id"]})
    return subject, doc, scope


# -- versions ------------------------------------------------------------------------


def _version(rt: ServiceRuntime) -> Doc:
    version = str(rt.info.apis[_api(rt)].get("version") or "3.0")
    return {
        "id": f"v{version}",
        "status": "stable",
        "updated": IDENTITY_VERSION_UPDATED,
        "links": [{"rel": "self", "href": _base(rt) + "/v3/"}],
        "media-types": [{"base": "application/json", "type": IDENTITY_MEDIA_TYPE}],
    }


@behaviour("identity.get_identity_versions", needs=("identity",))
async def get_identity_versions(call: Call) -> Reply:
    return Reply(
        300,
        {"versions": {"values": [_version(call.rt)]}},
        headers={"Location": _base(call.rt) + "/v3/"},
    )


@behaviour("identity.get_identity_v3", needs=("identity",))
async def get_identity_v3(call: Call) -> Reply:
    return Reply(200, {"version": _version(call.rt)})


# -- tokens --------------------------------------------------------------------------


@behaviour("identity.issue_token")
async def issue_token(call: Call) -> Reply:
    auth = call.body.get("auth") if isinstance(call.body, dict) else None
    token, body = await _issue(call.rt, auth, catalog="nocatalog" not in call.query)
    return Reply(201, body, headers={"X-Subject-Token": token})


@behaviour("identity.validate_token")
async def validate_token(call: Call) -> Reply:
    allow_expired = bool(_q_bool(call, "allow_expired"))
    subject, doc, scope = await _subject_token(call, allow_expired=allow_expired)
    body = _render_token(call.rt, doc, scope, catalog="nocatalog" not in call.query)
    return Reply(200, body, headers={"X-Subject-Token": subject})


@behaviour("identity.check_token")
async def check_token(call: Call) -> Reply:
    allow_expired = bool(_q_bool(call, "allow_expired"))
    subject, _, _ = await _subject_token(call, allow_expired=allow_expired)
    return Reply(200, None, headers={"X-Subject-Token": subject})


@behaviour("identity.revoke_token")
async def revoke_token(call: Call) -> Reply:
    subject, doc, _ = await _subject_token(call)
    await _store(call.rt).update(
        "tokens", doc["id"], {"revoked": True, "revoked_at": _iso(time.time())}
    )
    if call.rt.auth is not None:
        call.rt.auth.invalidate(subject)
    return Reply(204)


@behaviour("identity.get_auth_catalog", needs=("identity",))
async def get_auth_catalog(call: Call) -> Reply:
    auth = call.require_auth()
    if not auth.project_id:
        raise Forbidden("A project-scoped token is required to produce a service catalog.")
    catalog = call.rt.info.catalog(call.rt.config, auth.project_id)
    return Reply(200, _collection(call.rt, "catalog", catalog, "/v3/auth/catalog"))


# -- projects ------------------------------------------------------------------------


# -- users ---------------------------------------------------------------------------


# -- roles ---------------------------------------------------------------------------


# -- role assignments ----------------------------------------------------------------


def _assignment_id(user_id: str, project_id: str, role_id: str) -> str:
    # the id spec/resources/identity.yaml gives a grant's row (role_grant: fields:...)
    return stable_id("role_grant", (user_id, project_id, role_id))


async def _grant(store: Store, user_id: str, project_id: str, role_id: str) -> None:
    doc = {
        "id": _assignment_id(user_id, project_id, role_id),
        "user_id": user_id,
        "project_id": project_id,
        "role_id": role_id,
    }
    with contextlib.suppress(Conflict):  # granting again is not an error
        await store.create("role_assignments", doc)


async def _subtree(store: Store, project_id: str) -> list[str]:
    ids = [project_id]
    frontier = [project_id]
    while frontier:
        children = await store.list("projects", {"parent_id": frontier})
        frontier = [c["id"] for c in children if c["id"] not in ids]
        ids += frontier
    return ids


@behaviour("identity.list_role_assignments", needs=("identity",))
async def list_role_assignments(call: Call) -> Reply:
    user_id = _q_text(call, "user.id")
    call.authorize({"user_id": user_id})
    project_id = _q_text(call, "scope.project.id")
    domain_id = _q_text(call, "scope.domain.id")
    role_id = _q_text(call, "role.id")
    group_id = _q_text(call, "group.id")
    system = _q_text(call, "scope.system")
    if project_id is not None and (domain_id is not None or system is not None):
        raise BadRequest("Specify only one of scope.project.id, scope.domain.id and scope.system.")
    if user_id is not None and group_id is not None:
        raise BadRequest("Specify only one of user.id and group.id.")
    include_subtree = _q_bool(call, "include_subtree")
    if include_subtree and project_id is None:
        raise BadRequest("scope.project.id must be given when include_subtree is.")
    effective = _q_flag(call, "effective")
    include_names = _q_bool(call, "include_names") or False
    rt = call.rt
    store = _store(rt)
    items: list[Doc] = []
    if group_id is None and domain_id is None and system is None:
        where: Doc = {}
        if user_id is not None:
            where["user_id"] = user_id
        if project_id is not None:
            where["project_id"] = (
                await _subtree(store, project_id) if include_subtree else project_id
            )
        roles = await _roles_by_id(store)
        assignments = await store.list("role_assignments", where)
        base = _base(rt)
        seen: set[tuple[str, str, str]] = set()
        for a in assignments:
            if a["role_id"] not in roles:
                continue
            expanded = (
                _expand_implied([roles[a["role_id"]]], roles)
                if effective
                else [roles[a["role_id"]]]
            )
            for role in expanded:
                key = (a["user_id"], a["project_id"], role["id"])
                if key in seen:
                    continue
                seen.add(key)
                links = {
                    "assignment": f"{base}/v3/projects/{a['project_id']}/users/{a['user_id']}/roles/{a['role_id']}"
                }
                if role["id"] != a["role_id"]:
                    links["prior_role"] = f"{base}/v3/roles/{a['role_id']}"
                items.append(
                    {
                        "role": {"id": role["id"]},
                        "scope": {"project": {"id": a["project_id"]}},
                        "user": {"id": a["user_id"]},
                        "links": links,
                    }
                )
        if role_id is not None:
            items = [i for i in items if i["role"]["id"] == role_id]
        if include_names:
            await _add_names(store, items, roles)
    return Reply(200, _collection(rt, "role_assignments", items, "/v3/role_assignments"))


async def _add_names(store: Store, items: list[Doc], roles: Mapping[str, Doc]) -> None:
    domains = {d["id"]: d for d in await store.list("domains")}
    users: dict[str, Doc | None] = {}
    projects: dict[str, Doc | None] = {}

    def named(domain_id: Any) -> Doc:
        d = domains.get(domain_id)
        return {"id": domain_id, "name": d["name"]} if d else {"id": domain_id}

    for item in items:
        role = roles.get(item["role"]["id"])
        if role:
            item["role"]["name"] = role["name"]
            if role.get("domain_id"):
                item["role"]["domain"] = named(role["domain_id"])
        uid = item["user"]["id"]
        if uid not in users:
            users[uid] = await store.get("users", uid)
        if (user := users[uid]) is not None:
            item["user"].update({"name": user["name"], "domain": named(user["domain_id"])})
        pid = item["scope"]["project"]["id"]
        if pid not in projects:
            projects[pid] = await store.get("projects", pid)
        if (project := projects[pid]) is not None:
            item["scope"]["project"].update(
                {"name": project["name"], "domain": named(project["domain_id"])}
            )


# -- services and endpoints (the catalog the spec describes) -------------------------

TEMPLATE_PROJECT = "%(project_id)s"
READ_ONLY_CATALOG = (
    "The service catalog comes from the stack's spec (spec/components.yaml): add or change a "
    "component there and regenerate instead."
)


def _services(rt: ServiceRuntime) -> list[Doc]:
    out = []
    for entry in rt.info.catalog(rt.config, TEMPLATE_PROJECT):
        comp = rt.info.components.get(entry["id"]) or {}
        out.append(
            {
                "id": entry["id"],
                "type": entry["type"],
                "name": entry["name"],
                "description": comp.get("title"),
                "enabled": True,
                "links": _links(rt, f"/v3/services/{entry['id']}"),
            }
        )
    return out


def _endpoints(rt: ServiceRuntime) -> list[Doc]:
    out = []
    for entry in rt.info.catalog(rt.config, TEMPLATE_PROJECT):
        for ep in entry["endpoints"]:
            out.append(
                {
                    "id": ep["id"],
                    "interface": ep["interface"],
                    "region": ep.get("region"),
                    "region_id": ep.get("region_id"),
                    "service_id": entry["id"],
                    "url": ep["url"],
                    "enabled": True,
                    "links": _links(rt, f"/v3/endpoints/{ep['id']}"),
                }
            )
    return out


@behaviour("identity.list_services", needs=("identity",))
async def list_services(call: Call) -> Reply:
    services = _services(call.rt)
    if (kind := _q_text(call, "type")) is not None:
        services = [s for s in services if s["type"] == kind]
    return Reply(200, _collection(call.rt, "services", services, "/v3/services"))


@behaviour("identity.create_service")
async def create_service(call: Call) -> Reply:
    raise Forbidden(READ_ONLY_CATALOG)


@behaviour("identity.show_service", needs=("identity",))
async def show_service(call: Call) -> Reply:
    service_id = call.path_params.get("service_id", "")
    for s in _services(call.rt):
        if s["id"] == service_id:
            return Reply(200, {"service": s})
    raise NotFound(f"Could not find service: {service_id}.")


@behaviour("identity.list_endpoints", needs=("identity",))
async def list_endpoints(call: Call) -> Reply:
    endpoints = _endpoints(call.rt)
    for key in ("interface", "service_id", "region_id"):
        if (value := _q_text(call, key)) is not None:
            endpoints = [e for e in endpoints if e[key] == value]
    return Reply(200, _collection(call.rt, "endpoints", endpoints, "/v3/endpoints"))


@behaviour("identity.create_endpoint", needs=("identity",))
async def create_endpoint(call: Call) -> Reply:
    body = call.body.get("endpoint") if isinstance(call.body, dict) else None
    if not isinstance(body, dict):
        raise BadRequest("Expecting to find endpoint in the request body.")
    if body.get("interface") not in ("public", "internal", "admin"):
        raise BadRequest("Invalid input for field 'interface': expected public, internal or admin.")
    service_id = _text(body.get("service_id"), "service_id")
    if service_id not in {s["id"] for s in _services(call.rt)}:
        raise BadRequest(f"Invalid service_id: could not find service {service_id}.")
    raise Forbidden(READ_ONLY_CATALOG)


@behaviour("identity.show_endpoint", needs=("identity",))
async def show_endpoint(call: Call) -> Reply:
    endpoint_id = call.path_params.get("endpoint_id", "")
    for e in _endpoints(call.rt):
        if e["id"] == endpoint_id:
            return Reply(200, {"endpoint": e})
    raise NotFound(f"Could not find endpoint: {endpoint_id}.")


# -- domains -------------------------------------------------------------------------


# -- bootstrap -----------------------------------------------------------------------


async def _ensure(store: Store, table: str, where: Mapping[str, Any], doc: Doc) -> Doc:
    """The row matching `where`, created as `doc` (a stable id) if there is none."""
    found = await store.list(table, where)
    if found:
        return found[0]
    try:
        return await store.create(table, doc)
    except Conflict:  # another instance bootstrapping at the same time
        return await store.require(table, doc["id"])


async def _ensure_user(rt: ServiceRuntime, name: str, password: str) -> Doc:
    store = _store(rt)
    found = await store.list("users", {"name": name, "domain_id": DEFAULT_DOMAIN_ID})
    if found:
        user = found[0]
        if not await verify_password(rt, password, user.get("password_hash")):
            # Like keystone-manage bootstrap: the configured password wins.
            updated = await store.update(
                "users", user["id"], {"password_hash": await hash_password(rt, password)}
            )
            user = updated or user
        return user
    doc: Doc = {
        "id": _stable_id("user", DEFAULT_DOMAIN_ID, name),
        "name": name,
        "domain_id": DEFAULT_DOMAIN_ID,
        "enabled": True,
        "default_project_id": None,
        "description": None,
        "password_expires_at": None,
        "options": {},
        "password_hash": await hash_password(rt, password),
    }
    try:
        return await store.create("users", doc)
    except Conflict:
        return await store.require("users", doc["id"])


def service_projects(rt: ServiceRuntime) -> list[str]:
    """Projects that run services (one service user each), read from the spec."""
    own = rt.info.components.get(rt.component, {}).get("project")
    if own is None:
        own = rt.info.api_component(rt.info.api_of_type("identity"))["project"]
    names = [
        c["project"]
        for c in rt.info.components.values()
        if c.get("kind") in SERVICE_KINDS and c.get("project") != own
    ]
    return list(dict.fromkeys(names))


@behaviour("identity.forget_user")
async def forget_user(event: ResourceEvent) -> None:
    """After a user is deleted: the tokens issued to them are forgotten (and so invalid)."""
    store = _store(event.call.rt)
    for t in await store.list("tokens", {"user_id": event.doc["id"]}):
        await store.delete("tokens", t["id"])


@behaviour("identity.bootstrap", needs=("identity",))
async def bootstrap(rt: ServiceRuntime) -> None:
    """Seed the identity database like keystone-manage bootstrap; safe to run again."""
    store = _store(rt)
    cfg = rt.config
    await _ensure(
        store,
        "domains",
        {"name": DEFAULT_DOMAIN_NAME},
        {
            "id": DEFAULT_DOMAIN_ID,
            "name": DEFAULT_DOMAIN_NAME,
            "description": "The default domain",
            "enabled": True,
            "tags": [],
            "options": {},
        },
    )
    roles: dict[str, Doc] = {}
    for name in BOOTSTRAP_ROLES:
        roles[name] = await _ensure(
            store,
            "roles",
            {"name": name, "domain_id": None},  # the global role, not a domain's
            {
                "id": _stable_id("role", name),
                "name": name,
                "domain_id": None,
                "description": None,
                "options": {},
            },
        )
    projects: dict[str, Doc] = {}
    for name, description in (
        ("admin", "Bootstrap project for initializing the cloud."),
        (SERVICE_PROJECT, "Project of the service users."),
        ("demo", "Demo project."),
    ):
        projects[name] = await _ensure(
            store,
            "projects",
            {"name": name, "domain_id": DEFAULT_DOMAIN_ID},
            {
                "id": _stable_id("project", DEFAULT_DOMAIN_ID, name),
                "name": name,
                "domain_id": DEFAULT_DOMAIN_ID,
                "description": description,
                "enabled": True,
                "is_domain": False,
                "parent_id": DEFAULT_DOMAIN_ID,
                "tags": [],
                "options": {},
            },
        )
    wanted: list[tuple[str, str, list[str], str]] = [
        ("admin", cfg.admin_password, ["admin"], "admin"),
        # the operator also administers the service project, where glance keeps image data
        ("admin", cfg.admin_password, ["admin"], SERVICE_PROJECT),
        ("demo", cfg.demo_password, ["member"], "demo"),
    ]
    wanted += [
        (name, cfg.service_password, ["admin", "service"], SERVICE_PROJECT)
        for name in service_projects(rt)
    ]
    passwords = {name: pw for name, pw, _, _ in wanted}
    found = await asyncio.gather(*(_ensure_user(rt, n, pw) for n, pw in passwords.items()))
    users = dict(zip(passwords, found, strict=True))
    for name, _, role_names, project in wanted:
        for role in role_names:
            await _grant(store, users[name]["id"], projects[project]["id"], roles[role]["id"])
    if rt.auth is not None and rt.auth.local is not None and rt.auth.local_issue is None:
        # The identity service obtains its own token without calling itself over HTTP.
        async def issue(user: str, password: str, project: str) -> tuple[str, AuthContext]:
            return await issue_service_token(rt, user, password, project)

        rt.auth.bind_local_issuer(issue)
