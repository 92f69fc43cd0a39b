"""The openstack CLI's part of a flow (steps 1-3): take the request, log in, call nova.

The runner seeds `vars["request"]` and `vars["credentials"]`; these steps send
exactly what python-openstackclient sends (see openstack-wire.md).

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
#: The microversion headers the SDK sends (the stack advertises compute 2.1).
MICROVERSION_HEADERS = {
    "X-OpenStack-Nova-API-Version": "2.1",
    "OpenStack-API-Version": "compute 2.1",
}


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


def server_body(request: dict[str, Any]) -> dict[str, Any]:
    """`POST /v2.1/servers` as `openstack server create --image --flavor --network` sends it."""
    bdm: list[dict[str, Any]] = [
        {
            "uuid": request["image_id"],
            "boot_index": 0,
            "source_type": "image",
            "destination_type": "local",
            "delete_on_termination": True,
        }
    ]
    if request.get("volume_id"):
        bdm.append(
            {
                "uuid": request["volume_id"],
                "boot_index": -1,
                "source_type": "volume",
                "destination_type": "volume",
                "delete_on_termination": False,
            }
        )
    server: dict[str, Any] = {
        "name": request["name"],
        "imageRef": request["image_id"],
        "flavorRef": request["flavor_id"],
        "min_count": 1,
        "max_count": 1,
        "networks": [{"uuid": request["network_id"]}],
        "block_device_mapping_v2": bdm,
    }
    if request.get("key_name"):
        server["key_name"] = request["key_name"]
    if request.get("availability_zone"):
        server["availability_zone"] = request["availability_zone"]
    return {"server": server}


@behaviour("cli.create_server", via=("http",))
async def create_server(ix: Interaction) -> None:
    """Step 3 (boot-vm): POST /v2.1/servers; keeps `server` and `nova_request_id`."""
    resp = expect(
        await ix.invoke(
            body=server_body(ix.vars["request"]), token=ix.call.token, headers=MICROVERSION_HEADERS
        ),
        202,
    )
    try:
        server = resp.json()["server"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StepFailed(f"nova's 202 has no server: {exc}") from exc
    ix.vars["server"] = server
    ix.vars["server_id"] = server.get("id")
    ix.vars["nova_request_id"] = resp.headers.get("x-openstack-request-id")
