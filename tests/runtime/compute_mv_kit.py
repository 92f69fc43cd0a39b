"""The compute microversion tests' call: one request at a version, over HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from tests.runtime.test_hardening import Running


def at(
    stack: Running,
    version: str,
    method: str,
    path: str,
    token: str | None = None,
    **kw: Any,
) -> httpx.Response:
    """`method path` at microversion `version` (the administrator's token unless given)."""
    headers = {"X-OpenStack-Nova-API-Version": version}
    if token is not None:
        headers["X-Auth-Token"] = token
    resp: httpx.Response = stack.http("compute", method, path, headers=headers, **kw)
    return resp
