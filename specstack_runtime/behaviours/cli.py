"""The openstack CLI's part of a flow (steps 1-3): take the request, log in, call nova.

The runner seeds `vars["request"]` and `vars["credentials"]`; these steps send
exactly what python-openstackclient sends (see openstack-wire.md). Step 3 (nova's
createServer, deleteServer) is the spec's: the sequences' `with:` state its request.

- boot-vm request: {name, image_id, flavor_id, network_id, volume_id | None,
  key_name | None, availability_zone | None}
- delete-vm request: {server_id}
- credentials: {username, password, project_name, user_domain_name,
  project_domain_name}
"""

from __future__ import annotations

from typing import Any

from specstack_runtime.context import Interaction
from specstack_runtime.errors import StepFailed
from specstack_runtime.http import expect
from specstack_runtime.registry import behaviour

BOOT_FIELDS = ("name", "image_id", "flavor_id", "network_id")
DELETE_FIELDS = ("server_id",)
CREDENTIAL_FIELDS = (
    "username",
    "password",
    "project_name",
    "user_domain_name",
    "project_domain_name",
)


def _is_delete(ix: Interaction, request: dict[str, Any]) -> bool:
    if ix.call.sequence:
        return "delete" in ix.call.sequence
    return "server_id" in request and "image_id" not in request


def _missing(data: Any, fields: tuple[str, ...]) -> list[str]:
    if not isinstance(data, dict):
        return list(fields)
    return [f for f in fields if not isinstance(data.get(f), str) or not data[f].strip()]


@behaviour("cli.accept_request", via=("user",))
async def accept_request(ix: Interaction) -> None:
    """Step 1: the request must name everything the command needs."""
    await ix.invoke()
    request = ix.vars.get("request")
    if not isinstance(request, dict):
        raise StepFailed("no request was given to the CLI", code=400)
    fields = DELETE_FIELDS if _is_delete(ix, request) else BOOT_FIELDS
    missing = _missing(request, fields)
    if missing:
        raise StepFailed(f"the request lacks {', '.join(missing)}", code=400)
    for optional in ("volume_id", "key_name", "availability_zone"):
        value = request.get(optional)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise StepFailed(f"{optional} must be a non-empty string or None", code=400)
    missing = _missing(ix.vars.get("credentials"), CREDENTIAL_FIELDS)
    if missing:
        raise StepFailed(f"the credentials lack {', '.join(missing)}", code=400)


def password_auth(credentials: dict[str, Any]) -> dict[str, Any]:
    """The body of `POST /v3/auth/tokens` for a project-scoped password login."""
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": credentials["username"],
                        "domain": {"name": credentials["user_domain_name"]},
                        "password": credentials["password"],
                    }
                },
            },
            "scope": {
                "project": {
                    "name": credentials["project_name"],
                    "domain": {"name": credentials["project_domain_name"]},
                }
            },
        }
    }


@behaviour("cli.authenticate", via=("http",))
async def authenticate(ix: Interaction) -> None:
    """Step 2: password login; keeps token, project_id, user_id and catalog."""
    credentials = ix.vars.get("credentials")
    if _missing(credentials, CREDENTIAL_FIELDS):
        raise StepFailed("no complete credentials to log in with", code=400)
    assert isinstance(credentials, dict)
    resp = expect(await ix.invoke(body=password_auth(credentials)), 201)
    token = resp.headers.get("X-Subject-Token")
    if not token:
        raise StepFailed("keystone issued no X-Subject-Token header")
    try:
        body = resp.json()["token"]
        project_id = body["project"]["id"]
        user_id = body["user"]["id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StepFailed(f"keystone's token body is not a scoped token: {exc}") from exc
    ix.call.token = token
    ix.vars.update(
        token=token, project_id=project_id, user_id=user_id, catalog=body.get("catalog", [])
    )
