"""A server's interfaces through the real `openstack` CLI (issue 15): `server add port`
binds the user's port to the server (its address in `server show`, the server its
`device_id`), `server remove port` unbinds it and keeps it, `server add network` makes a
port of nova's on the network; deleting the server leaves the user's port."""

from __future__ import annotations

from typing import Any

from .conftest import Stack

VM = "wire-iface-vm"
PORT = "wire-iface-port"


def _ips(stack: Stack, server: str) -> list[str]:
    addresses: Any = stack.json("server", "show", server)["addresses"]
    if isinstance(addresses, dict):
        return [str(ip) for ips in addresses.values() for ip in ips]
    return [p.split("=")[-1] for p in str(addresses).replace(",", " ").split()]


def test_server_add_and_remove_port_and_add_network(stack: Stack) -> None:
    port = stack.json("port", "create", "--network", "private", PORT)
    port_ip = port["fixed_ips"][0]["ip_address"]
    create = ("server", "create", "--image", "demo-image", "--flavor", "m1.tiny")
    server = stack.json(*create, "--network", "private", "--wait", VM)
    try:
        assert server["status"] == "ACTIVE"
        (booted_ip,) = _ips(stack, server["id"])

        stack.run("server", "add", "port", server["id"], port["id"])
        assert sorted(_ips(stack, server["id"])) == sorted([booted_ip, port_ip])
        shown = stack.json("port", "show", port["id"])
        assert shown["device_id"] == server["id"] and shown["device_owner"] == "compute:nova"

        stack.run("server", "remove", "port", server["id"], port["id"])
        assert _ips(stack, server["id"]) == [booted_ip]
        assert stack.json("port", "show", port["id"])["device_id"] == ""

        stack.run("server", "add", "network", server["id"], "private")
        listed = stack.json("port", "list", "--server", server["id"])
        assert len(listed) == 2 and port["id"] not in [p["ID"] for p in listed]
        assert len(_ips(stack, server["id"])) == 2
    finally:
        stack.run("server", "delete", "--wait", server["id"], check=False)
    # the user's port stays (nova's ports went with the server)
    assert stack.json("port", "show", port["id"])["device_id"] == ""
    stack.run("port", "delete", port["id"])
