"""Identity's read-only views (keystone v3): its versions, the service catalog the spec
describes (services and endpoints cannot be created at run time) and the role-assignment
report, whose effective form expands implied roles (the spec's `role` data)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from specstack_runtime.behaviours.identity import (
    Doc,
    api_of,
    base_of,
    collection,
    expand_implied,
    q_bool,
    q_text,
    roles_by_id,
    store_of,
    text,
)
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import BadRequest, Forbidden, NotFound
from specstack_runtime.registry import behaviour
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Store


def _q_flag(call: Call, name: str) -> bool:
    """Keystone's flag parameters: present means true unless it says 0 or false."""
    if name not in call.query:
        return False
    raw = (call.q(name) or "").strip().lower()
    return raw not in ("0", "false", "no", "off")


def _links(rt: ServiceRuntime, path: str) -> dict[str, str]:
    return {"self": base_of(rt) + path}


# -- versions ------------------------------------------------------------------------


def _version(call: Call) -> Doc:
    """The one version the API document declares; its date and media type are the
    operation's args."""
    rt = call.rt
    version = str(rt.info.apis[api_of(rt)].get("version") or "3.0")
    return {
        "id": f"v{version}",
        "status": "stable",
        "updated": call.args["updated"],
        "links": [{"rel": "self", "href": base_of(rt) + "/v3/"}],
        "media-types": [{"base": "application/json", "type": call.args["media_type"]}],
    }


@behaviour("identity.get_identity_versions", needs=("identity",))
async def get_identity_versions(call: Call) -> Reply:
    return Reply(
        300,
        {"versions": {"values": [_version(call)]}},
        headers={"Location": base_of(call.rt) + "/v3/"},
    )


@behaviour("identity.get_identity_v3", needs=("identity",))
async def get_identity_v3(call: Call) -> Reply:
    return Reply(200, {"version": _version(call)})


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
    if project_id is not None and (domain_id is not None or system is not None):
        raise BadRequest("Specify only one of scope.project.id, scope.domain.id and scope.system.")
    if user_id is not None and group_id is not None:
        raise BadRequest("Specify only one of user.id and group.id.")
    include_subtree = q_bool(call, "include_subtree")
    if include_subtree and project_id is None:
        raise BadRequest("scope.project.id must be given when include_subtree is.")
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
    if (kind := q_text(call, "type")) is not None:
        services = [s for s in services if s["type"] == kind]
    return Reply(200, collection(call.rt, "services", services, "/v3/services"))


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
        if (value := q_text(call, key)) is not None:
            endpoints = [e for e in endpoints if e[key] == value]
    return Reply(200, collection(call.rt, "endpoints", endpoints, "/v3/endpoints"))


@behaviour("identity.create_endpoint", needs=("identity",))
async def create_endpoint(call: Call) -> Reply:
    body = call.body.get("endpoint") if isinstance(call.body, dict) else None
    if not isinstance(body, dict):
        raise BadRequest("Expecting to find endpoint in the request body.")
    if body.get("interface") not in ("public", "internal", "admin"):
        raise BadRequest("Invalid input for field 'interface': expected public, internal or admin.")
    service_id = text(body.get("service_id"), "service_id")
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
