"""Shared fixtures for the network and volume behaviour tests.

A real Store on in-memory SQLite with the tables the spec declares, a
ServiceRuntime per component built from the real IR, an InProcessBus on which
the spec's consumers can be wired to their real handlers, and a validator for
the OpenAPI response schemas of the spec.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

from generator.pipeline.build_ir import build_ir
from generator.pipeline.load import load_spec
from specstack_runtime import registry
from specstack_runtime.bus import Envelope, InProcessBus
from specstack_runtime.config import StackConfig
from specstack_runtime.context import AuthContext, Call, Interaction, Reply
from specstack_runtime.errors import ApiError
from specstack_runtime.messaging import send
from specstack_runtime.services import ServiceRuntime
from specstack_runtime.stackinfo import StackInfo
from specstack_runtime.store import Store, TableSpec

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "spec"

PROJECT = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
OTHER_PROJECT = "0f9e8d7c6b5a49382716a5b4c3d2e1f0"


@cache
def ir_json() -> str:
    loaded, diagnostics = load_spec(SPEC)
    assert not diagnostics, diagnostics
    return build_ir(loaded).to_json()


def stack_info(mutate: Callable[[dict[str, Any]], None] | None = None) -> StackInfo:
    ir = json.loads(ir_json())
    if mutate is not None:
        mutate(ir)
    return StackInfo(ir)


def tables_of(info: StackInfo, project: str) -> list[TableSpec]:
    for comp in info.components.values():
        if comp["kind"] == "database" and comp["project"] == project:
            return [TableSpec(t["name"], tuple(t["indexes"])) for t in comp["tables"]]
    raise KeyError(project)


def make_store(info: StackInfo, project: str) -> Store:
    store = Store("sqlite://", tables=tables_of(info, project))
    store.create_schema()
    return store


class FakeTrace:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record(self, **event: Any) -> None:
        self.events.append(event)


class FakeClients:
    """No HTTP goes out of these behaviours; any attempt is a test failure."""

    async def call(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"unexpected HTTP call {args} {kwargs}")


def make_rt(
    info: StackInfo,
    component: str,
    data_dir: Path,
    *,
    store: Store | None = None,
    bus: InProcessBus | None = None,
    host: str | None = None,
) -> ServiceRuntime:
    comp = info.components[component]
    config = StackConfig(data_dir=data_dir)
    return ServiceRuntime(
        component=component,
        project=comp["project"],
        host=host or info.node_hosts(comp["nodes"][0], config)[0],
        info=info,
        config=config,
        bus=bus or InProcessBus(),
        trace=FakeTrace(),  # type: ignore[arg-type]
        clients=FakeClients(),  # type: ignore[arg-type]
        store=store,
        data_dir=data_dir,
    )


def auth(
    project: str | None = PROJECT, roles: tuple[str, ...] = ("member", "reader"), user: str = "u1"
) -> AuthContext:
    return AuthContext(
        token=f"tok-{user}",
        user_id=user * 8 if len(user) < 32 else user,
        user_name=user,
        project_id=project,
        project_name="demo",
        domain_id="default",
        roles=roles,
        expires_at="2099-01-01T00:00:00Z",
    )


ADMIN = auth(PROJECT, ("admin", "member", "reader"), "admin")
USER = auth()
OTHER = auth(OTHER_PROJECT, user="u2")


def make_call(
    rt: ServiceRuntime,
    trigger: str,
    *,
    body: Any = None,
    path_params: dict[str, str] | None = None,
    query: dict[str, list[str]] | None = None,
    who: AuthContext | None = USER,
    sequence: str | None = None,
    headers: dict[str, str] | None = None,
) -> Call:
    return Call(
        rt=rt,
        trigger=trigger,
        kind="operation",
        request_id="req-test",
        global_request_id="req-test",
        sequence=sequence,
        auth=who,
        token=who.token if who is not None else None,  # the request's X-Auth-Token
        path_params=dict(path_params or {}),
        query=dict(query or {}),
        headers=headers or {"Host": "cloud.example:1234"},
        body=body,
    )


def interaction(call: Call, message: str, label: str = "x") -> Interaction:
    """A step that sends `message` for real (through the payload schema check)."""

    async def invoke(payload: dict[str, Any], host: str | None = None) -> Any:
        return await send(call, message, payload, host=host)

    return Interaction(
        call=call,
        label=label,
        source=call.rt.component,
        target="?",
        via="amqp",
        name=message,
        invoke=invoke,
    )


async def wire(bus: InProcessBus, rt: ServiceRuntime) -> None:
    """Subscribe `rt`'s component to the messages it consumes, dispatching by method."""
    queues: dict[tuple[str, str | None, bool], dict[str, Any]] = {}
    for consumed in rt.info.components[rt.component]["consumes"]:
        msg = rt.info.messages[consumed["message"]]
        fanout = msg["pattern"] == "fanout"
        host = rt.host if msg["per_host"] or fanout else None  # as start_consumers
        # the handler and the consumer's static args (as the generated services give them)
        queues.setdefault((msg["topic"], host, fanout), {})[msg["method"]] = (
            registry.get(consumed["behaviour"]),
            dict(consumed.get("args") or {}),
        )
    for (topic, host, fanout), handlers in queues.items():

        async def handle(
            env: Envelope, handlers: dict[str, Any] = handlers
        ) -> dict[str, Any] | None:
            handler, args = handlers[env.method]
            call = Call(
                rt=rt,
                trigger=env.method,
                kind="message",
                request_id=env.context.get("request_id", "req-bus"),
                global_request_id=env.context.get("global_request_id", "req-bus"),
                payload=env.payload,
                context=env.context,
                args=args,
                token=env.context.get("auth_token"),  # as consumers.py gives it
            )
            result: dict[str, Any] | None = await handler(call)
            return result

        await bus.subscribe(topic, handle, host=host, fanout=fanout)


# -- OpenAPI response schemas --------------------------------------------------------------


@cache
def _api_doc(name: str) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe", pure=True).load(
        (SPEC / "apis" / f"{name}.yaml").read_text()
    )
    return data


def response_schema(api: str, operation_id: str, status: int) -> dict[str, Any] | None:
    doc = _api_doc(api)
    for methods in doc["paths"].values():
        for op in methods.values():
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                resp = op["responses"][str(status)]
                content = resp.get("content")
                if not content:
                    return None
                schema = copy.deepcopy(content["application/json"]["schema"])
                return {**schema, "components": doc["components"]}
    raise KeyError(operation_id)


def check_reply(api: str, operation_id: str, reply: Reply, status: int) -> Any:
    """Assert the reply's status and that its body matches the operation's schema."""
    assert isinstance(reply, Reply)
    assert reply.status == status, (reply.status, reply.body)
    schema = response_schema(api, operation_id, status)
    if schema is None:
        assert reply.body is None, reply.body
        return None
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(reply.body), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    return reply.body


async def expect_error(
    coro: Awaitable[Any], status: int, kind: str | None = None, match: str | None = None
) -> ApiError:
    try:
        await coro
    except ApiError as exc:
        assert exc.status == status, (exc.status, exc.kind, exc.message)
        if kind is not None:
            assert exc.kind == kind, (exc.kind, exc.message)
        if match is not None:
            assert match in exc.message, exc.message
        return exc
    raise AssertionError(f"expected an error {status}")
