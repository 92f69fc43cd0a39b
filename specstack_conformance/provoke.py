"""Declared error paths (the spec's `errors:`), provoked on purpose; direct API checks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from specstack_conformance.checks import ConformanceError, response_conforms
from specstack_conformance.harness import Target
from specstack_runtime.steps import label_key

HUGE_FLAVOR = {"name": "conform.huge", "ram": 10_000_000, "vcpus": 1, "disk": 1}


async def _create(target: Target, token: str, **overrides: Any) -> tuple[Any, str]:
    assert target.ids is not None and target.clients is not None
    name = f"conform-err-{uuid.uuid4().hex[:8]}"
    server = {
        "name": name,
        "imageRef": target.ids.image_id,
        "flavorRef": target.ids.flavor_id,
        "networks": [{"uuid": target.ids.network_id}],
        **overrides,
    }
    resp = await target.clients.call(
        target.info.api_of_type("compute"), "createServer", body={"server": server}, token=token
    )
    return resp, name


async def invalid_token(target: Target) -> dict[str, Any]:
    resp, name = await _create(target, f"invalid-{uuid.uuid4().hex}")
    return {
        "status": resp.status_code,
        "request_id": resp.headers.get("x-openstack-request-id"),
        "name": name,
    }


async def unknown_image(target: Target) -> dict[str, Any]:
    token, _ = await target.demo_token()
    resp, name = await _create(target, token, imageRef=str(uuid.uuid4()))
    return {
        "status": resp.status_code,
        "request_id": resp.headers.get("x-openstack-request-id"),
        "name": name,
    }


async def oversized_flavor(target: Target) -> dict[str, Any]:
    assert target.clients is not None and target.demo is not None
    compute = target.info.api_of_type("compute")
    admin = await target.admin_token()
    flavors = (await target.clients.call(compute, "listFlavorsDetailed", token=admin)).json()
    found = [f for f in flavors["flavors"] if f["name"] == HUGE_FLAVOR["name"]]
    if found:
        flavor_id = found[0]["id"]
    else:
        made = await target.clients.call(
            compute, "createFlavor", body={"flavor": dict(HUGE_FLAVOR)}, token=admin
        )
        flavor_id = made.json()["flavor"]["id"]
    token, _ = await target.demo_token()
    resp, name = await _create(target, token, flavorRef=flavor_id)
    out: dict[str, Any] = {
        "status": resp.status_code,
        "request_id": resp.headers.get("x-openstack-request-id"),
        "name": name,
    }
    if resp.status_code == 202:
        out["server"] = await target.demo.wait_server(
            resp.json()["server"]["id"], token, timeout=30
        )
    return out


PROVOCATIONS: dict[str, Callable[[Target], Awaitable[dict[str, Any]]]] = {
    "invalid_token": invalid_token,
    "unknown_image": unknown_image,
    "oversized_flavor": oversized_flavor,
}


async def _await(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    return await work


async def _exists(target: Target, name: str) -> bool:
    assert target.clients is not None
    admin = await target.admin_token()
    resp = await target.clients.call(
        target.info.api_of_type("compute"),
        "listServersDetailed",
        query={"all_tenants": "1", "name": f"^{name}$"},
        token=admin,
    )
    return bool(resp.json().get("servers"))


def error_path(
    target: Target, sequence: str, name: str, step: int, provocation: str, expect: dict[str, Any]
) -> None:
    """Provoke the declared failure and check every declared consequence of it."""
    if provocation not in PROVOCATIONS:
        raise ConformanceError(
            f"{sequence} error {name}: no provocation {provocation!r} in "
            f"the conformance library ({', '.join(PROVOCATIONS)})"
        )
    outcome: dict[str, Any] = target.run(_await(PROVOCATIONS[provocation](target)))
    where = f"{sequence} error path {name} (step {step})"
    if "status" in expect and outcome["status"] != expect["status"]:
        raise ConformanceError(
            f"{where}: answered {outcome['status']}, declared {expect['status']}"
        )
    if expect.get("created") is False and target.run(_exists(target, outcome["name"])):
        raise ConformanceError(f"{where}: an instance named {outcome['name']} was written")
    server = outcome.get("server") or {}
    if "server_status" in expect and server.get("status") != expect["server_status"]:
        raise ConformanceError(
            f"{where}: server is {server.get('status')}, declared {expect['server_status']}"
        )
    if "fault" in expect:
        message = (server.get("fault") or {}).get("message", "")
        if not message.startswith(expect["fault"]):
            raise ConformanceError(f"{where}: fault {message!r}, declared {expect['fault']!r}")
    _stopped_at(target, where, outcome.get("request_id"), step)


def _stopped_at(target: Target, where: str, request_id: str | None, step: int) -> None:
    """The flow's trace shows the failure at the declared step (or the follow-on it starts)."""
    if not request_id:
        raise ConformanceError(f"{where}: the answer carried no x-openstack-request-id")
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = target.run(target.events(request_id))
        if any(e["status"] == "error" for e in events):
            break
        target.run(asyncio.sleep(0.05))
    errors = [e for e in events if e["status"] == "error"]
    if not errors:
        raise ConformanceError(f"{where}: no failed step in the trace of {request_id}")
    failed = _number(errors[0]["step"])
    if failed not in (step, step + 1):
        raise ConformanceError(f"{where}: failed at step {errors[0]['step']}, declared {step}")
    later = [e for e in events if _number(e["step"]) > step + 1 and e["status"] == "ok"]
    if later:
        raise ConformanceError(f"{where}: the flow went on to step {later[0]['step']}")


def _number(label: str) -> int:
    """The deck's step number of a label: "7.1" and "7a" are step 7's."""
    return label_key(label)[0][0]


def call_and_check(target: Target, api: str, operation_id: str) -> None:
    """Call a parameterless read operation as the admin and check the answer's schema."""

    async def go() -> tuple[int, Any]:
        assert target.clients is not None
        token = await target.admin_token()
        info = await _project(target, token)
        params = {"project_id": info, "account": f"AUTH_{info}"}
        path = next(
            op["path"]
            for a in target.info.ir["apis"]
            if a["name"] == api
            for op in a["operations"]
            if op["operation_id"] == operation_id
        )
        needed = {k: v for k, v in params.items() if "{" + k + "}" in path}
        resp = await target.clients.call(api, operation_id, needed, token=token)
        body = (
            resp.json()
            if resp.headers.get("content-type", "").startswith("application/json") and resp.content
            else None
        )
        return resp.status_code, body

    status, body = target.run(go())
    if status >= 400:
        raise ConformanceError(f"{api} {operation_id} answered {status}: {body}")
    if body is not None:
        response_conforms(api, operation_id, status, body)


async def _project(target: Target, token: str) -> str:
    assert target.clients is not None
    resp = await target.clients.call(
        target.info.api_of_type("identity"),
        "validateToken",
        headers={"X-Subject-Token": token},
        token=token,
    )
    return str(resp.json()["token"]["project"]["id"])
