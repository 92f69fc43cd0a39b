"""Neutron behaviours: networks, subnets, ports, IP allocation, the agents and their files."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from specstack_runtime.bus import InProcessBus
from specstack_runtime.context import AuthContext, Call, Reply
from specstack_runtime.services import ServiceRuntime
from tests.runtime.fakes import _behaviour
from tests.runtime.netvol_fakes import (
    ADMIN,
    OTHER,
    PROJECT,
    USER,
    check_reply,
    expect_error,
    make_call,
    make_rt,
    make_store,
    stack_info,
)

API = "network"


async def serve(call: Call) -> Reply:
    """What the spec binds to the call's operation (the resource engine for networks and
    subnets), run as the generated service runs it."""
    op = next(o for o in call.rt.info.apis[API]["operations"] if o["operation_id"] == call.trigger)
    reply: Reply = await _behaviour(call.rt.info, API, op)(call)
    return reply


def writable(rt: ServiceRuntime, resource: str) -> list[str]:
    """The fields of a resource a request may give (spec/resources/network.yaml)."""
    res = rt.info.resources.resource(resource)
    return [f.name for f in res.res.fields if f.write != "never" and not f.computed]


class Neutron:
    """neutron-server's runtime and one-line wrappers around its operations."""

    def __init__(self, rt: ServiceRuntime) -> None:
        self.rt = rt

    async def op(
        self,
        fn: Callable[..., Awaitable[Reply]],
        operation_id: str,
        status: int,
        *,
        who: AuthContext | None = USER,
        **kwargs: Any,
    ) -> Any:
        call = make_call(self.rt, operation_id, who=who, **kwargs)
        reply = await fn(call)
        body = check_reply(API, operation_id, reply, status)
        self.last_call = call
        return body

    async def network(self, who: AuthContext = USER, **attrs: Any) -> dict[str, Any]:
        body = await self.op(serve, "createNetwork", 201, who=who, body={"network": attrs})
        return dict(body["network"])

    async def subnet(
        self, network_id: str, cidr: str = "10.0.0.0/24", who: AuthContext = USER, **attrs: Any
    ) -> dict[str, Any]:
        sub = {"network_id": network_id, "ip_version": 4, "cidr": cidr, **attrs}
        body = await self.op(serve, "createSubnet", 201, who=who, body={"subnet": sub})
        return dict(body["subnet"])

    async def port(
        self, network_id: str, who: AuthContext | None = USER, **attrs: Any
    ) -> dict[str, Any]:
        body = await self.op(
            serve,
            "createPort",
            201,
            who=who,
            body={"port": {"network_id": network_id, **attrs}},
        )
        return dict(body["port"])


def run(tmp_path: Path, scenario: Callable[[Neutron], Awaitable[None]]) -> None:
    async def main() -> None:
        info = stack_info()
        store = make_store(info, "neutron")
        async with InProcessBus() as bus:
            rt = make_rt(info, "neutron-server", tmp_path, store=store, bus=bus)
            try:
                await scenario(Neutron(rt))
            finally:
                store.close()
            assert bus.failure_count == 0

    asyncio.run(main())


# -- discovery ---------------------------------------------------------------------------------


