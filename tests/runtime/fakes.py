"""Shared helpers for behaviour tests.

`Stack` wires the identity, image and object-store runtimes of the real spec
together in one process: real `Store`s on in-memory SQLite, real
`TokenValidator`s, and an `InProcessClients` that stands in for the HTTP
`ClientSet` by running the callee's behaviour (after validating the token the
way the generated app would), so an image upload really lands in the
`ObjectStore` and a service really validates tokens with the identity service.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from jsonschema import Draft202012Validator

from generator.pipeline.build_ir import build_ir
from generator.pipeline.load import load_spec, to_plain
from specstack_runtime import registry
from specstack_runtime.auth import TokenValidator
from specstack_runtime.behaviours import identity, identity_bootstrap, image, objects  # noqa: F401
from specstack_runtime.config import StackConfig
from specstack_runtime.context import AuthContext, Call, Reply
from specstack_runtime.errors import ApiError, Unauthorized
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import Store, TableSpec

SPEC = Path(__file__).resolve().parents[2] / "spec"

T = TypeVar("T")


@functools.lru_cache(maxsize=1)
def ir_json() -> str:
    spec, problems = load_spec(SPEC)
    assert not problems, problems
    return build_ir(spec).to_json()


def stack_info() -> StackInfo:
    # the API documents (secrets, schemas) are the generated ones beside the spec
    return StackInfo(json.loads(ir_json()), SPEC.parent / "generated")


@functools.lru_cache(maxsize=8)
def openapi(api: str) -> dict[str, Any]:
    from ruamel.yaml import YAML

    doc: dict[str, Any] = to_plain(YAML(typ="rt").load((SPEC / "apis" / f"{api}.yaml").read_text()))
    return doc


def operation(api: str, operation_id: str) -> dict[str, Any]:
    for item in openapi(api)["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                return op
    raise KeyError(operation_id)


def check_response(api: str, operation_id: str, reply: Reply) -> None:
    """Validate a JSON reply against the operation's response schema for its status."""
    responses = operation(api, operation_id)["responses"]
    if reply.status == 400 and "400" not in responses:
        return  # bad input is always a 400, even where the spec forgot to list it
    assert str(reply.status) in responses, f"{operation_id} may not answer {reply.status}"
    content = responses[str(reply.status)].get("content") or {}
    schema = (content.get("application/json") or {}).get("schema")
    if schema is None or isinstance(reply.body, bytes | bytearray) or reply.body is None:
        return
    root = {**schema, "components": openapi(api)["components"]}
    errors = sorted(Draft202012Validator(root).iter_errors(reply.body), key=str)
    assert not errors, (
        f"{operation_id} {reply.status}: {errors[0].message} at {list(errors[0].absolute_path)}"
    )


def tables_of(info: StackInfo, component: str) -> list[TableSpec]:
    database = info.components[component]["database"]
    return [TableSpec(t["name"], tuple(t["indexes"])) for t in info.components[database]["tables"]]


def make_store(info: StackInfo, component: str) -> Store:
    store = Store("sqlite://", tables=tables_of(info, component))
    store.create_schema()
    return store


class NullBus:
    async def cast(self, *args: Any, **kwargs: Any) -> None:
        return None


class NullTrace:
    def record(self, *args: Any, **kwargs: Any) -> None:
        return None


def _response(
    method: str, status: int, body: Any, headers: Mapping[str, str], ctype: str | None
) -> httpx.Response:
    hdrs = dict(headers)
    if isinstance(body, bytes | bytearray):
        content = bytes(body)
        hdrs.setdefault("Content-Type", ctype or "application/octet-stream")
    elif body is None:
        content = b""
    else:
        content = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", ctype or "application/json")
    return httpx.Response(
        status, headers=hdrs, content=content, request=httpx.Request(method, "http://in-process/")
    )


def _authorize(
    info: StackInfo, op: Mapping[str, Any], auth: AuthContext, path_params: Mapping[str, str]
) -> None:
    """The operation's policy rule, as the HTTP app checks it before the behaviour runs."""
    templates = {p["name"]: p["policy_target"] for p in op["parameters"] if p.get("policy_target")}
    info.policy.authorize(op["operation_id"], op.get("policy"), auth, path_params, templates)


def _behaviour(info: StackInfo, api: str, op: Mapping[str, Any]) -> Callable[..., Any]:
    """What serves the operation (its handler's behaviour and arguments, as generated code
    runs it): a behaviour of the library, or the resource engine."""
    component = info.apis[api]["component"]
    handler = next(
        h
        for h in info.ir["handlers"]
        if h["component"] == component and h["trigger"] == op["operation_id"]
    )
    fn = registry.get(handler["behaviour"])
    args = dict(handler.get("args") or {})

    async def serve(call: Call) -> Any:
        call.args = {**args, **call.args}
        return await fn(call)

    return serve


async def serve_operation(info: StackInfo, api: str, call: Call) -> Reply:
    """Run an operation as the generated service does: its policy rule, then what serves it."""
    op = next(o for o in info.apis[api]["operations"] if o["operation_id"] == call.trigger)
    call.policy = op.get("policy")
    if call.auth is not None:
        _authorize(info, op, call.auth, call.path_params)
    reply: Reply = await _behaviour(info, api, op)(call)
    return reply


