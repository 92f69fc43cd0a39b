"""In-process HTTP between the components of one process.

In embedded mode every API lives in this process; a request from one component
to another goes through the callee's full ASGI app (routing, auth, errors,
headers: the same code a network request runs) without a socket on either side.
Requests for any other address go out over the network as usual.
"""

from __future__ import annotations

from typing import Any

import httpx


class LocalTransport(httpx.AsyncBaseTransport):
    def __init__(self, fallback: httpx.AsyncBaseTransport | None = None) -> None:
        self._apps: dict[tuple[str, int], httpx.ASGITransport] = {}
        self._fallback = fallback or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100)
        )

    def mount(self, host: str, port: int, app: Any) -> None:
        self._apps[(host, port)] = httpx.ASGITransport(app=app, client=(host, 0))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        local = self._apps.get((request.url.host, request.url.port or 80))
        if local is not None:
            return await local.handle_async_request(request)
        return await self._fallback.handle_async_request(request)

    async def aclose(self) -> None:
        await self._fallback.aclose()
