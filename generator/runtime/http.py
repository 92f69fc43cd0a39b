"""HTTP clients for every API, built from the IR (method and path per operationId)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cached_property
from typing import Any
from urllib.parse import quote

import httpx

from generator.runtime.config import StackConfig
from generator.runtime.errors import StepFailed
from generator.runtime.stackinfo import StackInfo

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
    ) -> None:
        self.info = info
        self.config = config
        # Base URLs by API name, for a stack found through its catalog instead of the config.
        self.endpoints = dict(endpoints or {})
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
            path = path.replace("{" + name + "}", quote(str(value), safe=""))
        if "{" in path:
            raise ValueError(f"{operation_id}: path parameters missing in {path}")
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
        return await self._http.request(
            method, self.base_url(api) + path, params=params, headers=hdrs, **kwargs
        )

    async def aclose(self) -> None:
        await self._http.aclose()
