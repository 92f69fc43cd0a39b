"""What the identity behaviours share: reading the spec's identity data, client input,
passwords (bcrypt, recent matches remembered) and the
lookups of users, domains and the roles a user holds on a project (the spec's role
template `held`: implied ones included)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import UTC, datetime

from specstack_runtime.auth import UNAUTHORIZED
from specstack_runtime.errors import Unauthorized
from specstack_runtime.resources.hashing import bcrypt_matches
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Doc, Store

VERIFIED_CACHE_MAX = 1024


# -- small helpers -------------------------------------------------------------------


def store_of(rt: ServiceRuntime) -> Store:
    return rt.require_store()


def default_domain_id(rt: ServiceRuntime) -> str:
    """The bootstrap domain: the first of the domain's rows in the spec."""
    return str(rt.info.resources.resource("domain").res.rows[0]["id"])


def iso(ts: float) -> str:
    """Keystone's timestamp format, with microseconds: 2015-08-27T09:49:58.000000Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- passwords -----------------------------------------------------------------------


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
    ok = await bcrypt_matches(password, hashed)
    if ok:
        seen[key] = True
        while len(seen) > VERIFIED_CACHE_MAX:
            seen.popitem(last=False)
    return ok


# -- lookups -------------------------------------------------------------------------


async def domain_by_ref(store: Store, ref: Doc) -> Doc | None:
    """A domain named by {"id"} or {"name"} (the spec's token `issue` rules have checked which
    and that it is text); None if there is none."""
    if ref.get("id") is not None:
        return await store.get("domains", ref["id"])
    found = await store.list("domains", {"name": ref["name"]})
    return found[0] if found else None


async def project_roles(rt: ServiceRuntime, user_id: str, project_id: str) -> list[Doc]:
    """The roles the user holds on the project, as the spec's role template `held` says."""
    store = store_of(rt)
    where = {"user_id": user_id, "project_id": project_id}
    assigned = [a["role_id"] for a in await store.list("role_assignments", where)]
    if not assigned:
        return []
    role = rt.info.resources.resource("role")
    return list(role.template("held", rows=await store.list("roles"), refs={"assigned": assigned}))


async def active_user(store: Store, user: Doc | None) -> tuple[Doc, Doc] | None:
    """(user, its domain) if the user exists and both are enabled."""
    if user is None or not user.get("enabled", True):
        return None
    domain = await store.get("domains", user["domain_id"])
    if domain is None or not domain.get("enabled", True):
        return None
    return user, domain


async def by_ref(store: Store, table: str, ref: Doc) -> Doc | None:
    """The row an `{id}` or `{name, domain}` reference of the request names (the spec's
    token `issue` rules have checked its shape and text), if any."""
    if ref.get("id") is not None:
        return await store.get(table, ref["id"])
    domain = await domain_by_ref(store, ref["domain"])
    if domain is None:
        raise Unauthorized(UNAUTHORIZED)
    where = {"name": ref["name"], "domain_id": domain["id"]}
    found = await store.list(table, where)
    return found[0] if found else None
