"""Keystone as the dashboard uses it: log in, change project, log out (revoke)."""

from __future__ import annotations

from typing import Any

import httpx

from specstack_runtime.http import error_message


class LoginFailed(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def token_auth(token: str, project_id: str) -> dict[str, Any]:
    """A new token from a valid one, scoped to `project_id` (changing project)."""
    return {
        "auth": {
            "identity": {"methods": ["token"], "token": {"id": token}},
            "scope": {"project": {"id": project_id}},
        }
    }


async def issue(
    http: httpx.AsyncClient,
    identity_url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """(token, token body), or LoginFailed with keystone's own message."""
    resp = await http.post(f"{identity_url}/auth/tokens", json=body, headers=headers or {})
    if resp.status_code != 201:
        raise LoginFailed(error_message(resp), resp.status_code)
    token_body: dict[str, Any] = resp.json()["token"]
    return resp.headers["X-Subject-Token"], token_body


async def revoke(http: httpx.AsyncClient, identity_url: str, token: str) -> int:
    """`DELETE /v3/auth/tokens`: the token stops working everywhere at once."""
    resp = await http.delete(
        f"{identity_url}/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
    )
    return resp.status_code


async def projects(http: httpx.AsyncClient, identity_url: str, token: str) -> list[dict[str, Any]]:
    """The projects the token's user may scope to (`GET /v3/auth/projects`)."""
    resp = await http.get(f"{identity_url}/auth/projects", headers={"X-Auth-Token": token})
    if resp.status_code != 200:
        return []
    found: list[dict[str, Any]] = resp.json().get("projects") or []
    return sorted(found, key=lambda p: str(p.get("name")))
