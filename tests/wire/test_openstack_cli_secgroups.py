"""Security groups through the real `openstack` CLI: groups and rules in neutron, and nova's
`server create --security-group` (a group the project lacks fails with nova's message)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import Stack, endpoint

GROUP = "wire-web"
VM = "wire-sg-vm"


def _by_name(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [r for r in rows if r.get("Name") == name]
    assert len(found) == 1, f"{name} in {rows}"
    return found[0]


@pytest.fixture(scope="module")
def group(stack: Stack) -> dict[str, Any]:
    created: dict[str, Any] = stack.json(
        "security", "group", "create", "--description", "the web tier", GROUP
    )
    return created


def test_security_group_list_has_the_default_group(stack: Stack) -> None:
    project = str(stack.json("token", "issue")["project_id"])
    default = _by_name(stack.json("security", "group", "list"), "default")
    assert default["Project"] == project and default["Description"] == "Default security group"
    rules = stack.json("security", "group", "rule", "list", default["ID"])
    directions = sorted((r["Direction"], r["Ethertype"]) for r in rules)
    assert directions == [
        ("egress", "IPv4"),
        ("egress", "IPv6"),
        ("ingress", "IPv4"),
        ("ingress", "IPv6"),
    ]
    ingress = [r for r in rules if r["Direction"] == "ingress"]
    assert {r["Remote Security Group"] for r in ingress} == {default["ID"]}


def test_security_group_create_and_rule_create(stack: Stack, group: dict[str, Any]) -> None:
    assert group["name"] == GROUP and group["description"] == "the web tier"
    egress = [r for r in group["rules"] if r["direction"] == "egress"]
    assert sorted(r["ethertype"] for r in egress) == ["IPv4", "IPv6"]
    rule = stack.json(
        "security",
        "group",
        "rule",
        "create",
        "--protocol",
        "tcp",
        "--dst-port",
        "22",
        "--remote-ip",
        "192.0.2.0/24",
        GROUP,
    )
    assert (rule["protocol"], rule["port_range_min"], rule["port_range_max"]) == ("tcp", 22, 22)
    assert rule["remote_ip_prefix"] == "192.0.2.0/24" and rule["direction"] == "ingress"
    assert rule["security_group_id"] == group["id"]
    listed = stack.json("security", "group", "rule", "list", "--protocol", "tcp", GROUP)
    assert [r["ID"] for r in listed] == [rule["id"]]
    # the same rule again: neutron's 409, naming the rule
    again = stack.run(
        "security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22",
        "--remote-ip", "192.0.2.0/24", GROUP, check=False,
    )  # fmt: skip
    assert again.returncode != 0
    assert f"Security group rule already exists. Rule id is {rule['id']}" in again.stderr
    bad = stack.run(
        "security", "group", "rule", "create", "--protocol", "bogus", GROUP, check=False
    )  # fmt: skip
    assert bad.returncode != 0 and "protocol bogus not supported" in bad.stderr
    shown = stack.json("security", "group", "show", GROUP)
    assert rule["id"] in {r["id"] for r in shown["rules"]}


def test_server_create_with_security_groups(stack: Stack, group: dict[str, Any]) -> None:
    unknown = stack.run(
        "server", "create", "--image", "demo-image", "--flavor", "m1.tiny", "--network",
        "private", "--security-group", "no-such-group", "wire-sg-bad", check=False,
    )  # fmt: skip
    # the CLI looks the group up in neutron first; nova itself answers 400 with its message
    assert unknown.returncode != 0 and "no-such-group" in unknown.stderr
    token = str(stack.json("token", "issue")["id"])
    compute = endpoint(stack.json("catalog", "list"), "compute")
    image = stack.json("image", "show", "demo-image")["id"]
    network = stack.json("network", "show", "private")["id"]
    asked = {
        "name": "wire-sg-bad",
        "imageRef": image,
        "flavorRef": "1",
        "networks": [{"uuid": network}],
        "security_groups": [{"name": "no-such-group"}],
    }
    resp = httpx.post(f"{compute}/servers", json={"server": asked}, headers={"X-Auth-Token": token})
    assert resp.status_code == 400, resp.text
    assert resp.json() == {
        "badRequest": {"code": 400, "message": "Security group no-such-group not found."}
    }
    assert "wire-sg-bad" not in {s["Name"] for s in stack.json("server", "list")}

    server = stack.json(
        "server", "create", "--image", "demo-image", "--flavor", "m1.tiny", "--network",
        "private", "--security-group", "default", "--security-group", GROUP, "--wait", VM,
    )  # fmt: skip
    assert server["status"] == "ACTIVE"
    # the CLI names the groups by id (it looks them up in neutron first), nova keeps them
    default = _by_name(stack.json("security", "group", "list"), "default")
    raw = httpx.get(f"{compute}/servers/{server['id']}", headers={"X-Auth-Token": token})
    kept = {g["name"] for g in raw.json()["server"]["security_groups"]}
    assert kept == {default["ID"], group["id"]}, raw.json()["server"]["security_groups"]
    # the server's groups as nova lists them (GET /servers/{id}/os-security-groups)
    resp = httpx.get(
        f"{compute}/servers/{server['id']}/os-security-groups",
        headers={"X-Auth-Token": token},
    )
    assert resp.status_code == 200, resp.text
    groups = {g["name"]: g for g in resp.json()["security_groups"]}
    assert set(groups) == {"default", GROUP} and groups[GROUP]["id"] == group["id"]
    assert [r["from_port"] for r in groups[GROUP]["rules"]] == [22]
    # the port nova made for the server is in both groups
    ports = stack.json("port", "list", "--server", server["id"], "--long")
    assert len(ports) == 1
    assert set(ports[0]["Security Groups"]) == {default["ID"], group["id"]}, ports
    # a group in use by a port is not deleted (the server's port is in the default group)
    refused = stack.run("security", "group", "delete", default["ID"], check=False)
    assert refused.returncode != 0
    stack.run("server", "delete", "--wait", VM)
