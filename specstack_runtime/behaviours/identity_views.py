"""Identity's read-only views (keystone v3): the catalog of a token's project."""

from __future__ import annotations

from specstack_runtime.behaviours.identity_common import collection
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import Forbidden
from specstack_runtime.registry import behaviour


@behaviour("identity.get_auth_catalog", needs=("identity",))
async def get_auth_catalog(call: Call) -> Reply:
    auth = call.require_auth()
    if not auth.project_id:
        raise Forbidden("A project-scoped token is required to produce a service catalog.")
    catalog = call.rt.info.catalog(call.rt.config, auth.project_id)
    return Reply(200, collection(call.rt, "catalog", catalog, "/v3/auth/catalog"))
