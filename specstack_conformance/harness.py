"""Targets under test, and the flows the suite runs against them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from specstack_conformance.clouds import (
    CloudError,
    Credentials,
    api_root,
    identity_root,
    load_cloud,
)
from specstack_runtime.config import StackConfig
from specstack_runtime.demo import Demo, DemoIds
from specstack_runtime.embedded import EmbeddedStack, load_generated
from specstack_runtime.http import ClientSet
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.supervisor import free_port_block_outside_ephemeral
from specstack_runtime.trace import TraceRecorder
from specstack_runtime.tracepoints import TraceMap, declared_items, events_of_report

T = TypeVar("T")


def osprofiler_traces(value: str) -> dict[str, Path]:
    """`SEQUENCE=FILE[,SEQUENCE=FILE]` as a mapping (TargetUnusable when malformed)."""
    traces: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        sequence, sep, path = item.partition("=")
        if not sep or not sequence or not path:
            raise TargetUnusable(f"{OSPROFILER_TRACES_ENV}: {item!r} is not SEQUENCE=FILE")
        traces[sequence] = Path(path)
    return traces


TARGET_ENV = "SPECSTACK_TARGET"
CLOUD_ENV = "SPECSTACK_CLOUD"  # the member's cloud in clouds.yaml
ADMIN_CLOUD_ENV = "SPECSTACK_ADMIN_CLOUD"  # an admin's cloud (optional)
#: SEQUENCE=FILE[,SEQUENCE=FILE]: OSProfiler traces (`osprofiler trace show --json`) whose
#: steps the sequence tests check instead of running the sequence
OSPROFILER_TRACES_ENV = "SPECSTACK_OSPROFILER_TRACES"

# A stack under test takes its ports below the ephemeral range: a block inside it (found
# by binding port 0) could be taken by an outgoing connection, a client's or another
# test's, between the check and the stack's own bind (it failed a CI run once).
free_port_block = free_port_block_outside_ephemeral


#: A sequence's steps for `settled`: each as its items (main first, then its `then`), each
#: item as its label, the component it runs from and the one it calls.
Items = list[list[tuple[str, str, str]]]


def settled(steps: Items, events: list[dict[str, Any]]) -> bool:
    """Whether a flow with these events has recorded all it will: every item of every step,
    but those behind an item that did not run (recorded as skipped: its `when` false, or its
    `each` over no item), which run where it would have called (a boot without volumes
    creates no attachment, so cinder-api never writes one)."""
    ran: dict[str, bool] = {}
    for e in events:
        label = str(e["step"])
        ran[label] = ran.get(label, False) or e.get("status") != "skipped"
    for step in steps:
        behind: set[str] = set()  # the components a skipped item of the step would have called
        for label, caller, callee in step:
            if caller in behind:
                behind.add(callee)
            elif label not in ran:
                return False
            elif ran[label]:
                behind.discard(callee)
            else:
                behind.add(callee)
    return True


@dataclass
class FlowRecord:
    """One run of a sequence: its id, the server it concerned, and the observed events."""

    sequence: str
    flow_id: str
    server_id: str
    server: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    # labels of steps its trace cannot show (an OSProfiler trace has no user step)
    untraced: frozenset[str] = frozenset()
    source: str = ""  # where the events come from, when not from running the sequence


class TargetUnusable(RuntimeError):
    """The target cannot be tested at all (no login, no catalog): the run stops at once."""


class CannotExpireTokens(RuntimeError):
    """The target cannot make a token expire before its lifetime ends (a remote stack)."""


class Target:
    """A stack under test and a private event loop to talk to it from synchronous tests."""

    def __init__(
        self,
        config: StackConfig,
        identity_url: str,
        member: Credentials | None = None,
        admin: Credentials | None = None,
        *,
        defaults: bool = True,
    ) -> None:
        self.config = config
        self.identity_url = identity_root(identity_url)
        # without clouds, specstack's own users (admin/admin, demo/demo unless configured)
        if defaults:
            member = member or Credentials(self.identity_url, "demo", config.demo_password, "demo")
            admin = admin or Credentials(self.identity_url, "admin", config.admin_password, "admin")
        assert member is not None
        self.member = member
        self.admin = admin
        self.info, self.services, _ = load_generated()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.stack: EmbeddedStack | None = None
        self.clients: ClientSet | None = None
        self.recorder = TraceRecorder(None)
        self.scratch: Path | None = None  # a data directory it made, removed by `close`
        self.demo: Demo | None = None
        self.ids: DemoIds | None = None
        self._driven: dict[str, FlowRecord] = {}

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def expire_token(self, token: str) -> None:
        """End a token's lifetime now. Only a stack this process runs can do it."""
        if self.stack is None:
            raise CannotExpireTokens(
                "a remote stack's tokens cannot be expired from outside before their TTL ends"
            )
        from specstack_runtime.behaviours.identity import expire_token

        component = self.info.apis[self.info.api_of_type("identity")]["component"]
        await expire_token(self.stack.runtime_of(component), token)

    # starting ---------------------------------------------------------------
    @classmethod
    def embedded(cls, config: StackConfig | None = None) -> Target:
        """An embedded stack started in this process (on free ports, in a new data
        directory, unless `config` says otherwise), seeded with the demo data."""
        info = load_generated()[0]
        data: Path | None = None
        if config is None:
            data = Path(tempfile.mkdtemp(prefix="specstack-conform-"))
            ports = len(info.listening)  # the APIs and the dashboard
            config = StackConfig(data_dir=data, base_port=free_port_block(ports), bcrypt_rounds=4)
        target = cls(config, info.endpoint(info.api_of_type("identity"), config))
        target.scratch = data  # (None: the caller's config, its directory)
        target.stack = EmbeddedStack(config)
        target.run(target.stack.start())
        target.clients = target.stack.clients
        target._attach()
        return target

    @classmethod
    def remote(
        cls,
        identity_url: str,
        member: Credentials | None = None,
        admin: Credentials | None = None,
    ) -> Target:
        config = StackConfig(data_dir=Path(tempfile.mkdtemp(prefix="specstack-conform-")))
        target = cls(config, identity_url, member, admin, defaults=member is None)
        target.scratch = config.data_dir
        try:
            target.clients = target.run(target._clients_from_catalog())
        except BaseException:
            target.close()
            raise
        target._attach()
        return target

    @classmethod
    def from_environment(cls) -> Target:
        """SPECSTACK_TARGET (an identity URL) and/or SPECSTACK_CLOUD, SPECSTACK_ADMIN_CLOUD
        (clouds in clouds.yaml); none of them: the embedded stack."""
        url = os.environ.get(TARGET_ENV)
        cloud, admin_cloud = os.environ.get(CLOUD_ENV), os.environ.get(ADMIN_CLOUD_ENV)
        if not (url or cloud or admin_cloud):
            return cls.embedded()
        try:
            member = load_cloud(cloud) if cloud else None
            admin = load_cloud(admin_cloud) if admin_cloud else None
        except CloudError as exc:
            raise TargetUnusable(str(exc)) from None
        if member is None and admin is not None:
            member = admin
        where = url or (member.identity_url if member else "")
        return cls.remote(where, member, admin)

    async def _clients_from_catalog(self) -> ClientSet:
        who = self.admin or self.member
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                resp = await http.post(f"{self.identity_url}/v3/auth/tokens", json=who.auth_body())
        except httpx.HTTPError as exc:
            raise TargetUnusable(
                f"no identity service answers at {self.identity_url} ({exc})"
            ) from None
        if resp.status_code != 201:
            raise TargetUnusable(
                f"cannot log in to {self.identity_url}/v3/auth/tokens as {who!r}: "
                f"{resp.status_code} {resp.text[:200]}"
            )
        endpoints: dict[str, str] = {}
        for entry in resp.json()["token"]["catalog"]:
            try:
                api = self.info.api_of_type(entry["type"])
            except KeyError:
                continue
            url = next(e["url"] for e in entry["endpoints"] if e["interface"] == "public")
            catalog = self.info.components[self.info.apis[api]["component"]]["catalog"]
            endpoints[api] = api_root(url, catalog["path"])
        return ClientSet(self.info, self.config, endpoints=endpoints)

    def _attach(self) -> None:
        assert self.clients is not None
        cli_name = next(
            name
            for name, m in self.services.items()
            if getattr(m, "KIND", "") == "client" and "boot-vm" in m.HANDLERS
        )
        comp = self.info.components[cli_name]
        cli = ServiceRuntime(
            component=cli_name,
            project=comp["project"],
            host="conformance",
            info=self.info,
            config=self.config,
            bus=None,  # type: ignore[arg-type]
            trace=self.recorder,
            clients=self.clients,
            data_dir=self.config.data_dir,
        )
        self.demo = Demo(self.clients, self.info, self.config, self.services, cli)
        # without an admin, what needs one is looked up with the member's token (a real
        # cloud has its flavors and images already)
        member = self.run(self.token(self.member))
        admin = self.run(self.token(self.admin)) if self.admin else member
        self.ids = self.run(self.demo.seed(admin, member))

    def close(self) -> None:
        if self.stack is not None:
            self.run(self.stack.stop())
        elif self.clients is not None:
            self.run(self.clients.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if self.scratch is not None:  # (each run of the suite made one: none is left behind)
            shutil.rmtree(self.scratch, ignore_errors=True)

    # flows --------------------------------------------------------------------
    async def token(self, who: Credentials) -> tuple[str, str]:
        """A token of `who`, and its project's id."""
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.post(f"{self.identity_url}/v3/auth/tokens", json=who.auth_body())
        if resp.status_code != 201:
            raise TargetUnusable(f"cannot log in as {who!r}: {resp.status_code}")
        return resp.headers["X-Subject-Token"], resp.json()["token"]["project"]["id"]

    async def admin_token(self) -> str:
        return (await self.admin_login())[0]

    async def admin_login(self) -> tuple[str, str]:
        """An admin's token and project id; the test skips when the target gave no admin."""
        if self.admin is None:
            pytest.skip("needs an admin cloud (specstack conform --admin-cloud NAME)")
        return await self.token(self.admin)

    async def demo_token(self) -> tuple[str, str]:
        """The member's token and project id."""
        return await self.token(self.member)

    async def events(self, flow_id: str, token: str | None = None) -> list[dict[str, Any]]:
        """The flow's events: the client's own (steps it ran here) and the stack's
        (read with `token`, an admin's; a new one when none is given)."""
        token = token or await self.admin_token()
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.get(
                f"{self.identity_url}/specstack/trace/{flow_id}", headers={"X-Auth-Token": token}
            )
        resp.raise_for_status()
        remote = resp.json()["events"]
        local = self.recorder.events(flow_id)
        seen = {(e["step"], e["started_at"]) for e in remote}
        merged = remote + [e for e in local if (e["step"], e["started_at"]) not in seen]
        return sorted(merged, key=lambda e: e["started_at"])

    async def _settled_events(self, flow_id: str, sequence: str) -> list[dict[str, Any]]:
        # The last events of a flow are recorded just after the client sees its result.
        steps = self._steps(sequence)
        token = await self.admin_token()
        events: list[dict[str, Any]] = []
        for _ in range(50):
            events = await self.events(flow_id, token)
            if settled(steps, events):
                break
            await asyncio.sleep(0.05)
        return events

    def drive(self, sequence: str) -> FlowRecord:
        """Run a sequence from its start as the conformance suite needs it.

        The library knows how to give each sequence its inputs: boot-vm boots a
        server; delete-vm deletes the server boot-vm booted. Each runs once.
        """
        if sequence not in self._driven:
            traces = osprofiler_traces(os.environ.get(OSPROFILER_TRACES_ENV, ""))
            if sequence in traces:
                self._driven[sequence] = self.from_osprofiler(sequence, traces[sequence])
            elif sequence == "boot-vm":
                self._driven[sequence] = self.boot()
            elif sequence == "delete-vm":
                self._driven[sequence] = self.delete(self.drive("boot-vm").server_id)
            else:
                raise NotImplementedError(
                    f"the conformance library cannot start {sequence!r} on its own"
                )
        return self._driven[sequence]

    def from_osprofiler(self, sequence: str, path: Path) -> FlowRecord:
        """The steps of `sequence` an OSProfiler trace file of any cloud shows."""
        tmap = TraceMap(self.info.model)
        seq = next(s for s in self.info.model.sequences if s.name == sequence)
        try:
            events = events_of_report(tmap, seq, json.loads(path.read_text("utf-8")))
        except (OSError, ValueError) as exc:
            raise TargetUnusable(f"cannot read the OSProfiler trace {path}: {exc}") from None
        untraced = frozenset(label for label, _, it in declared_items(seq) if not tmap.traced(it))
        flow = next((e["flow_id"] for e in events if e.get("flow_id")), path.name)
        return FlowRecord(sequence, flow, "", {}, events, untraced, str(path))

    def boot(self, *, volume: bool = True) -> FlowRecord:
        assert self.demo is not None and self.ids is not None
        name = f"conform-{uuid.uuid4().hex[:8]}"
        flow_id, server_id, server = self.run(self.demo.boot(self.ids, name, volume=volume))
        events = self.run(self._settled_events(flow_id, "boot-vm"))
        return FlowRecord("boot-vm", flow_id, server_id, server, events)

    def delete(self, server_id: str) -> FlowRecord:
        assert self.demo is not None
        flow_id = self.run(self.demo.delete(server_id))
        events = self.run(self._settled_events(flow_id, "delete-vm"))
        return FlowRecord("delete-vm", flow_id, server_id, {}, events)

    def _steps(self, sequence: str) -> Items:
        steps: Items = []
        for step in self.info.sequences[sequence]["steps"]:
            label = str(step["label"])
            items = [
                (label, step["main"]),
                *((f"{label}.{i + 1}", t) for i, t in enumerate(step["then"])),
            ]
            steps.append(
                [(n, str(it["source_component"]), str(it["target_component"])) for n, it in items]
            )
        return steps
