"""Microversions: negotiation as nova and cinder do it, and what a version brings.

The range and the headers are unit-tested on `Microversions`; fields, operations' statuses
and the 404 below an operation's version are declared in a spec (placement's, edited) and
served by the engine at the version a request negotiated.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from specstack_runtime.app import ApiApp, Route
from specstack_runtime.context import Reply
from specstack_runtime.errors import ApiError
from specstack_runtime.expr import compile_expr
from specstack_runtime.flow import Flow, HandlerSpec
from specstack_runtime.microversions import Microversions
from specstack_runtime.stackinfo import StackInfo
from tests.runtime.test_cel_references import kept_per_call
from tests.runtime.test_resource_engine import ADMIN, SERVICE, Placement, placement_info

COMPUTE = Microversions(
    "compute", "2.1", "2.79", ("OpenStack-API-Version", "X-OpenStack-Nova-API-Version")
)


@pytest.mark.parametrize(
    ("headers", "version"),
    [
        ({}, (2, 1)),  # no header: the minimum
        ({"openstack-api-version": "compute latest"}, (2, 79)),
        ({"openstack-api-version": "compute 2.47"}, (2, 47)),
        ({"x-openstack-nova-api-version": "2.10"}, (2, 10)),  # 2.10 is above 2.9
        # the generic header wins over the service's own; another service's is not ours
        (
            {"openstack-api-version": "compute 2.5", "x-openstack-nova-api-version": "2.60"},
            (2, 5),
        ),
        ({"openstack-api-version": "volume 3.59"}, (2, 1)),
    ],
)
def test_a_request_gets_the_version_it_asks_for(
    headers: dict[str, str], version: tuple[int, int]
) -> None:
    assert COMPUTE.negotiate(headers) == version


def test_a_version_outside_the_range_is_a_406_naming_the_range() -> None:
    for asked in ("2.80", "2.0", "3.1"):
        with pytest.raises(ApiError) as err:
            COMPUTE.negotiate({"openstack-api-version": f"compute {asked}"})
        assert err.value.status == 406
        assert err.value.message == (
            f"Version {asked} is not supported by the API. Minimum is 2.1 and maximum is 2.79."
        )
    with pytest.raises(ApiError) as bad:
        COMPUTE.negotiate({"x-openstack-nova-api-version": "two"})
    assert bad.value.status == 400 and "is of invalid format" in bad.value.message


def test_the_answer_names_its_version_in_each_header() -> None:
    assert COMPUTE.answer_headers((2, 47)) == {
        "OpenStack-API-Version": "compute 2.47",
        "X-OpenStack-Nova-API-Version": "2.47",
        "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
    }
    assert COMPUTE.answer_headers(None)["OpenStack-API-Version"] == "compute 2.1"


def _versioned(spec: Path) -> None:
    """Placement with microversions 1.0-1.4: `generation` shown from 1.2, `inventories`
    accepted and shown from 1.3, and deleting allocations answers 202 before 1.4."""
    api = spec / "apis" / "placement.yaml"
    text = api.read_text().replace(
        "  x-specstack-error-format: keystone\n",
        "  x-specstack-error-format: keystone\n"
        "  x-specstack-microversion:\n"
        "    {service: placement, min: '1.0', max: '1.4', headers: [OpenStack-API-Version]}\n",
        1,
    )
    text = text.replace(
        "        '204': {description: Removed.}\n",
        "        '202': {description: Removed (before 1.4).}\n"
        "        '204': {description: Removed., x-specstack-since: '1.4'}\n",
        1,
    )
    api.write_text(text)
    res = spec / "resources" / "placement.yaml"
    res.write_text(
        res.read_text()
        .replace(
            "      inventories: {default: {}}\n", "      inventories: {default: {}, since: '1.3'}\n"
        )
        .replace(
            "      generation: {default: 0, write: never}\n",
            "      generation: {default: 0, write: never, since: '1.2'}\n",
        )
    )


@pytest.fixture(scope="module")
def info(tmp_path_factory: pytest.TempPathFactory) -> StackInfo:
    return placement_info(tmp_path_factory.mktemp("placement-mv"), _versioned)


def test_fields_and_statuses_follow_the_negotiated_version(info: StackInfo, tmp_path: Path) -> None:
    async def go() -> None:
        p = Placement(info, tmp_path)
        inventories = {"VCPU": {"total": 8}}
        put = {"name": "cn-1", "inventories": inventories}
        # 1.2 does not have inventories yet: refused as any unknown attribute, nothing kept
        with pytest.raises(ApiError) as err:
            await p.op(
                "putResourceProvider", SERVICE, path={"uuid": "cn-1"}, body=put, version=(1, 2)
            )
        assert err.value.status == 400 and "inventories" in err.value.message
        assert await p.store.get("resource_providers", "cn-1") is None
        made = await p.op(
            "putResourceProvider", SERVICE, path={"uuid": "cn-1"}, body=put, version=(1, 3)
        )
        assert made.status == 201 and made.body["inventories"] == inventories
        shown = {
            v: (await p.op("showResourceProvider", path={"uuid": "cn-1"}, version=v)).body
            for v in ((1, 0), (1, 2), (1, 3))
        }
        assert shown[(1, 0)] == {"uuid": "cn-1", "name": "cn-1", "status": "enabled"}
        assert shown[(1, 2)] == {**shown[(1, 0)], "generation": 0}
        assert shown[(1, 3)] == {**shown[(1, 2)], "inventories": inventories}
        # a call that negotiated nothing (not over HTTP) sees every field
        assert (await p.op("showResourceProvider", path={"uuid": "cn-1"})).body == shown[(1, 3)]

        async def delete_at(version: tuple[int, int]) -> int:
            consumer = str(uuid.uuid4())
            body = {"allocations": {"cn-1": {"resources": {"VCPU": 1}}}}
            path = {"consumer_uuid": consumer}
            await p.op("putAllocations", SERVICE, path=path, body=body, version=version)
            return (await p.op("deleteAllocations", SERVICE, path=path, version=version)).status

        assert [await delete_at(v) for v in ((1, 0), (1, 3), (1, 4))] == [202, 202, 204]

    asyncio.run(go())


class _Validator:
    """Every token is the admin's (the app asks before it looks at the version)."""

    async def validate(self, token: str) -> Any:
        return ADMIN


