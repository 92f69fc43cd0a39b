"""Helpers for the compute-family tests (no tests here).

`nova_cell_kit.NovaCell` wires nova-api, -scheduler, -conductor and N nova-computes of the real
spec onto one real `InProcessBus` and one in-memory nova database, with
`FakeHypervisor`s as drivers and `FakeServices` standing in for glance, swift,
neutron and cinder. Messages are handled the way the generated services will
handle them: the consumer's behaviour runs, then the steps that the sequence
gives to that component, in the spec's order, each with its transport bound
(`invoke`); `on_error` runs when one fails. Every step run is recorded.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from jsonschema import Draft202012Validator

from specstack_runtime import registry
from specstack_runtime.behaviours import (  # noqa: F401  (they register the nova behaviours)
    conductor,
    nova_api,
    nova_build,
    nova_delete,
    nova_host,
    nova_keypairs,
    scheduler,
)
from specstack_runtime.bus import CheckedBy
from specstack_runtime.config import StackConfig
from specstack_runtime.context import AuthContext, Call, Interaction, Reply
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import Store, TableSpec
from tests.runtime.fakes import ir_json

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "spec"
T = TypeVar("T")

PROJECT = "a" * 32
USER = "b" * 32
OTHER_PROJECT = "c" * 32
IMAGE_ID = "11111111-1111-4111-8111-111111111111"
NETWORK_ID = "22222222-2222-4222-8222-222222222222"
VOLUME_ID = "33333333-3333-4333-8333-333333333333"
# a boot's block device mappings: the image as its root disk, the volume as its second
IMAGE_BDM: dict[str, Any] = {"uuid": IMAGE_ID, "boot_index": 0, "source_type": "image",
                             "destination_type": "local", "delete_on_termination": True}  # fmt: skip
VOLUME_BDM: dict[str, Any] = {"uuid": VOLUME_ID, "boot_index": -1, "source_type": "volume",
                              "destination_type": "volume", "delete_on_termination": False}  # fmt: skip
IMAGE_DATA = b"fake qcow2 image " * 64


def stack_info() -> StackInfo:
    return StackInfo(json.loads(ir_json()))


def nova_store(info: StackInfo) -> Store:
    db = info.components["nova-api"]["database"]
    tables = [TableSpec(t["name"], tuple(t["indexes"])) for t in info.components[db]["tables"]]
    store = Store("sqlite://", tables=tables)
    store.create_schema()
    return store


@functools.lru_cache(maxsize=1)
def compute_openapi() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((REPO / "generated" / "openapi" / "compute.json").read_text())
    return doc


def check_response(operation_id: str, reply: Reply) -> None:
    """The reply's status is declared for the operation and its body matches the schema."""
    doc = compute_openapi()
    op = next(
        o
        for item in doc["paths"].values()
        for o in item.values()
        if isinstance(o, dict) and o.get("operationId") == operation_id
    )
    assert str(reply.status) in op["responses"], f"{operation_id} may not answer {reply.status}"
    content = op["responses"][str(reply.status)].get("content") or {}
    schema = (content.get("application/json") or {}).get("schema")
    if schema is None or reply.body is None:
        return
    root = {**schema, "components": doc["components"]}
    errors = sorted(Draft202012Validator(root).iter_errors(reply.body), key=str)
    assert not errors, f"{operation_id}: {errors[0].message} at {list(errors[0].absolute_path)}"


def auth_ctx(
    *, project: str = PROJECT, user: str = USER, admin: bool = False, token: str = "user-token"
) -> AuthContext:
    return AuthContext(
        token=token,
        user_id=user,
        user_name="demo",
        project_id=project,
        project_name="demo",
        domain_id="default",
        # as keystone issues them: member implies reader
        roles=("admin", "member", "reader") if admin else ("member", "reader"),
        expires_at="2099-01-01T00:00:00Z",
    )


