"""The real python-openstackclient (and openstacksdk) against a running stack, unmodified.

Each test runs `openstack ...` as a user would (a subprocess, with the clouds.yaml
`specstack run` wrote) and checks what it prints. Tests later in the file use what
earlier ones created (module fixtures), in the order a user would go.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import SERVER_CREATE, Stack, endpoint, names, sdk_connection

VM = "wire-vm"
VOLUME = "wire-vol"
IMAGE = "wire-image"
NETWORK = "wire-net"
SUBNET = "wire-subnet"
IMAGE_DATA = bytes(range(256)) * 16 + b"specstack wire test image\n"


def _by(rows: list[dict[str, Any]], key: str, value: Any) -> dict[str, Any]:
    found = [r for r in rows if r.get(key) == value]
    assert len(found) == 1, f"{key}={value!r} in {rows}"
    return found[0]


def _wait_gone(stack: Stack, listing: tuple[str, ...], name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while name in names(stack.json(*listing)):
        assert time.monotonic() < deadline, f"{name} still in `openstack {' '.join(listing)}`"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def catalog(stack: Stack) -> list[dict[str, Any]]:
    """`openstack catalog list` of the demo cloud."""
    entries: list[dict[str, Any]] = stack.json("catalog", "list")
    return entries


@pytest.fixture(scope="module")
def admin_token(stack: Stack) -> str:
    return str(stack.json("token", "issue", cloud="specstack-admin")["id"])


@pytest.fixture(scope="module")
def private(stack: Stack) -> dict[str, Any]:
    """The demo network and its subnet's CIDR."""
    net: dict[str, Any] = stack.json("network", "show", "private")
    subnet = stack.json("subnet", "show", net["subnets"][0])
    return {**net, "cidr": ipaddress.ip_network(subnet["cidr"]), "subnet": subnet}


