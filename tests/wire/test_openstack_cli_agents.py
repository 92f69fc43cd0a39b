"""neutron's agents through the real `openstack` CLI: `network agent list/show/set/delete`
as an administrator (the DHCP agent of the network node, an Open vSwitch agent a compute
host, each alive since it reported at start-up), refused to a member; and `availability
zone list` naming the network zone the DHCP agent reports."""

from __future__ import annotations

import json

from .conftest import Stack

ADMIN = "specstack-admin"


def test_network_agents_listed_shown_set_and_deleted(stack: Stack) -> None:
    agents = stack.json("network", "agent", "list", cloud=ADMIN)
    by_type: dict[str, list[dict[str, object]]] = {}
    for row in agents:
        by_type.setdefault(str(row["Agent Type"]), []).append(row)
    (dhcp,) = by_type["DHCP agent"]
    assert dhcp["Host"] == "network" and dhcp["Binary"] == "neutron-dhcp-agent"
    assert dhcp["Availability Zone"] == "nova"
    ovs = by_type["Open vSwitch agent"]
    assert sorted(str(r["Host"]) for r in ovs)[0] == "compute-1"
    assert {r["Binary"] for r in ovs} == {"neutron-openvswitch-agent"}
    assert all(r["Alive"] is True and r["State"] is True for r in agents), agents
    # the filters the CLI sends: agent_type (its short name), host
    only = stack.json("network", "agent", "list", "--agent-type", "dhcp", cloud=ADMIN)
    assert [r["ID"] for r in only] == [dhcp["ID"]]
    on_host = stack.json("network", "agent", "list", "--host", "compute-1", cloud=ADMIN)
    assert [r["Agent Type"] for r in on_host] == ["Open vSwitch agent"]

    shown = stack.json("network", "agent", "show", str(dhcp["ID"]), cloud=ADMIN)
    assert shown["agent_type"] == "DHCP agent" and shown["topic"] == "dhcp_agent"
    assert shown["alive"] is True and shown["last_heartbeat_at"], shown
    assert "Dnsmasq" in str(shown["configuration"])
    stack.run("network", "agent", "set", "--description", "wire", "--disable", str(dhcp["ID"]),
              cloud=ADMIN)  # fmt: skip
    shown = stack.json("network", "agent", "show", str(dhcp["ID"]), cloud=ADMIN)
    assert shown["description"] == "wire" and shown["admin_state_up"] is False
    zones = stack.json("availability", "zone", "list", "--network")
    assert zones == [{"Zone Name": "nova", "Zone Status": "not available"}]
    stack.run("network", "agent", "set", "--enable", str(dhcp["ID"]), cloud=ADMIN)

    # administrators only (neutron's policy): a member is refused
    refused = stack.run("network", "agent", "list", check=False)
    assert refused.returncode != 0 and "403" in refused.stderr
    assert "Policy doesn't allow listAgents to be performed." in refused.stderr

    # an agent deleted is gone until it reports again (every 30 s: then a new row)
    gone = str(ovs[-1]["ID"])
    made = stack.json("network", "agent", "show", gone, cloud=ADMIN)["created_at"]
    stack.run("network", "agent", "delete", gone, cloud=ADMIN)
    again = stack.run("network", "agent", "show", gone, "-f", "json", cloud=ADMIN, check=False)
    if again.returncode == 0:
        assert json.loads(again.stdout)["created_at"] != made
    else:
        assert f"Agent {gone} could not be found." in again.stderr


def test_availability_zone_list_names_the_network_zone(stack: Stack) -> None:
    listed = stack.run("availability", "zone", "list", "--network", "--long", "-f", "json")
    assert "not supported" not in listed.stderr  # the extension "Availability Zone" is listed
    rows = stack.json("availability", "zone", "list", "--long")
    network = [r for r in rows if r.get("Zone Resource") == "network"]
    assert [(r["Zone Name"], r["Zone Status"]) for r in network] == [("nova", "available")]