def test_an_operation_below_its_version_is_404_over_http(info: StackInfo, tmp_path: Path) -> None:
    """`x-specstack-since` on an operation: asked for below it, the route is not there (404
    in the API's error format, the handler not run); at or above it, it answers; the
    answer names the negotiated version; a version beyond the range is 406."""
    ran: list[tuple[int, int] | None] = []

    async def run(flow: Flow) -> None:
        ran.append(flow.call.microversion)
        flow.call.reply = Reply(200, {"ok": True})

    handler = HandlerSpec(
        component="placement-api", kind="operation", trigger="listThings", behaviour=None,
        on_error=None, run=run,
    )  # fmt: skip
    route = Route("GET", "/things", "listThings", handler, since=(1, 3))
    placement = Placement(info, tmp_path)
    placement.rt.auth = _Validator()  # type: ignore[assignment]
    app = ApiApp(placement.rt, error_format="keystone", identity_url="http://keystone.test/v3")

    async def get(version: str | None) -> httpx.Response:
        headers = {"X-Auth-Token": "t"}
        if version is not None:
            headers["OpenStack-API-Version"] = f"placement {version}"
        transport = httpx.ASGITransport(app=app.build([route], title="placement"))
        async with httpx.AsyncClient(transport=transport, base_url="http://placement.test") as c:
            return await c.get("/things", headers=headers)

    async def go() -> None:
        below, default, at, above, beyond = [
            await get(v) for v in ("1.2", None, "1.3", "1.4", "1.5")
        ]
        assert below.status_code == 404 and default.status_code == 404  # 1.0 by default
        assert below.json() == {
            "error": {
                "code": 404,
                "message": "The resource could not be found.",
                "title": "Not Found",
            }
        }
        assert (at.status_code, at.json()) == (200, {"ok": True})
        assert at.headers["OpenStack-API-Version"] == "placement 1.3"
        assert above.headers["OpenStack-API-Version"] == "placement 1.4"
        assert beyond.status_code == 406 and "1.0" in beyond.text and "1.4" in beyond.text
        assert ran == [(1, 3), (1, 4)]  # the handler never ran below its version

    asyncio.run(go())


