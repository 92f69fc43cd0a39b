"""Neutron's ports: lifecycle, binding, address allocation (exhaustion, concurrency, retries),
filters and paging, and who may create them for whom."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from specstack_runtime.store import Store
from tests.runtime.netvol_fakes import (
    ADMIN,
    OTHER,
    auth,
    expect_error,
    make_call,
    make_rt,
    stack_info,
    tables_of,
)
from tests.runtime.test_network import Neutron, run, serve

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
        # no group named: the project's default group (tests/runtime/test_security_groups.py)
        assert len(port["security_groups"]) == 1 and port["port_security_enabled"] is True
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
        # a given MAC address (and an allowed pair's) stored as neutron writes it: lower case
        # with colons, and taken in any spelling
        pairs = [{"ip_address": "10.1.0.9", "mac_address": "FA-16-3E-00-00-BB"}]
        given = await n.port(
            network["id"], mac_address="FA-16-3E-00-00-AA", allowed_address_pairs=pairs
        )
        assert given["mac_address"] == "fa:16:3e:00:00:aa"
        assert given["allowed_address_pairs"] == [
            {"ip_address": "10.1.0.9", "mac_address": "fa:16:3e:00:00:bb"}
        ]
        await expect_error(
            create(mac_address="fa-16-3e-00-00-AA"),
            409,
            "MacAddressInUse",
            f"network {network['id']}. The mac address fa:16:3e:00:00:aa is in use.",
        )
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


def test_address_refusals_say_what_neutron_says(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network(name="private")
        subnet = await n.subnet(network["id"], cidr="10.0.0.0/29")
        other = await n.subnet((await n.network(name="other"))["id"], cidr="10.1.0.0/24")
        taken = await n.port(network["id"])
        held = taken["fixed_ips"][0]["ip_address"]

        async def refused(status: int, kind: str, message: str, **attrs: Any) -> None:
            call = make_call(
                n.rt, "createPort", body={"port": {"network_id": network["id"], **attrs}}
            )
            err = await expect_error(serve(call), status, kind)
            assert err.message == message

        await refused(
            409,
            "IpAddressAlreadyAllocated",
            f"IP address {held} already allocated in subnet {subnet['id']}",
            fixed_ips=[{"subnet_id": subnet["id"], "ip_address": held}],
        )
        await refused(
            400,
            "InvalidIpForSubnet",
            "IP address 10.9.0.5 is not a valid IP for the specified subnet.",
            fixed_ips=[{"subnet_id": subnet["id"], "ip_address": "10.9.0.5"}],
        )
        await refused(
            400,
            "InvalidIpForNetwork",
            "IP address 10.9.0.5 is not a valid IP for any of the subnets on the specified network.",
            fixed_ips=[{"ip_address": "10.9.0.5"}],
        )
        await refused(
            400,
            "InvalidInput",
            f"Invalid input for operation: Failed to create port on network {network['id']}, "
            f"because fixed_ips included invalid subnet {other['id']}.",
            fixed_ips=[{"subnet_id": other["id"]}],
        )
        await refused(
            400,
            "InvalidInput",
            "Invalid input for fixed_ips. Reason: '10.0.0.300' is not a valid IP address.",
            fixed_ips=[{"ip_address": "10.0.0.300"}],
        )
        await refused(
            400,
            "InvalidInput",
            "Invalid input for mac_address. Reason: '01:00:5e:00:00:01' is not a valid "
            "unicast MAC address.",
            mac_address="01:00:5e:00:00:01",
        )
        await refused(
            400,
            "InvalidInput",
            "Invalid input for mac_address. Reason: '00-00-00-00-00-00' is not a valid "
            "unicast MAC address.",
            mac_address="00-00-00-00-00-00",
        )
        await refused(
            400,
            "InvalidInput",
            "Invalid input for allowed_address_pairs. Reason: '10.0.0.0/40' is not a valid IP "
            "address or CIDR.",
            allowed_address_pairs=[{"ip_address": "10.1.0.0/16"}, {"ip_address": "10.0.0.0/40"}],
        )
        await refused(
            400,
            "InvalidInput",
            "Invalid input for mac_address. Reason: '03:00:00:00:00:01' is not a valid "
            "unicast MAC address.",
            allowed_address_pairs=[{"ip_address": "10.1.0.9", "mac_address": "03:00:00:00:00:01"}],
        )
        for _ in range(4):  # a /29 holds 5 addresses (the gateway aside)
            await n.port(network["id"])
        await refused(
            409,
            "IpAddressGenerationFailure",
            f"No more IP addresses available on network {network['id']}.",
        )

    run(tmp_path, scenario)
