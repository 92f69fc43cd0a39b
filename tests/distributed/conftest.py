"""A distributed stack (a process per component per node, RabbitMQ, PostgreSQL, 3 computes),
and a small admin/demo HTTP client to drive it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from specstack_conformance.clouds import Credentials

from ..wire.conftest import Stack, running_stack

BOOT_TIMEOUT_S = 120.0


def _auth(user: str, password: str, project: str) -> dict[str, Any]:
    return Credentials("", user, password, project).auth_body()


@dataclass
class Cloud:
    """The stack's APIs as one user sees them through the catalog."""

    http: httpx.Client
    token: str
    urls: dict[str, str]

    @classmethod
    def login(cls, stack: Stack, user: str, password: str, project: str) -> Cloud:
        http = httpx.Client(timeout=60)
        resp = http.post(f"{stack.identity_url}/auth/tokens", json=_auth(user, password, project))
        assert resp.status_code == 201, resp.text
        urls = {
            e["type"]: next(x["url"] for x in e["endpoints"] if x["interface"] == "public")
            for e in resp.json()["token"]["catalog"]
        }
        return cls(http, resp.headers["X-Subject-Token"], urls)

    def get(self, kind: str, path: str) -> Any:
        resp = self.http.get(f"{self.urls[kind]}{path}", headers={"X-Auth-Token": self.token})
        assert resp.status_code == 200, f"GET {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def first_id(self, kind: str, path: str, key: str) -> str:
        return str(self.get(kind, path)[key][0]["id"])

    def boot_body(self, name: str, flavor: str = "2") -> dict[str, Any]:
        image = self.first_id("image", "/v2/images?name=demo-image", "images")
        net = self.first_id("network", "/v2.0/networks?name=private", "networks")
        return {
            "server": {
                "name": name,
                "imageRef": image,
                "flavorRef": flavor,
                "networks": [{"uuid": net}],
            }
        }

    def post_server(self, body: dict[str, Any]) -> str:
        resp = self.http.post(
            f"{self.urls['compute']}/servers", json=body, headers={"X-Auth-Token": self.token}
        )
        assert resp.status_code == 202, resp.text
        return str(resp.json()["server"]["id"])

    def server(self, server_id: str) -> dict[str, Any]:
        return dict(self.get("compute", f"/servers/{server_id}")["server"])

    def wait_settled(self, server_id: str, timeout: float = BOOT_TIMEOUT_S) -> dict[str, Any]:
        """The server once it is no longer BUILD (ACTIVE or ERROR), or as it is at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            server = self.server(server_id)
            if server["status"] != "BUILD" or time.monotonic() > deadline:
                return server
            time.sleep(0.1)

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def dstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A distributed stack with 3 compute nodes, serving, for this test module."""
    with running_stack(tmp_path_factory, "dist", mode="distributed") as stack:
        yield stack


@pytest.fixture(scope="module")
def admin(dstack: Stack) -> Iterator[Cloud]:
    cloud = Cloud.login(dstack, "admin", "admin", "admin")
    yield cloud
    cloud.close()


@pytest.fixture(scope="module")
def demo(dstack: Stack) -> Iterator[Cloud]:
    cloud = Cloud.login(dstack, "demo", "demo", "demo")
    yield cloud
    cloud.close()
