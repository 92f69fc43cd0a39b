"""The CLI's steps (1-3 of boot-vm and delete-vm) send what python-openstackclient sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.context import Call
from specstack_runtime.errors import StepFailed
from tests.aio import arun
from tests.runtime.test_compute_kit import (
    IMAGE_BDM,
    IMAGE_ID,
    NETWORK_ID,
    VOLUME_BDM,
    VOLUME_ID,
    Recorder,
    make_runtime,
    response,
    run_spec_step,
    stack_info,
)

CREDENTIALS = {
    "username": "demo",
    "password": "secret",
    "project_name": "demo",
    "user_domain_name": "Default",
    "project_domain_name": "Default",
}
BOOT = {
    "name": "vm1",
    "image_id": IMAGE_ID,
    "flavor_id": "1",
    "network_id": NETWORK_ID,
    "volume_id": None,
    "key_name": None,
    "availability_zone": None,
}


def cli_call(tmp_path: Path, request: dict[str, Any], sequence: str = "boot-vm") -> Call:
    rt = make_runtime(stack_info(), "cli", data_dir=tmp_path)
    call = Call(
        rt=rt,
        trigger=sequence,
        kind="flow",
        request_id="r",
        global_request_id="r",
        sequence=sequence,
    )
    call.vars["request"] = dict(request)
    call.vars["credentials"] = dict(CREDENTIALS)
    return call


@arun
async def test_the_request_must_name_what_the_command_needs(tmp_path: Path) -> None:
    """Step 1's `require:` (the spec's): 400 with the message, before anything is sent."""
    invoke = Recorder()
    await run_spec_step(cli_call(tmp_path, BOOT), "boot-vm", "1", invoke)
    await run_spec_step(
        cli_call(tmp_path, {"server_id": "x"}, "delete-vm"), "delete-vm", "1", invoke
    )
    assert invoke.calls == [((), {}), ((), {})]
    lacks = "the request lacks a name, image_id, flavor_id or network_id"
    optional = "volume_id, key_name and availability_zone are each a non-empty string or null"
    for bad, message in (
        ({**BOOT, "image_id": ""}, lacks),
        ({k: v for k, v in BOOT.items() if k != "network_id"}, lacks),
        ({**BOOT, "name": 7}, lacks),
        ({**BOOT, "key_name": ""}, optional),
        ({**BOOT, "volume_id": ["v"]}, optional),
    ):
        with pytest.raises(StepFailed) as err:
            await run_spec_step(cli_call(tmp_path, bad), "boot-vm", "1", invoke)
        assert (str(err.value), err.value.code) == (message, 400)
    call = cli_call(tmp_path, BOOT)
    call.vars["credentials"].pop("password")
    with pytest.raises(StepFailed, match="the credentials lack a username, password"):
        await run_spec_step(call, "boot-vm", "1", invoke)
    with pytest.raises(StepFailed, match=r"^the request lacks the server_id$"):
        await run_spec_step(cli_call(tmp_path, {}, "delete-vm"), "delete-vm", "1", invoke)
    assert len(invoke.calls) == 2  # nothing more was carried out


@arun
async def test_the_login_is_the_clients_and_its_token_is_the_flows(tmp_path: Path) -> None:
    call = cli_call(tmp_path, BOOT)
    token_body = {
        "token": {
            "project": {"id": "p" * 32},
            "user": {"id": "u" * 32},
            "catalog": [{"type": "compute"}],
            "expires_at": "2099-01-01T00:00:00Z",
        }
    }
    invoke = Recorder(response(201, token_body, {"X-Subject-Token": "tok"}))
    await run_spec_step(call, "boot-vm", "2", invoke)
    (((), kw),) = invoke.calls
    assert kw == {
        "token": None,  # a login sends none
        "body": {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "demo",
                            "domain": {"name": "Default"},
                            "password": "secret",
                        }
                    },
                },
                "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}},
            }
        },
    }
    assert call.token == "tok" and call.vars["token"] == "tok"
    assert call.vars["project_id"] == "p" * 32 and call.vars["user_id"] == "u" * 32
    assert call.vars["catalog"] == [{"type": "compute"}]
    # the next step sends it
    step3 = Recorder(response(202, {"server": {"id": "s1", "links": []}}))
    await run_spec_step(call, "boot-vm", "3", step3)
    assert step3.calls[0][1]["token"] == "tok"
    refused = response(
        401, {"error": {"message": "The request you have made requires authentication."}}
    )
    with pytest.raises(StepFailed, match="401"):
        await run_spec_step(cli_call(tmp_path, BOOT), "boot-vm", "2", Recorder(refused))
    with pytest.raises(StepFailed, match="x-subject-token"):
        await run_spec_step(
            cli_call(tmp_path, BOOT), "delete-vm", "2", Recorder(response(201, token_body))
        )


@arun
async def test_create_server_body_is_the_clients(tmp_path: Path) -> None:
    call = cli_call(tmp_path, {**BOOT, "volume_id": VOLUME_ID, "key_name": "k1"})
    call.token = "tok"
    answer = response(
        202, {"server": {"id": "s1", "links": []}}, {"x-openstack-request-id": "req-abc"}
    )
    invoke = Recorder(answer)
    await run_spec_step(call, "boot-vm", "3", invoke)
    (((), kw),) = invoke.calls
    assert kw["token"] == "tok"
    assert kw["headers"]["X-OpenStack-Nova-API-Version"] == "2.1"
    assert kw["body"] == {
        "server": {
            "name": "vm1",
            "imageRef": IMAGE_ID,
            "flavorRef": "1",
            "min_count": 1,
            "max_count": 1,
            "networks": [{"uuid": NETWORK_ID}],
            "block_device_mapping_v2": [IMAGE_BDM, VOLUME_BDM],
            "key_name": "k1",
        }
    }
    assert call.vars["server"] == {"id": "s1", "links": []} and call.vars["server_id"] == "s1"
    assert call.vars["nova_request_id"] == "req-abc"
    with pytest.raises(StepFailed, match="answered 400: Flavor 1 could not be found"):
        await run_spec_step(
            call,
            "boot-vm",
            "3",
            Recorder(
                response(
                    400,
                    {"badRequest": {"message": "Flavor 1 could not be found.", "code": 400}},
                )
            ),
        )


@arun
async def test_delete_server(tmp_path: Path) -> None:
    call = cli_call(tmp_path, {"server_id": "s1"}, "delete-vm")
    call.token = "tok"
    invoke = Recorder(response(204, headers={"x-openstack-request-id": "req-del"}))
    await run_spec_step(call, "delete-vm", "3", invoke)
    (((), kw),) = invoke.calls
    assert kw["server_id"] == "s1" and kw["token"] == "tok"
    assert kw["headers"] == {
        "X-OpenStack-Nova-API-Version": "2.1",
        "OpenStack-API-Version": "compute 2.1",
    }
    assert call.vars["server_id"] == "s1" and call.vars["nova_request_id"] == "req-del"
    with pytest.raises(StepFailed, match="404"):
        await run_spec_step(call, "delete-vm", "3", Recorder(response(404, {})))


@arun
async def test_create_server_body_without_the_optional_fields(tmp_path: Path) -> None:
    call = cli_call(tmp_path, {**BOOT, "availability_zone": "nova"})
    invoke = Recorder(response(202, {"server": {"id": "s2", "links": []}}))
    await run_spec_step(call, "boot-vm", "3", invoke)
    (((), kw),) = invoke.calls
    server = kw["body"]["server"]
    assert "key_name" not in server and server["availability_zone"] == "nova"
    assert [b["source_type"] for b in server["block_device_mapping_v2"]] == ["image"]
    assert call.vars["nova_request_id"] is None
