"""The auth matrix: every protected operation refuses callers without a valid token or role.

The generated `test_auth_<api>.py` modules call these checks for each operation
the spec protects: no token, a bogus, an expired and a revoked token give 401; a
token without the role the operation's `x-specstack-policy` needs gives 403; a
path naming another project gives 403; another project's resource gives 404.
Path parameters are dummies where the check comes before any lookup.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from specstack_conformance.checks import ConformanceError
from specstack_conformance.harness import CannotExpireTokens, Target
from specstack_conformance.matrix import RESOURCE_PARAMS

#: How long a service may keep answering for a revoked token (its cache: 5 s).
REVOCATION_WAIT_S = 6.0
DUMMY = "conform-auth-dummy"
_PREFIX = "conform-auth"

#: Per target: the revoked token, the admin project's resources, project ids.
_STATE: dict[int, dict[str, Any]] = {}


def _state(target: Target) -> dict[str, Any]:
    return _STATE.setdefault(id(target), {})


def _operation(target: Target, api: str, operation_id: str) -> dict[str, Any]:
    for a in target.info.ir["apis"]:
        if a["name"] == api:
            for op in a["operations"]:
                if op["operation_id"] == operation_id:
                    return dict(op)
    raise ConformanceError(f"{api} has no operation {operation_id}")


def _path_params(
    op: dict[str, Any], project: str, overrides: dict[str, str] | None = None
) -> dict[str, str]:
    """Dummy values for the path's parameters, the project's where one names a project."""
    out: dict[str, str] = {}
    for p in op["parameters"]:
        if p["location"] != "path":
            continue
        name = p["name"]
        template = p.get("policy_target")
        if template and "%(project_id)s" in template:
            out[name] = template.replace("%(project_id)s", project)
        elif name == "project_id":
            out[name] = project
        else:
            out[name] = DUMMY
    out.update(overrides or {})
    return out


def _body(op: dict[str, Any]) -> Any:
    if op.get("request_content_type") == "application/octet-stream":
        return b""
    return {} if op.get("request_content_type") else None


async def _call(
    target: Target, api: str, op: dict[str, Any], params: dict[str, str], token: str | None
) -> httpx.Response:
    assert target.clients is not None
    return await target.clients.call(
        api, op["operation_id"], params, body=_body(op), token=token or None
    )


def _expect(resp: httpx.Response, status: int, what: str) -> None:
    if resp.status_code != status:
        raise ConformanceError(
            f"{what}: answered {resp.status_code}, expected {status}: {resp.text[:300]}"
        )


async def _demo(target: Target) -> tuple[str, str]:
    st = _state(target)
    if "demo" not in st:
        st["demo"] = await target.demo_token()
    return tuple(st["demo"])


async def _admin_project(target: Target) -> str:
    st = _state(target)
    if "admin_project" not in st:
        _, st["admin_project"] = await target.admin_login()
    return str(st["admin_project"])


def _run(target: Target, work: Callable[[], Awaitable[None]]) -> None:
    async def go() -> None:
        await work()

    target.run(go())


# the checks the generated tests call ---------------------------------------------


def no_token(target: Target, api: str, operation_id: str) -> None:
    """No X-Auth-Token: 401."""
    op = _operation(target, api, operation_id)

    async def work() -> None:
        _, project = await _demo(target)
        resp = await _call(target, api, op, _path_params(op, project), None)
        _expect(resp, 401, f"{api} {operation_id} without a token")

    _run(target, work)


def bogus_token(target: Target, api: str, operation_id: str) -> None:
    """A token keystone never issued: 401."""
    op = _operation(target, api, operation_id)

    async def work() -> None:
        _, project = await _demo(target)
        token = f"gAAAAA{uuid.uuid4().hex}{uuid.uuid4().hex}"
        resp = await _call(target, api, op, _path_params(op, project), token)
        _expect(resp, 401, f"{api} {operation_id} with a bogus token")

    _run(target, work)


async def _revoked(target: Target) -> tuple[str, str]:
    """A demo token, used once with every API (so their caches hold it), then revoked.

    The revocation is DELETE /v3/auth/tokens by the token's own user; services
    that validated the token before may go on accepting it for their cache's
    lifetime (5 s), which `revoked_token` waits out.
    """
    st = _state(target)
    if "revoked" not in st:
        assert target.demo is not None and target.clients is not None
        token, project = await target.demo_token()
        for api in target.info.ir["apis"]:
            op = next(
                (
                    o
                    for o in api["operations"]
                    if o["requires_token"]
                    and o["method"] == "GET"
                    and not any(p["required"] for p in o["parameters"] if p["location"] != "path")
                    and not any(d == DUMMY for d in _path_params(o, project).values())
                ),
                None,
            )
            if op is not None:
                await _call(target, api["name"], op, _path_params(op, project), token)
        identity = target.info.api_of_type("identity")
        resp = await target.clients.call(
            identity, "revokeToken", headers={"X-Subject-Token": token}, token=token
        )
        _expect(resp, 204, "revoking a demo token")
        st["revoked"] = (token, project)
    return tuple(st["revoked"])


def revoked_token(target: Target, api: str, operation_id: str) -> None:
    """A revoked token: 401 (services may cache a validation for up to 5 s)."""
    op = _operation(target, api, operation_id)

    async def work() -> None:
        token, project = await _revoked(target)
        deadline = time.monotonic() + REVOCATION_WAIT_S
        while True:
            resp = await _call(target, api, op, _path_params(op, project), token)
            if resp.status_code == 401 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        _expect(resp, 401, f"{api} {operation_id} with a revoked token")

    _run(target, work)


async def _expired(target: Target) -> tuple[str, str]:
    """A demo token whose lifetime has ended, never used before (so no service caches it)."""
    st = _state(target)
    if "expired" not in st:
        assert target.demo is not None
        token, project = await target.demo_token()
        await target.expire_token(token)
        st["expired"] = (token, project)
    return tuple(st["expired"])


def expired_token(target: Target, api: str, operation_id: str) -> None:
    """A token past its expiry: 401."""
    op = _operation(target, api, operation_id)

    async def work() -> None:
        try:
            token, project = await _expired(target)
        except CannotExpireTokens as exc:
            pytest.skip(str(exc))
        resp = await _call(target, api, op, _path_params(op, project), token)
        _expect(resp, 401, f"{api} {operation_id} with an expired token")

    _run(target, work)


def insufficient_role(target: Target, api: str, operation_id: str) -> None:
    """The demo user (member, reader) lacks the role the operation's policy needs: 403."""
    op = _operation(target, api, operation_id)

    async def work() -> None:
        token, project = await _demo(target)
        resp = await _call(target, api, op, _path_params(op, project), token)
        _expect(resp, 403, f"{api} {operation_id} as demo (policy {op.get('policy')!r})")

    _run(target, work)


