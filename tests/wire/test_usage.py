"""nova's usage report (`os-simple-tenant-usage`), a computed query of the spec: each
server's hours in a period and the project's vCPU, RAM and disk hours, checked against
the demo VM's own launch time; and `openstack usage list/show` reading it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from .conftest import Stack

FMT = "%Y-%m-%dT%H:%M:%S.%f"


def _session(stack: Stack, cloud: str) -> tuple[str, str, str]:
    """(token, compute URL, project id) of a cloud of clouds.yaml."""
    token = stack.json("token", "issue", cloud=cloud)
    compute = next(e for e in stack.json("catalog", "list", cloud=cloud) if e["Type"] == "compute")
    url = next(ep["url"] for ep in compute["Endpoints"] if ep["interface"] == "public")
    return str(token["id"]), str(url), str(token["project_id"])


@pytest.fixture(scope="module")
def demo(stack: Stack) -> tuple[str, str, str]:
    return _session(stack, "specstack")


@pytest.fixture(scope="module")
def admin(stack: Stack) -> tuple[str, str, str]:
    return _session(stack, "specstack-admin")


def _get(session: tuple[str, str, str], path: str, **params: str) -> httpx.Response:
    token, url, _ = session
    return httpx.get(f"{url}{path}", params=params, headers={"X-Auth-Token": token}, timeout=30)


def test_a_server_s_hours_in_a_period(demo: tuple[str, str, str]) -> None:
    _, _, project = demo
    servers = _get(demo, "/servers/detail", name="^demo-vm$").json()["servers"]
    (vm,) = [s for s in servers if s["status"] == "ACTIVE"]
    launched = datetime.strptime(vm["OS-SRV-USG:launched_at"], FMT)
    # an hour before its launch to two hours after: charged from launch to the end, 2 h
    start = (launched - timedelta(hours=1)).strftime(FMT)
    end = (launched + timedelta(hours=2)).strftime(FMT)
    resp = _get(demo, f"/os-simple-tenant-usage/{project}", start=start, end=end)
    assert resp.status_code == 200, resp.text
    usage = resp.json()["tenant_usage"]
    assert usage["tenant_id"] == project
    (mine,) = [u for u in usage["server_usages"] if u["instance_id"] == vm["id"]]
    assert mine["hours"] == pytest.approx(2.0, abs=1e-6)
    assert (mine["name"], mine["flavor"], mine["state"], mine["ended_at"]) == (
        "demo-vm",
        "m1.tiny",
        "active",
        None,
    )
    assert (mine["vcpus"], mine["memory_mb"], mine["local_gb"]) == (1, 512, 1)
    assert mine["started_at"] == vm["OS-SRV-USG:launched_at"] and mine["uptime"] >= 0
    # the project's totals: the sums of its servers' hours, weighted by their flavors
    servers_of = usage["server_usages"]
    assert usage["total_hours"] == pytest.approx(sum(u["hours"] for u in servers_of))
    assert usage["total_memory_mb_usage"] == pytest.approx(
        sum(u["memory_mb"] * u["hours"] for u in servers_of)
    )
    assert usage["start"].startswith(start[:19]) and usage["stop"].startswith(end[:19])

    # a period that ended before the launch: the server is not in it
    before = _get(
        demo,
        f"/os-simple-tenant-usage/{project}",
        start=(launched - timedelta(hours=3)).strftime(FMT),
        end=(launched - timedelta(hours=2)).strftime(FMT),
    ).json()["tenant_usage"]
    assert vm["id"] not in {u["instance_id"] for u in before.get("server_usages", [])}


def test_who_may_read_usage_and_bad_times(
    demo: tuple[str, str, str], admin: tuple[str, str, str]
) -> None:
    _, _, project = demo
    refused = _get(demo, "/os-simple-tenant-usage")  # every project's: administrators only
    assert refused.status_code == 403
    assert refused.json()["forbidden"]["message"] == (
        "Policy doesn't allow listTenantUsages to be performed."
    )
    other = _get(demo, f"/os-simple-tenant-usage/{admin[2]}")
    assert other.status_code == 403
    listed = _get(admin, "/os-simple-tenant-usage", start="2000-01-01T00:00:00", detailed="1")
    assert listed.status_code == 200
    by_project: dict[str, Any] = {u["tenant_id"]: u for u in listed.json()["tenant_usages"]}
    assert project in by_project and by_project[project]["server_usages"]
    brief = _get(admin, "/os-simple-tenant-usage", start="2000-01-01T00:00:00").json()
    assert all("server_usages" not in u for u in brief["tenant_usages"])
    bad = _get(demo, f"/os-simple-tenant-usage/{project}", start="yesterday")
    assert bad.status_code == 400
    assert bad.json()["badRequest"]["message"] == "Invalid start filter [yesterday]"


def test_openstack_usage_show_and_list(stack: Stack, demo: tuple[str, str, str]) -> None:
    shown = stack.json("usage", "show")  # the servers of the last 4 weeks, as nova lists them
    assert shown["Project"] == demo[2]
    names = {(u["name"], u["state"], u["flavor"]) for u in shown["Servers"]}
    assert ("demo-vm", "active", "m1.tiny") in names
    assert all(u["hours"] > 0 and u["project_id"] == demo[2] for u in shown["Servers"])
    listed = stack.json("usage", "list", cloud="specstack-admin")
    (row,) = [r for r in listed if r["Project"] == demo[2]]
    assert len(row["Servers"]) == len(shown["Servers"])
