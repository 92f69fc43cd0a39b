"""The indexed router answers every request as Starlette's own router does (the first
route that fully matches, 405 for a known path with another method, the trailing-slash
redirect, 404), while trying only the routes of the request's method and the path's literal
prefix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router

from specstack_runtime.localhttp import call_app
from specstack_runtime.routeindex import IndexedRouter
from tests.aio import arun

PATHS = [
    ("GET", "/"),
    ("GET", "/v2.1"),
    ("GET", "/v2.1/servers/detail"),
    ("GET", "/v2.1/servers/{server_id}"),
    ("DELETE", "/v2.1/servers/{server_id}"),
    ("POST", "/v2.1/servers"),
    ("GET", "/v2.1/flavors/{flavor_id}"),
    ("GET", "/v2/images/{image_id}/file"),
    ("GET", "/{account}/{container}"),
    ("PUT", "/v1/{account}/{name:path}"),
]

REQUESTS = [
    ("GET", "/"),
    ("GET", "/v2.1"),
    ("GET", "/v2.1/servers/detail"),  # the literal route before the parameter's
    ("GET", "/v2.1/servers/abc"),
    ("DELETE", "/v2.1/servers/abc"),
    ("PATCH", "/v2.1/servers/abc"),  # 405
    ("POST", "/v2.1/servers"),
    ("GET", "/v2.1/servers"),  # 405
    ("GET", "/v2.1/servers/"),  # a trailing slash: redirected
    ("GET", "/v2.1/flavors/1"),
    ("GET", "/v2/images/x/file"),
    ("GET", "/v2/images/x/file/"),
    ("GET", "/v2.1/nothing"),  # matched by /{account}/{container} only
    ("PUT", "/v1/AUTH_a/c/o/deep"),
    ("GET", "/nowhere/at/all/here"),  # 404
    ("HEAD", "/v2.1/flavors/1"),
    ("BREW", "/v2.1/servers/abc"),  # 405: a method no route has
]


def _routes() -> list[Route]:
    def endpoint(number: int) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            return PlainTextResponse(f"{number} {sorted(request.path_params.items())}")

        return answer

    return [Route(p, endpoint(i), methods=[m]) for i, (m, p) in enumerate(PATHS)]


async def _answers(router: Router) -> list[tuple[int, bytes, bytes]]:
    app = Starlette()
    app.router = router
    out = []
    for method, path in REQUESTS:
        status, headers, body = await call_app(
            app, method, "http", "testserver", 80, path, b"", [], b""
        )
        location = dict(headers).get(b"location", b"")
        out.append((status, body, location))
    return out


@arun
async def test_the_indexed_router_answers_as_starlettes_does() -> None:
    plain = await _answers(Router(_routes()))
    assert len(plain) == len(REQUESTS)
    indexed = await _answers(IndexedRouter(_routes()))
    assert indexed == plain
    # the answers are the routes' own (not all 404s)
    assert plain[2] == (200, b"2 []", b"")
    assert plain[3] == (200, b"3 [('server_id', 'abc')]", b"")
    assert plain[5][0] == 405
    assert plain[8][0] == 307 and plain[8][2].endswith(b"/v2.1/servers")
    assert plain[12] == (200, b"8 [('account', 'v2.1'), ('container', 'nothing')]", b"")
    assert plain[13][1] == b"9 [('account', 'AUTH_a'), ('name', 'c/o/deep')]"
    assert plain[14][0] == 404


def test_a_request_tries_only_the_routes_of_its_method_and_prefix() -> None:
    router = IndexedRouter(_routes())
    tried = router._candidates("GET", "/v2.1/servers/abc")
    paths = [r.path for r in tried if isinstance(r, Route)]
    # the prefix's GET routes and the parameter-first ones, in the router's order
    assert paths == [
        "/v2.1",
        "/v2.1/servers/detail",
        "/v2.1/servers/{server_id}",
        "/{account}/{container}",
    ]
    deletes = router._candidates("DELETE", "/v2.1/servers/abc")
    assert [getattr(r, "path", "") for r in deletes] == ["/v2.1/servers/{server_id}"]
    assert [getattr(r, "path", "") for r in router._candidates("GET", "/v2/images/x/file")] == [
        "/v2/images/{image_id}/file",
        "/{account}/{container}",
    ]
    # a method no route has tries none (Starlette's own routing answers its 405 or 404)
    assert router._candidates("BREW", "/v2.1/servers/abc") == []