def test_at_least_compares_microversions_and_none_is_every_version() -> None:
    expr = compile_expr("at_least(microversion, '2.10')")
    assert [expr.evaluate(microversion=v) for v in ("2.9", "2.10", "2.79", "3.0", "")] == [
        False,
        True,
        True,
        True,
        True,
    ]


@pytest.mark.parametrize("wanted", ["2.10", "2.1", "3.0", "1.12"])
def test_at_least_with_a_version_in_any_form_gives_the_same_answers(wanted: str) -> None:
    """A literal version (every one the spec writes) runs as CEL's own comparison; a
    version from a variable calls the Python function: both answer alike, in any context."""
    versions = ["", "1.0", "1.11", "1.12", "2.0", "2.1", "2.9", "2.10", "2.79", "3.0", "10.0"]
    literal = compile_expr(f"!at_least(microversion, '{wanted}') ? 'below' : 'at or above'")
    # after an exists() that stopped early (a bind there would read a stale slot: celshapes)
    spaced = compile_expr(
        f'[[1, 2].exists(x, x == 1), at_least( microversion ,"{wanted}" ), "at_least(x, 1)"]'
    )
    variable = compile_expr("!at_least(microversion, doc.wanted) ? 'below' : 'at or above'")
    for version in versions:
        expected = version == "" or tuple(map(int, version.split("."))) >= tuple(
            map(int, wanted.split("."))
        )
        word = "at or above" if expected else "below"
        assert literal.evaluate(microversion=version) == word, version
        assert spaced.evaluate(microversion=version) == [True, expected, "at_least(x, 1)"], version
        assert variable.evaluate(microversion=version, doc={"wanted": wanted}) == word, version


def test_a_literal_microversion_check_keeps_nothing_per_evaluation() -> None:
    """The CEL runtime keeps the arguments of every call into Python (some 160 bytes:
    celcalls); a server's answer checks several versions, once per request."""
    expr = compile_expr("at_least(microversion, '2.53')")
    expr.evaluate(microversion="2.0")

    def check(i: int) -> None:
        assert expr.evaluate(microversion=f"2.{i}") is (i >= 53)

    # the Python function's call keeps 3 objects (its arguments' tuple and two strings)
    assert kept_per_call(check) < 0.5


def _retired(spec: Path) -> None:
    """Placement with microversions 1.0-1.4 whose `generation` is gone after 1.2."""
    _versioned(spec)
    res = spec / "resources" / "placement.yaml"
    res.write_text(
        res.read_text().replace(
            "      generation: {default: 0, write: never, since: '1.2'}\n",
            "      generation: {default: 0, write: never, until: '1.2'}\n",
        )
    )


def test_a_field_until_a_version_is_gone_after_it(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    info = placement_info(tmp_path_factory.mktemp("placement-until"), _retired)

    async def go() -> None:
        p = Placement(info, tmp_path)
        put = {"name": "cn-2"}
        await p.op("putResourceProvider", SERVICE, path={"uuid": "cn-2"}, body=put, version=(1, 0))
        shown = {
            v: (await p.op("showResourceProvider", path={"uuid": "cn-2"}, version=v)).body
            for v in ((1, 0), (1, 2), (1, 3))
        }
        assert shown[(1, 0)]["generation"] == 0 and shown[(1, 2)]["generation"] == 0
        assert "generation" not in shown[(1, 3)]

    asyncio.run(go())
