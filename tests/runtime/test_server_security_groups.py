"""nova's side of security groups, against neutron's engine in the same process: a new
server's groups checked (boot-vm 4.2 lists the project's, the create's rules judge the names:
400 with nova's message for one the project lacks), and a server's groups in nova's shape
(GET /v2.1/servers/{id}/os-security-groups)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from specstack_runtime import flowsteps
from specstack_runtime.behaviours.nova_api import _new_row
from specstack_runtime.context import AuthContext, Interaction
from specstack_runtime.errors import ApiError
from specstack_runtime.resources import guards
from specstack_runtime.resources.serve import engine_call
from specstack_runtime.services import ServiceRuntime
from tests.runtime.fakes import _behaviour
from tests.runtime.netvol_fakes import (
    OTHER,
    USER,
    expect_error,
    make_call,
    make_rt,
    make_store,
    stack_info,
)
from tests.runtime.test_network import serve

SERVER = "5b0e4c1a-2f3d-4e5f-8a9b-0c1d2e3f4a5b"


async def nova_op(call: Any) -> Any:
    """What the spec binds to a compute operation (a query of spec/resources/compute.yaml)."""
    ops = call.rt.info.apis["compute"]["operations"]
    op = next(o for o in ops if o["operation_id"] == call.trigger)
    return await _behaviour(call.rt.info, "compute", op)(call)


class NeutronOverHttp:
    """nova's clients, answered by neutron's engine (the caller's token names who calls)."""

    def __init__(self, neutron: ServiceRuntime, who: dict[str, AuthContext]) -> None:
        self.neutron = neutron
        self.who = who
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(
        self,
        api: str,
        operation_id: str,
        path_params: dict[str, Any] | None = None,
        *,
        query: dict[str, Any] | None = None,
        token: str | None = None,
        **_: Any,
    ) -> httpx.Response:
        assert api == "network"
        query = dict(query or {})
        self.calls.append((operation_id, query))
        call = make_call(
            self.neutron,
            operation_id,
            path_params=path_params,
            query={k: [str(v)] for k, v in query.items()},
            who=self.who[str(token)],
        )
        try:
            reply = await serve(call)
        except ApiError as exc:
            return httpx.Response(exc.status, json={"NeutronError": {"message": exc.message}})
        return httpx.Response(reply.status, json=reply.body)


def _run(tmp_path: Path, scenario: Any) -> None:
    async def main() -> None:
        info = stack_info()
        nstore, cstore = make_store(info, "neutron"), make_store(info, "nova")
        neutron = make_rt(info, "neutron-server", tmp_path / "n", store=nstore)
        nova = make_rt(info, "nova-api", tmp_path / "c", store=cstore)
        http = NeutronOverHttp(neutron, {USER.token: USER, OTHER.token: OTHER})
        nova.clients = http  # type: ignore[assignment]
        try:
            await scenario(neutron, nova, http)
        finally:
            nstore.close()
            cstore.close()

    asyncio.run(main())


def _step(nova: ServiceRuntime, http: NeutronOverHttp, groups: list[Any]) -> Interaction:
    """boot-vm 4.2 as the spec declares it (its `with:`), for a request naming `groups`."""
    body = {"server": {"name": "vm", "security_groups": groups}}
    call = make_call(nova, "createServer", body=body, who=USER)
    call.token = USER.token
    handler = next(h for h in nova.info.model.handlers if h.trigger == "createServer")
    step = next(s for s in handler.steps if s.name == "listSecurityGroups")

    async def invoke(**kwargs: Any) -> httpx.Response:
        return await http.call("network", "listSecurityGroups", **kwargs)

    return Interaction(
        call=call,
        label="4.2",
        source="nova-api",
        target="neutron-server",
        via="http",
        name="listSecurityGroups",
        invoke=invoke,
        bindings=dict(step.bindings),
    )


async def check_groups(ix: Interaction) -> None:
    """The step, then the create's rules on the groups the request names (those passed, the
    next to refuse is the flavor's: the request names none)."""
    await flowsteps.http(ix)
    rc = engine_call(ix.call, "server")
    try:
        guards.check(rc, "create", _new_row(rc, ix.call), changes=ix.call.body["server"])
    except ApiError as exc:
        if not exc.message.startswith("Flavor "):
            raise


async def _neutron(neutron: ServiceRuntime, op: str, status: int, **kwargs: Any) -> Any:
    reply = await serve(make_call(neutron, op, **kwargs))
    assert reply.status == status, reply.body
    return reply.body


def test_create_checks_the_named_groups(tmp_path: Path) -> None:
    async def scenario(neutron: ServiceRuntime, nova: ServiceRuntime, http: Any) -> None:
        web = await _neutron(
            neutron, "createSecurityGroup", 201, body={"security_group": {"name": "web"}}
        )
        web_id = web["security_group"]["id"]
        # the project's own groups, by name (default: made on first use) or by id
        await check_groups(_step(nova, http, [{"name": "default"}, {"name": "web"}]))
        assert http.calls[-1] == ("listSecurityGroups", {"project_id": USER.project_id})
        await check_groups(_step(nova, http, [{"name": web_id}]))
        await expect_error(
            check_groups(_step(nova, http, [{"name": "web"}, {"name": "nope"}])),
            400,
            match="Security group nope not found.",
        )
        # another project's group is not one of this project's
        theirs = await _neutron(
            neutron,
            "createSecurityGroup",
            201,
            who=OTHER,
            body={"security_group": {"name": "theirs"}},
        )
        await expect_error(
            check_groups(_step(nova, http, [{"name": "theirs"}])),
            400,
            match="Security group theirs not found.",
        )
        their_id = theirs["security_group"]["id"]
        await expect_error(check_groups(_step(nova, http, [{"name": their_id}])), 400)
        # two of one name: ambiguous, as nova says
        await _neutron(
            neutron, "createSecurityGroup", 201, body={"security_group": {"name": "web"}}
        )
        await expect_error(
            check_groups(_step(nova, http, [{"name": "web"}])),
            409,
            match="Multiple security groups found matching 'web'",
        )
        # no groups named: the project's `default` one, as nova takes it (and it exists)
        before = len(http.calls)
        await check_groups(_step(nova, http, []))
        assert http.calls[before:] == [("listSecurityGroups", {"project_id": USER.project_id})]

    _run(tmp_path, scenario)


def test_server_security_groups_in_novas_shape(tmp_path: Path) -> None:
    async def scenario(neutron: ServiceRuntime, nova: ServiceRuntime, http: Any) -> None:
        web = (
            await _neutron(
                neutron,
                "createSecurityGroup",
                201,
                body={"security_group": {"name": "web", "description": "front"}},
            )
        )["security_group"]
        rule = {"security_group_id": web["id"], "direction": "ingress"}
        ssh = (
            await _neutron(
                neutron,
                "createSecurityGroupRule",
                201,
                body={
                    "security_group_rule": {
                        **rule,
                        "protocol": "tcp",
                        "port_range_min": 22,
                        "port_range_max": 22,
                        "remote_ip_prefix": "192.0.2.0/24",
                    }
                },
            )
        )["security_group_rule"]
        icmp = (
            await _neutron(
                neutron,
                "createSecurityGroupRule",
                201,
                body={"security_group_rule": {**rule, "protocol": "icmp"}},
            )
        )["security_group_rule"]
        store = nova.require_store()
        await store.create(
            "instances",
            {
                "id": SERVER,
                "name": "vm",
                "project_id": USER.project_id,
                "user_id": USER.user_id,
                "vm_state": "active",
                "security_groups": ["default", "web"],
            },
        )
        call = make_call(nova, "listServerSecurityGroups", path_params={"server_id": SERVER})
        call.token = USER.token
        reply = await nova_op(call)
        groups = {g["name"]: g for g in reply.body["security_groups"]}
        assert list(groups) == ["default", "web"]
        assert groups["web"]["id"] == web["id"] and groups["web"]["description"] == "front"
        assert groups["web"]["tenant_id"] == USER.project_id
        rules = {r["id"]: r for r in groups["web"]["rules"]}  # ingress only: no egress rules
        assert set(rules) == {ssh["id"], icmp["id"]}
        assert rules[ssh["id"]] == {
            "id": ssh["id"],
            "parent_group_id": web["id"],
            "ip_protocol": "tcp",
            "from_port": 22,
            "to_port": 22,
            "group": {},
            "ip_range": {"cidr": "192.0.2.0/24"},
        }
        assert (rules[icmp["id"]]["from_port"], rules[icmp["id"]]["to_port"]) == (-1, -1)
        default = groups["default"]
        assert [r["group"] for r in default["rules"]] == [
            {"name": "default", "tenant_id": USER.project_id}
        ] * 2
        # another project's caller: the server is not found
        other = make_call(
            nova, "listServerSecurityGroups", path_params={"server_id": SERVER}, who=OTHER
        )
        await expect_error(nova_op(other), 404, match=SERVER)

    _run(tmp_path, scenario)


def test_floating_ip_pools_are_the_external_networks(tmp_path: Path) -> None:
    async def scenario(neutron: ServiceRuntime, nova: ServiceRuntime, http: Any) -> None:
        from tests.runtime.netvol_fakes import ADMIN

        for name, external in (("public", True), ("private", False), ("dmz", True)):
            net = {"name": name, "router:external": external}
            reply = await serve(
                make_call(neutron, "createNetwork", who=ADMIN, body={"network": net})
            )
            assert reply.status == 201
        call = make_call(nova, "listFloatingIpPools")
        call.token = USER.token
        reply = await nova_op(call)
        pools = reply.body["floating_ip_pools"]  # in neutron's order (by id): any order here
        assert sorted(pools, key=lambda p: p["name"]) == [{"name": "dmz"}, {"name": "public"}]
        assert http.calls[-1] == ("listNetworks", {"router:external": "true"})

    _run(tmp_path, scenario)
