"""An Ansible playbook (tests/data/ansible/stack.yml, the openstack.cloud collection) against a
running stack: it makes a network, a subnet, a router with a gateway, a security group with a
rule, a key pair, a volume and a server with a floating IP and the volume attached; a second
run changes nothing; `state=absent` removes it all.

The pair that works: the `ansible` package 12.x (the last for Python 3.11, ansible-core 2.19)
bundles openstack.cloud 2.5.0, and that collection reads `openstack.version.__version__`,
which openstacksdk 4.15 stopped importing with `openstack` (openstack.cloud 2.6.0 reads it
otherwise; it is on Galaxy only, which this project's machines do not reach). The modules run
with a `sitecustomize` that imports `openstack.version`, so 2.5.0 runs on the openstacksdk
(>= 4.21) that python-openstackclient needs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..conftest import REPO
from .conftest import Stack

PLAYBOOK = REPO / "tests" / "data" / "ansible" / "stack.yml"
INSTALL = "pip install 'ansible>=12.3,<13' (in the test extra)"
PLAY_TIMEOUT_S = 900.0
PREFIX = "ans"
PUBLIC = "ans-public"
PUBLIC_RANGE = ipaddress.ip_network("203.0.113.0/24")
SUBNET_RANGE = ipaddress.ip_network("10.42.0.0/24")
RECAP = re.compile(
    r"^localhost\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def _playbook_exe() -> str:
    """`ansible-playbook` beside this interpreter, else on PATH; skips (fails in CI) without."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is not None:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"ansible-playbook is missing in CI: {INSTALL}")
    pytest.skip(f"ansible-playbook is not installed: {INSTALL}")


