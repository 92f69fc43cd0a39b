"""Neutron's routers and floating IPs: a gateway on an external network, interfaces by
subnet or port, floating IPs allocated from the external network's subnet, associated
through the router that joins the port's subnet, and what deleting refuses or takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.runtime.netvol_fakes import ADMIN, OTHER, USER, expect_error, make_call
from tests.runtime.test_network import Neutron, run, serve


async def _public(n: Neutron) -> tuple[dict[str, Any], dict[str, Any]]:
    net = await n.network(who=ADMIN, name="public", **{"router:external": True})
    sub = await n.subnet(net["id"], cidr="203.0.113.0/24", who=ADMIN)
    return net, sub


async def _router(n: Neutron, **attrs: Any) -> dict[str, Any]:
    body = await n.op(serve, "createRouter", 201, body={"router": attrs})
    return dict(body["router"])


async def _fip(n: Neutron, status: int = 201, **attrs: Any) -> dict[str, Any]:
    body = await n.op(serve, "createFloatingIP", status, body={"floatingip": attrs})
    return dict(body["floatingip"])


async def _interface(n: Neutron, op: str, router_id: str, **body: Any) -> dict[str, Any]:
    out = await n.op(serve, op, 200, path_params={"router_id": router_id}, body=body)
    return dict(out)


def test_router_gateway_and_interfaces(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        public, pub_sub = await _public(n)
        private = await n.network(name="private")
        sub = await n.subnet(private["id"], cidr="10.0.0.0/24")
        router = await _router(n, name="r1", external_gateway_info={"network_id": public["id"]})
        info = router["external_gateway_info"]
        assert info["network_id"] == public["id"] and info["enable_snat"] is True
        assert info["external_fixed_ips"] == [
            {"subnet_id": pub_sub["id"], "ip_address": "203.0.113.2"}
        ]
        assert router["status"] == "ACTIVE" and router["project_id"] == USER.project_id
        # an internal network is no gateway
        bad = make_call(
            n.rt,
            "createRouter",
            body={"router": {"external_gateway_info": {"network_id": private["id"]}}},
        )
        await expect_error(
            serve(bad),
            400,
            "BadRequest",
            f"Bad router request: Network {private['id']} is not an external network.",
        )
        # another project's network the caller cannot see: not found
        theirs = await n.network(who=OTHER, name="theirs")
        hidden = make_call(
            n.rt,
            "createRouter",
            body={"router": {"external_gateway_info": {"network_id": theirs["id"]}}},
        )
        await expect_error(
            serve(hidden), 404, "NetworkNotFound", f"Network {theirs['id']} could not be found."
        )
        # a network that is not there: the network resource's not-found error of the spec
        gone = "0" * 32
        missing = make_call(
            n.rt, "createRouter", body={"router": {"external_gateway_info": {"network_id": gone}}}
        )
        await expect_error(
            serve(missing), 404, "NetworkNotFound", match=f"Network {gone} could not be found"
        )

        added = await _interface(n, "addRouterInterface", router["id"], subnet_id=sub["id"])
        assert added == {
            "id": router["id"],
            "subnet_id": sub["id"],
            "subnet_ids": [sub["id"]],
            "port_id": added["port_id"],
            "network_id": private["id"],
            "tenant_id": router["project_id"],
            "project_id": router["project_id"],
        }
        port = await n.op(serve, "showPort", 200, path_params={"port_id": added["port_id"]})
        assert port["port"]["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.0.0.1"}]
        assert port["port"]["device_owner"] == "network:router_interface"
        assert port["port"]["security_groups"] == []
        again = make_call(
            n.rt,
            "addRouterInterface",
            path_params={"router_id": router["id"]},
            body={"subnet_id": sub["id"]},
        )
        await expect_error(serve(again), 400, match="Router already has a port on subnet")
        # the interface's port is not deleted through the port API; the router is not
        # deleted while it has one
        direct = make_call(n.rt, "deletePort", path_params={"port_id": added["port_id"]})
        await expect_error(serve(direct), 409, match="cannot be deleted directly via the port API")
        remove = make_call(n.rt, "deleteRouter", path_params={"router_id": router["id"]})
        await expect_error(serve(remove), 409, match=f"Router {router['id']} still has ports")

        removed = await _interface(n, "removeRouterInterface", router["id"], subnet_id=sub["id"])
        assert removed == added
        missing = make_call(
            n.rt,
            "removeRouterInterface",
            path_params={"router_id": router["id"]},
            body={"subnet_id": sub["id"]},
        )
        await expect_error(serve(missing), 404, match="has no interface on subnet")
        # the gateway removed, then the router deleted: its gateway port goes
        cleared = await n.op(
            serve,
            "updateRouter",
            200,
            path_params={"router_id": router["id"]},
            body={"router": {"external_gateway_info": None}},
        )
        assert cleared["router"]["external_gateway_info"] is None
        await n.op(
            serve,
            "updateRouter",
            200,
            path_params={"router_id": router["id"]},
            body={"router": {"external_gateway_info": {"network_id": public["id"]}}},
        )
        await n.op(serve, "deleteRouter", 204, path_params={"router_id": router["id"]})
        left = await n.op(serve, "listPorts", 200, who=ADMIN, query={"device_id": [router["id"]]})
        assert left["ports"] == []

    run(tmp_path, scenario)


def test_floating_ips_allocate_associate_and_release(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        public, _ = await _public(n)
        private = await n.network(name="private")
        sub = await n.subnet(private["id"], cidr="10.0.0.0/24")
        vm_port = await n.port(private["id"])

        fip = await _fip(n, floating_network_id=public["id"])
        assert fip["floating_ip_address"] == "203.0.113.2"
        assert fip["status"] == "DOWN" and fip["port_id"] is None and fip["router_id"] is None
        # not reachable without a router joining the subnet to the external network
        assoc = make_call(
            n.rt,
            "updateFloatingIP",
            path_params={"floatingip_id": fip["id"]},
            body={"floatingip": {"port_id": vm_port["id"]}},
        )
        await expect_error(serve(assoc), 404, match="is not reachable from subnet")
        router = await _router(n, external_gateway_info={"network_id": public["id"]})
        await _interface(n, "addRouterInterface", router["id"], subnet_id=sub["id"])
        done = await n.op(
            serve,
            "updateFloatingIP",
            200,
            path_params={"floatingip_id": fip["id"]},
            body={"floatingip": {"port_id": vm_port["id"]}},
        )
        assoc_fip = done["floatingip"]
        assert assoc_fip["status"] == "ACTIVE" and assoc_fip["router_id"] == router["id"]
        assert assoc_fip["fixed_ip_address"] == vm_port["fixed_ips"][0]["ip_address"]
        listed = await n.op(serve, "listFloatingIPs", 200, query={"port_id": [vm_port["id"]]})
        assert [f["id"] for f in listed["floatingips"]] == [fip["id"]]
        # a router routing floating IPs is not deleted
        busy = make_call(n.rt, "deleteRouter", path_params={"router_id": router["id"]})
        await expect_error(serve(busy), 409, match="still has ports")

        # associated at creation; an internal network gives no floating IPs
        vm_ip = vm_port["fixed_ips"][0]["ip_address"]
        second = await _fip(
            n, floating_network_id=public["id"], port_id=vm_port["id"], fixed_ip_address=vm_ip
        )
        assert second["status"] == "ACTIVE" and second["floating_ip_address"] == "203.0.113.4"
        assert second["fixed_ip_address"] == vm_ip and second["router_id"] == router["id"]
        internal = make_call(
            n.rt, "createFloatingIP", body={"floatingip": {"floating_network_id": private["id"]}}
        )
        await expect_error(serve(internal), 400, match="is not an external network")
        chosen = make_call(
            n.rt,
            "createFloatingIP",
            body={
                "floatingip": {
                    "floating_network_id": public["id"],
                    "floating_ip_address": "203.0.113.9",
                }
            },
        )
        await expect_error(serve(chosen), 403)

        let_go = await n.op(
            serve,
            "updateFloatingIP",
            200,
            path_params={"floatingip_id": fip["id"]},
            body={"floatingip": {"port_id": None}},
        )
        assert let_go["floatingip"]["status"] == "DOWN"
        assert let_go["floatingip"]["fixed_ip_address"] is None
        # released: its address is free again
        await n.op(serve, "deleteFloatingIP", 204, path_params={"floatingip_id": fip["id"]})
        third = await _fip(n, floating_network_id=public["id"])
        assert third["floating_ip_address"] == "203.0.113.2"
        owned = await n.op(
            serve, "listPorts", 200, who=ADMIN, query={"device_owner": ["network:floatingip"]}
        )
        assert sorted(p["device_id"] for p in owned["ports"]) == sorted([second["id"], third["id"]])
        # an administrator may name the address (its port holds that one)
        asked = {"floating_network_id": public["id"], "floating_ip_address": "203.0.113.9"}
        named = await n.op(serve, "createFloatingIP", 201, who=ADMIN, body={"floatingip": asked})
        assert named["floatingip"]["floating_ip_address"] == "203.0.113.9"
        held = await n.op(
            serve, "listPorts", 200, who=ADMIN, query={"device_id": [named["floatingip"]["id"]]}
        )
        assert [p["fixed_ips"][0]["ip_address"] for p in held["ports"]] == ["203.0.113.9"]

    run(tmp_path, scenario)


def test_router_and_floating_ip_refusals_say_what_neutron_says(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        public, _ = await _public(n)
        bare = await n.network(who=ADMIN, name="bare", **{"router:external": True})
        private = await n.network(name="private")
        sub = await n.subnet(private["id"], cidr="10.0.0.0/24", gateway_ip=None)
        router = await _router(n, name="r1")

        async def refused(op: str, status: int, kind: str, message: str, **body: Any) -> None:
            call = make_call(n.rt, op, path_params={"router_id": router["id"]}, body=body)
            err = await expect_error(serve(call), status, kind)
            assert err.message == message

        either = "Bad router request: Either subnet_id or port_id must be specified."
        await refused("addRouterInterface", 400, "BadRequest", either)
        await refused(
            "removeRouterInterface", 400, "BadRequest", either, subnet_id=sub["id"], port_id="p"
        )
        await refused(
            "addRouterInterface",
            400,
            "BadRequest",
            f"Bad router request: Subnet {sub['id']} does not have a gateway IP.",
            subnet_id=sub["id"],
        )
        used = await n.port(private["id"], device_owner="compute:nova", device_id="vm-1")
        await refused(
            "addRouterInterface",
            400,
            "BadRequest",
            f"Bad router request: Port {used['id']} is in use by compute:nova.",
            port_id=used["id"],
        )
        no_ip = await n.port(bare["id"])
        assert no_ip["fixed_ips"] == []
        await refused(
            "addRouterInterface",
            400,
            "BadRequest",
            "Bad router request: Router port must have at least one fixed IP.",
            port_id=no_ip["id"],
        )
        await refused(
            "removeRouterInterface",
            404,
            "RouterInterfaceNotFound",
            f"Router {router['id']} does not have an interface with id {used['id']}",
            port_id=used["id"],
        )
        await refused(
            "removeRouterInterface",
            404,
            "RouterInterfaceNotFoundForSubnet",
            f"Router {router['id']} has no interface on subnet {sub['id']}",
            subnet_id=sub["id"],
        )
        # an external network without a subnet has no address to give
        call = make_call(
            n.rt, "createFloatingIP", body={"floatingip": {"floating_network_id": bare["id"]}}
        )
        err = await expect_error(serve(call), 400, "BadRequest")
        assert err.message == (
            f"Bad floatingip request: Network {bare['id']} has no subnet to allocate from."
        )
        fip = await _fip(n, floating_network_id=public["id"])
        wrong = make_call(
            n.rt,
            "updateFloatingIP",
            path_params={"floatingip_id": fip["id"]},
            body={"floatingip": {"port_id": used["id"], "fixed_ip_address": "10.0.0.99"}},
        )
        err = await expect_error(serve(wrong), 400, "BadRequest")
        assert err.message == (
            f"Bad floatingip request: Port {used['id']} does not have fixed ip 10.0.0.99."
        )

    run(tmp_path, scenario)


class NovaEvents:
    """nova's os-server-external-events, the only HTTP neutron sends here."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def call(self, api: str, operation: str, *args: Any, **kwargs: Any) -> httpx.Response:
        assert (api, operation, kwargs["token"]) == ("compute", "createServerExternalEvents", "t")
        self.events += kwargs["body"]["events"]
        return httpx.Response(200, json=kwargs["body"])