def response(
    status: int, body: Any = None, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    hdrs = dict(headers or {})
    if isinstance(body, bytes):
        content = body
    elif body is None:
        content = b""
    else:
        content = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    return httpx.Response(
        status, headers=hdrs, content=content, request=httpx.Request("GET", "http://fake/")
    )


class Recorder:
    """An `invoke` that records its arguments and answers from a list (or a function)."""

    def __init__(self, *answers: Any, fn: Callable[..., Any] | None = None) -> None:
        self.answers = list(answers)
        self.fn = fn
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        if self.fn is not None:
            result = self.fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return self.answers.pop(0) if self.answers else None


class NullTrace:
    def record(self, *args: Any, **kwargs: Any) -> None:
        return None


class FakeAuth:
    async def service_token(self) -> str:
        return "service-token"

    async def validate(self, token: str) -> AuthContext:
        return auth_ctx(token=token)


class FakeServices:
    """glance, swift, neutron and cinder as far as nova uses them; a ClientSet look-alike."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any], Any, str | None]] = []
        self.image = {
            "id": IMAGE_ID,
            "name": "cirros",
            "status": "active",
            "checksum": hashlib.md5(IMAGE_DATA).hexdigest(),
            "size": len(IMAGE_DATA),
            "min_disk": 0,
            "min_ram": 0,
            "direct_url": f"swift://AUTH_{'d' * 32}/glance/{IMAGE_ID}",
        }
        self.image_data = IMAGE_DATA
        self.ports: dict[str, dict[str, Any]] = {}
        self.attachments: dict[str, dict[str, Any]] = {}
        self.volume_status = "available"
        self.fail: dict[str, int] = {}  # operation id -> status to answer instead
        self.absent_networks: set[str] = set()  # showNetwork answers 404 for these
        self.networks: list[dict[str, Any]] = []  # shared networks besides `private`
        self._ip = 10

    async def call(
        self,
        api: str,
        operation_id: str,
        path_params: Mapping[str, Any] | None = None,
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        context: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        params = dict(path_params or {})
        self.calls.append((api, operation_id, params, body, token))
        if operation_id in self.fail:
            status = self.fail[operation_id]
            return response(
                status, {"error": {"message": f"{operation_id} failed", "code": status}}
            )
        handler = getattr(self, f"_{operation_id}", None)
        assert handler is not None, f"FakeServices has no {api} {operation_id}"
        result: httpx.Response = handler(params, body, query or {})
        return result

    def ops(self) -> list[str]:
        return [c[1] for c in self.calls]

    def _showImage(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        if p["image_id"] != self.image["id"]:
            return response(404, {"message": "not found"})
        return response(200, self.image)

    def _getObject(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        return response(200, self.image_data)

    def _createPort(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        self._ip += 1
        port_id = str(uuid.uuid4())
        port = {
            "id": port_id,
            **body["port"],
            "mac_address": f"fa:16:3e:00:00:{self._ip:02x}",
            "fixed_ips": [{"subnet_id": "s1", "ip_address": f"10.0.0.{self._ip}"}],
            "status": "ACTIVE",
        }
        for ip in body["port"].get("fixed_ips") or []:  # the address asked for
            port["fixed_ips"] = [{"subnet_id": "s1", "ip_address": ip["ip_address"]}]
        self.ports[port_id] = port
        return response(201, {"port": port})

    def _showPort(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        if p["port_id"] not in self.ports:
            return response(404, {"NeutronError": {"message": "Port not found"}})
        return response(200, {"port": self.ports[p["port_id"]]})

    def _updatePort(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        if p["port_id"] not in self.ports:
            return response(404, {"NeutronError": {"message": "Port not found"}})
        port = self.ports[p["port_id"]]
        port.update(body["port"])
        return response(200, {"port": port})

    def _deletePort(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        if self.ports.pop(p["port_id"], None) is None:
            return response(404, {"NeutronError": {"message": "Port not found"}})
        return response(204)

    def _listPorts(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        ports = [x for x in self.ports.values() if x.get("device_id") == q.get("device_id")]
        return response(200, {"ports": ports})

    def _showNetwork(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        if p["network_id"] in self.absent_networks:
            return response(404, {"NeutronError": {"message": "Network not found"}})
        return response(200, {"network": {"id": p["network_id"], "name": "private"}})

    def _listNetworks(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        """By id; else the one shared network `private` (and `self.networks` more)."""
        if "id" in q:
            return response(200, {"networks": [{"id": q["id"], "name": "private"}]})
        shared = [{"id": NETWORK_ID, "name": "private"}, *self.networks]
        return response(200, {"networks": shared if q.get("shared") == "true" else []})

    def _listFloatingIPs(
        self, p: dict[str, Any], body: Any, q: Mapping[str, Any]
    ) -> httpx.Response:
        return response(200, {"floatingips": []})

    def _listSecurityGroups(
        self, p: dict[str, Any], body: Any, q: Mapping[str, Any]
    ) -> httpx.Response:
        # the project's groups: neutron's `default`, made on first use
        group = {"id": "sg-default", "name": "default", "project_id": q.get("project_id")}
        return response(200, {"security_groups": [group]})

    def _showVolume(self, p: dict[str, Any], body: Any, q: Mapping[str, Any]) -> httpx.Response:
        if p["volume_id"] != VOLUME_ID:
            return response(404, {"itemNotFound": {"message": "no", "code": 404}})
        return response(200, {"volume": {"id": VOLUME_ID, "status": self.volume_status}})

    def _createAttachment(
        self, p: dict[str, Any], body: Any, q: Mapping[str, Any]
    ) -> httpx.Response:
        att_id = str(uuid.uuid4())
        spec = body["attachment"]
        att = {
            "id": att_id,
            "status": "attaching",
            "instance": spec["instance_uuid"],
            "volume_id": spec["volume_uuid"],
            "attach_mode": "rw",
            "attached_at": "",
            "detached_at": "",
            "connection_info": {
                "driver_volume_type": "iscsi",
                "data": {"volume_id": spec["volume_uuid"], "target_lun": 1},
            },
        }
        self.attachments[att_id] = att
        self.volume_status = "attaching"
        return response(200, {"attachment": att})

    def _completeAttachment(
        self, p: dict[str, Any], body: Any, q: Mapping[str, Any]
    ) -> httpx.Response:
        assert body == {"os-complete": None}
        self.attachments[p["attachment_id"]]["status"] = "attached"
        self.volume_status = "in-use"
        return response(204)

    def _deleteAttachment(
        self, p: dict[str, Any], body: Any, q: Mapping[str, Any]
    ) -> httpx.Response:
        if self.attachments.pop(p["attachment_id"], None) is None:
            return response(404, {"itemNotFound": {"message": "no", "code": 404}})
        self.volume_status = "available"
        return response(200, {"attachments": []})


def make_runtime(
    info: StackInfo,
    component: str,
    *,
    host: str = "controller",
    bus: Any = None,
    clients: Any = None,
    store: Store | None = None,
    driver: Any = None,
    data_dir: Path = Path("."),
    config: StackConfig | None = None,
) -> ServiceRuntime:
    return ServiceRuntime(
        component=component,
        project=info.components[component]["project"],
        host=host,
        info=info,
        config=config or StackConfig(data_dir=data_dir),
        bus=bus,
        trace=NullTrace(),  # type: ignore[arg-type]
        clients=clients if clients is not None else FakeServices(),  # type: ignore[arg-type]
        store=store,
        auth=FakeAuth(),  # type: ignore[arg-type]
        driver=driver,
        data_dir=data_dir,
    )


def op_call(
    rt: ServiceRuntime,
    operation_id: str,
    *,
    body: Any = None,
    path_params: Mapping[str, str] | None = None,
    query: Mapping[str, Any] | None = None,
    auth: AuthContext | None = None,
    headers: Mapping[str, str] | None = None,
    sequence: str | None = None,
    microversion: tuple[int, int] | None = None,
) -> Call:
    q: dict[str, list[str]] = {}
    for k, v in (query or {}).items():
        q[k] = [str(x) for x in v] if isinstance(v, list) else [str(v)]
    auth = auth if auth is not None else auth_ctx()
    # the spec's static arguments of the operation (x-specstack-args), as generated code passes
    handler: dict[str, Any] = next(
        (h for h in rt.info.ir["handlers"] if h["trigger"] == operation_id), {}
    )
    return Call(
        rt=rt,
        args=dict(handler.get("args") or {}),
        trigger=operation_id,
        kind="operation",
        request_id="req-test",
        global_request_id="req-test",
        sequence=sequence,
        path_params=dict(path_params or {}),
        query=q,
        headers=dict(headers or {"host": "nova.test:8774"}),
        body=body,
        auth=auth,
        token=auth.token,
        microversion=microversion,
    )


def msg_call(
    rt: ServiceRuntime, message: str, payload: dict[str, Any], *, token: str | None = "user-token"
) -> Call:
    return Call(
        rt=rt,
        trigger=message,
        kind="message",
        request_id="req-test",
        global_request_id="req-test",
        payload=payload,
        token=token,
        args=consumer_args(rt, message),
    )


def consumer_args(rt: ServiceRuntime, message: str) -> dict[str, Any]:
    """The `args:` the spec gives the component's consumer of `message` (as Flow passes them)."""
    consumes = rt.info.components[rt.component].get("consumes") or []
    return next((dict(h.get("args") or {}) for h in consumes if h["message"] == message), {})


def interaction(
    call: Call, invoke: Any, *, label: str = "1", name: str | None = None
) -> Interaction:
    return Interaction(
        call=call,
        label=label,
        source=call.rt.component,
        target="x",
        via="test",
        name=name,
        invoke=invoke,
    )


async def run_spec_step(call: Call, sequence: str, label: str, invoke: Any) -> None:
    """Carry out the spec's interaction `label` of `sequence` as a flow does: its behaviour,
    or the `flow.<via>` one with its `with:`, through `invoke`."""
    number, _, sub = label.partition(".")
    step = next(s for s in call.rt.info.sequences[sequence]["steps"] if s["label"] == number)
    spec = step["then"][int(sub) - 1] if sub else step["main"]
    name = spec["operation"] or spec["message"] or spec["call"]
    ix = interaction(call, invoke, label=label, name=name)
    ix.via, ix.bindings, ix.save_as = spec["via"], spec["bindings"], spec["save_as"]
    await registry.get(spec["behaviour"] or f"flow.{spec['via']}")(ix)


async def seed_flavors(store: Store) -> None:
    for fid, name, ram, vcpus, disk in (
        ("1", "m1.tiny", 512, 1, 1),
        ("2", "m1.small", 2048, 1, 20),
        ("3", "m1.medium", 4096, 2, 40),
        ("4", "m1.large", 8192, 4, 80),
        ("5", "m1.huge", 65536, 8, 100),
    ):
        await store.create(
            "flavors",
            {
                "id": fid,
                "name": name,
                "ram": ram,
                "vcpus": vcpus,
                "disk": disk,
                "swap": 0,
                "OS-FLV-EXT-DATA:ephemeral": 0,
                "rxtx_factor": 1.0,
                "os-flavor-access:is_public": True,
                "OS-FLV-DISABLED:disabled": False,
            },
        )


def boot_body(**server: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "vm1",
        "imageRef": IMAGE_ID,
        "flavorRef": "1",
        "min_count": 1,
        "max_count": 1,
        "networks": [{"uuid": NETWORK_ID}],
        "block_device_mapping_v2": [dict(IMAGE_BDM)],
    }
    body.update(server)
    return {"server": body}


class RecordingBus:
    """A bus that records what is sent; calls are answered by `replies[method]`."""

    def __init__(self, replies: Mapping[str, Any] | None = None) -> None:
        self.sent: list[tuple[str, str, dict[str, Any], str | None]] = []
        self.replies = dict(replies or {})

    async def cast(
        self,
        topic: str,
        method: str,
        payload: dict[str, Any],
        *,
        host: str | None = None,
        context: dict[str, str] | None = None,
        checked_by: CheckedBy | None = None,
    ) -> None:
        self.sent.append(("cast", method, payload, host))

    async def call(
        self,
        topic: str,
        method: str,
        payload: dict[str, Any],
        *,
        host: str | None = None,
        context: dict[str, str] | None = None,
        timeout: float = 30.0,
        checked_by: CheckedBy | None = None,
    ) -> dict[str, Any]:
        self.sent.append(("call", method, payload, host))
        reply = self.replies[method]
        if callable(reply):
            reply = reply(payload)
            if asyncio.iscoroutine(reply):
                reply = await reply
        if isinstance(reply, BaseException):
            raise reply
        return reply  # type: ignore[no-any-return]

    async def fanout(
        self,
        topic: str,
        method: str,
        payload: dict[str, Any],
        *,
        hosts: Collection[str] | None = None,
        context: dict[str, str] | None = None,
    ) -> None:
        self.sent.append(("fanout", method, payload, ",".join(hosts) if hosts else None))


async def add_compute_node(
    store: Store,
    host: str,
    *,
    memory_mb: int = 16384,
    vcpus: int = 8,
    local_gb: int = 200,
    zone: str = "nova",
    heartbeat: float | None = None,
) -> None:
    """A compute node as conductor.compute_node_update records it."""
    import time

    info = stack_info()
    rt = make_runtime(info, "nova-conductor", store=store)
    await conductor.compute_node_update(
        msg_call(
            rt,
            "compute_node_update",
            {
                "nodes": [
                    {
                        "host": host,
                        "availability_zone": zone,
                        "resources": {
                            "vcpus": vcpus,
                            "memory_mb": memory_mb,
                            "local_gb": local_gb,
                            "hypervisor_type": "fake",
                            "hypervisor_hostname": host,
                        },
                    }
                ]
            },
        )
    )
    if heartbeat is not None:
        await store.update("compute_nodes", host, {"heartbeat": heartbeat})
    else:
        await store.update("compute_nodes", host, {"heartbeat": time.time()})


def instance_message(row: Mapping[str, Any]) -> dict[str, Any]:
    """The message type Instance of `row`, as nova-conductor answers it."""
    rt = make_runtime(stack_info(), "nova-conductor")
    return conductor.instance_info(msg_call(rt, "instance_get", {}), row)
