"""The algorithms of neutron's security groups, as hooks of the resource engine.

spec/resources/network.yaml declares what a group and a rule are (fields, scope,
refusals, uniqueness, what deleting does); these hooks do what the spec cannot state:
a project's `default` group made on first use (its id derived from the project, so two
first uses at once make one group). Its rules, and a new group's egress rules, are the
spec's effects.
"""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any

from specstack_runtime.errors import Conflict
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import hooks, writes
from specstack_runtime.resources.context import ResourceCall
from specstack_runtime.resources.hooks import ResourceEvent

Doc = dict[str, Any]

#: Namespace of the default groups' ids (uuid5 of the project).
_DEFAULT_IDS = uuid.UUID("0c7d3f4e-9a51-5e0b-8d2c-6f1e4a3b2c10")


@lru_cache(maxsize=256)  # asked twice a port's create, for a few projects
def default_group_id(project_id: str) -> str:
    return str(uuid.uuid5(_DEFAULT_IDS, f"security_group|{project_id}"))


async def ensure_default(rc: ResourceCall, project_id: str) -> str:
    """The id of the project's default group, made if it has none yet (its rules are the
    spec's effects: every packet out, and in from the group's own ports)."""
    groups = rc.of("security_group")
    table, default = groups.res.res.table, groups.res.res.data["default"]
    where = {"project_id": project_id, "name": default["name"]}
    gid = default_group_id(project_id)
    # by its id, first: a row the store remembers (an embedded stack's) is no statement
    mine = await groups.store.get(table, gid)
    if mine is not None and all(mine.get(k) == v for k, v in where.items()):
        return gid
    if found := await groups.store.list(table, where, limit=1):  # the first made, alone read
        return str(found[0]["id"])
    doc = await writes.for_create(groups, {**default, "project_id": project_id}, gid)
    try:
        group = await groups.store.create(table, doc)
    except Conflict:
        return gid  # another request made it first
    await hooks.run(groups, "after_create", group, None)
    return gid


@behaviour("network.default_security_group")
async def default_security_group(event: ResourceEvent) -> None:
    """Before a list of groups, or a new group: the project's default group exists
    (neutron makes it on the project's first use)."""
    project = event.doc.get("project_id")
    if project is None and event.call.auth is not None:
        project = event.call.auth.project_id
    if project:
        await ensure_default(event.engine, str(project))
