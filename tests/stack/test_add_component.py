"""Spec-driven for real: a placement service added by editing the spec alone, with semantics.

The repository's spec is copied and extended in YAML only (tests/stack/placement_spec.py):
a placement component with a computed query (allocation candidates), upserts (resource
providers, allocations), a state machine (a provider disabled and enabled), a quota
(consumers per project), a start-up interaction (each compute node reports its inventory)
and two steps inserted into boot-vm, whose candidates feed the scheduler's choice. The
copy is regenerated and run; the demo boot goes through all 17 steps, the answers are
checked for content, and the regenerated conformance suite passes against it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from specstack_conformance.clouds import Credentials
from tests.stack import placement_spec as ps
from tests.wire.conftest import running_stack

from ..conftest import REPO


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name}: {old!r} found {text.count(old)} times"
    path.write_text(text.replace(old, new))


def extended_spec(root: Path) -> None:
    """The repository's spec and templates in `root`, with placement added (YAML only)."""
    shutil.copytree(REPO / "spec", root / "spec")
    shutil.copytree(REPO / "templates", root / "templates")
    spec = root / "spec"
    comps = spec / "components.yaml"
    comps.write_text(comps.read_text() + ps.COMPONENTS)
    _edit(comps, ps.STARTUP_BEFORE, ps.STARTUP_AFTER)
    (spec / "apis" / "placement.yaml").write_text(ps.API)
    (spec / "resources" / "placement.yaml").write_text(ps.RESOURCES)
    boot = spec / "sequences" / "boot-vm.yaml"
    _edit(boot, ps.STEP_7_MARKER, ps.STEP_6A + ps.STEP_7_MARKER)
    _edit(boot, ps.STEP_7_BEFORE, ps.STEP_7_AFTER)
    _edit(boot, ps.STEP_8_MARKER, ps.STEP_7A + ps.STEP_8_MARKER)