def _public_key() -> str:
    """A fresh Ed25519 public key in OpenSSH form (its private half is dropped)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


@dataclass(frozen=True)
class Recap:
    ok: int
    changed: int
    unreachable: int
    failed: int


@dataclass
class Playbook:
    exe: str
    stack: Stack
    workdir: Path
    public_key: str
    removed: bool = False  # the removal test passed: nothing of it is left

    def env(self) -> dict[str, str]:
        env = self.stack.env()
        shim = self.workdir / "shim"
        shim.mkdir(exist_ok=True)
        # openstack.cloud 2.5.0 reads `openstack.version`, no longer imported by `openstack`
        (shim / "sitecustomize.py").write_text("import openstack.version  # noqa: F401\n")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), env.get("PYTHONPATH", "")) if p)
        env.update(
            ANSIBLE_HOME=str(self.workdir / "home"),
            ANSIBLE_LOCAL_TEMP=str(self.workdir / "tmp"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
        )
        return env

    def run(self, state: str) -> tuple[Recap, str]:
        inventory = self.workdir / "inventory.ini"
        inventory.write_text(
            f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        )
        extra = {
            "state": state,
            "cloud": "specstack",
            "public_network": PUBLIC,
            "image": "demo-image",
            "flavor": "m1.tiny",
            "prefix": PREFIX,
            "public_key": self.public_key,
        }
        args = [self.exe, "-i", str(inventory), "-e", json.dumps(extra), str(PLAYBOOK)]
        proc = subprocess.run(
            args,
            env=self.env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=PLAY_TIMEOUT_S,
        )
        output = proc.stdout + proc.stderr
        found = RECAP.search(output)
        assert found is not None, f"no play recap (exit {proc.returncode}):\n{output}"
        recap = Recap(**{k: int(v) for k, v in found.groupdict().items()})
        return recap, output


@pytest.fixture(scope="module")
def public(stack: Stack) -> Iterator[dict[str, Any]]:
    """An administrator's external network, for the router's gateway and the floating IP."""
    admin = "specstack-admin"
    net: dict[str, Any] = stack.json("network", "create", "--external", PUBLIC, cloud=admin)
    stack.json(
        "subnet", "create", "--network", PUBLIC, "--subnet-range", str(PUBLIC_RANGE),
        f"{PUBLIC}-subnet", cloud=admin,
    )  # fmt: skip
    yield net
    stack.run("subnet", "delete", f"{PUBLIC}-subnet", cloud=admin, check=False)
    stack.run("network", "delete", PUBLIC, cloud=admin, check=False)


@pytest.fixture(scope="module")
def playbook(
    stack: Stack, public: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Playbook]:
    book = Playbook(_playbook_exe(), stack, tmp_path_factory.mktemp("ansible"), _public_key())
    yield book
    if not book.removed:  # a failed test leaves nothing behind for the other wire tests
        book.run("absent")


def test_first_run_makes_everything(playbook: Playbook, stack: Stack, public: Any) -> None:
    recap, output = playbook.run("present")
    assert (recap.failed, recap.unreachable) == (0, 0), output
    assert recap.changed == 10 and recap.ok == 10, output

    net = stack.json("network", "show", f"{PREFIX}-net")
    assert (net["mtu"], net["port_security_enabled"]) == (1400, True)
    subnet = stack.json("subnet", "show", f"{PREFIX}-subnet")
    assert net["subnets"] == [subnet["id"]] and subnet["cidr"] == str(SUBNET_RANGE)
    assert subnet["gateway_ip"] == "10.42.0.1"
    assert subnet["allocation_pools"] == [{"start": "10.42.0.10", "end": "10.42.0.200"}]
    assert subnet["dns_nameservers"] == ["10.42.0.53"]

    router = stack.json("router", "show", f"{PREFIX}-router")
    gateway = router["external_gateway_info"]
    assert gateway["network_id"] == public["id"]
    (outside,) = gateway["external_fixed_ips"]
    assert ipaddress.ip_address(outside["ip_address"]) in PUBLIC_RANGE
    assert [(i["subnet_id"], i["ip_address"]) for i in router["interfaces_info"]] == [
        (subnet["id"], "10.42.0.1")
    ]

    rules = stack.json("security", "group", "rule", "list", f"{PREFIX}-sg")
    ingress = [r for r in rules if r["Direction"] == "ingress"]
    assert [(r["IP Protocol"], r["Port Range"], r["IP Range"]) for r in ingress] == [
        ("tcp", "22:22", "0.0.0.0/0")
    ]
    shown_key = stack.run("keypair", "show", "--public-key", f"{PREFIX}-key").stdout
    assert shown_key.strip() == playbook.public_key

    server = stack.json("server", "show", f"{PREFIX}-vm")
    assert server["status"] == "ACTIVE" and server["key_name"] == f"{PREFIX}-key"
    assert server["security_groups"] == [{"name": f"{PREFIX}-sg"}]
    assert server["properties"] == {"role": "web"}
    fixed, floating = server["addresses"][f"{PREFIX}-net"]
    assert ipaddress.ip_address(fixed) in SUBNET_RANGE
    assert ipaddress.ip_address(floating) in PUBLIC_RANGE
    fip = stack.json("floating", "ip", "show", floating)
    assert (fip["fixed_ip_address"], fip["status"]) == (fixed, "ACTIVE")
    assert fip["router_id"] == router["id"]

    volume = stack.json("volume", "show", f"{PREFIX}-vol")
    assert (volume["status"], volume["size"]) == ("in-use", 1)
    assert volume["description"] == "data of the server"
    assert volume["properties"] == {"purpose": "data"}
    (attachment,) = volume["attachments"]
    assert attachment["server_id"] == server["id"]
    # openstacksdk negotiates a microversion from 2.3: whether the volume goes with the server
    assert server["volumes_attached"] == [{"id": volume["id"], "delete_on_termination": False}]


def test_second_run_changes_nothing(playbook: Playbook) -> None:
    recap, output = playbook.run("present")
    assert recap == Recap(ok=10, changed=0, unreachable=0, failed=0), output


def test_removal_leaves_nothing(playbook: Playbook, stack: Stack, public: Any) -> None:
    fips_before = stack.json("floating", "ip", "list", "--network", PUBLIC)
    assert len(fips_before) == 1
    recap, output = playbook.run("absent")
    assert (recap.failed, recap.unreachable) == (0, 0), output
    # the detach, the floating IP and the seven resources; the server lookup changes nothing
    assert (recap.ok, recap.changed) == (10, 9), output

    def listed(*kind: str) -> set[str]:
        return {str(r["Name"]) for r in stack.json(*kind, "list")}

    made = {f"{PREFIX}-{k}" for k in ("net", "subnet", "router", "sg", "key", "vol", "vm")}
    for kind in (("network",), ("subnet",), ("router",), ("security", "group"),
                 ("keypair",), ("volume",), ("server",)):  # fmt: skip
        assert not listed(*kind) & made, kind
    assert stack.json("floating", "ip", "list", "--network", PUBLIC) == []
    # only the router's gateway was on the public network, and it went with the router
    ports = stack.json("port", "list", "--network", PUBLIC, cloud="specstack-admin")
    assert ports == []
    # removing what is gone changes nothing and fails nowhere
    again, output = playbook.run("absent")
    assert (again.changed, again.failed, again.unreachable) == (0, 0, 0), output
    playbook.removed = True
