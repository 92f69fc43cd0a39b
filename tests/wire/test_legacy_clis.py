"""The legacy per-service CLIs (`nova`, `cinder`, `glance`, `neutron`) against a running
stack, unmodified: each lists, creates, shows and deletes its main resource, as a user
with an openrc (OS_* variables) would. They negotiate versions their own way (novaclient
and cinderclient ask for the highest microversion, glanceclient reads `/versions` and
validates against `/v2/schemas/image`), so they reach paths the openstack CLI does not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .conftest import CLI_TIMEOUT_S, Stack

#: The CLIs and the package of each (all in the test extra; `neutron` left
#: python-neutronclient in 10.0, hence its pin below 10).
CLIS = {
    "nova": "python-novaclient",
    "cinder": "python-cinderclient",
    "glance": "python-glanceclient",
    "neutron": "python-neutronclient<10",
}


def _exe(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"the {name} CLI is not installed: pip install '{CLIS[name]}' (in the test extra)"
        )
    return found


def _openrc(stack: Stack) -> dict[str, str]:
    """The demo user's OS_* variables, from the clouds.yaml `specstack run` wrote."""
    cloud = yaml.safe_load(stack.clouds.read_text())["clouds"]["specstack"]
    auth = cloud["auth"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(
        OS_AUTH_URL=auth["auth_url"],
        OS_USERNAME=auth["username"],
        OS_PASSWORD=auth["password"],
        OS_PROJECT_NAME=auth["project_name"],
        OS_USER_DOMAIN_NAME=auth["user_domain_name"],
        OS_PROJECT_DOMAIN_NAME=auth["project_domain_name"],
        OS_IDENTITY_API_VERSION="3",
        OS_REGION_NAME=cloud["region_name"],
        COLUMNS="200",
    )
    return env


def cli(stack: Stack, name: str, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [_exe(name), *args],
        env=_openrc(stack),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{name} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def table(text: str) -> dict[str, str]:
    """A `show` command's two-column table (| Property | Value |) as a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2 and cells[0] not in ("Property", "Field"):
            out[cells[0]] = cells[1]
    return out


def rows(text: str) -> list[list[str]]:
    """A `list` command's rows (header left out)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[1:]]


def wait(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_neutron_net_and_subnet(stack: Stack) -> None:
    made = table(cli(stack, "neutron", "net-create", "legacy-net"))
    assert made["name"] == "legacy-net" and made["status"] == "ACTIVE"
    sub = table(
        cli(stack, "neutron", "subnet-create", "legacy-net", "10.9.0.0/24", "--name", "legacy-sub")
    )
    assert sub["cidr"] == "10.9.0.0/24" and sub["gateway_ip"] == "10.9.0.1"
    assert sub["allocation_pools"] == '{"start": "10.9.0.2", "end": "10.9.0.254"}'
    shown = table(cli(stack, "neutron", "net-show", made["id"]))
    assert shown["subnets"] == sub["id"] and shown["tenant_id"] == made["tenant_id"]
    listed = {r[1]: r for r in rows(cli(stack, "neutron", "net-list"))}
    assert {"private", "legacy-net"} <= set(listed)
    assert listed["legacy-net"][2] == f"{sub['id']} 10.9.0.0/24"
    cli(stack, "neutron", "subnet-delete", sub["id"])
    assert "Deleted network(s): legacy-net" in cli(stack, "neutron", "net-delete", "legacy-net")
    assert "legacy-net" not in cli(stack, "neutron", "net-list")


def test_glance_image_create_show_download_delete(stack: Stack, tmp_path: Path) -> None:
    data = bytes(range(256)) * 8
    (tmp_path / "img.raw").write_bytes(data)
    made = table(
        cli(
            stack,
            "glance",
            "image-create",
            "--name",
            "legacy-img",
            "--disk-format",
            "raw",
            "--container-format",
            "bare",
            "--file",
            str(tmp_path / "img.raw"),
        )
    )
    assert made["name"] == "legacy-img" and made["status"] == "active"
    assert made["size"] == str(len(data))
    shown = table(cli(stack, "glance", "image-show", made["id"]))
    assert shown["status"] == "active" and shown["disk_format"] == "raw"
    assert shown["visibility"] == "shared"  # glance's default for a new image
    cli(stack, "glance", "image-download", made["id"], "--file", str(tmp_path / "back.raw"))
    assert (tmp_path / "back.raw").read_bytes() == data
    assert [made["id"], "legacy-img"] in rows(cli(stack, "glance", "image-list"))
    cli(stack, "glance", "image-delete", made["id"])
    assert made["id"] not in cli(stack, "glance", "image-list")


def test_cinder_create_show_delete(stack: Stack) -> None:
    made = table(cli(stack, "cinder", "create", "--name", "legacy-vol", "1"))
    assert made["name"] == "legacy-vol" and made["size"] == "1"

    def available() -> bool:
        return table(cli(stack, "cinder", "show", made["id"]))["status"] == "available"

    wait(available, "legacy-vol never became available")
    listed = {r[0]: r for r in rows(cli(stack, "cinder", "list"))}
    assert listed[made["id"]][1:4] == ["available", "legacy-vol", "1"]
    assert "has been accepted" in cli(stack, "cinder", "delete", made["id"])
    wait(lambda: made["id"] not in cli(stack, "cinder", "list"), "legacy-vol never went away")


def test_nova_boot_show_delete_and_keypairs(stack: Stack) -> None:
    net = next(r[0] for r in rows(cli(stack, "neutron", "net-list")) if r[1] == "private")
    out = cli(
        stack,
        "nova",
        "boot",
        "--flavor",
        "m1.tiny",
        "--image",
        "demo-image",
        "--nic",
        f"net-id={net}",
        "--poll",
        "legacy-vm",
    )
    assert "Finished" in out
    shown = table(cli(stack, "nova", "show", "legacy-vm"))
    # novaclient negotiates the newest version: from 2.47 the server's copy of the flavor
    assert shown["status"] == "ACTIVE" and shown["flavor:original_name"] == "m1.tiny"
    assert shown["image"].startswith("demo-image (")
    assert shown["private network"].startswith("10.0.0.")
    listed = {r[1]: r for r in rows(cli(stack, "nova", "list"))}
    assert listed["legacy-vm"][2] == "ACTIVE"
    assert listed["legacy-vm"][5] == f"private={shown['private network']}"
    assert "has been accepted" in cli(stack, "nova", "delete", "legacy-vm")
    wait(lambda: "legacy-vm" not in cli(stack, "nova", "list"), "legacy-vm never went away")

    key = cli(stack, "nova", "keypair-add", "legacy-key")
    assert key.startswith("-----BEGIN") and "PRIVATE KEY-----" in key
    assert [r[0] for r in rows(cli(stack, "nova", "keypair-list"))].count("legacy-key") == 1
    cli(stack, "nova", "keypair-delete", "legacy-key")
    assert "legacy-key" not in cli(stack, "nova", "keypair-list")
