"""Routers and floating IPs through the real `openstack` CLI, once an administrator made an
external network: a router's gateway and interface, floating IPs allocated, associated
with a port, listed, released; nova's floating IP pools; openstacksdk's
`create_server(..., auto_ip=True, wait=True)`, which waits for the floating IP to show in
the server's addresses."""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx
import pytest

from .conftest import Stack, sdk_connection

PUBLIC = "wire-public"
RANGE = ipaddress.ip_network("198.51.100.0/24")
ROUTER = "wire-router"
PORT = "wire-fip-port"


@pytest.fixture(scope="module")
def public(stack: Stack) -> dict[str, Any]:
    admin = "specstack-admin"
    net: dict[str, Any] = stack.json("network", "create", "--external", PUBLIC, cloud=admin)
    stack.json(
        "subnet", "create", "--network", PUBLIC, "--subnet-range", str(RANGE),
        "wire-public-subnet", cloud=admin,
    )  # fmt: skip
    return net


@pytest.fixture(scope="module")
def router(stack: Stack, public: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = stack.json("router", "create", ROUTER)
    assert created["external_gateway_info"] is None
    stack.run("router", "set", "--external-gateway", PUBLIC, ROUTER)
    private = stack.json("network", "show", "private")
    stack.run("router", "add", "subnet", ROUTER, private["subnets"][0])
    shown: dict[str, Any] = stack.json("router", "show", ROUTER)
    return shown


def test_router_gateway_and_subnet(stack: Stack, router: dict[str, Any], public: Any) -> None:
    info = router["external_gateway_info"]
    assert info["network_id"] == public["id"]
    (gateway,) = info["external_fixed_ips"]
    assert ipaddress.ip_address(gateway["ip_address"]) in RANGE
    private = stack.json("network", "show", "private")
    subnet = stack.json("subnet", "show", private["subnets"][0])
    ports = stack.json("port", "list", "--router", ROUTER)
    addresses = {ip["ip_address"] for p in ports for ip in p["Fixed IP Addresses"]}
    assert subnet["gateway_ip"] in addresses
    assert ROUTER in {r["Name"] for r in stack.json("router", "list")}


def test_floating_ip_create_associate_list(
    stack: Stack, router: dict[str, Any], public: dict[str, Any]
) -> None:
    fip = stack.json("floating", "ip", "create", PUBLIC)
    address = fip["floating_ip_address"]
    assert ipaddress.ip_address(address) in RANGE and fip["status"] == "DOWN"
    assert fip["floating_network_id"] == public["id"] and fip["port_id"] is None
    listed = {f["Floating IP Address"]: f for f in stack.json("floating", "ip", "list")}
    assert listed[address]["ID"] == fip["id"] and listed[address]["Port"] is None

    port = stack.json("port", "create", "--network", "private", PORT)
    stack.run("floating", "ip", "set", "--port", PORT, address)
    shown = stack.json("floating", "ip", "show", address)
    assert shown["port_id"] == port["id"] and shown["status"] == "ACTIVE"
    assert shown["router_id"] == router["id"]
    assert shown["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
    row = _by_address(stack.json("floating", "ip", "list"), address)
    assert row["Port"] == port["id"]
    assert row["Fixed IP Address"] == shown["fixed_ip_address"]
    # a router routing a floating IP stays
    refused = stack.run("router", "delete", ROUTER, check=False)
    assert refused.returncode != 0

    stack.run("floating", "ip", "unset", "--port", address)
    assert stack.json("floating", "ip", "show", address)["status"] == "DOWN"
    stack.run("floating", "ip", "delete", address)
    assert address not in {f["Floating IP Address"] for f in stack.json("floating", "ip", "list")}
    stack.run("port", "delete", PORT)


def _by_address(rows: list[dict[str, Any]], address: str) -> dict[str, Any]:
    (row,) = [r for r in rows if r["Floating IP Address"] == address]
    return row


# The SDK's notes about its own API (DeprecationWarning, PendingDeprecationWarning).
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_sdk_create_server_with_auto_ip(
    stack: Stack, router: dict[str, Any], public: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sdk_connection(stack, monkeypatch)
    try:
        server = conn.create_server(
            "wire-sdk-fip-vm", image="demo-image", flavor="m1.tiny", network="private",
            wait=True, auto_ip=True, timeout=120,
        )  # fmt: skip
        assert server.status == "ACTIVE"
        # what the SDK waited for: the address among the server's floating ones
        (floating,) = [
            e["addr"] for e in server.addresses["private"] if e["OS-EXT-IPS:type"] == "floating"
        ]
        shown = conn.get_server(server.id)
        assert shown is not None and shown.public_v4 == floating
        assert ipaddress.ip_address(floating) in RANGE
        # nova shows it beside the fixed address, on the port's network
        (port,) = conn.network.ports(device_id=server.id)
        entries = conn.compute.get_server(server.id).addresses["private"]
        assert [
            (e["addr"], e["OS-EXT-IPS:type"], e["OS-EXT-IPS-MAC:mac_addr"]) for e in entries
        ] == [
            (port.fixed_ips[0]["ip_address"], "fixed", port.mac_address),
            (floating, "floating", port.mac_address),
        ]
        fip = stack.json("floating", "ip", "show", floating)
        assert fip["port_id"] == port.id and fip["router_id"] == router["id"]
        # let go, it leaves the server's addresses
        stack.run("floating", "ip", "unset", "--port", floating)
        left = conn.compute.get_server(server.id).addresses["private"]
        assert [e["addr"] for e in left] == [port.fixed_ips[0]["ip_address"]]
        assert conn.delete_server(server.id, wait=True, timeout=120, delete_ips=True) is True
    finally:
        conn.close()


def test_floating_ip_pools_and_router_removal(stack: Stack, router: dict[str, Any]) -> None:
    token = str(stack.json("token", "issue")["id"])
    (entry,) = [e for e in stack.json("catalog", "list") if e["Type"] == "compute"]
    (public_ep,) = [e for e in entry["Endpoints"] if e["interface"] == "public"]
    resp = httpx.get(f"{public_ep['url']}/os-floating-ip-pools", headers={"X-Auth-Token": token})
    assert resp.status_code == 200, resp.text
    assert {"name": PUBLIC} in resp.json()["floating_ip_pools"]
    private = stack.json("network", "show", "private")
    stack.run("router", "remove", "subnet", ROUTER, private["subnets"][0])
    assert stack.json("port", "list", "--router", ROUTER, "--device-owner",
                      "network:router_interface") == []  # fmt: skip
    stack.run("router", "delete", ROUTER)
    assert ROUTER not in {r["Name"] for r in stack.json("router", "list")}
