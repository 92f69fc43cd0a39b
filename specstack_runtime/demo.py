"""`specstack run`'s demo: seed a small cloud, then boot a VM through the declared steps.

Everything goes through the stack's own HTTP APIs, as a user's tools would; the
boot itself is the generated client (`cli`) flow, so the steps are the spec's.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from specstack_runtime.auth import password_auth
from specstack_runtime.config import StackConfig
from specstack_runtime.context import Call
from specstack_runtime.embedded import EmbeddedStack
from specstack_runtime.errors import StepFailed
from specstack_runtime.flow import Flow
from specstack_runtime.http import ClientSet, error_message
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.trace import TraceEvent

FLAVORS = (
    {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1},
    {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20},
    {"id": "3", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40},
)
IMAGE_NAME = "demo-image"
NETWORK_NAME = "private"
SUBNET = {"name": "private-subnet", "cidr": "10.0.0.0/24", "ip_version": 4}
VOLUME_NAME = "demo-volume"
#: The demo VM each `specstack run` boots, replacing the one the previous run left.
SERVER_NAME = "demo-vm"
#: The demo VMs of earlier runs: this name, or demo-vm-<unix time> as runs named them before.
_EARLIER_DEMO_VM = re.compile(r"demo-vm(-\d{9,})?")


def demo_image_bytes(size: int = 64 * 1024) -> bytes:
    """A small deterministic image payload (the fake hypervisor boots anything)."""
    seed = hashlib.sha256(b"specstack demo image").digest()
    return (seed * (size // len(seed) + 1))[:size]


T = TypeVar("T")


class DemoError(RuntimeError):
    pass


@dataclass(frozen=True)
class DemoIds:
    image_id: str
    flavor_id: str
    network_id: str
    volume_id: str


class Demo:
    """Seeds and boots through any reachable stack: embedded here, or a target under test."""

    def __init__(
        self,
        clients: ClientSet,
        info: StackInfo,
        config: StackConfig,
        services: dict[str, Any],
        cli: ServiceRuntime,
    ) -> None:
        self.cfg = config
        self.info = info
        self.clients = clients
        self.services = services
        self.cli = cli

    @classmethod
    def of(cls, stack: EmbeddedStack) -> Demo:
        cli = next(
            r.rt
            for r in stack.running
            if "boot-vm" in getattr(r.module, "HANDLERS", {}) and r.module.KIND == "client"
        )
        return cls(stack.clients, stack.info, stack.config, stack.services, cli)

    def api(self, catalog_type: str) -> str:
        return self.info.api_of_type(catalog_type)

    async def token(self, user: str, password: str, project: str) -> tuple[str, str]:
        body = password_auth(user, password, project)
        resp = await self.clients.call(self.api("identity"), "issueToken", body=body)
        if resp.status_code != 201:
            raise DemoError(f"cannot log in as {user}: {error_message(resp)}")
        return resp.headers["X-Subject-Token"], resp.json()["token"]["project"]["id"]

    async def _ok(self, resp: Any, *codes: int) -> Any:
        if resp.status_code not in codes:
            raise DemoError(
                f"{resp.request.method} {resp.request.url.path}: {resp.status_code} "
                f"{error_message(resp)}"
            )
        return resp.json() if resp.content else None

    async def seed(
        self, admin_login: tuple[str, str] | None = None, demo_login: tuple[str, str] | None = None
    ) -> DemoIds:
        """Create what the demo needs, unless a previous run already did (state persists).
        The logins (token, project id) are the stack's admin and demo users unless given."""
        admin_login = admin_login or await self.token("admin", self.cfg.admin_password, "admin")
        demo_login = demo_login or await self.token("demo", self.cfg.demo_password, "demo")
        admin, demo, demo_project = admin_login[0], *demo_login
        compute, image, network, volume = (
            self.api(t) for t in ("compute", "image", "network", "block-storage")
        )
        c = self.clients
        flavors = await self._ok(await c.call(compute, "listFlavorsDetailed", token=admin), 200)
        have = {f["name"]: f["id"] for f in flavors["flavors"]}
        for fl in FLAVORS:
            if fl["name"] not in have:
                await self._ok(
                    await c.call(compute, "createFlavor", body={"flavor": dict(fl)}, token=admin),
                    200,
                )
        images = await self._ok(
            await c.call(image, "listImages", query={"name": IMAGE_NAME}, token=admin), 200
        )
        active = [i for i in images["images"] if i["status"] == "active"]
        if active:
            image_id = active[0]["id"]
        else:
            created = await self._ok(
                await c.call(
                    image,
                    "createImage",
                    body={
                        "name": IMAGE_NAME,
                        "disk_format": "raw",
                        "container_format": "bare",
                        "visibility": "public",
                    },
                    token=admin,
                ),
                201,
            )
            image_id = created["id"]
            await self._ok(
                await c.call(
                    image,
                    "uploadImageData",
                    {"image_id": image_id},
                    body=demo_image_bytes(),
                    token=admin,
                ),
                204,
            )
        nets = await self._ok(
            await c.call(network, "listNetworks", query={"name": NETWORK_NAME}, token=demo), 200
        )
        if nets["networks"]:
            network_id = nets["networks"][0]["id"]
        else:
            net = await self._ok(
                await c.call(
                    network, "createNetwork", body={"network": {"name": NETWORK_NAME}}, token=demo
                ),
                201,
            )
            network_id = net["network"]["id"]
        subnets = await self._ok(
            await c.call(network, "listSubnets", query={"network_id": network_id}, token=demo), 200
        )
        if not subnets["subnets"]:
            await self._ok(
                await c.call(
                    network,
                    "createSubnet",
                    body={"subnet": {**SUBNET, "network_id": network_id}},
                    token=demo,
                ),
                201,
            )
        vols = await self._ok(
            await c.call(
                volume,
                "listVolumesDetailed",
                {"project_id": demo_project},
                query={"name": VOLUME_NAME},
                token=demo,
            ),
            200,
        )
        usable = [v for v in vols["volumes"] if v["status"] == "available"]
        if usable:
            volume_id = usable[0]["id"]
        else:
            made = await self._ok(
                await c.call(
                    volume,
                    "createVolume",
                    {"project_id": demo_project},
                    body={"volume": {"name": VOLUME_NAME, "size": 1}},
                    token=demo,
                ),
                202,
            )
            volume_id = made["volume"]["id"]
            await self._wait_volume(volume, demo_project, volume_id, demo)
        return DemoIds(image_id, str(FLAVORS[0]["id"]), network_id, volume_id)

    async def remove_previous(self, timeout: float = 60.0) -> list[str]:
        """Delete, through delete-vm, the demo VMs earlier runs left (state persists), so
        that the demo project keeps one however often the stack is run; their ids."""
        token, _ = await self.token("demo", self.cfg.demo_password, "demo")
        listed = await self._ok(
            await self.clients.call(self.api("compute"), "listServers", token=token), 200
        )
        earlier = [str(s["id"]) for s in listed["servers"] if _EARLIER_DEMO_VM.fullmatch(s["name"])]
        for server_id in earlier:
            await self.delete(server_id, timeout=timeout)
        return earlier

    async def _wait_volume(self, api: str, project: str, volume_id: str, token: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            vol = await self._ok(
                await self.clients.call(
                    api, "showVolume", {"project_id": project, "volume_id": volume_id}, token=token
                ),
                200,
            )
            if vol["volume"]["status"] == "available":
                return
            if vol["volume"]["status"] == "error":
                raise DemoError(f"volume {volume_id} went to error")
            await asyncio.sleep(0.02)
        raise DemoError(f"volume {volume_id} did not become available")

    async def run_client_flow(
        self,
        sequence: str,
        request: dict[str, Any],
        on_event: Callable[[TraceEvent], None] | None,
        then: Callable[[dict[str, Any]], Awaitable[T]],
    ) -> tuple[str, T]:
        """Run `sequence` from the client's side, as the user asks, then `then(flow vars)`.

        `on_event` sees the flow's steps until `then` is done (the steps after the
        client's own ones happen while it waits for the result).
        """
        cli = self.cli
        spec = self.services[cli.component].HANDLERS[sequence]
        flow_id = f"req-{uuid.uuid4()}"
        start = spec.entry or (sequence, "1")
        call = Call(
            rt=cli,
            trigger=sequence,
            kind="user",
            request_id=flow_id,
            global_request_id=flow_id,
            sequence=start[0],
            trigger_label=start[1],
            vars={"request": request, "credentials": self.credentials()},
        )
        unlisten = cli.trace.listen(
            lambda e: on_event(e) if on_event and e.flow_id == flow_id else None
        )
        try:
            await spec.run(Flow(call, spec))
            return flow_id, await then(call.vars)
        finally:
            unlisten()

    async def boot(
        self,
        ids: DemoIds,
        name: str,
        *,
        volume: bool = True,
        on_event: Callable[[TraceEvent], None] | None = None,
        timeout: float = 60.0,
    ) -> tuple[str, str, dict[str, Any]]:
        """Run boot-vm from the client's side; (flow id, server id, final server body)."""
        request = {
            "name": name,
            "image_id": ids.image_id,
            "flavor_id": ids.flavor_id,
            "network_id": ids.network_id,
            "volume_id": ids.volume_id if volume else None,
            "key_name": None,
            "availability_zone": None,
        }

        async def active(fvars: dict[str, Any]) -> dict[str, Any]:
            return await self.wait_server(fvars["server"]["id"], fvars["token"], timeout=timeout)

        flow_id, server = await self.run_client_flow("boot-vm", request, on_event, active)
        return flow_id, str(server["id"]), server

    async def delete(
        self,
        server_id: str,
        *,
        on_event: Callable[[TraceEvent], None] | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Run delete-vm from the client's side; the flow id. Waits until the server is gone."""

        async def gone(fvars: dict[str, Any]) -> None:
            await self.wait_gone(server_id, fvars["token"], timeout=timeout)

        flow_id, _ = await self.run_client_flow(
            "delete-vm", {"server_id": server_id}, on_event, gone
        )
        return flow_id

    def credentials(self) -> dict[str, str]:
        return {
            "username": "demo",
            "password": self.cfg.demo_password,
            "project_name": "demo",
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        }

    async def wait_gone(self, server_id: str, token: str, *, timeout: float) -> None:
        compute = self.api("compute")
        deadline = time.monotonic() + timeout
        while True:
            resp = await self.clients.call(
                compute, "showServer", {"server_id": server_id}, token=token
            )
            if resp.status_code == 404:
                return
            if time.monotonic() > deadline:
                raise StepFailed(f"server {server_id} still there after {timeout} s")
            await asyncio.sleep(0.01)

    async def wait_server(self, server_id: str, token: str, *, timeout: float) -> dict[str, Any]:
        compute = self.api("compute")
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            resp = await self.clients.call(
                compute, "showServer", {"server_id": server_id}, token=token
            )
            body = await self._ok(resp, 200)
            server: dict[str, Any] = body["server"]
            if server["status"] in ("ACTIVE", "ERROR"):
                return server
            if time.monotonic() > deadline:
                raise StepFailed(f"server {server_id} still {server['status']} after {timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
