"""Neutron's security groups and their rules: the default group made on first use with
neutron's rules, new groups' egress rules, rule validation and duplicates, ports carrying
groups, and what deleting a group in use (or the default one) answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.runtime.netvol_fakes import ADMIN, OTHER, USER, expect_error, make_call
from tests.runtime.test_network import Neutron, run, serve


async def _groups(n: Neutron, **query: str) -> list[dict[str, Any]]:
    body = await n.op(serve, "listSecurityGroups", 200, query={k: [v] for k, v in query.items()})
    return list(body["security_groups"])


async def _group(n: Neutron, name: str, **attrs: Any) -> dict[str, Any]:
    body = await n.op(
        serve, "createSecurityGroup", 201, body={"security_group": {"name": name, **attrs}}
    )
    return dict(body["security_group"])


async def _rule(n: Neutron, group_id: str, **attrs: Any) -> dict[str, Any]:
    rule = {"security_group_id": group_id, "direction": "ingress", **attrs}
    body = await n.op(serve, "createSecurityGroupRule", 201, body={"security_group_rule": rule})
    return dict(body["security_group_rule"])


async def _bad_rule(n: Neutron, status: int, match: str, **attrs: Any) -> None:
    call = make_call(n.rt, "createSecurityGroupRule", body={"security_group_rule": attrs})
    await expect_error(serve(call), status, match=match)


def _shape(rule: dict[str, Any]) -> tuple[Any, ...]:
    return (rule["direction"], rule["ethertype"], rule["remote_group_id"] is not None)


def test_default_group_made_on_first_list_with_neutrons_rules(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        groups = await _groups(n)
        assert [g["name"] for g in groups] == ["default"]
        default = groups[0]
        assert default["project_id"] == USER.project_id == default["tenant_id"]
        assert default["description"] == "Default security group"
        rules = default["security_group_rules"]
        assert sorted(_shape(r) for r in rules) == [
            ("egress", "IPv4", False),
            ("egress", "IPv6", False),
            ("ingress", "IPv4", True),
            ("ingress", "IPv6", True),
        ]
        ingress = [r for r in rules if r["direction"] == "ingress"]
        assert {r["remote_group_id"] for r in ingress} == {default["id"]}
        assert all(r["protocol"] is None and r["remote_ip_prefix"] is None for r in rules)
        # made once: listing again (or as another caller of the project) finds the same
        assert [g["id"] for g in await _groups(n)] == [default["id"]]
        listed = await n.op(serve, "listSecurityGroupRules", 200)
        assert {r["id"] for r in listed["security_group_rules"]} == {r["id"] for r in rules}
        # another project gets its own, and does not see this one
        other = await n.op(serve, "listSecurityGroups", 200, who=OTHER)
        assert [g["project_id"] for g in other["security_groups"]] == [OTHER.project_id]
        await expect_error(
            serve(
                make_call(
                    n.rt,
                    "showSecurityGroup",
                    who=OTHER,
                    path_params={"security_group_id": default["id"]},
                )
            ),
            404,
            match=f"Security group {default['id']} does not exist",
        )
        # no second group named default, the default one not renamed, not deleted
        await expect_error(
            serve(
                make_call(n.rt, "createSecurityGroup", body={"security_group": {"name": "default"}})
            ),
            409,
            match="Default security group already exists.",
        )
        rename = make_call(
            n.rt,
            "updateSecurityGroup",
            path_params={"security_group_id": default["id"]},
            body={"security_group": {"name": "other"}},
        )
        await expect_error(serve(rename), 400, match="Updating default security group")
        remove = make_call(
            n.rt, "deleteSecurityGroup", path_params={"security_group_id": default["id"]}
        )
        await expect_error(serve(remove), 409, match="Insufficient rights for removing default")

    run(tmp_path, scenario)


def test_group_lifecycle_egress_rules_filters_and_cascade(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        web = await _group(n, "web", description="the web tier")
        assert web["stateful"] is True and web["revision_number"] == 1
        assert sorted(_shape(r) for r in web["security_group_rules"]) == [
            ("egress", "IPv4", False),
            ("egress", "IPv6", False),
        ]
        # the project's default group was made with it
        assert sorted(g["name"] for g in await _groups(n)) == ["default", "web"]
        assert [g["id"] for g in await _groups(n, name="web")] == [web["id"]]

        ssh = await _rule(n, web["id"], protocol="tcp", port_range_min=22, port_range_max=22)
        assert ssh["ethertype"] == "IPv4" and ssh["remote_ip_prefix"] is None
        assert ssh["project_id"] == USER.project_id
        net = await _rule(n, web["id"], protocol="udp", remote_ip_prefix="10.1.2.3/16")
        assert net["remote_ip_prefix"] == "10.1.0.0/16"
        # the same prefix written otherwise is the same rule
        await _bad_rule(
            n,
            409,
            f"Security group rule already exists. Rule id is {net['id']}.",
            security_group_id=web["id"],
            direction="ingress",
            protocol="udp",
            remote_ip_prefix="10.1.9.9/16",
        )
        shown = await n.op(
            serve, "showSecurityGroup", 200, path_params={"security_group_id": web["id"]}
        )
        held = {r["id"] for r in shown["security_group"]["security_group_rules"]}
        assert {ssh["id"], net["id"]} <= held and len(held) == 4
        tcp = await n.op(
            serve,
            "listSecurityGroupRules",
            200,
            query={"security_group_id": [web["id"]], "protocol": ["tcp"]},
        )
        assert [r["id"] for r in tcp["security_group_rules"]] == [ssh["id"]]

        updated = await n.op(
            serve,
            "updateSecurityGroup",
            200,
            path_params={"security_group_id": web["id"]},
            body={"security_group": {"name": "www", "description": "renamed"}},
        )
        assert updated["security_group"]["name"] == "www"
        assert updated["security_group"]["revision_number"] == 2

        # a rule deleted leaves the group's list; a group deleted takes its rules, and
        # the rules of other groups naming it as their remote group
        await n.op(
            serve, "deleteSecurityGroupRule", 204, path_params={"security_group_rule_id": ssh["id"]}
        )
        shown = await n.op(
            serve, "showSecurityGroup", 200, path_params={"security_group_id": web["id"]}
        )
        assert ssh["id"] not in {r["id"] for r in shown["security_group"]["security_group_rules"]}
        db = await _group(n, "db")
        from_web = await _rule(
            n,
            db["id"],
            protocol="tcp",
            port_range_min=5432,
            port_range_max=5432,
            remote_group_id=web["id"],
        )
        await n.op(serve, "deleteSecurityGroup", 204, path_params={"security_group_id": web["id"]})
        left = await n.op(serve, "listSecurityGroupRules", 200)
        ids = {r["id"] for r in left["security_group_rules"]}
        assert net["id"] not in ids and from_web["id"] not in ids
        await expect_error(
            serve(
                make_call(
                    n.rt, "showSecurityGroupRule", path_params={"security_group_rule_id": net["id"]}
                )
            ),
            404,
            match=f"Security group rule {net['id']} does not exist",
        )

    run(tmp_path, scenario)


def test_rules_are_validated_and_unique(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        g = await _group(n, "checked")
        gid = g["id"]
        rule = {"security_group_id": gid, "direction": "ingress"}
        await _bad_rule(n, 400, "protocol bogus not supported", **rule, protocol="bogus")
        await _bad_rule(n, 400, "protocol 256 not supported", **rule, protocol="256")
        await _bad_rule(
            n,
            400,
            "port_range_min must be <= port_range_max",
            **rule,
            protocol="tcp",
            port_range_min=90,
            port_range_max=80,
        )
        await _bad_rule(
            n,
            400,
            "Invalid value for port",
            **rule,
            protocol="tcp",
            port_range_min=0,
            port_range_max=70000,
        )
        await _bad_rule(
            n,
            400,
            "Must also specify protocol if port range is given",
            **rule,
            port_range_min=80,
            port_range_max=80,
        )
        await _bad_rule(
            n,
            400,
            "ICMP code (port-range-max) 3 is provided but ICMP type",
            **rule,
            protocol="icmp",
            port_range_max=3,
        )
        await _bad_rule(
            n,
            400,
            "Only remote_ip_prefix or remote_group_id may be provided",
            **rule,
            remote_ip_prefix="10.0.0.0/8",
            remote_group_id=gid,
        )
        await _bad_rule(
            n,
            400,
            "Conflicting value ethertype IPv4 for CIDR 2001:db8::/64",
            **rule,
            remote_ip_prefix="2001:db8::/64",
        )
        await _bad_rule(n, 400, "not a valid IP prefix", **rule, remote_ip_prefix="10.0.0/33")
        await _bad_rule(n, 400, "Invalid input for ethertype", **rule, ethertype="IPv5")
        await _bad_rule(n, 400, "Invalid input for direction", **rule | {"direction": "up"})
        missing = "0f0e0d0c-0b0a-4909-8807-060504030201"
        await _bad_rule(
            n,
            404,
            f"Security group {missing} does not exist",
            security_group_id=missing,
            direction="ingress",
        )
        await _bad_rule(
            n, 404, f"Security group {missing} does not exist", **rule, remote_group_id=missing
        )
        # another project's group takes no rule from this one (it does not see it)
        theirs = await n.op(
            serve, "createSecurityGroup", 201, who=OTHER, body={"security_group": {"name": "x"}}
        )
        await _bad_rule(
            n,
            404,
            "does not exist",
            security_group_id=theirs["security_group"]["id"],
            direction="ingress",
        )

        icmp = await _rule(n, gid, protocol="icmp", port_range_min=8, port_range_max=0)
        assert (icmp["port_range_min"], icmp["port_range_max"]) == (8, 0)
        numbered = await _rule(n, gid, protocol="6", port_range_min="443", port_range_max=443)
        assert numbered["protocol"] == "6" and numbered["port_range_min"] == 443
        v6 = await _rule(n, gid, ethertype="IPv6", remote_ip_prefix="2001:db8::1/64")
        assert v6["remote_ip_prefix"] == "2001:db8::/64"
        again = make_call(
            n.rt,
            "createSecurityGroupRule",
            body={
                "security_group_rule": {
                    **rule,
                    "protocol": "icmp",
                    "port_range_min": 8,
                    "port_range_max": 0,
                }
            },
        )
        await expect_error(
            serve(again), 409, match=f"Security group rule already exists. Rule id is {icmp['id']}."
        )

    run(tmp_path, scenario)


def test_ports_carry_groups_and_a_group_in_use_stays(tmp_path: Path) -> None:
    async def scenario(n: Neutron) -> None:
        network = await n.network(name="private")
        await n.subnet(network["id"])
        # no group named: the project's default group (made now, on first use)
        port = await n.port(network["id"])
        default = (await _groups(n, name="default"))[0]
        assert port["security_groups"] == [default["id"]]
        # neutron's own ports and ports without port security are in none
        dhcp = await n.port(network["id"], who=ADMIN, device_owner="network:dhcp")
        assert dhcp["security_groups"] == []
        bare = await n.port(network["id"], port_security_enabled=False)
        assert bare["security_groups"] == []
        web = await _group(n, "web")
        mine = await n.port(network["id"], security_groups=[web["id"]])
        assert mine["security_groups"] == [web["id"]]
        listed = await n.op(serve, "listPorts", 200, query={"security_groups": [web["id"]]})
        assert [p["id"] for p in listed["ports"]] == [mine["id"]]
        missing = "0f0e0d0c-0b0a-4909-8807-060504030201"
        bad = make_call(
            n.rt,
            "createPort",
            body={"port": {"network_id": network["id"], "security_groups": [missing]}},
        )
        await expect_error(serve(bad), 404, match=f"Security group {missing} does not exist")

        remove = make_call(
            n.rt, "deleteSecurityGroup", path_params={"security_group_id": web["id"]}
        )
        await expect_error(serve(remove), 409, match=f"Security Group {web['id']} in use.")
        # out of the port, the group may go
        await n.op(
            serve,
            "updatePort",
            200,
            path_params={"port_id": mine["id"]},
            body={"port": {"security_groups": []}},
        )
        await n.op(serve, "deleteSecurityGroup", 204, path_params={"security_group_id": web["id"]})
        assert [g["name"] for g in await _groups(n)] == ["default"]

    run(tmp_path, scenario)