def other_project_path(target: Target, api: str, operation_id: str) -> None:
    """The path names the admin project, the demo user's token another one: 403."""
    op = _operation(target, api, operation_id)

    async def work() -> None:
        token, _ = await _demo(target)
        other = await _admin_project(target)
        resp = await _call(target, api, op, _path_params(op, other), token)
        _expect(resp, 403, f"{api} {operation_id} as demo on the admin project's path")

    _run(target, work)


def other_project_resource(target: Target, api: str, operation_id: str, param: str) -> None:
    """A resource of the admin project, asked for by the demo user: 404 (it is hidden)."""
    op = _operation(target, api, operation_id)
    if param not in RESOURCES:
        raise ConformanceError(f"the conformance library cannot create a {param} resource")

    async def work() -> None:
        token, project = await _demo(target)
        resource_id = await _owned_by_admin(target, param)
        params = _path_params(op, project, {param: resource_id})
        resp = await _call(target, api, op, params, token)
        _expect(resp, 404, f"{api} {operation_id} as demo on the admin project's {param}")

    _run(target, work)


# the admin project's resources -----------------------------------------------------


async def _admin_call(
    target: Target, kind: str, operation_id: str, codes: tuple[int, ...], **kwargs: Any
) -> Any:
    assert target.clients is not None
    token = await target.admin_token()
    api = target.info.api_of_type(kind)
    resp = await target.clients.call(api, operation_id, token=token, **kwargs)
    if resp.status_code not in codes:
        raise ConformanceError(
            f"admin {operation_id}: answered {resp.status_code}: {resp.text[:300]}"
        )
    return resp.json() if resp.content else None


async def _network(target: Target) -> str:
    body = {"network": {"name": f"{_PREFIX}-{uuid.uuid4().hex[:8]}"}}
    made = await _admin_call(target, "network", "createNetwork", (201,), body=body)
    return str(made["network"]["id"])


async def _subnet(target: Target) -> str:
    network = await _owned_by_admin(target, "network_id")
    body = {
        "subnet": {
            "network_id": network,
            "ip_version": 4,
            "cidr": "10.250.0.0/24",
            "name": f"{_PREFIX}-subnet",
        }
    }
    made = await _admin_call(target, "network", "createSubnet", (201,), body=body)
    return str(made["subnet"]["id"])


async def _port(target: Target) -> str:
    network = await _owned_by_admin(target, "network_id")
    await _owned_by_admin(target, "subnet_id")
    body = {"port": {"network_id": network, "name": f"{_PREFIX}-port"}}
    made = await _admin_call(target, "network", "createPort", (201,), body=body)
    return str(made["port"]["id"])


async def _volume(target: Target) -> str:
    project = await _admin_project(target)
    body = {"volume": {"name": f"{_PREFIX}-volume", "size": 1}}
    made = await _admin_call(
        target,
        "block-storage",
        "createVolume",
        (202,),
        path_params={"project_id": project},
        body=body,
    )
    return str(made["volume"]["id"])


async def _image(target: Target) -> str:
    body = {
        "name": f"{_PREFIX}-image",
        "disk_format": "raw",
        "container_format": "bare",
        "visibility": "private",
    }
    made = await _admin_call(target, "image", "createImage", (201,), body=body)
    return str(made["id"])


async def _server(target: Target) -> str:
    assert target.ids is not None
    network = await _owned_by_admin(target, "network_id")
    await _owned_by_admin(target, "subnet_id")
    server = {
        "name": f"{_PREFIX}-server",
        "imageRef": target.ids.image_id,
        "flavorRef": target.ids.flavor_id,
        "networks": [{"uuid": network}],
    }
    made = await _admin_call(target, "compute", "createServer", (202,), body={"server": server})
    return str(made["server"]["id"])


#: Path parameters naming a resource the conformance library can make in the admin project.
RESOURCES: dict[str, Callable[[Target], Awaitable[str]]] = {
    "server_id": _server,
    "network_id": _network,
    "subnet_id": _subnet,
    "port_id": _port,
    "volume_id": _volume,
    "image_id": _image,
}
assert set(RESOURCES) == set(RESOURCE_PARAMS)


async def _owned_by_admin(target: Target, param: str) -> str:
    st = _state(target).setdefault("owned", {})
    if param not in st:
        st[param] = await RESOURCES[param](target)
    return str(st[param])
