"""Seed the identity database at start-up, as keystone-manage bootstrap does.

What is created is the spec's (spec/resources/identity.yaml: the domain's, roles' and
projects' `rows:`, the users', grants' and catalog's `seed:`), written by the resource
engine (resources/seeds.py), safely again at every start and from several instances at
once; then the identity service's own token issuer is bound.
"""

from __future__ import annotations

from specstack_runtime.behaviours.identity import issue_service_token
from specstack_runtime.behaviours.identity_common import store_of
from specstack_runtime.context import AuthContext
from specstack_runtime.registry import behaviour
from specstack_runtime.resources import seeds
from specstack_runtime.services import ServiceRuntime


@behaviour("identity.bootstrap", needs=("identity",))
async def bootstrap(rt: ServiceRuntime) -> None:
    """Seed the identity database like keystone-manage bootstrap; safe to run again."""
    await seeds.seed_api(rt, store_of(rt), rt.info.resources.resource("domain").res.api)
    if rt.auth is not None and rt.auth.local is not None and rt.auth.local_issue is None:
        # The identity service obtains its own token without calling itself over HTTP.
        async def issue(user: str, password: str, project: str) -> tuple[str, AuthContext]:
            return await issue_service_token(rt, user, password, project)

        rt.auth.bind_local_issuer(issue)
