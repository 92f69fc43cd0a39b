"""1,000 concurrent boots, then 1,000 concurrent deletes, through keep-alive connections
(a pool of 300, every connection reused many times) against the embedded stack: every
request gets its answer, every server ends ACTIVE, then is gone with its port (issue 14,
item 7: servers closed idle keep-alive connections after uvicorn's 5 s, the clients'
pools reused some of them as they closed, and 0.7 % of requests got no response)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from ..distributed.conftest import Cloud
from ..wire.conftest import running_stack

SERVERS = 1000
IN_FLIGHT = 300  # the client pool's connections, each kept alive between requests
COMPUTES = 10  # 128 of the test's flavor fit on each (vCPUs x 16 overcommit): 1,280
SETTLE_ROUNDS = 3000  # list polls, 0.2 s apart, before giving up on a phase


@dataclass
class Counted:
    """Every request through one pool: its answers by status, and those that got none."""

    http: httpx.AsyncClient
    token: str
    answers: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    async def send(self, method: str, url: str, body: Any = None) -> httpx.Response | None:
        try:
            resp = await self.http.request(
                method, url, json=body, headers={"X-Auth-Token": self.token}
            )
        except httpx.TransportError as exc:  # closed without a response, refused, reset
            self.failures.append(f"{method} {url}: {type(exc).__name__}: {exc}")
            return None
        self.answers[resp.status_code] += 1
        return resp


async def _listed(c: Counted, compute: str) -> dict[str, str]:
    """Every server of the project: id -> status (pages followed)."""
    out: dict[str, str] = {}
    marker = ""
    while True:
        resp = await c.send("GET", f"{compute}/servers/detail?limit=1000{marker}")
        assert resp is not None and resp.status_code == 200, resp and resp.text
        page = resp.json()["servers"]
        out.update({s["id"]: s["status"] for s in page})
        if len(page) < 1000:
            return out
        marker = f"&marker={page[-1]['id']}"


async def _settle(c: Counted, compute: str, ids: set[str], done: Any) -> dict[str, str]:
    listed: dict[str, str] = {}
    for _ in range(SETTLE_ROUNDS):
        listed = {k: v for k, v in (await _listed(c, compute)).items() if k in ids}
        if done(listed):
            break
        await asyncio.sleep(0.2)
    return listed


async def _load(demo: Cloud, flavor: str, net: str, image: str) -> None:
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        c = Counted(http, demo.token)
        compute = demo.urls["compute"]

        async def boot(i: int) -> str | None:
            body = {
                "server": {
                    "name": f"load-{i}",
                    "imageRef": image,
                    "flavorRef": flavor,
                    "networks": [{"uuid": net}],
                }
            }
            resp = await c.send("POST", f"{compute}/servers", body)
            return str(resp.json()["server"]["id"]) if resp and resp.status_code == 202 else None

        created = await asyncio.gather(*(boot(i) for i in range(SERVERS)))
        assert c.failures == [], f"{len(c.failures)} boots got no response: {c.failures[:5]}"
        assert c.answers == {202: SERVERS}, c.answers
        ids = {i for i in created if i is not None}
        assert len(ids) == SERVERS

        listed = await _settle(c, compute, ids, lambda s: "BUILD" not in s.values())
        assert Counter(listed.values()) == {"ACTIVE": SERVERS}, Counter(listed.values())
        ports = demo.get("network", f"/v2.0/ports?network_id={net}")["ports"]
        assert {p["device_id"] for p in ports if p["device_id"] in ids} == ids

        c.answers.clear()
        deleted = await asyncio.gather(*(c.send("DELETE", f"{compute}/servers/{i}") for i in ids))
        assert c.failures == [], f"{len(c.failures)} deletes got no response: {c.failures[:5]}"
        assert Counter(r.status_code for r in deleted if r is not None) == {204: SERVERS}

        left = await _settle(c, compute, ids, lambda s: not s)
        assert left == {}, Counter(left.values())
        assert c.failures == [], c.failures[:5]  # the polls too
    ports = demo.get("network", f"/v2.0/ports?network_id={net}")["ports"]
    assert [p["id"] for p in ports if p["device_id"] in ids] == []


@pytest.mark.load
def test_1000_boots_then_1000_deletes_through_keep_alive_pools_all_answered(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    quotas = json.dumps({"instances": SERVERS * 2})
    with running_stack(
        tmp_path_factory,
        "load",
        mode="embedded",
        extra=("--computes", str(COMPUTES)),
        env={"SPECSTACK_QUOTAS": quotas},
    ) as stack:
        admin = Cloud.login(stack, "admin", "admin", "admin")
        resp = admin.http.post(
            f"{admin.urls['compute']}/flavors",
            json={"flavor": {"name": "load.nano", "ram": 64, "vcpus": 1, "disk": 1}},
            headers={"X-Auth-Token": admin.token},
        )
        assert resp.status_code == 200, resp.text
        flavor = resp.json()["flavor"]["id"]
        admin.close()
        demo = Cloud.login(stack, "demo", "demo", "demo")
        h = {"X-Auth-Token": demo.token}
        resp = demo.http.post(
            f"{demo.urls['network']}/v2.0/networks", json={"network": {"name": "load"}}, headers=h
        )
        assert resp.status_code == 201, resp.text
        net = resp.json()["network"]["id"]
        # a /21: room for 2,000 ports (the demo's private /24 holds 253)
        subnet = {"network_id": net, "cidr": "10.8.0.0/21", "ip_version": 4, "name": "load"}
        resp = demo.http.post(
            f"{demo.urls['network']}/v2.0/subnets", json={"subnet": subnet}, headers=h
        )
        assert resp.status_code == 201, resp.text
        image = demo.first_id("image", "/v2/images?name=demo-image", "images")
        try:
            asyncio.run(_load(demo, flavor, net, image))
        except AssertionError as exc:
            alive = stack.process is not None and stack.process.poll() is None
            tail = "".join(stack.output[-40:])
            raise AssertionError(f"{exc}\n--- stack (alive: {alive}) ---\n{tail}") from exc
        demo.close()