def specstack(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Cloud:
    """The running stack's APIs, as the admin or the demo user of its clouds.yaml."""

    def __init__(self, clouds: Path) -> None:
        conf = yaml.safe_load(clouds.read_text())["clouds"]
        self.conf = conf
        self.http = httpx.Client(timeout=30)
        self.tokens = {name: self._login(name) for name in ("specstack", "specstack-admin")}
        self.catalog: dict[str, str] = self._catalog()

    def _login(self, cloud: str) -> tuple[str, dict[str, Any]]:
        auth = self.conf[cloud]["auth"]
        who = Credentials("", auth["username"], auth["password"], auth["project_name"])
        body = who.auth_body()
        resp = self.http.post(auth["auth_url"] + "/auth/tokens", json=body)
        assert resp.status_code == 201, resp.text
        return resp.headers["X-Subject-Token"], resp.json()["token"]

    def _catalog(self) -> dict[str, str]:
        token = self.tokens["specstack-admin"][1]
        return {
            e["type"]: next(ep["url"] for ep in e["endpoints"] if ep["interface"] == "public")
            for e in token["catalog"]
        }

    def call(
        self, method: str, service: str, path: str, *, admin: bool = True, **kw: Any
    ) -> httpx.Response:
        token = self.tokens["specstack-admin" if admin else "specstack"][0]
        headers = {"X-Auth-Token": token, **kw.pop("headers", {})}
        return self.http.request(method, self.catalog[service] + path, headers=headers, **kw)


def _boot(cloud: Cloud, name: str) -> dict[str, Any]:
    images = cloud.call("GET", "image", "/v2/images", admin=False).json()["images"]
    nets = cloud.call("GET", "network", "/v2.0/networks", admin=False).json()["networks"]
    body = {
        "server": {
            "name": name,
            "imageRef": images[0]["id"],
            "flavorRef": "1",
            "networks": [{"uuid": next(n["id"] for n in nets if n["name"] == "private")}],
        }
    }
    resp = cloud.call("POST", "compute", "/servers", admin=False, json=body)
    assert resp.status_code == 202, resp.text
    server_id = resp.json()["server"]["id"]
    deadline = time.monotonic() + 60
    while True:
        server = cloud.call("GET", "compute", f"/servers/{server_id}").json()["server"]
        if server["status"] in ("ACTIVE", "ERROR") or time.monotonic() > deadline:
            return dict(server)
        time.sleep(0.3)


def test_placement_added_by_spec_alone(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    extended_spec(tmp_path)
    check = specstack(tmp_path, "validate")
    assert check.returncode == 0, check.stdout + check.stderr
    gen = specstack(tmp_path, "generate", "--templates", "templates")
    assert gen.returncode == 0, gen.stderr
    generated = tmp_path / "generated"
    scheduler = (generated / "services" / "nova_scheduler.py").read_text()
    assert "clients.placement.PlacementClient(flow).list_allocation_candidates" in scheduler
    assert (generated / "conformance" / "test_boot_vm.py").read_text().count(
        "def test_step06a_ask_placement_for_allocation_candidates"
    ) == 1

    # Three consumers per project: the demo VM and one more boot leave room for one.
    quotas = {"SPECSTACK_QUOTAS": '{"consumers": 3}'}
    with running_stack(tmp_path_factory, "placement", cwd=tmp_path, env=quotas) as stack:
        out = "".join(stack.output)
        # The demo boot went through all 17 steps, the inserted ones with their labels.
        for label in ("[6a/17] Ask placement for allocation candidates", "[7a/17] Record"):
            assert label in out, out
        assert "not observed" not in out, out
        cloud = Cloud(stack.clouds)

        # Start-up: each compute node reported its inventory (the topology's resources).
        providers = cloud.call("GET", "placement", "/resource_providers").json()
        by_name = {p["name"]: p for p in providers["resource_providers"]}
        assert sorted(by_name) == ["compute-1", "compute-2"]
        assert by_name["compute-1"]["inventories"]["MEMORY_MB"]["total"] == 16384
        assert by_name["compute-1"]["status"] == "enabled"

        # The demo VM's allocations (upserted by step 7a) are on the host it runs on.
        demo = next(
            s
            for s in cloud.call("GET", "compute", "/servers/detail?all_tenants=1").json()["servers"]
            if s["status"] == "ACTIVE"
        )
        held = cloud.call("GET", "placement", f"/allocations/{demo['id']}").json()
        host = demo["OS-EXT-SRV-ATTR:host"]
        assert held["allocations"] == {
            host: {"resources": {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}
        }

        # The computed query: capacity less what is allocated, per provider.
        query = "/allocation_candidates?resources=VCPU:8,MEMORY_MB:1024,DISK_GB:1"
        answer = cloud.call("GET", "placement", query).json()
        summaries = answer["provider_summaries"]
        other = "compute-2" if host == "compute-1" else "compute-1"
        assert sorted(summaries) == [other]  # the demo VM's host has only 7 VCPUs free
        assert summaries[other]["resources"]["VCPU"] == {"capacity": 8, "used": 0}
        assert answer["allocation_requests"] == [
            {"allocations": {other: {"resources": {"VCPU": 8, "MEMORY_MB": 1024, "DISK_GB": 1}}}}
        ]
        small = cloud.call("GET", "placement", "/allocation_candidates?resources=VCPU:1").json()
        assert small["provider_summaries"][host]["resources"]["VCPU"] == {
            "capacity": 8,
            "used": 1,
        }
        bad = cloud.call("GET", "placement", "/allocation_candidates?resources=VCPU")
        assert bad.status_code == 400

        # The state machine: a disabled provider gets no candidates, so no new server.
        act = cloud.call(
            "POST", "placement", f"/resource_providers/{host}/action", json={"disable": None}
        )
        assert act.status_code == 204, act.text
        again = cloud.call(
            "POST", "placement", f"/resource_providers/{host}/action", json={"disable": None}
        )
        assert again.status_code == 409 and "disabled" in again.text
        summaries = cloud.call("GET", "placement", "/allocation_candidates?resources=VCPU:1")
        assert sorted(summaries.json()["provider_summaries"]) == [other]
        server = _boot(cloud, "placed")
        assert server["status"] == "ACTIVE", server
        assert server["OS-EXT-SRV-ATTR:host"] == other  # the scheduler chose among candidates

        # The quota: the project holds 2 consumers of 3; a third is fine, a fourth is not.
        body = {"allocations": {other: {"resources": {"VCPU": 1}}}}
        third = cloud.call(
            "PUT", "placement", f"/allocations/{uuid.uuid4()}", admin=False, json=body
        )
        assert third.status_code == 204, third.text
        fourth = cloud.call(
            "PUT", "placement", f"/allocations/{uuid.uuid4()}", admin=False, json=body
        )
        assert fourth.status_code == 403 and "consumers" in fourth.text, fourth.text
        # Another project's consumer is not seen (404), nor can it be changed.
        mine = cloud.call("GET", "placement", f"/allocations/{demo['id']}", admin=False)
        assert mine.status_code == 200
        assert (
            cloud.call(
                "POST", "placement", f"/resource_providers/{host}/action", json={"enable": None}
            ).status_code
            == 204
        )

    # The regenerated conformance suite, steps 6a and 7a included, passes against the
    # extended stack (on a stack of its own: the one above is at its consumers quota).
    report = tmp_path / "conform-report.html"
    proc = specstack(
        tmp_path,
        "conform",
        "--report",
        str(report),
        "--",
        "-q",
        "-p",
        "no:cacheprovider",
        timeout=600,
    )
    result = proc.stdout + proc.stderr
    assert proc.returncode == 0, result
    assert "failed" not in result.splitlines()[-2], result
