"""nova's side of neutron's security groups and floating IP pools: the groups a new server
names, checked against neutron; a server's groups in nova's shape
(GET /v2.1/servers/{id}/os-security-groups); the pools (GET /v2.1/os-floating-ip-pools).

neutron owns the groups; nova keeps only their names on the instance (`security_groups`).
What is algorithm here is nova's name-or-id matching and its conversion of neutron's
rules (only ingress ones; a protocol without ports spans 1-65535 for TCP/UDP, -1 else).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from specstack_runtime.context import Call, Interaction, Reply
from specstack_runtime.errors import BadRequest, Conflict
from specstack_runtime.http import expect
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import access
from specstack_runtime.resources.serve import engine_call

Doc = dict[str, Any]


def requested_names(body: Any) -> list[str]:
    """The names (or ids) in a create request's `security_groups: [{"name": X}]`."""
    server = body.get("server") if isinstance(body, Mapping) else None
    groups = server.get("security_groups") if isinstance(server, Mapping) else None
    if not isinstance(groups, list):
        return []
    return [str(g["name"]) for g in groups if isinstance(g, Mapping) and g.get("name")]


def match(groups: Iterable[Mapping[str, Any]], wanted: str) -> Mapping[str, Any] | None:
    """The project's group `wanted` names: by name (two of that name are ambiguous, 409),
    else by id (nova's order)."""
    groups = list(groups)
    named = [g for g in groups if g.get("name") == wanted]
    if len(named) > 1:
        raise Conflict(
            f"Multiple security groups found matching '{wanted}'. Use an ID to be more specific."
        )
    if named:
        return named[0]
    return next((g for g in groups if g.get("id") == wanted), None)


@behaviour("compute.check_security_groups", via=("http",))
async def check_security_groups(ix: Interaction) -> None:
    """boot-vm 4.2: each group a new server names (none: `default`) is one of its
    project's groups in neutron (as nova checks before it records the instance): 400
    otherwise. Listing the groups makes the project's `default` group on first use."""
    names = requested_names(ix.call.body) or ["default"]  # none named: nova's default
    auth = ix.call.auth
    query = {"project_id": auth.project_id} if auth is not None and auth.project_id else {}
    resp = expect(await ix.invoke(query=query, token=ix.call.token), 200)
    groups = resp.json().get("security_groups") or []
    for name in names:
        if match(groups, name) is None:
            raise BadRequest(f"Security group {name} not found.")


def nova_rule(rule: Mapping[str, Any], groups: Mapping[str, Mapping[str, Any]]) -> Doc:
    """A neutron rule as nova shows it."""
    protocol = rule.get("protocol")
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    if protocol and low is None and high is None:
        low, high = (1, 65535) if str(protocol).upper() in ("TCP", "UDP") else (-1, -1)
    out: Doc = {
        "id": rule.get("id"),
        "parent_group_id": rule.get("security_group_id"),
        "ip_protocol": protocol,
        "from_port": low,
        "to_port": high,
        "group": {},
        "ip_range": {},
    }
    remote = rule.get("remote_group_id")
    if remote:
        source = groups.get(str(remote)) or {}
        out["group"] = {"name": source.get("name"), "tenant_id": source.get("project_id")}
    else:
        out["ip_range"] = {"cidr": rule.get("remote_ip_prefix")}
    return out


def nova_group(group: Mapping[str, Any], groups: Mapping[str, Mapping[str, Any]]) -> Doc:
    """A neutron group as nova shows it: its ingress rules only."""
    return {
        "id": group.get("id"),
        "name": group.get("name"),
        "description": group.get("description") or "",
        "tenant_id": group.get("project_id"),
        "rules": [
            nova_rule(r, groups)
            for r in group.get("security_group_rules") or []
            if r.get("direction") == "ingress"
        ],
    }


@behaviour("compute.list_server_security_groups", needs=("network",))
async def list_server_security_groups(call: Call) -> Reply:
    """GET /v2.1/servers/{server_id}/os-security-groups: the groups the server was created
    in, as neutron holds them now (a group deleted since is left out)."""
    rc = engine_call(call, "server")
    server = await access.lookup(rc)
    names = [str(n) for n in server.get("security_groups") or []]
    rt = call.rt
    resp = await rt.clients.call(
        rt.info.api_of_type("network"),
        "listSecurityGroups",
        query={"project_id": server.get("project_id")},
        token=call.token,
    )
    groups = expect(resp, 200).json().get("security_groups") or []
    by_id = {str(g.get("id")): g for g in groups}
    found = [g for g in (match(groups, n) for n in dict.fromkeys(names)) if g is not None]
    return Reply(200, {"security_groups": [nova_group(g, by_id) for g in found]})


@behaviour("compute.list_floating_ip_pools", needs=("network",))
async def list_floating_ip_pools(call: Call) -> Reply:
    """GET /v2.1/os-floating-ip-pools: the external networks' names, as nova lists them."""
    rt = call.rt
    resp = await rt.clients.call(
        rt.info.api_of_type("network"),
        "listNetworks",
        query={"router:external": "true"},
        token=call.token,
    )
    nets = expect(resp, 200).json().get("networks") or []
    return Reply(200, {"floating_ip_pools": [{"name": n.get("name")} for n in nets]})