@pytest.fixture(scope="module")
def image(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("image") / "disk.raw"
    path.write_bytes(IMAGE_DATA)
    created: dict[str, Any] = stack.json(
        "image",
        "create",
        "--file",
        str(path),
        "--disk-format",
        "raw",
        "--container-format",
        "bare",
        IMAGE,
    )
    return created


@pytest.fixture(scope="module")
def server(stack: Stack) -> dict[str, Any]:
    created: dict[str, Any] = stack.json(*SERVER_CREATE, "--wait", VM)
    return created


@pytest.fixture(scope="module")
def volume(stack: Stack) -> dict[str, Any]:
    created: dict[str, Any] = stack.json("volume", "create", "--size", "1", VOLUME)
    return created


# -- identity ------------------------------------------------------------------------------


def _validate(stack: Stack, admin: str, token: str) -> int:
    resp = httpx.get(
        f"{stack.identity_url}/auth/tokens",
        headers={"X-Auth-Token": admin, "X-Subject-Token": token},
    )
    return resp.status_code


def test_token_issue(stack: Stack, admin_token: str) -> None:
    token = stack.json("token", "issue")
    assert set(token) >= {"id", "expires", "project_id", "user_id"}
    assert len(token["project_id"]) == 32 and int(token["project_id"], 16) >= 0
    assert len(token["user_id"]) == 32 and int(token["user_id"], 16) >= 0
    expires = datetime.strptime(token["expires"], "%Y-%m-%dT%H:%M:%S%z")
    assert expires > datetime.now(UTC)
    assert _validate(stack, admin_token, token["id"]) == 200


def test_token_revoke(stack: Stack, admin_token: str, catalog: list[dict[str, Any]]) -> None:
    token = stack.json("token", "issue")["id"]
    assert token.startswith("gAAAAA")  # as a fernet token: never a "-" taken for an option
    assert _validate(stack, admin_token, token) == 200
    proc = stack.run("token", "revoke", token)
    assert proc.stdout == ""
    assert _validate(stack, admin_token, token) == 404
    # A service answers the revoked token 401, as keystonemiddleware does.
    compute = endpoint(catalog, "compute")
    resp = httpx.get(f"{compute}/servers", headers={"X-Auth-Token": token})
    assert resp.status_code == 401 and "Keystone uri=" in resp.headers["WWW-Authenticate"]


def test_catalog_list(stack: Stack, catalog: list[dict[str, Any]], demo_project: str) -> None:
    project_id = demo_project
    types = {e["Type"] for e in catalog}
    assert types >= {"identity", "compute", "image", "network", "block-storage", "object-store"}
    ports = set()
    for entry in catalog:
        interfaces = {ep["interface"] for ep in entry["Endpoints"]}
        assert interfaces == {"public", "internal", "admin"}, entry
        for ep in entry["Endpoints"]:
            assert ep["region"] == "RegionOne"
            url = httpx.URL(ep["url"])
            assert url.host == "127.0.0.1" and stack.port <= (url.port or 0) < stack.port + 8
            ports.add(url.port)
    assert len(ports) == len(catalog)  # one API per port
    assert endpoint(catalog, "identity").endswith("/v3")
    assert endpoint(catalog, "compute").endswith("/v2.1")
    assert endpoint(catalog, "object-store").endswith(f"/v1/AUTH_{project_id}")
    assert endpoint(catalog, "block-storage").endswith(f"/v3/{project_id}")


def test_microversion_and_request_id_headers(stack: Stack, catalog: list[dict[str, Any]]) -> None:
    """What the SDK reads: the microversion each answer has, and nova's request id header."""
    token = stack.json("token", "issue")["id"]
    auth = {"X-Auth-Token": token}
    compute = endpoint(catalog, "compute")
    servers = httpx.get(f"{compute}/servers", headers=auth)
    assert servers.status_code == 200
    assert servers.headers["OpenStack-API-Version"] == "compute 2.1"
    assert servers.headers["X-OpenStack-Nova-API-Version"] == "2.1"
    assert servers.headers["x-compute-request-id"] == servers.headers["x-openstack-request-id"]
    newer = httpx.get(
        f"{compute}/servers", headers={**auth, "OpenStack-API-Version": "compute 2.90"}
    )
    # the range the version document gives (spec/apis/compute.yaml): 406 beyond it, and
    # `latest` is its maximum
    top = httpx.get(compute).json()["version"]["version"]  # the endpoint is /v2.1
    message = newer.json()["computeFault"]["message"]
    assert newer.status_code == 406 and f"Minimum is 2.1 and maximum is {top}." in message
    latest = httpx.get(
        f"{compute}/servers", headers={**auth, "X-OpenStack-Nova-API-Version": "latest"}
    )
    assert latest.status_code == 200
    assert latest.headers["X-OpenStack-Nova-API-Version"] == top
    volumes = httpx.get(f"{endpoint(catalog, 'block-storage')}/volumes", headers=auth)
    assert volumes.status_code == 200
    assert volumes.headers["OpenStack-API-Version"] == "volume 3.0"
    assert "x-compute-request-id" not in volumes.headers
    network = endpoint(catalog, "network")
    unknown = httpx.get(f"{network}/v2.0/no-such-resource", headers=auth)
    assert unknown.status_code == 404 and unknown.json()["NeutronError"]["type"] == "HTTPNotFound"


# -- images --------------------------------------------------------------------------------


def test_image_create(image: dict[str, Any], demo_project: str) -> None:
    assert image["name"] == IMAGE and image["status"] == "active"
    assert image["size"] == len(IMAGE_DATA)
    assert image["checksum"] == hashlib.md5(IMAGE_DATA).hexdigest()
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    assert image["owner"] == demo_project


def test_image_list(image: dict[str, Any], stack: Stack) -> None:
    images = stack.json("image", "list")
    assert _by(images, "Name", IMAGE) == {"ID": image["id"], "Name": IMAGE, "Status": "active"}
    assert _by(images, "Name", "demo-image")["Status"] == "active"


def test_image_show(image: dict[str, Any], stack: Stack) -> None:
    shown = stack.json("image", "show", IMAGE)
    assert shown["id"] == image["id"] and shown["status"] == "active"
    assert shown["checksum"] == image["checksum"] and shown["size"] == len(IMAGE_DATA)
    assert stack.json("image", "show", image["id"])["name"] == IMAGE


def test_image_save(image: dict[str, Any], stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "saved.raw"
    stack.run("image", "save", "--file", str(out), IMAGE)
    assert out.read_bytes() == IMAGE_DATA


def test_image_set(image: dict[str, Any], stack: Stack, tmp_path: Path) -> None:
    """`openstack image set` / `unset` (JSON Patch), protection and deactivation (the
    image's state machine) as glance answers them."""
    stack.run(
        "image", "set", "--property", "hw_disk_bus=virtio", "--tag", "wire",
        "--min-ram", "64", "--protected", IMAGE,
    )  # fmt: skip
    shown = stack.json("image", "show", IMAGE)
    assert shown["properties"]["hw_disk_bus"] == "virtio" and shown["tags"] == ["wire"]
    assert shown["min_ram"] == 64 and shown["protected"] is True
    refused = stack.run("image", "delete", IMAGE, check=False)
    assert refused.returncode != 0 and "protected" in refused.stderr
    stack.run("image", "unset", "--property", "hw_disk_bus", "--tag", "wire", IMAGE)
    stack.run("image", "set", "--unprotected", "--name", IMAGE, IMAGE)
    shown = stack.json("image", "show", IMAGE)
    assert "hw_disk_bus" not in shown.get("properties", {}) and shown["tags"] == []
    assert shown["protected"] is False
    # Only administrators deactivate; then only they may download the data.
    stack.run("image", "set", "--deactivate", IMAGE, check=False)  # the SDK ignores the 403
    assert stack.json("image", "show", IMAGE)["status"] == "active"
    stack.run("image", "set", "--deactivate", image["id"], cloud="specstack-admin")
    assert stack.json("image", "show", IMAGE)["status"] == "deactivated"
    out = tmp_path / "deactivated.raw"
    assert stack.run("image", "save", "--file", str(out), IMAGE, check=False).returncode != 0
    stack.run("image", "set", "--activate", image["id"], cloud="specstack-admin")
    assert stack.json("image", "show", IMAGE)["status"] == "active"


def test_image_delete(image: dict[str, Any], stack: Stack) -> None:
    stack.run("image", "delete", IMAGE)
    assert IMAGE not in names(stack.json("image", "list"))
    gone = stack.run("image", "show", image["id"], check=False)
    assert gone.returncode != 0 and image["id"] in gone.stderr


# -- flavors -------------------------------------------------------------------------------


def test_flavor_list(stack: Stack) -> None:
    flavors = stack.json("flavor", "list")
    assert names(flavors) >= {"m1.tiny", "m1.small", "m1.medium"}
    tiny = _by(flavors, "Name", "m1.tiny")
    assert (tiny["RAM"], tiny["VCPUs"], tiny["Disk"], tiny["Is Public"]) == (512, 1, 1, True)


def test_flavor_show(stack: Stack) -> None:
    tiny = stack.json("flavor", "show", "m1.tiny")
    assert tiny["name"] == "m1.tiny" and tiny["id"] == "1"
    assert (tiny["ram"], tiny["vcpus"], tiny["disk"]) == (512, 1, 1)
    assert tiny["os-flavor-access:is_public"] is True and tiny["properties"] == {}


def test_hypervisor_list_and_stats(stack: Stack) -> None:
    hypervisors = stack.json("hypervisor", "list", "--long", cloud="specstack-admin")
    assert hypervisors and all(h["State"] == "up" for h in hypervisors)
    assert {h["Hypervisor Type"] for h in hypervisors} == {"fake"}
    stats = stack.json("hypervisor", "stats", "show", cloud="specstack-admin")
    assert stats["count"] == len(hypervisors)
    assert stats["vcpus"] == sum(h["vCPUs"] for h in hypervisors)
    refused = stack.run("hypervisor", "list", check=False)  # the demo user: not an admin
    assert refused.returncode != 0 and "403" in refused.stderr
    services = stack.json("compute", "service", "list", cloud="specstack-admin")
    assert {(s["Binary"], s["State"], s["Status"]) for s in services} == {
        ("nova-compute", "up", "enabled")
    }
    assert {s["Host"] for s in services} == {h["Hypervisor Hostname"] for h in hypervisors}


# -- networks ------------------------------------------------------------------------------


def test_network_list(stack: Stack, private: dict[str, Any]) -> None:
    net = _by(stack.json("network", "list"), "Name", "private")
    assert net["ID"] == private["id"] and net["Subnets"] == private["subnets"]


def test_network_show(private: dict[str, Any], stack: Stack) -> None:
    assert private["name"] == "private" and private["status"] == "ACTIVE"
    assert private["admin_state_up"] is True and len(private["subnets"]) == 1
    assert private["subnet"]["network_id"] == private["id"]
    assert private["cidr"].version == 4


def test_network_and_subnet_create(stack: Stack) -> None:
    net = stack.json("network", "create", NETWORK)
    assert net["name"] == NETWORK and net["status"] == "ACTIVE" and net["subnets"] == []
    subnet = stack.json(
        "subnet", "create", "--network", NETWORK, "--subnet-range", "10.9.0.0/24", SUBNET
    )
    assert subnet["name"] == SUBNET and subnet["network_id"] == net["id"]
    assert subnet["cidr"] == "10.9.0.0/24" and subnet["ip_version"] == 4
    assert subnet["gateway_ip"] == "10.9.0.1"
    assert subnet["allocation_pools"] == [{"start": "10.9.0.2", "end": "10.9.0.254"}]
    assert stack.json("network", "show", NETWORK)["subnets"] == [subnet["id"]]
    listed = _by(stack.json("subnet", "list"), "Name", SUBNET)
    assert listed == {
        "ID": subnet["id"],
        "Name": SUBNET,
        "Network": net["id"],
        "Subnet": "10.9.0.0/24",
    }
    assert "private-subnet" in names(stack.json("subnet", "list"))


def test_port_list_and_show(stack: Stack, private: dict[str, Any]) -> None:
    demo = next(s for s in stack.json("server", "list") if s["Name"].startswith("demo-vm"))
    ports = stack.json("port", "list")
    assert ports, "the demo VM has a port"
    port = next(
        p
        for p in ports
        if any(
            ipaddress.ip_address(ip["ip_address"]) in private["cidr"]
            for ip in p["Fixed IP Addresses"]
        )
    )
    assert port["Status"] == "ACTIVE" and port["MAC Address"].startswith("fa:16:3e:")
    shown = stack.json("port", "show", port["ID"])
    assert shown["id"] == port["ID"] and shown["network_id"] == private["id"]
    assert shown["device_owner"] == "compute:nova" and shown["device_id"] == demo["ID"]
    assert shown["fixed_ips"] == port["Fixed IP Addresses"]
    assert shown["fixed_ips"][0]["subnet_id"] == private["subnet"]["id"]
    assert shown["binding_vif_type"] not in (None, "", "unbound", "binding_failed")
    assert shown["binding_host_id"]


# -- servers -------------------------------------------------------------------------------


def _server_ip(server: dict[str, Any]) -> str:
    addresses = server["addresses"]
    assert list(addresses) == ["private"], addresses
    (ip,) = addresses["private"]
    return str(ip)


def test_server_create(server: dict[str, Any], stack: Stack, private: dict[str, Any]) -> None:
    assert server["name"] == VM and server["status"] == "ACTIVE"
    assert server["OS-EXT-STS:vm_state"] == "active" and server["OS-EXT-STS:task_state"] is None
    # the CLI negotiates the newest version: from 2.47 the server's own copy of the flavor
    assert server["image"].startswith("demo-image (")
    assert server["flavor"]["original_name"] == "m1.tiny" and server["flavor"]["vcpus"] == 1
    ip = _server_ip(server)
    assert ipaddress.ip_address(ip) in private["cidr"]
    ports = stack.json("port", "list", "--server", server["id"])
    assert len(ports) == 1
    assert ports[0]["Fixed IP Addresses"] == [
        {"ip_address": ip, "subnet_id": private["subnet"]["id"]}
    ]
    assert ports[0]["Status"] == "ACTIVE"
    port = stack.json("port", "show", ports[0]["ID"])
    assert port["device_id"] == server["id"] and port["network_id"] == private["id"]


def test_server_list(server: dict[str, Any], stack: Stack) -> None:
    row = _by(stack.json("server", "list"), "Name", VM)
    assert row["ID"] == server["id"] and row["Status"] == "ACTIVE"
    assert row["Networks"] == {"private": [_server_ip(server)]}
    assert (row["Image"], row["Flavor"]) == ("demo-image", "m1.tiny")


def test_server_show(server: dict[str, Any], stack: Stack, demo_project: str) -> None:
    shown = stack.json("server", "show", VM)
    assert shown["id"] == server["id"] and shown["status"] == "ACTIVE"
    assert shown["addresses"] == {"private": [_server_ip(server)]}
    assert shown["flavor"]["original_name"] == "m1.tiny" and shown["image"].startswith(
        "demo-image ("
    )
    assert shown["project_id"] == demo_project
    assert shown["hostId"] and shown["volumes_attached"] == []


def test_server_stop_and_start(server: dict[str, Any], stack: Stack) -> None:
    assert stack.run("server", "stop", VM).stdout == ""
    stopped = stack.wait_for("server", VM, "status", "SHUTOFF")
    assert stopped["status"] == "SHUTOFF" and stopped["OS-EXT-STS:vm_state"] == "stopped"
    assert stack.run("server", "start", VM).stdout == ""
    started = stack.wait_for("server", VM, "status", "ACTIVE")
    assert started["status"] == "ACTIVE" and started["OS-EXT-STS:vm_state"] == "active"


def test_server_pause_suspend_and_lock(server: dict[str, Any], stack: Stack) -> None:
    for action, status, back in (
        ("pause", "PAUSED", "unpause"),
        ("suspend", "SUSPENDED", "resume"),
    ):
        assert stack.run("server", action, VM).stdout == ""
        assert stack.wait_for("server", VM, "status", status)["status"] == status
        assert stack.run("server", back, VM).stdout == ""
        assert stack.wait_for("server", VM, "status", "ACTIVE")["status"] == "ACTIVE"
    assert stack.run("server", "lock", VM).stdout == ""
    refused = stack.run("server", "stop", VM, check=False)  # the owner, not an admin
    assert refused.returncode != 0 and "is locked" in refused.stderr
    assert stack.run("server", "unlock", VM).stdout == ""


def test_server_metadata(
    server: dict[str, Any], stack: Stack, catalog: list[dict[str, Any]]
) -> None:
    """`server set/unset --property` (nova's metadata items), a replace and nova's limits."""
    stack.run("server", "set", "--property", "role=web", "--property", "tier=1", VM)
    assert stack.json("server", "show", VM)["properties"] == {"role": "web", "tier": "1"}
    stack.run("server", "unset", "--property", "tier", VM)
    assert stack.json("server", "show", VM)["properties"] == {"role": "web"}
    gone = stack.run("server", "unset", "--property", "tier", VM, check=False)
    assert gone.returncode != 0 and "Metadata item was not found" in gone.stderr
    url = f"{endpoint(catalog, 'compute')}/servers/{server['id']}/metadata"
    headers = {"X-Auth-Token": str(stack.json("token", "issue")["id"])}
    replaced = httpx.put(url, json={"metadata": {"a": "1"}}, headers=headers)
    assert replaced.status_code == 200 and replaced.json() == {"metadata": {"a": "1"}}
    item = httpx.get(f"{url}/a", headers=headers)
    assert item.status_code == 200 and item.json() == {"meta": {"a": "1"}}
    mismatch = httpx.put(f"{url}/a", json={"meta": {"b": "2"}}, headers=headers)
    assert mismatch.status_code == 400
    assert mismatch.json()["badRequest"]["message"] == "Request body and URI mismatch"
    many = {f"k{i}": "v" for i in range(128)}  # with "a": one more than nova allows
    refused = httpx.post(url, json={"metadata": many}, headers=headers)
    assert refused.status_code == 403
    assert refused.json()["forbidden"]["message"] == "Maximum number of metadata items exceeds 128"
    assert httpx.delete(f"{url}/a", headers=headers).status_code == 204
    assert stack.json("server", "show", VM)["properties"] == {}


# -- volumes -------------------------------------------------------------------------------


def test_volume_create(volume: dict[str, Any], stack: Stack) -> None:
    assert volume["name"] == VOLUME and volume["size"] == 1
    assert volume["status"] in ("creating", "available") and volume["attachments"] == []
    assert stack.wait_for("volume", VOLUME, "status", "available")["status"] == "available"


def test_volume_list(volume: dict[str, Any], stack: Stack) -> None:
    row = _by(stack.json("volume", "list"), "Name", VOLUME)
    assert row == {
        "ID": volume["id"],
        "Name": VOLUME,
        "Status": "available",
        "Size": 1,
        "Attached to": [],
    }


def test_volume_show(volume: dict[str, Any], stack: Stack) -> None:
    shown = stack.json("volume", "show", VOLUME)
    assert shown["id"] == volume["id"] and shown["status"] == "available"
    assert shown["size"] == 1 and shown["attachments"] == [] and shown["bootable"] is False
    v = stack.json("--os-volume-api-version", "3.59", "volume", "show", VOLUME)  # 3.13, 3.48
    assert v["group_id"] is None and v["shared_targets"] is False and len(v["service_uuid"]) == 36
    listed = stack.json("--os-volume-api-version", "3.59", "volume", "list")
    assert _by(listed, "Name", VOLUME)["ID"] == volume["id"]


def test_server_add_volume(server: dict[str, Any], volume: dict[str, Any], stack: Stack) -> None:
    added = stack.json("server", "add", "volume", VM, VOLUME)
    assert added["Server ID"] == server["id"] and added["Volume ID"] == volume["id"]
    assert added["Device"] == "/dev/vdb"
    shown = stack.wait_for("volume", VOLUME, "status", "in-use")
    assert shown["status"] == "in-use"
    (attachment,) = shown["attachments"]
    assert attachment["server_id"] == server["id"] and attachment["volume_id"] == volume["id"]
    assert attachment["device"] == "/dev/vdb" and attachment["attachment_id"]
    on_server = stack.json("server", "show", VM)["volumes_attached"]
    # the CLI negotiates a microversion from 2.3: whether the volume goes with the server too
    assert on_server == [{"id": volume["id"], "delete_on_termination": False}]


def test_server_remove_volume(server: dict[str, Any], volume: dict[str, Any], stack: Stack) -> None:
    assert stack.run("server", "remove", "volume", VM, VOLUME).stdout == ""
    shown = stack.wait_for("volume", VOLUME, "status", "available")
    assert shown["status"] == "available" and shown["attachments"] == []
    assert stack.json("server", "show", VM)["volumes_attached"] == []


def test_console_log_show(server: dict[str, Any], stack: Stack) -> None:
    log = stack.run("console", "log", "show", VM).stdout
    assert f"{VM}: booted" in log
    assert _server_ip(server) in log
    assert "attached vdb" in log and "detached vdb" in log
    last = stack.run("console", "log", "show", "--lines", "1", VM).stdout
    assert last.strip() == log.strip().splitlines()[-1]


def test_server_delete_wait(server: dict[str, Any], stack: Stack) -> None:
    stack.run("server", "delete", "--wait", VM)
    assert VM not in names(stack.json("server", "list"))
    gone = stack.run("server", "show", server["id"], check=False)
    assert gone.returncode != 0 and server["id"] in gone.stderr
    assert stack.json("port", "list", "--device-id", server["id"]) == []


def test_volume_delete(volume: dict[str, Any], stack: Stack) -> None:
    assert stack.run("volume", "delete", VOLUME).stdout == ""
    _wait_gone(stack, ("volume", "list"), VOLUME)


# -- object storage ------------------------------------------------------------------------


# The SDK's notes about its own API (DeprecationWarning, PendingDeprecationWarning).
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_sdk_create_and_delete_server(
    stack: Stack, private: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sdk_connection(stack, monkeypatch)
    try:
        server = conn.create_server(
            "wire-sdk-vm",
            image="demo-image",
            flavor="m1.tiny",
            network="private",
            wait=True,
            timeout=120,
        )
        assert server.status == "ACTIVE" and server.name == "wire-sdk-vm"
        assert ipaddress.ip_address(server.private_v4) in private["cidr"]
        shown = conn.get_server(server.id)
        assert shown is not None and shown.status == "ACTIVE"
        assert conn.delete_server(server.id, wait=True, timeout=120) is True
        assert conn.get_server(server.id) is None
    finally:
        conn.close()
