"""Server groups through the real `openstack` CLI: `server group create --policy
anti-affinity`, two servers booted into it with `server create --hint group=ID` on a stack
of two or more compute hosts land on different hosts, and leave the group when deleted."""

from __future__ import annotations

from .conftest import Stack, names

GROUP = "wire-apart"
VMS = ("wire-apart-1", "wire-apart-2")


def _members(stack: Stack, group: str) -> list[str]:
    """The group's members as the CLI shows them (a list, or the ids joined by commas)."""
    shown = stack.json("server", "group", "show", group)["members"]
    if isinstance(shown, list):
        return [str(m) for m in shown]
    return [m.strip() for m in str(shown).split(",") if m.strip()]


def test_anti_affinity_servers_land_on_different_hosts(stack: Stack) -> None:
    group = stack.json("server", "group", "create", "--policy", "anti-affinity", GROUP)
    # the CLI asks for 2.64 or later when the stack has it: one `policy` (`policies` before)
    policy = group["policy"] if "policy" in group else group["policies"]
    assert group["name"] == GROUP and "anti-affinity" in str(policy)
    assert GROUP in names(stack.json("server", "group", "list"))
    create = ("server", "create", "--image", "demo-image", "--flavor", "m1.tiny")
    ids: list[str] = []
    try:
        for vm in VMS:
            made = stack.json(*create, "--network", "private", "--hint", f"group={group['id']}",
                              "--wait", vm)  # fmt: skip
            assert made["status"] == "ACTIVE"
            ids.append(str(made["id"]))
        hosts = [
            stack.json("server", "show", i, cloud="specstack-admin")["OS-EXT-SRV-ATTR:host"]
            for i in ids
        ]
        assert len(set(hosts)) == 2 and all(hosts), hosts
        assert sorted(_members(stack, group["id"])) == sorted(ids)
        # an unknown group: nova's 400, and no server
        unknown = "44444444-4444-4444-8444-444444444444"
        refused = stack.run(*create, "--network", "private", "--hint", f"group={unknown}",
                            "wire-apart-none", check=False)  # fmt: skip
        assert refused.returncode != 0
        assert f"Instance group {unknown} could not be found." in refused.stderr
        assert "wire-apart-none" not in names(stack.json("server", "list"))
    finally:
        for i in ids:
            stack.run("server", "delete", "--wait", i, check=False)
    assert _members(stack, group["id"]) == []
    stack.run("server", "group", "delete", group["id"])
    assert GROUP not in names(stack.json("server", "group", "list"))
