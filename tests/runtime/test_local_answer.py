"""An API's in-process answer (issues 12 and 17): `localhttp.call_app` takes the matched
endpoint's response from the app (`ApiStarlette.answer`) without its ASGI layers; what it
answers is what the whole app answers through ASGI, errors and unrouted requests too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.app import ApiApp, ApiStarlette, Route
from specstack_runtime.context import Reply
from specstack_runtime.errors import Conflict
from specstack_runtime.flow import Flow, HandlerSpec
from specstack_runtime.localhttp import call_app
from specstack_runtime.stackinfo import StackInfo
from tests.runtime.test_resource_engine import ADMIN, Placement, placement_info


class _Validator:
    async def validate(self, token: str) -> Any:
        return ADMIN


class _Layers:
    """The same app called as ASGI only (no `answer`): what a socket's request gets."""

    def __init__(self, app: ApiStarlette) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def info(tmp_path_factory: pytest.TempPathFactory) -> StackInfo:
    return placement_info(tmp_path_factory.mktemp("placement-local"))


def _app(info: StackInfo, tmp_path: Path) -> ApiStarlette:
    async def things(flow: Flow) -> None:
        body = flow.call.body or {}
        if body.get("clash"):
            raise Conflict("It clashes.")
        if body.get("broken"):
            raise RuntimeError("a bug")
        flow.call.reply = Reply(201, {"got": body, "name": flow.call.path_params.get("name")})

    handler = HandlerSpec(
        component="placement-api", kind="operation", trigger="putThing", behaviour=None,
        on_error=None, run=things,
    )  # fmt: skip
    routes = [
        Route(
            "PUT", "/things/{name}", "putThing", handler, request_content_type="application/json"
        ),
        Route("GET", "/things/{name}", "getThing", handler),
    ]
    placement = Placement(info, tmp_path)
    placement.rt.auth = _Validator()  # type: ignore[assignment]
    api = ApiApp(placement.rt, error_format="keystone", identity_url="http://keystone.test/v3")
    return api.build(routes, title="placement")  # type: ignore[return-value]


REQUESTS = [
    ("PUT", "/things/a", b'{"x": 1}'),  # answered
    ("GET", "/things/a", b""),
    ("HEAD", "/things/a", b""),  # GET's route
    ("PUT", "/things/a", b'{"clash": true}'),  # an API error in the API's format
    ("PUT", "/things/a", b'{"broken": true}'),  # a bug: 500 in the API's format
    ("PUT", "/things/a", b"{not json"),  # 400
    ("DELETE", "/things/a", b""),  # 405: no route of the method (the whole app)
    ("GET", "/nothing/here", b""),  # 404 (the whole app)
    ("GET", "/specstack/health", b""),
]


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
def test_an_in_process_answer_is_what_the_app_answers_through_asgi(
    info: StackInfo, tmp_path: Path, method: str, path: str, body: bytes
) -> None:
    app = _app(info, tmp_path)
    headers = [(b"x-auth-token", b"t"), (b"content-type", b"application/json")]
    if body:
        headers.append((b"content-length", str(len(body)).encode()))

    async def both() -> list[tuple[int, dict[bytes, bytes], bytes]]:
        out = []
        for target in (app, _Layers(app)):
            status, raw, content = await call_app(
                target, method, "http", "127.0.0.1", 8778, path, b"", list(headers), body
            )
            # every answer has its own request id
            out.append((status, {k: v for k, v in raw if k != b"x-openstack-request-id"}, content))
        return out

    direct, layered = asyncio.run(both())
    assert direct == layered
    assert direct[0] != 500 or b"erred" in direct[2]


def test_a_routed_request_skips_the_layers_an_unrouted_one_takes_them(
    info: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(info, tmp_path)
    layered: list[str] = []
    whole = ApiStarlette.__call__

    async def counted(self: ApiStarlette, scope: Any, receive: Any, send: Any) -> None:
        layered.append(scope["path"])
        await whole(self, scope, receive, send)

    monkeypatch.setattr(ApiStarlette, "__call__", counted)

    async def go() -> list[int]:
        got = []
        for path in ("/things/a", "/nothing/here"):
            status, _, _ = await call_app(
                app, "GET", "http", "127.0.0.1", 8778, path, b"", [(b"x-auth-token", b"t")], b""
            )
            got.append(status)
        return got

    assert asyncio.run(go()) == [201, 404]
    assert layered == ["/nothing/here"]
