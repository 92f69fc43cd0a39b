"""The request path's parts that are built once or only when read (issues 12 and 17): an
in-process answer's request, request and message ids, the path a call records, base URLs,
the redactor's one-pass search."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from specstack_runtime.app import _path
from specstack_runtime.config import StackConfig
from specstack_runtime.context import new_request_id, random_uuid
from specstack_runtime.errors import StepFailed
from specstack_runtime.http import ClientSet, expect
from specstack_runtime.localhttp import LocalResponse, LocalTransport
from specstack_runtime.redact import REDACTED, Redactor
from tests.runtime.netvol_fakes import stack_info


def test_random_ids_are_version_4_uuids() -> None:
    made = {random_uuid() for _ in range(500)}
    assert len(made) == 500
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    rid = new_request_id()
    assert rid.startswith("req-") and uuid.UUID(rid[4:]).version == 4


@pytest.mark.parametrize(
    "path", ["/v2.1/servers", "/a?b#c\\d", "/x\ty\nz\r", "//two", "/caf\u00e9/%41", "/"]
)
def test_the_recorded_path_is_what_the_url_says(path: str) -> None:
    scope = {
        "type": "http",
        "path": path,
        "headers": [(b"host", b"127.0.0.1:8774")],
        "query_string": b"",
        "server": ("127.0.0.1", 8774),
        "scheme": "http",
        "root_path": "",
    }
    request = Request(scope)
    assert _path(request) == request.url.path


def _local_clients(tmp_path: Path) -> ClientSet:
    async def thing(request: Request) -> Response:
        if request.path_params["name"] == "gone":
            return JSONResponse({"itemNotFound": {"message": "no such thing"}}, 404)
        return JSONResponse({"name": request.path_params["name"], "q": request.url.query})

    app = Starlette(routes=[Route("/things/{name}", thing, methods=["GET", "DELETE"])])
    local = LocalTransport()
    local.mount("127.0.0.1", 9791, app)
    return ClientSet(
        stack_info(),
        StackConfig(data_dir=tmp_path),
        endpoints={"things": "http://127.0.0.1:9791"},
        local=local,
    )


def test_an_in_process_answer_names_its_request_when_asked(tmp_path: Path) -> None:
    clients = _local_clients(tmp_path)

    async def go() -> tuple[LocalResponse, LocalResponse]:
        ok = await clients.request("things", "GET", "/things/a", query={"x": 1})
        gone = await clients.request("things", "DELETE", "/things/gone")
        await clients.aclose()
        assert isinstance(ok, LocalResponse) and isinstance(gone, LocalResponse)
        return ok, gone

    ok, gone = asyncio.run(go())
    assert ok.status_code == 200
    assert ok.json() == {"name": "a", "q": "x=1"}
    # the body as the app sent it, however it is read
    assert ok.content == ok.read() == b"".join(ok.iter_bytes()) == ok.text.encode()
    assert ok.headers["content-length"] == str(len(ok.content))
    assert ok.headers["content-type"] == "application/json"
    assert ok.request.method == "GET"
    assert str(ok.url) == "http://127.0.0.1:9791/things/a"
    with pytest.raises(StepFailed, match="DELETE /things/gone answered 404: no such thing"):
        expect(gone, 200)
    replaced = ok.request = gone.request
    assert ok.request is replaced


def test_base_urls_are_worked_out_once_per_config(tmp_path: Path) -> None:
    info = stack_info()
    one, other = StackConfig(data_dir=tmp_path), StackConfig(data_dir=tmp_path, base_port=20000)
    api = info.api_of_type("compute")
    component = info.model.api(api).component
    first = info.endpoint(api, one)
    assert info.endpoint(api, one) is first  # the same string: not made again
    assert first == f"http://{one.host_address}:{info.port(component, one)}"
    assert (
        info.endpoint(api, other)
        == f"http://{other.host_address}:{20000 + info.listening.index(component)}"
    )
    urls = info.urls(one)
    assert urls[component] == first and set(urls) == set(info.listening)
    urls[component] = "changed"  # a copy: what the stack knows is not changed
    assert info.urls(one)[component] == first


def test_a_payload_is_walked_only_when_a_secret_can_be_in_it() -> None:
    redact = Redactor(["x-auth-token"], [("server", "adminPass"), ("token", "id")])
    server = {"server": {"id": "s1", "name": "vm", "token": "not-a-pair-here"}}
    assert redact(server) is server
    assert redact(b'{"server": {"id": "s1"}}') == b'{"server": {"id": "s1"}}'
    assert redact({"server": [{"id": "s1", "adminPass": "pw"}]}) == {
        "server": [{"id": "s1", "adminPass": REDACTED}]
    }
    assert redact({"a": [1, {"token": {"id": "t", "n": [2]}}], "b": "c"}) == {
        "a": [1, {"token": {"id": REDACTED, "n": [2]}}],
        "b": "c",
    }
    assert redact({"headers": {"X-Auth-Token": "t"}}) == {"headers": {"X-Auth-Token": REDACTED}}
