"""Keystone's application credentials through the real `openstack` CLI: create (the secret
printed once), list, show, authenticate with one (by id; by name and user), delete."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import CLI_TIMEOUT_S, Stack

NAME = "wire-appcred"


def _with_credential(stack: Stack, tmp_path: Path, auth: dict[str, str], *args: str) -> Any:
    """`openstack ARGS` authenticated by an application credential (its own clouds.yaml)."""
    base = yaml.safe_load(stack.clouds.read_text())["clouds"]["specstack"]
    cloud = {
        "auth_type": "v3applicationcredential",
        "auth": {"auth_url": base["auth"]["auth_url"], **auth},
        "region_name": base["region_name"],
        "interface": "public",
        "identity_api_version": 3,
    }
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"appcred": cloud}}))
    env = {**stack.env(), "OS_CLIENT_CONFIG_FILE": str(clouds), "OS_CLOUD": "appcred"}
    return subprocess.run(
        [stack.exe, *args], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )


def test_application_credential_lifecycle(stack: Stack, tmp_path: Path) -> None:
    me = stack.json("token", "issue")
    created = stack.json(
        "application", "credential", "create", "--role", "reader", "--description", "ci", NAME
    )
    secret = created["Secret"]  # shown this once
    assert created["Name"] == NAME and created["Description"] == "ci"
    assert created["Project ID"] == me["project_id"] and len(secret) >= 80
    assert "reader" in str(created["Roles"]) and "member" not in str(created["Roles"])
    shown = stack.json("application", "credential", "show", NAME)
    assert shown["ID"] == created["ID"] and "Secret" not in shown
    listed = stack.json("application", "credential", "list")
    assert [c["Name"] for c in listed if c["ID"] == created["ID"]] == [NAME]

    by_id = {"application_credential_id": created["ID"], "application_credential_secret": secret}
    issued = _with_credential(stack, tmp_path, by_id, "token", "issue", "-f", "yaml")
    assert issued.returncode == 0, issued.stderr
    token = yaml.safe_load(issued.stdout)
    assert token["project_id"] == me["project_id"] and token["user_id"] == me["user_id"]
    # the token carries the credential's roles only
    body = httpx.get(
        f"{stack.identity_url}/auth/tokens",
        headers={"X-Auth-Token": token["id"], "X-Subject-Token": token["id"]},
    ).json()["token"]
    assert [r["name"] for r in body["roles"]] == ["reader"]
    assert body["application_credential"]["id"] == created["ID"]
    by_name = {
        "application_credential_name": NAME,
        "application_credential_secret": secret,
        "username": "demo",
        "user_domain_name": "Default",
    }
    assert _with_credential(stack, tmp_path, by_name, "token", "issue").returncode == 0
    wrong = {**by_id, "application_credential_secret": "not-the-secret"}
    refused = _with_credential(stack, tmp_path, wrong, "token", "issue")
    assert refused.returncode != 0 and "401" in refused.stderr

    stack.run("application", "credential", "delete", NAME)
    assert NAME not in {c["Name"] for c in stack.json("application", "credential", "list")}
    gone = _with_credential(stack, tmp_path, by_id, "token", "issue")
    assert gone.returncode != 0
    # the token issued with it no longer validates either
    assert (
        httpx.get(
            f"{stack.identity_url}/auth/tokens",
            headers={"X-Auth-Token": token["id"], "X-Subject-Token": token["id"]},
        ).status_code
        == 401
    )


def test_a_role_the_user_lacks_is_refused(stack: Stack) -> None:
    proc = stack.run(
        "application", "credential", "create", "--role", "admin", "wire-escalate", check=False
    )
    assert proc.returncode != 0 and "Could not find role assignment" in proc.stderr
    assert "wire-escalate" not in {
        c["Name"] for c in stack.json("application", "credential", "list")
    }


@pytest.fixture(autouse=True)
def _no_leftovers(stack: Stack) -> Any:
    yield
    for c in stack.json("application", "credential", "list"):
        if c["Name"].startswith("wire-"):
            stack.run("application", "credential", "delete", c["ID"], check=False)
