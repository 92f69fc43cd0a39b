"""nova's side of neutron's security groups: the groups a new server names, checked
against neutron (a server's groups in nova's shape are the spec's query
`server_security_groups`).

neutron owns the groups; nova keeps only their names on the instance (`security_groups`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from specstack_runtime.behaviours.nova_common import fail
from specstack_runtime.context import Interaction
from specstack_runtime.http import expect
from specstack_runtime.registry import behaviour
from specstack_runtime.services import ServiceRuntime


def requested_names(body: Any) -> list[str]:
    """The names (or ids) in a create request's `security_groups: [{"name": X}]`."""
    server = body.get("server") if isinstance(body, Mapping) else None
    groups = server.get("security_groups") if isinstance(server, Mapping) else None
    if not isinstance(groups, list):
        return []
    return [str(g["name"]) for g in groups if isinstance(g, Mapping) and g.get("name")]


def match(
    rt: ServiceRuntime, groups: Iterable[Mapping[str, Any]], wanted: str
) -> Mapping[str, Any] | None:
    """The project's group `wanted` names: by name (two of that name are ambiguous, 409),
    else by id (nova's order)."""
    groups = list(groups)
    named = [g for g in groups if g.get("name") == wanted]
    if len(named) > 1:
        raise fail(rt, "group_ambiguous", name=wanted)
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
        if match(ix.rt, groups, name) is None:
            raise fail(ix.rt, "group_not_found", name=name)