class InProcessClients:
    """A ClientSet look-alike that runs the callee's behaviour in this process."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.calls: list[tuple[str, str, dict[str, str]]] = []

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
        op = next(
            o for o in self.stack.info.apis[api]["operations"] if o["operation_id"] == operation_id
        )
        params = {k: str(v) for k, v in (path_params or {}).items()}
        self.calls.append((api, operation_id, params))
        rt = self.stack.runtimes[api]
        auth: AuthContext | None = None
        if op["requires_token"]:
            try:
                assert rt.auth is not None
                auth = await rt.auth.validate(token or "")
            except Unauthorized as exc:
                return _response(
                    op["method"],
                    401,
                    {"error": {"code": 401, "message": exc.message, "title": "Unauthorized"}},
                    {},
                    None,
                )
        call = Call(
            rt=rt,
            trigger=operation_id,
            kind="operation",
            request_id="req-inproc",
            global_request_id=(context or {}).get("global_request_id", "req-inproc"),
            method=op["method"],
            path=op["path"],
            path_params=params,
            query={k: [str(v)] for k, v in (query or {}).items() if v is not None},
            headers=dict(headers or {}),
            body=None if isinstance(body, bytes | bytearray) else body,
            raw_body=bytes(body) if isinstance(body, bytes | bytearray) else b"",
            auth=auth,
            token=token,
            policy=op.get("policy"),
        )
        try:
            if auth is not None:
                _authorize(self.stack.info, op, auth, params)
            reply = await _behaviour(self.stack.info, api, op)(call)
        except ApiError as exc:
            err = {"error": {"code": exc.status, "message": exc.message, "title": exc.title}}
            return _response(op["method"], exc.status, err, exc.headers, None)
        return _response(op["method"], reply.status, reply.body, reply.headers, reply.content_type)


class Stack:
    """The identity, image and object-store services of the spec, in one process."""

    def __init__(self, tmp_path: Path, *, info: StackInfo | None = None, **config: Any) -> None:
        self.info = info or stack_info()
        self.config = StackConfig(
            data_dir=tmp_path, bcrypt_rounds=4, service_password="x", **config
        )
        self.clients = InProcessClients(self)
        self.shared: dict[str, Any] = {}
        self.runtimes: dict[str, ServiceRuntime] = {}
        for api in ("identity", "image", "object-store"):
            comp = self.info.api_component(api)
            rt = ServiceRuntime(
                component=comp["name"],
                project=comp["project"],
                host="controller",
                info=self.info,
                config=self.config,
                bus=NullBus(),  # type: ignore[arg-type]
                trace=NullTrace(),  # type: ignore[arg-type]
                clients=self.clients,  # type: ignore[arg-type]
                store=make_store(self.info, comp["name"]) if comp.get("database") else None,
                data_dir=tmp_path,
                shared=self.shared,
            )
            self.runtimes[api] = rt
        krt = self.keystone
        self.keystone.auth = TokenValidator(
            self.info,
            self.config,
            self.clients,  # type: ignore[arg-type]
            service_user=krt.project,
            local=lambda token: identity.token_context(krt, token),
        )
        for api in ("image", "object-store"):
            rt = self.runtimes[api]
            rt.auth = TokenValidator(self.info, self.config, self.clients, service_user=rt.project)  # type: ignore[arg-type]

    @property
    def keystone(self) -> ServiceRuntime:
        return self.runtimes["identity"]

    @property
    def glance(self) -> ServiceRuntime:
        return self.runtimes["image"]

    @property
    def swift(self) -> ServiceRuntime:
        return self.runtimes["object-store"]

    async def start(self) -> Stack:
        await identity_bootstrap.bootstrap(self.keystone)
        return self

    async def login(
        self, user: str = "admin", password: str | None = None, project: str = "admin"
    ) -> AuthContext:
        if password is None:
            password = {"admin": self.config.admin_password, "demo": self.config.demo_password}.get(
                user, self.config.service_password
            )
        _, ctx = await identity.issue_service_token(self.keystone, user, password, project)
        return ctx

    def call(
        self,
        api: str,
        operation_id: str,
        *,
        auth: AuthContext | None = None,
        body: Any = None,
        raw_body: bytes = b"",
        path_params: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Call:
        op = next(o for o in self.info.apis[api]["operations"] if o["operation_id"] == operation_id)
        q: dict[str, list[str]] = {}
        for k, v in (query or {}).items():
            q[k] = [str(x) for x in v] if isinstance(v, list) else [str(v)]
        return Call(
            rt=self.runtimes[api],
            trigger=operation_id,
            kind="operation",
            request_id="req-1",
            global_request_id="req-1",
            method=op["method"],
            path=op["path"],
            path_params=dict(path_params or {}),
            query=q,
            headers=dict(headers or {}),
            body=body,
            raw_body=raw_body,
            auth=auth,
            token=auth.token if auth else None,
            policy=op.get("policy"),
        )

    async def invoke(
        self, api: str, operation_id: str, *, check: bool = True, **kwargs: Any
    ) -> Reply:
        """Run the operation's behaviour; check a JSON answer against the spec's schema."""
        op = next(o for o in self.info.apis[api]["operations"] if o["operation_id"] == operation_id)
        call = self.call(api, operation_id, **kwargs)
        if call.auth is not None:
            _authorize(self.info, op, call.auth, call.path_params)
        reply: Reply = await _behaviour(self.info, api, op)(call)
        if check:
            check_response(api, operation_id, reply)
        return reply
