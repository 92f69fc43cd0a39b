"""Neutron behaviours: networks, subnets, ports, IP allocation, the agents and their files."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.behaviours import netports
from specstack_runtime.behaviours import network as net
from specstack_runtime.bus import InProcessBus
from specstack_runtime.context import AuthContext, Call, Reply
from specstack_runtime.errors import ApiError
from specstack_runtime.messaging import InvalidMessage, check
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.statefile import flush_all
from specstack_runtime.store import Store
from tests.aio import settle
from tests.runtime.fakes import _behaviour
from tests.runtime.netvol_fakes import (
    ADMIN,
    OTHER,
    PROJECT,
    USER,
    auth,
    check_reply,
    expect_error,
    interaction,
    make_call,
    make_rt,
    make_store,
    stack_info,
    tables_of,
    wire,
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
        body = await n.op(net.list_network_versions, "listNetworkVersions", 200, who=None)
        assert body["versions"][0]["id"] == "v2.0"
        assert body["versions"][0]["links"][0]["href"] == "http://cloud.example:1234/v2.0/"
        body = await n.op(net.get_network_v20, "getNetworkV20", 200)
        assert {r["collection"] for r in body["resources"]} == {"networks", "subnets", "ports"}
        body = await n.op(net.list_extensions, "listExtensions", 200)
        aliases = {e["alias"] for e in body["extensions"]}
        expected = {"binding", "port-security", "security-group", "standard-attr-description"}
        assert expected | {"ip-substring-filtering", "external-net", "net-mtu"} <= aliases
        await expect_error(net.get_network_v20(make_call(n.rt, "getNetworkV20", who=None)), 401)

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


# -- ports ------------------------------------------------------------------------------------


def test_port_lifecycle_binding_and_ip_reuse(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network(name="private")
        subnet = await n.subnet(network["id"])
        port = await n.port(network["id"], name="p1")
        assert n.last_call.vars["port"]["id"] == port["id"]
        assert port["mac_address"].startswith("fa:16:3e:")
        assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.0.0.2"}]
        assert port["status"] == "DOWN" and port["binding:vif_type"] == "unbound"
        assert port["binding:vnic_type"] == "normal" and port["binding:host_id"] == ""
        assert port["security_groups"] == [] and port["port_security_enabled"] is True
        assert port["device_id"] == "" and port["device_owner"] == ""
        store: Store = n.rt.require_store()
        assert await store.get("ipallocations", f"{subnet['id']}:10.0.0.2") is not None

        server = "7f6c0a4e-6c35-4a8a-9a57-2b5d3b1b8f1e"
        bound = await n.port(
            network["id"],
            device_id=server,
            device_owner="compute:nova",
            **{"binding:host_id": "compute-1"},  # type: ignore[arg-type]
        )
        assert bound["status"] == "ACTIVE" and bound["binding:vif_type"] == "ovs"
        assert bound["fixed_ips"][0]["ip_address"] == "10.0.0.3"

        updated = await n.op(
            serve,
            "updatePort",
            200,
            path_params={"port_id": port["id"]},
            body={"port": {"binding:host_id": "compute-2", "device_id": server}},
        )
        assert updated["port"]["status"] == "ACTIVE"
        assert updated["port"]["binding:vif_details"]["bridge_name"] == "br-int"
        assert updated["port"]["revision_number"] == 2
        await expect_error(
            serve(
                make_call(
                    n.rt,
                    "updatePort",
                    path_params={"port_id": port["id"]},
                    body={"port": {"network_id": network["id"]}},
                )
            ),
            400,
            match="read-only",
        )

        # a fixed address, taken addresses, foreign subnets
        fixed = await n.port(network["id"], fixed_ips=[{"ip_address": "10.0.0.50"}])
        assert fixed["fixed_ips"][0] == {"subnet_id": subnet["id"], "ip_address": "10.0.0.50"}

        def create(**attrs: Any) -> Awaitable[Any]:
            body = {"port": {"network_id": network["id"], **attrs}}
            return serve(make_call(n.rt, "createPort", body=body))

        await expect_error(
            create(fixed_ips=[{"ip_address": "10.0.0.50"}]), 409, "IpAddressAlreadyAllocated"
        )
        await expect_error(create(fixed_ips=[{"ip_address": "10.0.0.1"}]), 400)  # the gateway
        await expect_error(create(fixed_ips=[{"ip_address": "192.168.9.9"}]), 400)
        await expect_error(create(fixed_ips=[{"subnet_id": "not-a-subnet"}]), 400)
        await expect_error(create(mac_address=fixed["mac_address"]), 409, "MacAddressInUse")
        await expect_error(create(mac_address="01:00:5e:00:00:01"), 400)  # multicast
        await expect_error(create(mac_address="zz"), 400)
        await expect_error(create(admin_state_up="sometimes"), 400)
        await expect_error(create(status="ACTIVE"), 400, match="not allowed")
        await expect_error(create(bogus=1), 400, match="Unrecognized")
        await expect_error(create(**{"binding:vnic_type": "warp"}), 400)
        await expect_error(
            serve(make_call(n.rt, "createPort", body={"port": {"network_id": "x"}})),
            404,
            "NetworkNotFound",
        )
        await expect_error(serve(make_call(n.rt, "createPort", body={"port": {"name": "x"}})), 400)

        # moving a port's address: the old one is freed
        moved = await n.op(
            serve,
            "updatePort",
            200,
            path_params={"port_id": fixed["id"]},
            body={"port": {"fixed_ips": [{"ip_address": "10.0.0.60"}]}},
        )
        assert moved["port"]["fixed_ips"][0]["ip_address"] == "10.0.0.60"
        assert await store.get("ipallocations", f"{subnet['id']}:10.0.0.50") is None

        # deleting frees the address for the next port
        await n.op(serve, "deletePort", 204, path_params={"port_id": port["id"]})
        assert n.last_call.vars["port"]["id"] == port["id"]
        assert await store.get("ipallocations", f"{subnet['id']}:10.0.0.2") is None
        again = await n.port(network["id"])
        assert again["fixed_ips"][0]["ip_address"] == "10.0.0.2"
        await expect_error(
            serve(make_call(n.rt, "showPort", path_params={"port_id": port["id"]})),
            404,
            "PortNotFound",
        )
        await expect_error(
            serve(make_call(n.rt, "showPort", who=OTHER, path_params={"port_id": again["id"]})),
            404,
        )

    run(tmp_path, scenario)


def test_a_29_is_exhausted_after_five_ports(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network()
        await n.subnet(network["id"], "192.168.50.0/29")
        ips = [(await n.port(network["id"]))["fixed_ips"][0]["ip_address"] for _ in range(5)]
        assert ips == [f"192.168.50.{i}" for i in range(2, 7)]
        await expect_error(
            serve(make_call(n.rt, "createPort", body={"port": {"network_id": network["id"]}})),
            409,
            "IpAddressGenerationFailure",
        )
        # a failed create leaves no allocation behind
        assert await n.rt.require_store().count("ipallocations") == 5

    run(tmp_path, scenario)


def test_concurrent_port_creates_get_distinct_addresses(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network()
        await n.subnet(network["id"], "10.10.0.0/24")

        async def one() -> str:
            call = make_call(n.rt, "createPort", body={"port": {"network_id": network["id"]}})
            reply = await serve(call)
            return str(reply.body["port"]["fixed_ips"][0]["ip_address"])

        ips = await asyncio.gather(*(one() for _ in range(20)))
        assert len(set(ips)) == 20

    run(tmp_path, scenario)


class RacyStore(Store):
    """A store whose reads of ipallocations miss the rows another server inserts meanwhile."""

    hidden: set[str]

    async def list(self, table: str, where: Any = None, **kwargs: Any) -> list[dict[str, Any]]:
        rows = await super().list(table, where, **kwargs)
        if table == "ipallocations":
            rows = [r for r in rows if r["id"] not in self.hidden]
            self.hidden = set()  # the second read sees everything
        return rows


def test_allocation_retries_the_next_address_on_conflict(tmp_path: Path) -> None:
    async def main() -> None:
        info = stack_info()
        store = RacyStore("sqlite://", tables=tables_of(info, "neutron"))
        store.create_schema()
        store.hidden = set()
        n = Neutron(make_rt(info, "neutron-server", tmp_path, store=store))
        network = await n.network()
        subnet = await n.subnet(network["id"], "10.20.0.0/24")
        first = await n.port(network["id"])
        assert first["fixed_ips"][0]["ip_address"] == "10.20.0.2"
        # Another server's allocation of .2 is invisible to our read: the insert conflicts.
        store.hidden = {f"{subnet['id']}:10.20.0.2"}
        second = await n.port(network["id"])
        assert second["fixed_ips"][0]["ip_address"] == "10.20.0.3"
        # Asking for that address explicitly is a 409, not a silent retry.
        store.hidden = {f"{subnet['id']}:10.20.0.3"}
        await expect_error(
            serve(
                make_call(
                    n.rt,
                    "createPort",
                    body={
                        "port": {
                            "network_id": network["id"],
                            "fixed_ips": [{"ip_address": "10.20.0.3"}],
                        }
                    },
                )
            ),
            409,
            "IpAddressAlreadyAllocated",
        )
        store.close()

    asyncio.run(main())


def test_port_list_filters_fields_and_paging(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        net_a = await n.network(name="a")
        net_b = await n.network(name="b")
        await n.subnet(net_a["id"], "10.0.0.0/24")
        await n.subnet(net_b["id"], "10.1.0.0/24")
        server = "0c4e3f6a-1d2b-4c5d-8e9f-a0b1c2d3e4f5"
        p1 = await n.port(net_a["id"], name="one", device_id=server)
        p2 = await n.port(net_a["id"], name="two")
        p3 = await n.port(net_b["id"], name="three", device_id=server)

        async def ports(**query: list[str]) -> list[dict[str, Any]]:
            body = await n.op(serve, "listPorts", 200, query=query)
            return list(body["ports"])

        assert {p["id"] for p in await ports(device_id=[server])} == {p1["id"], p3["id"]}
        assert {p["id"] for p in await ports(network_id=[net_a["id"]])} == {p1["id"], p2["id"]}
        assert [p["id"] for p in await ports(name=["two"])] == [p2["id"]]
        assert [p["id"] for p in await ports(fixed_ips=["ip_address=10.1.0.2"])] == [p3["id"]]
        assert {p["id"] for p in await ports(fixed_ips=["ip_address_substr=10.0.0"])} == {
            p1["id"],
            p2["id"],
        }
        assert await ports(admin_state_up=["false"]) == []
        assert len(await ports(unknown_filter=["x"])) == 3  # not an attribute: ignored

        # fields= repeated: only those attributes come back (the CLI's port list); the
        # answers still match the spec's schemas (list and show items are PortAttributes)
        listed = await n.op(
            serve,
            "listPorts",
            200,
            query={"fields": ["id", "mac_address"], "device_id": [server]},
        )
        assert len(listed["ports"]) == 2
        assert all(set(p) == {"id", "mac_address"} for p in listed["ports"])
        shown = await n.op(
            serve,
            "showPort",
            200,
            path_params={"port_id": p1["id"]},
            query={"fields": ["status"]},
        )
        assert shown == {"port": {"status": "DOWN"}}
        assert await n.op(serve, "listPorts", 200, query={"fields": ["nonesuch"]}) == {
            "ports": [{}, {}, {}]
        }

        # sorting and paging with limit/marker and a next link
        names = [p["name"] for p in await ports(sort_key=["name"], sort_dir=["desc"])]
        assert names == ["two", "three", "one"]
        page = await n.op(serve, "listPorts", 200, query={"limit": ["2"], "sort_key": ["name"]})
        assert [p["name"] for p in page["ports"]] == ["one", "three"]
        assert page["ports_links"][0]["rel"] == "next"
        assert "marker=" + page["ports"][-1]["id"] in page["ports_links"][0]["href"]
        rest = await ports(limit=["2"], sort_key=["name"], marker=[page["ports"][-1]["id"]])
        assert [p["name"] for p in rest] == ["two"]
        await expect_error(serve(make_call(n.rt, "listPorts", query={"sort_key": ["nope"]})), 400)
        await expect_error(
            serve(make_call(n.rt, "listPorts", query={"fixed_ips": ["garbage"]})), 400
        )
        await expect_error(serve(make_call(n.rt, "listPorts", query={"marker": ["missing"]})), 404)
        # another project sees none of them, an administrator all
        assert (await n.op(serve, "listPorts", 200, who=OTHER))["ports"] == []
        assert len((await n.op(serve, "listPorts", 200, who=ADMIN))["ports"]) == 3

    run(tmp_path, scenario)


def test_port_on_a_network_without_subnets_has_no_address(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network()
        port = await n.port(network["id"])
        assert port["fixed_ips"] == []
        v6 = await n.network()
        subnet = await n.subnet(v6["id"], "fd00:9::/64", ip_version=6)
        port6 = await n.port(v6["id"])
        assert port6["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "fd00:9::2"}]

    run(tmp_path, scenario)


def test_admin_creates_for_another_project_and_users_cannot(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        theirs = await n.network(who=ADMIN, project_id="p" * 32)
        assert theirs["project_id"] == theirs["tenant_id"] == "p" * 32
        await expect_error(
            serve(make_call(n.rt, "createNetwork", body={"network": {"project_id": "q" * 32}})),
            400,
            match="admin privileges",
        )
        await expect_error(
            serve(make_call(n.rt, "createNetwork", who=auth(project=None), body={"network": {}})),
            400,
        )

    run(tmp_path, scenario)


# -- steps and agents ---------------------------------------------------------------------------


def test_step_payloads_match_the_message_schemas(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network()
        await n.subnet(network["id"])
        port = await n.port(network["id"])  # unbound: binding:host_id is ""
        info = n.rt.info
        check(info, "port_create_end", "payload", {"port": netports.port_payload(port)})
        payload = {
            "port": netports.port_payload(port),
            "network_type": "vxlan",
            "segmentation_id": 7,
        }
        check(info, "port_update", "payload", payload)
        with pytest.raises(InvalidMessage):
            check(info, "port_update", "payload", {**payload, "extra": 1})

    run(tmp_path, scenario)


def test_flow_steps_reach_the_agents_and_their_files(tmp_path: Path) -> None:
    async def main() -> None:
        info = stack_info()
        store = make_store(info, "neutron")
        async with InProcessBus() as bus:
            server_rt = make_rt(info, "neutron-server", tmp_path, store=store, bus=bus)
            dhcp_rt = make_rt(info, "neutron-dhcp-agent", tmp_path, bus=bus)
            l2_one = make_rt(info, "neutron-l2-agent", tmp_path, bus=bus, host="compute-1")
            l2_two = make_rt(info, "neutron-l2-agent", tmp_path, bus=bus, host="compute-2")
            for rt in (dhcp_rt, l2_one, l2_two):
                await wire(bus, rt)
            n = Neutron(server_rt)
            network = await n.network()
            await n.subnet(network["id"])
            await n.port(network["id"])  # another port already in the hosts file
            port = await n.port(
                network["id"],
                device_id="0c4e3f6a-1d2b-4c5d-8e9f-a0b1c2d3e4f5",
                **{"binding:host_id": "compute-1"},  # type: ignore[arg-type]
            )
            call = n.last_call  # the createPort call and its vars, as in step 14
            await net.notify_dhcp_port_create(interaction(call, "port_create_end", "14.1"))
            await net.notify_port_update(interaction(call, "port_update", "14.2"))

            host_file = tmp_path / "dhcp" / network["id"] / "host"
            l2_file = tmp_path / "l2" / "compute-1.json"

            async def delivered() -> bool:
                return host_file.exists() and l2_file.exists()

            await settle(delivered)
            ip = port["fixed_ips"][0]["ip_address"]
            line = f"{port['mac_address']},host-{ip.replace('.', '-')},{ip}"
            assert host_file.read_text().splitlines() == [line]
            wired = json.loads(l2_file.read_text())
            assert wired["host"] == "compute-1"
            assert wired["ports"][port["id"]]["status"] == "wired"
            assert wired["ports"][port["id"]]["network_type"] == "vxlan"
            assert isinstance(wired["ports"][port["id"]]["segmentation_id"], int)
            assert not (tmp_path / "l2" / "compute-2.json").exists()  # not its port
            assert bus.failure_count == 0

            # rebinding by PUT (no steps in the spec): the port moves between L2 agents
            await n.op(
                serve,
                "updatePort",
                200,
                path_params={"port_id": port["id"]},
                body={"port": {"binding:host_id": "compute-2"}},
            )
            l2_two_file = tmp_path / "l2" / "compute-2.json"

            async def moved() -> bool:
                if not l2_two_file.exists():
                    return False
                here = json.loads(l2_two_file.read_text())["ports"]
                there = json.loads(l2_file.read_text())["ports"]
                return port["id"] in here and port["id"] not in there

            await settle(moved)

            # delete-vm steps 9.1/9.2
            del_call = make_call(server_rt, "deletePort", path_params={"port_id": port["id"]})
            await serve(del_call)
            await net.notify_dhcp_port_delete(interaction(del_call, "port_delete_end", "9.1"))
            await net.notify_port_delete(interaction(del_call, "port_delete", "9.2"))

            async def removed() -> bool:
                state = json.loads(l2_two_file.read_text())
                return bool(host_file.read_text() == "" and state["ports"] == {})

            await settle(removed)
            assert bus.failure_count == 0
            assert not list((tmp_path / "dhcp" / network["id"]).glob(".*.tmp"))
        store.close()

    asyncio.run(main())


def test_agent_handlers_directly(tmp_path: Path) -> None:
    async def main() -> None:
        info = stack_info()
        dhcp = make_rt(info, "neutron-dhcp-agent", tmp_path)
        l2 = make_rt(info, "neutron-l2-agent", tmp_path, host="compute-2")

        def settled(path: Path) -> Path:
            flush_all(dhcp.shared)  # agents write their files behind; flush before reading
            flush_all(l2.shared)
            return path

        def call(rt: ServiceRuntime, payload: dict[str, Any]) -> Any:
            c = make_call(rt, "m", who=None)
            c.payload = payload
            return c

        port = {
            "id": "p1",
            "network_id": "n1",
            "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": [
                {"subnet_id": "s4", "ip_address": "10.0.0.5"},
                {"subnet_id": "s6", "ip_address": "fd00::5"},
            ],
        }
        await net.dhcp_port_create(call(dhcp, {"port": port}))
        await net.dhcp_port_create(call(dhcp, {"port": port}))  # idempotent
        host = tmp_path / "dhcp" / "n1" / "host"
        assert settled(host).read_text().splitlines() == [
            "fa:16:3e:00:00:01,host-10-0-0-5,10.0.0.5",
            "fa:16:3e:00:00:01,host-fd00--5,[fd00::5]",
        ]
        await net.dhcp_port_delete(call(dhcp, {"port_id": "p1", "network_id": "n1"}))
        await net.dhcp_port_delete(call(dhcp, {"port_id": "p1", "network_id": "n1"}))
        assert settled(host).read_text() == ""
        with pytest.raises(ValueError):
            await net.dhcp_port_delete(call(dhcp, {"port_id": "p1", "network_id": "../x"}))

        bound_here = {**port, "binding:host_id": "compute-2"}
        await net.l2_port_update(call(l2, {"port": bound_here}))
        state = tmp_path / "l2" / "compute-2.json"
        assert "p1" in json.loads(settled(state).read_text())["ports"]
        # the port moved to another host: this agent unwires it
        await net.l2_port_update(call(l2, {"port": {**port, "binding:host_id": "compute-1"}}))
        assert json.loads(settled(state).read_text())["ports"] == {}
        await net.l2_port_update(call(l2, {"port": bound_here}))
        await net.l2_port_delete(call(l2, {"port_id": "p1"}))
        await net.l2_port_delete(call(l2, {"port_id": "unknown"}))
        assert json.loads(settled(state).read_text())["ports"] == {}

    asyncio.run(main())


def test_steps_without_a_port_fail_cleanly(tmp_path: Path) -> None:
    from specstack_runtime.errors import StepFailed

    async def scenario(n: Neutron) -> None:
        call = make_call(n.rt, "createPort")
        with pytest.raises(StepFailed):
            await net.notify_dhcp_port_create(interaction(call, "port_create_end"))

    run(tmp_path, scenario)


# -- no client input gives a 500 -----------------------------------------------------------------

JUNK: list[Any] = [None, 0, "x", [], {}, {"a": None}, [{}], {"start": 1}, True, -1, "10.0.0.0/8"]


def test_junk_input_never_escapes_as_anything_but_an_api_error(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network()
        subnet = await n.subnet(network["id"])
        port = await n.port(network["id"])
        targets: list[tuple[Callable[..., Awaitable[Reply]], str, str, dict[str, str]]] = [
            (serve, "createNetwork", "network", {}),
            (serve, "updateNetwork", "network", {"network_id": network["id"]}),
            (serve, "createSubnet", "subnet", {}),
            (serve, "updateSubnet", "subnet", {"subnet_id": subnet["id"]}),
            (serve, "createPort", "port", {}),
            (serve, "updatePort", "port", {"port_id": port["id"]}),
        ]
        attrs = {
            "network": writable(n.rt, "network"),
            "subnet": writable(n.rt, "subnet"),
            "port": writable(n.rt, "port"),
        }
        for fn, op, resource, params in targets:
            for attr in attrs[resource]:
                for value in JUNK:
                    body: dict[str, Any] = {resource: {attr: value}}
                    if op == "createSubnet":
                        body[resource] = {
                            "network_id": network["id"],
                            "ip_version": 4,
                            "cidr": "10.99.0.0/24",
                            attr: value,
                        }
                    if op == "createPort":
                        body[resource] = {"network_id": network["id"], attr: value}
                    try:
                        reply = await fn(make_call(n.rt, op, body=body, path_params=params))
                    except ApiError as exc:
                        assert 400 <= exc.status < 500, (op, attr, value, exc.message)
                    else:
                        assert reply.status < 300
                        await cleanup(n, op, reply)

    run(tmp_path, scenario)


async def cleanup(n: Neutron, op: str, reply: Reply) -> None:
    """Undo a junk create that happened to be valid, so later ones do not collide."""
    if op == "createSubnet":
        sid = reply.body["subnet"]["id"]
        await serve(make_call(n.rt, "deleteSubnet", path_params={"subnet_id": sid}))
    elif op == "createPort":
        pid = reply.body["port"]["id"]
        await serve(make_call(n.rt, "deletePort", path_params={"port_id": pid}))


def test_ipv4_pool_defaults_come_from_ipam(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network()
        subnet = await n.subnet(network["id"], "172.16.0.0/16", gateway_ip="172.16.255.254")
        pools = subnet["allocation_pools"]
        assert pools == [{"start": "172.16.0.1", "end": "172.16.255.253"}]
        assert ipaddress.ip_address(pools[0]["start"]) in ipaddress.ip_network(subnet["cidr"])

    run(tmp_path, scenario)
