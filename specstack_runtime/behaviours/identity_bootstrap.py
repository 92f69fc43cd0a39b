"""Seed the identity database at start-up, as keystone-manage bootstrap does.

What is created is the spec's (the domain's, roles' and projects' `rows:`, the users'
`bootstrap` and `service_users` data in spec/resources/identity.yaml); this module only
seeds them and the users, whose passwords are the config's, safely
again at every start and from several instances at once (stable ids: two instances
creating the same row find each other's).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping

from specstack_runtime.behaviours.identity import issue_service_token
from specstack_runtime.behaviours.identity_common import (
    Doc,
    data_of,
    default_domain_id,
    hash_password,
    store_of,
    verify_password,
)
from specstack_runtime.context import AuthContext
from specstack_runtime.errors import Conflict
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import seeds
from specstack_runtime.resources.ids import stable_id
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Store

_BOOTSTRAP_NS = uuid.UUID("6f1c2b9e-4d3a-5b7c-8e9f-0a1b2c3d4e5f")


def _stable_id(kind: str, *parts: str) -> str:
    return uuid.uuid5(_BOOTSTRAP_NS, "|".join((kind, *parts))).hex


async def _ensure_user(rt: ServiceRuntime, domain_id: str, name: str, password: str) -> Doc:
    store = store_of(rt)
    found = await store.list("users", {"name": name, "domain_id": domain_id})
    if found:
        user = found[0]
        if not await verify_password(rt, password, user.get("password_hash")):
            # Like keystone-manage bootstrap: the configured password wins.
            updated = await store.update(
                "users", user["id"], {"password_hash": await hash_password(rt, password)}
            )
            user = updated or user
        return user
    doc = rt.info.resources.resource("user").complete(  # the spec's defaults
        {
            "id": _stable_id("user", domain_id, name),
            "name": name,
            "domain_id": domain_id,
            "password_hash": await hash_password(rt, password),
        }
    )
    try:
        return await store.create("users", doc)
    except Conflict:  # another instance bootstrapping at the same time
        return await store.require("users", doc["id"])


async def _grant(store: Store, user_id: str, project_id: str, role_id: str) -> None:
    doc = {
        # the id spec/resources/identity.yaml gives a grant's row (role_grant: fields:...)
        "id": stable_id("role_grant", (user_id, project_id, role_id)),
        "user_id": user_id,
        "project_id": project_id,
        "role_id": role_id,
    }
    with contextlib.suppress(Conflict):  # granting again is not an error
        await store.create("role_assignments", doc)


#: The catalog as the tables hold it: one project's URLs stand for every project's.
TEMPLATE_PROJECT = "%(project_id)s"


async def _sync(store: Store, table: str, rows: list[Doc]) -> None:
    """Make `table` hold exactly `rows` (by id), changing only what differs."""
    have = {d["id"]: d for d in await store.list(table)}
    for row in rows:
        old = have.pop(row["id"], None)
        if old is None:
            with contextlib.suppress(Conflict):  # another instance wrote it meanwhile
                await store.create(table, row)
        elif any(old.get(k) != v for k, v in row.items()):
            await store.update(table, row["id"], row)
    for gone in have:
        await store.delete(table, gone)


async def _register_catalog(rt: ServiceRuntime) -> None:
    """The stack's catalog (spec/components.yaml) into the services and endpoints tables."""
    services: list[Doc] = []
    endpoints: list[Doc] = []
    for entry in rt.info.catalog(rt.config, TEMPLATE_PROJECT):
        comp = rt.info.components.get(entry["id"]) or {}
        services.append(
            {
                "id": entry["id"],
                "type": entry["type"],
                "name": entry["name"],
                "description": comp.get("title"),
                "enabled": True,
            }
        )
        endpoints += [
            {
                "id": ep["id"],
                "interface": ep["interface"],
                "region": ep.get("region"),
                "region_id": ep.get("region_id"),
                "service_id": entry["id"],
                "url": ep["url"],
                "enabled": True,
            }
            for ep in entry["endpoints"]
        ]
    store = store_of(rt)
    await _sync(store, "services", services)
    await _sync(store, "endpoints", endpoints)


def service_projects(rt: ServiceRuntime) -> list[str]:
    """Projects that run services (one service user each), read from the spec."""
    kinds = data_of(rt, "user")["service_users"]["kinds"]
    own = rt.info.components.get(rt.component, {}).get("project")
    if own is None:
        own = rt.info.api_component(rt.info.api_of_type("identity"))["project"]
    names = [
        c["project"]
        for c in rt.info.components.values()
        if c.get("kind") in kinds and c.get("project") != own
    ]
    return list(dict.fromkeys(names))


def _wanted_users(rt: ServiceRuntime) -> list[tuple[str, str, Mapping[str, list[str]]]]:
    """(user name, password, project -> role names) of every user the spec seeds."""
    data = data_of(rt, "user")
    cfg = rt.config
    users = [(u["name"], getattr(cfg, u["password"]), u["roles"]) for u in data["bootstrap"]]
    service = data["service_users"]
    password = getattr(cfg, service["password"])
    return users + [(name, password, service["roles"]) for name in service_projects(rt)]


@behaviour("identity.bootstrap", needs=("identity",))
async def bootstrap(rt: ServiceRuntime) -> None:
    """Seed the identity database like keystone-manage bootstrap; safe to run again."""
    store = store_of(rt)
    ids: dict[str, dict[str, str]] = {}
    for name in ("domain", "role", "project"):  # the spec's rows (`rows:`)
        res = rt.info.resources.resource(name)
        await seeds.seed(store, res)
        ids[name] = {row["name"]: row["id"] for row in res.res.rows}
    domain_id = default_domain_id(rt)
    wanted = _wanted_users(rt)
    passwords = {name: pw for name, pw, _ in wanted}
    found = await asyncio.gather(
        *(_ensure_user(rt, domain_id, n, pw) for n, pw in passwords.items())
    )
    users = dict(zip(passwords, found, strict=True))
    for name, _, grants in wanted:
        for project, role_names in grants.items():
            for role in role_names:
                await _grant(store, users[name]["id"], ids["project"][project], ids["role"][role])
    await _register_catalog(rt)
    if rt.auth is not None and rt.auth.local is not None and rt.auth.local_issue is None:
        # The identity service obtains its own token without calling itself over HTTP.
        async def issue(user: str, password: str, project: str) -> tuple[str, AuthContext]:
            return await issue_service_token(rt, user, password, project)

        rt.auth.bind_local_issuer(issue)
