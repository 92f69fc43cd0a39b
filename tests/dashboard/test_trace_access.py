"""The trace endpoint the live view reads: an admin reads any flow, a project reads the
flows its own tokens started, another project is refused (403), no token 401."""

from __future__ import annotations

import re
from typing import Any

import httpx

from specstack_conformance.clouds import Credentials

from .conftest import Served


def _issue(identity: str, user: str, password: str, project: str) -> str:
    body = Credentials(identity, user, password, project).auth_body()
    resp = httpx.post(f"{identity}/auth/tokens", json=body)
    assert resp.status_code == 201, resp.text
    return resp.headers["X-Subject-Token"]


def _other_project_token(served: Served) -> str:
    """A member of a new project `trace-other` (made by the admin through keystone)."""
    admin, _ = served.token("specstack-admin")
    h = {"X-Auth-Token": admin}
    api = served.identity
    project = httpx.post(
        f"{api}/projects",
        json={"project": {"name": "trace-other", "domain_id": "default"}},
        headers=h,
    )
    assert project.status_code == 201, project.text
    pid = project.json()["project"]["id"]
    user = httpx.post(
        f"{api}/users",
        json={"user": {"name": "trace-other", "password": "pw-other", "domain_id": "default"}},
        headers=h,
    )
    assert user.status_code == 201, user.text
    uid = user.json()["user"]["id"]
    roles: list[dict[str, Any]] = httpx.get(f"{api}/roles", headers=h).json()["roles"]
    member = next(r["id"] for r in roles if r["name"] == "member")
    grant = httpx.put(f"{api}/projects/{pid}/users/{uid}/roles/{member}", headers=h)
    assert grant.status_code == 204, grant.text
    return _issue(api, "trace-other", "pw-other", "trace-other")


def test_who_may_read_a_flow_s_trace(served: Served) -> None:
    m = re.search(r"specstack trace (\S+)", (served.data_dir / "run.out").read_text())
    assert m  # the demo boot of `specstack run`, started with the demo project's token
    root = served.identity.removesuffix("/v3")
    url = f"{root}/specstack/trace/{m.group(1)}"

    demo, _ = served.token()
    got = httpx.get(url, headers={"X-Auth-Token": demo})
    assert got.status_code == 200
    steps = [e["step"] for e in got.json()["events"]]
    assert [s for s in steps if "." not in s][:15] == [str(n) for n in range(1, 16)]

    admin, _ = served.token("specstack-admin")
    assert httpx.get(url, headers={"X-Auth-Token": admin}).status_code == 200
    assert httpx.get(url).status_code == 401

    refused = httpx.get(url, headers={"X-Auth-Token": _other_project_token(served)})
    assert refused.status_code == 403
    # spec/policy.yaml's `specstack:trace` (admin, or the flow's owner) refuses it
    assert refused.json()["error"]["message"] == (
        "Policy doesn't allow specstack:trace to be performed."
    )