def test_nova_is_told_when_a_servers_port_gains_or_loses_an_address(tmp_path: Path) -> None:
    """neutron's nova notifier (the floating IP's effects): a network-changed event for the
    server whose port an address is associated with, or taken from; none for other ports."""

    async def scenario(n: Neutron) -> None:
        nova = NovaEvents()
        n.rt.clients = nova  # type: ignore[assignment]

        async def service_token() -> str:
            return "t"

        n.rt.service_token = service_token  # type: ignore[method-assign]
        public, _ = await _public(n)
        private = await n.network(name="private")
        sub = await n.subnet(private["id"], cidr="10.0.0.0/24")
        router = await _router(n, external_gateway_info={"network_id": public["id"]})
        await _interface(n, "addRouterInterface", router["id"], subnet_id=sub["id"])
        server = "5b0e4c1a-2f3d-4e5f-8a9b-0c1d2e3f4a5b"
        vm_port = await n.port(private["id"], device_owner="compute:nova", device_id=server)
        other = await n.port(private["id"])
        changed = {"name": "network-changed", "server_uuid": server, "tag": vm_port["id"]}
        fip = await _fip(n, floating_network_id=public["id"], port_id=vm_port["id"])
        assert nova.events == [changed]
        path = {"floatingip_id": fip["id"]}
        let_go = {"floatingip": {"port_id": None}}  # the server loses it
        await n.op(serve, "updateFloatingIP", 200, path_params=path, body=let_go)
        assert nova.events == [changed, changed]
        # a port no server holds: nova is not told, neither then nor when the address goes
        given = {"floatingip": {"port_id": other["id"]}}
        await n.op(serve, "updateFloatingIP", 200, path_params=path, body=given)
        await n.op(serve, "deleteFloatingIP", 204, path_params=path)
        assert nova.events == [changed, changed]

    run(tmp_path, scenario)
