"""neutron on the resource model: what spec/resources/network.yaml declares, through the
engine (parents, refusals with their NeutronError types, cascades, policy from the spec,
list-valued filters, strict bodies, undo hooks)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.bus import InProcessBus
from specstack_runtime.context import AuthContext, Call, Reply
from specstack_runtime.errorformat import render
from specstack_runtime.errors import ApiError
from specstack_runtime.policy import parse
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.store import Store
from tests.runtime.fakes import _behaviour
from tests.runtime.netvol_fakes import (
    ADMIN,
    OTHER,
    OTHER_PROJECT,
    PROJECT,
    USER,
    make_call,
    make_rt,
    make_store,
    stack_info,
)

API = "network"


async def op(rt: ServiceRuntime, operation: str, who: AuthContext = USER, **kwargs: Any) -> Any:
    """Run the operation as the generated service does (its bound engine action); the body."""
    call: Call = make_call(rt, operation, who=who, **kwargs)
    found = next(o for o in rt.info.apis[API]["operations"] if o["operation_id"] == operation)
    reply: Reply = await _behaviour(rt.info, API, found)(call)
    return reply.body


async def fails(coro: Awaitable[Any], status: int, kind: str | None = None) -> ApiError:
    with pytest.raises(ApiError) as info:
        await coro
    assert info.value.status == status, (info.value.status, info.value.message)
    if kind is not None:
        assert info.value.kind == kind, info.value.message
    return info.value


def run(tmp_path: Path, scenario: Callable[[ServiceRuntime], Awaitable[None]]) -> None:
    async def main() -> None:
        info = stack_info()
        store = make_store(info, "neutron")
        async with InProcessBus() as bus:
            rt = make_rt(info, "neutron-server", tmp_path, store=store, bus=bus)
            try:
                await scenario(rt)
            finally:
                store.close()

    asyncio.run(main())


async def network(rt: ServiceRuntime, who: AuthContext = USER, **attrs: Any) -> dict[str, Any]:
    return dict((await op(rt, "createNetwork", who, body={"network": attrs}))["network"])


async def subnet(
    rt: ServiceRuntime, net_id: str, cidr: str, who: AuthContext = USER
) -> dict[str, Any]:
    body = {"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr}}
    return dict((await op(rt, "createSubnet", who, body=body))["subnet"])


async def port(
    rt: ServiceRuntime, net_id: str, who: AuthContext = USER, **attrs: Any
) -> dict[str, Any]:
    body = {"port": {"network_id": net_id, **attrs}}
    return dict((await op(rt, "createPort", who, body=body))["port"])


def test_in_use_refusals_answer_neutron_errors(tmp_path: Path) -> None:
    """Deleting a network with a server's port is 409 NetworkInUse, a subnet holding a
    port's address 409 SubnetInUse, both in neutron's error body; nothing is deleted."""

    async def scenario(rt: ServiceRuntime) -> None:
        net = await network(rt)
        sub = await subnet(rt, net["id"], "10.0.0.0/24")
        held = await port(rt, net["id"], device_owner="compute:nova")
        err = await fails(
            op(rt, "deleteNetwork", path_params={"network_id": net["id"]}), 409, "NetworkInUse"
        )
        body, _ = render("neutron", err)
        assert json.loads(body)["NeutronError"]["type"] == "NetworkInUse"
        assert f"operation on network {net['id']}" in json.loads(body)["NeutronError"]["message"]
        await fails(
            op(rt, "deleteSubnet", path_params={"subnet_id": sub["id"]}), 409, "SubnetInUse"
        )
        shown = await op(rt, "showNetwork", path_params={"network_id": net["id"]})
        assert shown["network"]["subnets"] == [sub["id"]]
        assert (await op(rt, "showPort", path_params={"port_id": held["id"]}))["port"]["id"]
        # a port on another subnet of the network does not hold this one
        other = await subnet(rt, net["id"], "10.1.0.0/24")
        await op(rt, "deleteSubnet", path_params={"subnet_id": other["id"]})
        shown = await op(rt, "showNetwork", path_params={"network_id": net["id"]})
        assert shown["network"]["subnets"] == [sub["id"]]

    run(tmp_path, scenario)


def test_dhcp_ports_go_with_their_network_and_subnet(tmp_path: Path) -> None:
    """The network's own DHCP ports do not hold it: they are deleted with it (cascade) and
    their addresses released; a subnet going away takes their address on it."""

    async def scenario(rt: ServiceRuntime) -> None:
        store: Store = rt.require_store()
        net = await network(rt)
        sub = await subnet(rt, net["id"], "10.0.0.0/24")
        dhcp = await port(rt, net["id"], device_owner="network:dhcp")
        assert dhcp["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.0.0.2"}]
        await op(rt, "deleteSubnet", path_params={"subnet_id": sub["id"]})
        assert (await store.get("ports", dhcp["id"]) or {})["fixed_ips"] == []
        assert await store.count("ipallocations") == 0
        sub2 = await subnet(rt, net["id"], "10.2.0.0/24")
        await port(rt, net["id"], device_owner="network:dhcp")
        assert await store.count("ipallocations") == 1
        await op(rt, "deleteNetwork", path_params={"network_id": net["id"]})
        assert await store.count("ports") == 0
        assert await store.count("ipallocations") == 0
        assert await store.get("subnets", sub2["id"]) is None

    run(tmp_path, scenario)


def test_subnets_and_ports_are_visible_through_their_network(tmp_path: Path) -> None:
    """`parent`: a shared network's subnets are everyone's to see (not to change); a port
    an administrator put in my network for another project is mine to see."""

    async def scenario(rt: ServiceRuntime) -> None:
        shared = await network(rt, ADMIN, shared=True)
        sub = await subnet(rt, shared["id"], "10.0.0.0/24", who=ADMIN)
        listed = await op(rt, "listSubnets", OTHER)
        assert [s["id"] for s in listed["subnets"]] == [sub["id"]]
        shown = await op(rt, "showSubnet", OTHER, path_params={"subnet_id": sub["id"]})
        assert shown["subnet"]["cidr"] == "10.0.0.0/24"
        await fails(
            op(
                rt,
                "updateSubnet",
                OTHER,
                path_params={"subnet_id": sub["id"]},
                body={"subnet": {"name": "mine"}},
            ),
            403,
            "PolicyNotAuthorized",
        )
        # only the network's owner adds subnets to it
        body = {"subnet": {"network_id": shared["id"], "ip_version": 4, "cidr": "10.9.0.0/24"}}
        await fails(op(rt, "createSubnet", OTHER, body=body), 403, "PolicyNotAuthorized")

        mine = await network(rt)
        theirs = await port(rt, mine["id"], ADMIN, project_id=OTHER_PROJECT)
        assert theirs["project_id"] == OTHER_PROJECT
        listed = await op(rt, "listPorts", USER)
        assert [p["id"] for p in listed["ports"]] == [theirs["id"]]
        private = await network(rt, OTHER)
        await port(rt, private["id"], OTHER)
        assert len((await op(rt, "listPorts", USER))["ports"]) == 1
        await fails(
            op(rt, "showSubnet", OTHER, path_params={"subnet_id": "nope"}), 404, "SubnetNotFound"
        )

    run(tmp_path, scenario)


def test_policy_rules_come_from_the_spec(tmp_path: Path) -> None:
    """Who may share a network and change a MAC address is spec/policy.yaml's: editing the
    rule changes what the API allows."""

    async def scenario(rt: ServiceRuntime) -> None:
        err = await fails(op(rt, "createNetwork", body={"network": {"shared": True}}), 403)
        assert err.message == (
            "(rule:create_network and rule:create_network:shared) is disallowed by policy"
        )
        net = await network(rt)
        assert "provider:segmentation_id" not in net
        p = await port(rt, net["id"])
        change = {"port": {"mac_address": "fa:16:3e:00:00:01"}}
        await fails(
            op(rt, "updatePort", path_params={"port_id": p["id"]}, body=change),
            403,
            "PolicyNotAuthorized",
        )
        rules = rt.info.policy.rules
        rules["network:shared"] = parse("rule:admin_or_member")
        rules["port:mac_address"] = parse("rule:admin_or_member")
        rules["network:provider"] = parse("rule:admin_or_member")
        shared = await network(rt, shared=True)
        assert shared["shared"] is True and shared["provider:network_type"] == "vxlan"
        moved = await op(rt, "updatePort", path_params={"port_id": p["id"]}, body=change)
        assert moved["port"]["mac_address"] == "fa:16:3e:00:00:01"

    run(tmp_path, scenario)


def test_neutron_bodies_filters_and_conversions(tmp_path: Path) -> None:
    """strict_body, coerce: bool, fixed_ips=KEY=VALUE filters, create-only attributes."""

    async def scenario(rt: ServiceRuntime) -> None:
        net = await network(rt, admin_state_up="false", mtu="1400")
        assert net["admin_state_up"] is False and net["mtu"] == 1400
        err = await fails(op(rt, "createNetwork", body={"network": {}, "x": 1}), 400)
        assert err.message == "Unrecognized attribute(s) 'x'" and err.kind == "HTTPBadRequest"
        err = await fails(
            op(
                rt,
                "updateNetwork",
                path_params={"network_id": net["id"]},
                body={"network": {"project_id": PROJECT}},
            ),
            400,
        )
        assert err.message == "Cannot update read-only attribute project_id"
        for kind, found in (("vxlan", [net["id"]]), ("vlan", [])):
            query = {"provider:network_type": [kind]}
            listed = await op(rt, "listNetworks", ADMIN, query=query)
            assert [n["id"] for n in listed["networks"]] == found
        sub = await subnet(rt, net["id"], "10.0.0.0/24")
        a = await port(rt, net["id"])
        b = await port(
            rt, net["id"], fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.0.0.77"}]
        )

        async def ids(*values: str) -> set[str]:
            body = await op(rt, "listPorts", query={"fixed_ips": list(values)})
            return {p["id"] for p in body["ports"]}

        assert await ids(f"subnet_id={sub['id']}") == {a["id"], b["id"]}
        assert await ids("ip_address=10.0.0.77") == {b["id"]}
        assert await ids("ip_address=10.0.0.77", "ip_address=10.0.0.2") == {a["id"], b["id"]}
        assert await ids("ip_address_substr=.77", f"subnet_id={sub['id']}") == {b["id"]}
        assert await ids("ip_address=10.9.9.9") == set()
        err = await fails(op(rt, "listPorts", query={"fixed_ips": ["mac=x"]}), 400)
        assert "ip_address=" in err.message
        listed = await op(rt, "listPorts", query={"status": ["DOWN"], "fields": ["id"]})
        assert {p["id"] for p in listed["ports"]} == {a["id"], b["id"]}

    run(tmp_path, scenario)


def test_a_failed_update_gives_its_new_addresses_back(tmp_path: Path) -> None:
    """undo_update: an update that loses its compare-and-set race releases the address
    its hook took."""

    async def scenario(rt: ServiceRuntime) -> None:
        store: Store = rt.require_store()
        net = await network(rt)
        await subnet(rt, net["id"], "10.0.0.0/24")
        p = await port(rt, net["id"])
        real_update = store.update

        async def racing(table: str, id_: str, changes: dict[str, Any], **kw: Any) -> Any:
            if table == "ports" and "fixed_ips" in changes:
                await real_update(table, id_, {"revision_number": 99})  # another writer won
            return await real_update(table, id_, changes, **kw)

        store.update = racing  # type: ignore[method-assign,assignment]
        body = {"port": {"fixed_ips": [{"ip_address": "10.0.0.50"}]}}
        await fails(op(rt, "updatePort", path_params={"port_id": p["id"]}, body=body), 409)
        store.update = real_update  # type: ignore[method-assign]
        assert (
            await store.get("ipallocations", f"{p['fixed_ips'][0]['subnet_id']}:10.0.0.50") is None
        )
        assert await store.count("ipallocations") == 1

    run(tmp_path, scenario)


def test_network_type_rules_and_segment_ids(tmp_path: Path) -> None:
    async def scenario(rt: ServiceRuntime) -> None:
        async def refused(reason_field: str, reason: str, **attrs: Any) -> None:
            err = await fails(network(rt, ADMIN, **attrs), 400, "InvalidInput")
            assert err.message == f"Invalid input for {reason_field}. Reason: {reason}."

        await refused(
            "provider:physical_network",
            "vxlan networks have no physical network",
            **{"provider:physical_network": "physnet1"},
        )
        await refused(
            "provider:segmentation_id",
            "flat networks have no segmentation id",
            **{
                "provider:network_type": "flat",
                "provider:physical_network": "physnet1",
                "provider:segmentation_id": 5,
            },
        )
        await refused(
            "provider:physical_network",
            "vlan networks need a physical network",
            **{"provider:network_type": "vlan"},
        )
        await refused(
            "provider:segmentation_id",
            "4095 is not a valid VLAN id (1-4094)",
            **{
                "provider:network_type": "vlan",
                "provider:physical_network": "physnet1",
                "provider:segmentation_id": 4095,
            },
        )
        vlan = {"provider:network_type": "vlan", "provider:physical_network": "physnet1"}
        first = await network(rt, ADMIN, **vlan)
        second = await network(rt, ADMIN, **vlan)
        assert (first["provider:segmentation_id"], second["provider:segmentation_id"]) == (1, 2)
        vxlan = await network(rt, ADMIN)
        assert vxlan["provider:network_type"] == "vxlan"
        assert isinstance(vxlan["provider:segmentation_id"], int)
        err = await fails(
            network(rt, ADMIN, **vlan, **{"provider:segmentation_id": 2}),
            409,
            "SegmentationIdInUse",
        )
        assert err.message == "Unable to create the network. The segmentation ID 2 is in use."
        flat = await network(rt, ADMIN, **{**vlan, "provider:network_type": "flat"})
        assert flat["provider:segmentation_id"] is None

    run(tmp_path, scenario)


def test_a_port_binding_state_is_computed_and_server_set(tmp_path: Path) -> None:
    async def scenario(rt: ServiceRuntime) -> None:
        net = await network(rt)
        created = dict(
            (await op(rt, "createPort", body={"port": {"network_id": net["id"]}}))["port"]
        )
        assert (created["status"], created["binding:vif_type"]) == ("DOWN", "unbound")
        assert created["binding:vif_details"] == {}
        bound = {"binding:host_id": "compute-1"}
        path = {"port_id": created["id"]}
        port = (await op(rt, "updatePort", ADMIN, path_params=path, body={"port": bound}))["port"]
        assert (port["status"], port["binding:vif_type"]) == ("ACTIVE", "ovs")
        assert port["binding:vif_details"]["bridge_name"] == "br-int"
        down = {"admin_state_up": False}
        port = (await op(rt, "updatePort", ADMIN, path_params=path, body={"port": down}))["port"]
        assert (port["status"], port["binding:vif_type"]) == ("DOWN", "ovs")
        listed = await op(rt, "listPorts", ADMIN, query={"status": ["DOWN"]})
        assert [p["id"] for p in listed["ports"]] == [created["id"]]
        assert (await op(rt, "listPorts", ADMIN, query={"status": ["ACTIVE"]}))["ports"] == []
        # what the server computes is not the client's to give (neutron's strict bodies)
        given = {"network_id": net["id"], "binding:vif_type": "ovs"}
        err = await fails(op(rt, "createPort", body={"port": given}), 400, "HTTPBadRequest")
        assert err.message == "Attribute 'binding:vif_type' not allowed in POST"
        again = {"status": "DOWN"}
        err = await fails(op(rt, "updatePort", ADMIN, path_params=path, body={"port": again}), 400)
        assert err.message == "Cannot update read-only attribute status"

    run(tmp_path, scenario)


def test_limit_pages_a_list_and_a_bad_limit_is_a_400(tmp_path: Path) -> None:
    """`limit` keeps that many rows and links to the next page; one that is not a
    non-negative integer (or absurdly long) is refused, naming the value."""

    async def scenario(rt: ServiceRuntime) -> None:
        made = [(await network(rt, name=f"n{i}"))["id"] for i in range(3)]
        body = await op(rt, "listNetworks", query={"limit": ["2"]})
        first = [n["id"] for n in body["networks"]]
        assert len(first) == 2
        (nxt,) = [link["href"] for link in body["networks_links"] if link["rel"] == "next"]
        assert f"marker={first[-1]}" in nxt
        rest = await op(rt, "listNetworks", query={"limit": ["2"], "marker": [first[-1]]})
        assert {n["id"] for n in rest["networks"]} == set(made) - set(first)
        everything = await op(rt, "listNetworks", query={"limit": ["0"]})
        assert {n["id"] for n in everything["networks"]} == set(made)
        for bad in ("-1", "two", "1" * 13):
            err = await fails(op(rt, "listNetworks", query={"limit": [bad]}), 400)
            assert err.message == (
                f"Bad limit request: Limit must be an integer 0 or greater and not '{bad}'"
            )

    run(tmp_path, scenario)