def test_versions_resources_and_extensions(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        body = await n.op(serve, "listNetworkVersions", 200, who=None)
        assert body["versions"][0]["id"] == "v2.0"
        assert body["versions"][0]["links"][0]["href"] == "http://cloud.example:1234/v2.0/"
        body = await n.op(serve, "getNetworkV20", 200)
        links = {r["collection"]: r["links"][0]["href"] for r in body["resources"]}
        assert set(links) == {
            "networks",
            "subnets",
            "ports",
            "security_groups",
            "security_group_rules",
            "routers",
            "floatingips",
            "agents",
            "availability_zones",
        }
        assert links["security_groups"] == "http://cloud.example:1234/v2.0/security-groups"
        body = await n.op(serve, "listExtensions", 200)
        aliases = {e["alias"] for e in body["extensions"]}
        expected = {"binding", "port-security", "security-group", "standard-attr-description"}
        assert expected | {"ip-substring-filtering", "external-net", "net-mtu"} <= aliases
        # openstack availability zone list asks for it by name before listing network zones
        assert {"agent", "availability_zone"} <= aliases
        assert "Availability Zone" in {e["name"] for e in body["extensions"]}
        ops = {o["operation_id"]: o for o in n.rt.info.apis[API]["operations"]}
        assert ops["getNetworkV20"]["requires_token"] and ops["listExtensions"]["requires_token"]
        assert not ops["listNetworkVersions"]["requires_token"]

    run(tmp_path, scenario)


# -- networks ---------------------------------------------------------------------------------


def test_network_lifecycle_and_scoping(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        mine = await n.network(name="private")
        assert mine["status"] == "ACTIVE" and mine["admin_state_up"] is True
        assert mine["mtu"] == 1450 and mine["subnets"] == [] and mine["shared"] is False
        assert mine["router:external"] is False and mine["project_id"] == PROJECT
        assert "provider:network_type" not in mine  # administrators only
        shown = await n.op(
            serve,
            "showNetwork",
            200,
            who=ADMIN,
            path_params={"network_id": mine["id"]},
        )
        assert shown["network"]["provider:network_type"] == "vxlan"
        assert isinstance(shown["network"]["provider:segmentation_id"], int)

        # another project neither sees nor finds it; shared networks are visible to all
        other_view = await n.op(serve, "listNetworks", 200, who=OTHER)
        assert other_view["networks"] == []
        await expect_error(
            serve(
                make_call(n.rt, "showNetwork", who=OTHER, path_params={"network_id": mine["id"]})
            ),
            404,
            "NetworkNotFound",
        )
        await expect_error(
            serve(make_call(n.rt, "createNetwork", body={"network": {"shared": True}})),
            403,
            "PolicyNotAuthorized",
        )
        public = await n.network(who=ADMIN, name="public", shared=True)
        other_view = await n.op(serve, "listNetworks", 200, who=OTHER)
        assert [x["id"] for x in other_view["networks"]] == [public["id"]]
        await expect_error(
            serve(
                make_call(
                    n.rt, "deleteNetwork", who=OTHER, path_params={"network_id": public["id"]}
                )
            ),
            403,
        )

        # name filter (the CLI's find), update, delete
        found = await n.op(serve, "listNetworks", 200, query={"name": ["private"]})
        assert [x["id"] for x in found["networks"]] == [mine["id"]]
        updated = await n.op(
            serve,
            "updateNetwork",
            200,
            path_params={"network_id": mine["id"]},
            body={"network": {"name": "renamed", "mtu": 1400, "description": "d"}},
        )
        assert updated["network"]["name"] == "renamed" and updated["network"]["mtu"] == 1400
        assert updated["network"]["revision_number"] == 2
        await n.op(serve, "deleteNetwork", 204, path_params={"network_id": mine["id"]})
        await expect_error(
            serve(make_call(n.rt, "showNetwork", path_params={"network_id": mine["id"]})),
            404,
            "NetworkNotFound",
        )

    run(tmp_path, scenario)


def test_network_bad_input_is_400(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        bad_bodies: list[Any] = [
            None,
            {},
            {"network": "x"},
            {"network": {"foo": 1}},
            {"network": {"admin_state_up": "maybe"}},
            {"network": {"mtu": 9000}},
            {"network": {"name": 5}},
            {"network": {"status": "DOWN"}},
            {"network": {"tenant_id": "someone-else"}},
            {"network": {}, "extra": 1},
        ]
        for body in bad_bodies:
            await expect_error(serve(make_call(n.rt, "createNetwork", body=body)), 400)
        mine = await n.network()
        await expect_error(
            serve(
                make_call(
                    n.rt,
                    "updateNetwork",
                    body={"network": {"id": "x"}},
                    path_params={"network_id": mine["id"]},
                )
            ),
            400,
            match="read-only",
        )
        await expect_error(serve(make_call(n.rt, "listNetworks", query={"limit": ["x"]})), 400)
        await expect_error(
            serve(make_call(n.rt, "listNetworks", query={"shared": ["perhaps"]})), 400
        )

    run(tmp_path, scenario)


# -- subnets ----------------------------------------------------------------------------------


def test_subnet_defaults_and_validation(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network(name="private")
        subnet = await n.subnet(network["id"], "10.0.0.0/24", dns_nameservers=["8.8.8.8"])
        assert subnet["gateway_ip"] == "10.0.0.1"
        assert subnet["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
        assert subnet["enable_dhcp"] is True and subnet["ip_version"] == 4
        assert subnet["dns_nameservers"] == ["8.8.8.8"] and subnet["host_routes"] == []
        shown = await n.op(serve, "showNetwork", 200, path_params={"network_id": network["id"]})
        assert shown["network"]["subnets"] == [subnet["id"]]

        def create(sub: dict[str, Any]) -> Awaitable[Any]:
            body = {"subnet": {"network_id": network["id"], "ip_version": 4, **sub}}
            return serve(make_call(n.rt, "createSubnet", body=body))

        await expect_error(create({"cidr": "10.0.0.128/25"}), 400, match="overlaps")
        await expect_error(create({"cidr": "10.1.0.5/24"}), 400, match="10.1.0.0/24")
        await expect_error(create({"cidr": "banana"}), 400)
        await expect_error(create({"cidr": "fd00::/64"}), 400)
        await expect_error(create({}), 400, match="subnetpool")
        await expect_error(create({"cidr": "10.2.0.0/24", "gateway_ip": "10.3.0.1"}), 400)
        await expect_error(
            create(
                {
                    "cidr": "10.2.0.0/24",
                    "allocation_pools": [{"start": "10.2.0.9", "end": "10.2.0.2"}],
                }
            ),
            400,
        )
        await expect_error(
            create(
                {
                    "cidr": "10.2.0.0/24",
                    "allocation_pools": [
                        {"start": "10.2.0.2", "end": "10.2.0.20"},
                        {"start": "10.2.0.10", "end": "10.2.0.30"},
                    ],
                }
            ),
            409,
            "OverlappingAllocationPools",
        )
        await expect_error(
            create(
                {
                    "cidr": "10.2.0.0/24",
                    "gateway_ip": "10.2.0.5",
                    "allocation_pools": [{"start": "10.2.0.2", "end": "10.2.0.20"}],
                }
            ),
            409,
            "GatewayConflictWithAllocationPools",
        )
        await expect_error(create({"cidr": "10.2.0.0/24", "dns_nameservers": ["x"]}), 400)
        await expect_error(
            serve(
                make_call(
                    n.rt,
                    "createSubnet",
                    body={"subnet": {"network_id": "nope", "ip_version": 4, "cidr": "10.9.0.0/24"}},
                )
            ),
            404,
            "NetworkNotFound",
        )
        no_gw = await n.subnet(network["id"], "10.5.0.0/29", gateway_ip=None)
        assert no_gw["gateway_ip"] is None
        assert no_gw["allocation_pools"] == [{"start": "10.5.0.1", "end": "10.5.0.6"}]
        v6 = await n.subnet(network["id"], "fd00:1::/64", ip_version=6)
        assert v6["gateway_ip"] == "fd00:1::1"

        updated = await n.op(
            serve,
            "updateSubnet",
            200,
            path_params={"subnet_id": subnet["id"]},
            body={"subnet": {"name": "s1", "enable_dhcp": False}},
        )
        assert updated["subnet"]["name"] == "s1" and updated["subnet"]["enable_dhcp"] is False
        await expect_error(
            serve(
                make_call(
                    n.rt,
                    "updateSubnet",
                    path_params={"subnet_id": subnet["id"]},
                    body={"subnet": {"cidr": "10.7.0.0/24"}},
                )
            ),
            400,
            match="read-only",
        )

    run(tmp_path, scenario)


def test_subnet_in_use_cannot_be_deleted(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network()
        subnet = await n.subnet(network["id"])
        port = await n.port(network["id"])
        sid = {"subnet_id": subnet["id"]}
        await expect_error(
            serve(make_call(n.rt, "deleteSubnet", path_params=sid)), 409, "SubnetInUse"
        )
        await expect_error(
            serve(make_call(n.rt, "deleteNetwork", path_params={"network_id": network["id"]})),
            409,
            "NetworkInUse",
        )
        await n.op(serve, "deletePort", 204, path_params={"port_id": port["id"]})
        await n.op(serve, "deleteSubnet", 204, path_params=sid)
        shown = await n.op(serve, "showNetwork", 200, path_params={"network_id": network["id"]})
        assert shown["network"]["subnets"] == []
        await expect_error(
            serve(make_call(n.rt, "showSubnet", path_params=sid)), 404, "SubnetNotFound"
        )

    run(tmp_path, scenario)


def test_subnet_refusals_say_what_neutron_says(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network(name="private")
        await n.subnet(network["id"], "10.0.0.0/24")

        async def refused(status: int, kind: str, message: str, **sub: Any) -> None:
            body = {"subnet": {"network_id": network["id"], "ip_version": 4, **sub}}
            err = await expect_error(
                serve(make_call(n.rt, "createSubnet", body=body)), status, kind
            )
            assert err.message == message

        await refused(
            400,
            "InvalidInput",
            "Invalid input for operation: Requested subnet with cidr: 10.0.0.128/25 for network: "
            f"{network['id']} overlaps with another subnet.",
            cidr="10.0.0.128/25",
        )
        await refused(
            400,
            "InvalidInput",
            "Invalid input for cidr. Reason: '10.1.0.5/24' isn't a recognized IP subnet cidr, "
            "'10.1.0.0/24' is recommended.",
            cidr="10.1.0.5/24",
        )
        await refused(
            400,
            "InvalidInput",
            "Invalid input for cidr. Reason: 'fd00::/64' is not an IPv4 subnet.",
            cidr="fd00::/64",
        )
        await refused(
            400,
            "InvalidInput",
            "Invalid input for operation: Gateway IP 10.3.0.1 is not in subnet 10.2.0.0/24.",
            cidr="10.2.0.0/24",
            gateway_ip="10.3.0.1",
        )
        await refused(
            400,
            "GatewayNotValidOnSubnet",
            "Gateway is not valid on subnet: 10.2.0.255 is the network or broadcast address "
            "of 10.2.0.0/24.",
            cidr="10.2.0.0/24",
            gateway_ip="10.2.0.255",
        )
        await refused(
            400,
            "OutOfBoundsAllocationPool",
            "The allocation pool 10.2.0.2-10.2.1.9 spanning is beyond the subnet cidr 10.2.0.0/24.",
            cidr="10.2.0.0/24",
            allocation_pools=[{"start": "10.2.0.2", "end": "10.2.1.9"}],
        )
        await refused(
            409,
            "GatewayConflictWithAllocationPools",
            "Gateway ip 10.2.0.5 conflicts with allocation pool 10.2.0.2-10.2.0.20.",
            cidr="10.2.0.0/24",
            gateway_ip="10.2.0.5",
            allocation_pools=[{"start": "10.2.0.2", "end": "10.2.0.20"}],
        )
        route = {"destination": "10.9.0.0/24", "nexthop": "10.2.0.1"}
        await refused(
            400,
            "InvalidInput",
            f"Invalid input for host_routes. Reason: Duplicate hostroute '{route}'.",
            cidr="10.2.0.0/24",
            host_routes=[route, route],
        )
        cases: list[tuple[str, str, dict[str, Any]]] = [
            (
                "Invalid input for cidr. Reason: 'banana' is not a valid IP subnet.",
                "InvalidInput",
                {"cidr": "banana"},
            ),
            (
                "Invalid input for cidr. Reason: 0 is not allowed as a CIDR prefix length.",
                "InvalidInput",
                {"cidr": "0.0.0.0/0"},
            ),
            (
                "Invalid input for gateway_ip. Reason: 'x' is not a valid IP address.",
                "InvalidInput",
                {"cidr": "10.2.0.0/24", "gateway_ip": "x"},
            ),
            (
                "Invalid input for gateway_ip. Reason: 'fd00::1' is not an IPv4 address.",
                "InvalidInput",
                {"cidr": "10.2.0.0/24", "gateway_ip": "fd00::1"},
            ),
            (
                "The allocation pool 10.2.0.9-10.2.0.2 spanning is invalid.",
                "InvalidAllocationPool",
                {
                    "cidr": "10.2.0.0/24",
                    "allocation_pools": [{"start": "10.2.0.9", "end": "10.2.0.2"}],
                },
            ),
            (
                "The allocation pool 10.2.0.2-fd00::9 is not IPv4.",
                "InvalidAllocationPool",
                {
                    "cidr": "10.2.0.0/24",
                    "allocation_pools": [{"start": "10.2.0.2", "end": "fd00::9"}],
                },
            ),
            (
                "Invalid input for allocation_pools. Reason: 'y' is not a valid IP address.",
                "InvalidInput",
                {"cidr": "10.2.0.0/24", "allocation_pools": [{"start": "10.2.0.2", "end": "y"}]},
            ),
            # without gateway_ip the gateway is the first address, which no pool may hold
            (
                "Gateway ip 10.2.0.1 conflicts with allocation pool 10.2.0.1-10.2.0.9.",
                "GatewayConflictWithAllocationPools",
                {
                    "cidr": "10.2.0.0/24",
                    "allocation_pools": [{"start": "10.2.0.1", "end": "10.2.0.9"}],
                },
            ),
            (
                "Invalid input for host_routes. Reason: '10.9.0.1/24' is not a valid CIDR.",
                "InvalidInput",
                {
                    "cidr": "10.2.0.0/24",
                    "host_routes": [{"destination": "10.9.0.1/24", "nexthop": "10.2.0.1"}],
                },
            ),
            (
                "Invalid input for host_routes. Reason: destination fd00::/64 is not IPv4.",
                "InvalidInput",
                {
                    "cidr": "10.2.0.0/24",
                    "host_routes": [{"destination": "fd00::/64", "nexthop": "10.2.0.1"}],
                },
            ),
        ]
        for message, kind, sub in cases:
            await refused(409 if kind.startswith("Gateway") else 400, kind, message, **sub)

        # an update is checked against the subnet's CIDR, gateway and pools
        subnet = await n.subnet(
            network["id"],
            "10.7.0.0/24",
            allocation_pools=[{"start": "10.7.0.10", "end": "10.7.0.20"}],
        )
        updates: list[tuple[str, str, dict[str, Any]]] = [
            (
                "Invalid input for operation: Gateway IP 10.8.0.1 is not in subnet 10.7.0.0/24.",
                "InvalidInput",
                {"gateway_ip": "10.8.0.1"},
            ),
            (
                "Gateway ip 10.7.0.15 conflicts with allocation pool 10.7.0.10-10.7.0.20.",
                "GatewayConflictWithAllocationPools",
                {"gateway_ip": "10.7.0.15"},
            ),
            (
                "Gateway ip 10.7.0.1 conflicts with allocation pool 10.7.0.1-10.7.0.5.",
                "GatewayConflictWithAllocationPools",
                {"allocation_pools": [{"start": "10.7.0.1", "end": "10.7.0.5"}]},
            ),
            (
                "Found overlapping allocation pools in subnet 10.7.0.0/24.",
                "OverlappingAllocationPools",
                {"allocation_pools": [{"start": "10.7.0.30", "end": "10.7.0.40"}] * 2},
            ),
        ]
        for message, kind, sub in updates:
            call = make_call(
                n.rt, "updateSubnet", path_params={"subnet_id": subnet["id"]}, body={"subnet": sub}
            )
            status = 400 if kind == "InvalidInput" else 409
            assert (await expect_error(serve(call), status, kind)).message == message
        body = {
            "subnet": {
                "gateway_ip": "10.7.0.9",
                "allocation_pools": [{"start": "10.7.0.30", "end": "10.7.0.40"}],
            }
        }
        call = make_call(n.rt, "updateSubnet", path_params={"subnet_id": subnet["id"]}, body=body)
        updated = (await serve(call)).body["subnet"]
        assert updated["gateway_ip"] == "10.7.0.9"
        assert updated["allocation_pools"] == [{"start": "10.7.0.30", "end": "10.7.0.40"}]

    run(tmp_path, scenario)
