"""Quotas through the real `openstack` CLI: nova's, cinder's and neutron's limits per
project (os-quota-sets, neutron's quotas), set by an administrator and enforced."""

from __future__ import annotations

from .conftest import SERVER_CREATE, Stack, names


def test_quota_set_then_server_refused(stack: Stack, demo_project: str) -> None:
    """An administrator's limit on the project's instances holds: one server more than it
    allows is refused with nova's 403; the project's members see it and may not change it."""
    # nova's, cinder's and neutron's quotas, the defaults where the project has none of its own
    limits = {r["Resource"]: r["Limit"] for r in stack.json("quota", "show", demo_project)}
    assert limits["instances"] == 100 and limits["properties"] == 128
    assert limits["gigabytes"] == 1000 and limits["snapshots"] == 10 and limits["networks"] == -1
    rows = stack.json("quota", "show", "--compute", "--usage", demo_project)
    shown = {r["Resource"]: r for r in rows}
    used = int(shown["instances"]["In Use"])
    refused = stack.run("quota", "set", "--instances", "3", demo_project, check=False)
    assert refused.returncode != 0 and "Policy doesn't allow" in refused.stderr
    limit = used + 1
    stack.run(
        "quota", "set", "--instances", str(limit), "--gigabytes", "50", "--networks", "40",
        demo_project, cloud="specstack-admin",
    )  # fmt: skip
    create = SERVER_CREATE
    try:
        rows = stack.json("quota", "show", "--compute", demo_project)
        assert {r["Resource"]: r["Limit"] for r in rows}["instances"] == limit
        absolute = {r["Name"]: r["Value"] for r in stack.json("limits", "show", "--absolute")}
        assert absolute["max_total_instances"] == limit
        assert absolute["max_total_volume_gigabytes"] == 50
        limits = {r["Resource"]: r["Limit"] for r in stack.json("quota", "show", demo_project)}
        assert limits["gigabytes"] == 50 and limits["networks"] == 40
        stack.run(*create, "wire-quota-vm-1")
        refused = stack.run(*create, "wire-quota-vm-2", check=False)
        assert refused.returncode != 0
        assert (
            f"Quota exceeded for instances: Requested 1, but already used {limit} of {limit} "
            "instances" in refused.stderr
        )
        assert "wire-quota-vm-2" not in names(stack.json("server", "list"))
    finally:
        stack.run(
            "quota", "set", "--instances", "100", "--gigabytes", "1000", "--networks", "-1",
            demo_project, cloud="specstack-admin",
        )  # fmt: skip
        stack.run("server", "delete", "--wait", "wire-quota-vm-1", check=False)


def test_quota_delete_reverts_to_the_defaults(stack: Stack, demo_project: str) -> None:
    """`openstack quota delete` forgets a project's own limits in nova, cinder and neutron:
    the defaults show again; members may not; a project with none left answers the same."""
    stack.run(
        "quota", "set", "--instances", "7", "--gigabytes", "70", "--networks", "44",
        demo_project, cloud="specstack-admin",
    )  # fmt: skip
    limits = {r["Resource"]: r["Limit"] for r in stack.json("quota", "show", demo_project)}
    assert (limits["instances"], limits["gigabytes"], limits["networks"]) == (7, 70, 44)
    refused = stack.run("quota", "delete", demo_project, check=False)
    assert refused.returncode != 0
    limits = {r["Resource"]: r["Limit"] for r in stack.json("quota", "show", demo_project)}
    assert limits["instances"] == 7  # nothing changed
    stack.run("quota", "delete", demo_project, cloud="specstack-admin")
    limits = {r["Resource"]: r["Limit"] for r in stack.json("quota", "show", demo_project)}
    assert (limits["instances"], limits["gigabytes"], limits["networks"]) == (100, 1000, -1)
    stack.run("quota", "delete", "--compute", demo_project, cloud="specstack-admin")
