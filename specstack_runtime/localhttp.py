"""In-process HTTP between the components of one process.

In embedded mode every API lives in this process; a request from one component
to another goes through the callee's app (routing, auth, errors, headers: the same
code a network request runs) without a socket on either side. An API's app
(`app.ApiStarlette`) answers with its response object, called without the ASGI
layers a socket's request passes (see `ApiStarlette.answer`); any other app is
called as ASGI. Requests for any other address go out over the network as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from starlette.responses import Response
from starlette.types import Message


class LocalTransport(httpx.AsyncBaseTransport):
    def __init__(self, fallback: httpx.AsyncBaseTransport | None = None) -> None:
        self._apps: dict[tuple[str, int], Any] = {}
        self._fallback = fallback or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100)
        )

    def mount(self, host: str, port: int, app: Any) -> None:
        self._apps[(host, port)] = app

    def app_at(self, host: str, port: int) -> Any:
        return self._apps.get((host, port))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        app = self._apps.get((url.host, url.port or 80))
        if app is None:
            return await self._fallback.handle_async_request(request)
        body = await request.aread()
        status, headers, content = await call_app(
            app,
            request.method,
            url.scheme,
            url.host,
            url.port or 80,
            url.path,
            url.query,
            [(k.lower(), v) for k, v in request.headers.raw],
            body,
        )
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        await self._fallback.aclose()


class LocalResponse(httpx.Response):
    """An in-process call's answer. Its request (method and URL: what an error's message
    names) is built when something reads it; nearly every answer is read for its status
    and body only, and a request costs as much again as its answer. Its body is the app's
    bytes as they are (an app of this process encodes none): httpx would read them back
    through its stream and content decoders, a third of what the answer costs."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        content: bytes,
        method: str,
        url: Callable[[], httpx.URL],
    ) -> None:
        # a stream given is not read (nor are content headers added: the app's are there)
        super().__init__(status, headers=headers, stream=httpx.ByteStream(content))
        self._body = content
        self._asked: tuple[str, Callable[[], httpx.URL]] | None = (method, url)
        self._made: httpx.Request | None = None

    @property
    def content(self) -> bytes:
        return self._body

    def read(self) -> bytes:
        return self._body

    async def aread(self) -> bytes:
        return self._body

    @property
    def request(self) -> httpx.Request:
        if self._made is None and self._asked is not None:
            method, url = self._asked
            self._made = httpx.Request(method, url())
        if self._made is None:
            raise RuntimeError("The request instance has not been set on this response.")
        return self._made

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._made, self._asked = value, None


async def call_app(
    app: Any,
    method: str,
    scheme: str,
    host: str,
    port: int,
    path: str,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One HTTP exchange with an ASGI app, without sockets: (status, headers, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": (host, port),
    }
    delivered = False
    status = 500
    out_headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, out_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    answer = getattr(app, "answer", None)  # an API's app (app.ApiStarlette): no ASGI layers
    response: Response | None = await answer(scope, receive) if answer is not None else None
    if response is None:
        await app(scope, receive, send)
    elif type(response).__call__ is Response.__call__:  # a whole body: taken as it is
        if response.background is not None:
            await response.background()
        return response.status_code, list(response.raw_headers), bytes(response.body)
    else:  # a stream: what it sends
        await response(scope, receive, send)
    return status, out_headers, b"".join(chunks)
