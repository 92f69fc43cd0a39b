"""Identity's read-only views (keystone v3): the catalog of a token's project
and the role-assignment report, whose effective form expands implied roles (the spec's
`role` data)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from specstack_runtime.behaviours.identity_common import (
    Doc,
    base_of,
    collection,
    expand_implied,
    q_bool,
    q_text,
    roles_by_id,
    store_of,
)
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import Forbidden
from specstack_runtime.registry import behaviour
from specstack_runtime.store import Store


def _q_flag(call: Call, name: str) -> bool:
    """Keystone's flag parameters: present means true unless it says 0 or false."""
    if name not in call.query:
        return False
    raw = (call.q(name) or "").strip().lower()
    return raw not in ("0", "false", "no", "off")


@behaviour("identity.get_auth_catalog", needs=("identity",))
async def get_auth_catalog(call: Call) -> Reply:
    auth = call.require_auth()
    if not auth.project_id:
        raise Forbidden("A project-scoped token is required to produce a service catalog.")
    catalog = call.rt.info.catalog(call.rt.config, auth.project_id)
    return Reply(200, collection(call.rt, "catalog", catalog, "/v3/auth/catalog"))


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
    user_id = q_text(call, "user.id")
    call.authorize({"user_id": user_id})
    project_id = q_text(call, "scope.project.id")
    domain_id = q_text(call, "scope.domain.id")
    role_id = q_text(call, "role.id")
    group_id = q_text(call, "group.id")
    system = q_text(call, "scope.system")
    fail = call.rt.info.resources.resource("role_grant").fail
    if project_id is not None and (domain_id is not None or system is not None):
        raise fail("one_scope")
    if user_id is not None and group_id is not None:
        raise fail("one_actor")
    include_subtree = q_bool(call, "include_subtree")
    if include_subtree and project_id is None:
        raise fail("subtree_needs_project")
    effective = _q_flag(call, "effective")
    include_names = q_bool(call, "include_names") or False
    rt = call.rt
    store = store_of(rt)
    items: list[Doc] = []
    if group_id is None and domain_id is None and system is None:
        where: Doc = {}
        if user_id is not None:
            where["user_id"] = user_id
        if project_id is not None:
            where["project_id"] = (
                await _subtree(store, project_id) if include_subtree else project_id
            )
        roles = await roles_by_id(store)
        assignments = await store.list("role_assignments", where)
        base = base_of(rt)
        seen: set[tuple[str, str, str]] = set()
        for a in assignments:
            if a["role_id"] not in roles:
                continue
            expanded = (
                expand_implied(rt, [roles[a["role_id"]]], roles)
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
    return Reply(200, collection(rt, "role_assignments", items, "/v3/role_assignments"))


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
