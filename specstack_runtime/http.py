"""HTTP clients for every API, built from the IR (method and path per operationId)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cached_property, lru_cache
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from specstack_runtime.config import StackConfig
from specstack_runtime.errors import StepFailed
from specstack_runtime.localhttp import LocalResponse, LocalTransport, call_app
from specstack_runtime.microversions import Microversions, parse
from specstack_runtime.stackinfo import StackInfo

FLOW_HEADERS = {
    "global_request_id": "X-OpenStack-Request-ID",
    "sequence": "X-Specstack-Sequence",
    "step": "X-Specstack-Step",
}


def flow_headers(context: Mapping[str, str] | None) -> dict[str, str]:
    """The headers that carry a flow's identity to the next service."""
    if not context:
        return {}
    return {h: context[k] for k, h in FLOW_HEADERS.items() if context.get(k)}


def error_message(resp: httpx.Response) -> str:
    """The human message inside any OpenStack service's error body."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason_phrase
    if isinstance(body, dict) and len(body) == 1:
        inner = next(iter(body.values()))
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return json.dumps(body)[:300]


def expect(resp: httpx.Response, *statuses: int) -> httpx.Response:
    """`resp` if its status is one of `statuses`, else StepFailed naming what went wrong."""
    if resp.status_code in statuses:
        return resp
    raise StepFailed(
        f"{resp.request.method} {resp.request.url.path} answered {resp.status_code}: "
        f"{error_message(resp)}",
        code=resp.status_code,
    )


class ClientSet:
    """One connection pool for all of a component's outgoing HTTP calls."""

    def __init__(
        self,
        info: StackInfo,
        config: StackConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        endpoints: Mapping[str, str] | None = None,
        local: LocalTransport | None = None,
    ) -> None:
        self.info = info
        self.config = config
        # Base URLs by API name, for a stack found through its catalog instead of the config.
        self.endpoints = dict(endpoints or {})
        # This process's own APIs, answered without a socket (embedded mode).
        self.local = local
        self._hosts: dict[str, tuple[str, int]] = {}
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
        )

    @cached_property
    def _operations(self) -> dict[tuple[str, str], tuple[str, str]]:
        return {
            (api["name"], op["operation_id"]): (op["method"], op["path"])
            for api in self.info.ir["apis"]
            for op in api["operations"]
        }

    @cached_property
    def _match_path(self) -> set[tuple[str, str, str]]:
        """(api, operation, parameter) of the path parameters that may hold "/" (swift's
        object names): sent with their slashes, as swift's clients send them."""
        return {
            (api["name"], op["operation_id"], p["name"])
            for api in self.info.ir["apis"]
            for op in api["operations"]
            for p in op.get("parameters") or ()
            if p.get("match_path")
        }

    @cached_property
    def _versions(self) -> dict[tuple[str, str], dict[str, str]]:
        """The microversion headers of the operations a version brings (`x-specstack-since`):
        a caller that names none asks for that version, as nova asks cinder for 3.44 to
        complete an attachment."""
        found: dict[tuple[str, str], dict[str, str]] = {}
        for api in self.info.ir["apis"]:
            mv = api.get("microversion")
            if not mv:
                continue
            versions = Microversions.of(mv)
            for op in api["operations"]:
                if op.get("since"):
                    found[(api["name"], op["operation_id"])] = {
                        k: v
                        for k, v in versions.answer_headers(parse(op["since"])).items()
                        if k != "Vary"
                    }
        return found

    def base_url(self, api: str) -> str:
        if api in self.endpoints:
            return self.endpoints[api]
        return self.info.endpoint(api, self.config)

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
        try:
            method, template = self._operations[(api, operation_id)]
        except KeyError:
            raise KeyError(f"the {api} API has no operation {operation_id!r}") from None
        path = template
        for name, value in (path_params or {}).items():
            safe = "/" if (api, operation_id, name) in self._match_path else ""
            path = path.replace("{" + name + "}", quote(str(value), safe=safe))
        if "{" in path:
            raise ValueError(f"{operation_id}: path parameters missing in {path}")
        asked = self._versions.get((api, operation_id))
        if asked and not {k.lower() for k in headers or {}} & {k.lower() for k in asked}:
            headers = {**asked, **(headers or {})}
        return await self.request(
            api, method, path, body=body, query=query, headers=headers, token=token, context=context
        )

    async def request(
        self,
        api: str,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        context: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        hdrs = {"Accept": "application/json", **flow_headers(context), **(headers or {})}
        if token:
            hdrs["X-Auth-Token"] = token
        kwargs: dict[str, Any] = {}
        if isinstance(body, bytes | bytearray):
            kwargs["content"] = bytes(body)
            hdrs.setdefault("Content-Type", "application/octet-stream")
        elif body is not None:
            kwargs["content"] = json.dumps(body, separators=(",", ":")).encode()
            hdrs.setdefault("Content-Type", "application/json")
        params = {k: v for k, v in (query or {}).items() if v is not None}
        base = self.base_url(api)
        app = self._local_app(base)
        if app is not None:
            return await self._local(app, base, method, path, params, hdrs, kwargs.get("content"))
        return await self._http.request(method, base + path, params=params, headers=hdrs, **kwargs)

    def _local_app(self, base: str) -> Any:
        if self.local is None:
            return None
        host_port = self._hosts.get(base)
        if host_port is None:
            url = httpx.URL(base)
            host_port = self._hosts[base] = (url.host, url.port or 80)
        return self.local.app_at(*host_port)

    async def _local(
        self,
        app: Any,
        base: str,
        method: str,
        path: str,
        params: Mapping[str, Any],
        headers: dict[str, str],
        content: bytes | None,
    ) -> httpx.Response:
        """A call to an API of this process: straight into its ASGI app (see localhttp)."""
        host, port = self._hosts[base]
        query = urlencode(_flatten(params)).encode() if params else b""
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        body = content or b""
        if body:
            raw.append((b"content-length", str(len(body)).encode()))
        status, out_headers, out = await call_app(
            app, method, "http", host, port, path, query, raw, body
        )
        return LocalResponse(status, out_headers, out, method, lambda: _url(f"{base}{path}"))

    async def aclose(self) -> None:
        await self._http.aclose()


@lru_cache(maxsize=1024)
def _url(text: str) -> httpx.URL:
    """`text` parsed (httpx checks a URL character by character): the URLs components call
    each other at repeat (a token's validation, an image, a flavor), parsed once each."""
    return httpx.URL(text)


def _flatten(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in params.items():
        for item in v if isinstance(v, list | tuple) else [v]:
            out.append((k, "true" if item is True else "false" if item is False else str(item)))
    return out
