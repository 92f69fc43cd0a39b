"""createImage and rebuild through the real `openstack` CLI: `server image create --wait` snapshots a
server into a glance image that becomes active with the guest's root disk (the fake
guest's disk is its image's data), marked a snapshot of it, recorded as an instance action;
nova's 202 with Location, and its 400 and 404, over HTTP; then `server rebuild --image
--wait` from that snapshot, on the same host with the same addresses; shelve, an
administrator's offload, unshelve and `console url show` (issue 15)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from .conftest import Stack

VM = "wire-snapshot-vm"
SNAP = "wire-snapshot"


def _compute(stack: Stack) -> tuple[str, dict[str, str]]:
    """The compute API's public URL and the demo user's token."""
    token = stack.json("token", "issue")
    entry = next(c for c in stack.json("catalog", "list") if c["Type"] == "compute")
    public = next(e for e in entry["Endpoints"] if e["interface"] == "public")
    return str(public["url"]).rstrip("/"), {"X-Auth-Token": str(token["id"])}


def test_server_image_create_makes_an_active_snapshot(stack: Stack, tmp_path: Path) -> None:
    server: dict[str, Any] = stack.json(
        "server", "create", "--image", "demo-image", "--flavor", "m1.tiny",
        "--network", "private", "--wait", VM,
    )  # fmt: skip
    try:
        made = stack.json("server", "image", "create", "--name", SNAP, "--wait", VM)
        assert made["name"] == SNAP and made["status"] == "active"
        image = stack.json("image", "show", SNAP)
        props = image["properties"]
        assert props["image_type"] == "snapshot" and props["instance_uuid"] == server["id"]
        assert props["base_image_ref"] == stack.json("image", "show", "demo-image")["id"]
        assert image["visibility"] == "private" and image["disk_format"] == "raw"
        # the data: the root disk the guest had, its image's
        base, snap = tmp_path / "base", tmp_path / "snap"
        stack.run("image", "save", "--file", str(base), "demo-image")
        stack.run("image", "save", "--file", str(snap), SNAP)
        assert snap.read_bytes() == base.read_bytes() and snap.stat().st_size > 0
        assert image["checksum"] == hashlib.md5(snap.read_bytes()).hexdigest()
        # the server is back to ACTIVE with no task, and the action is recorded
        shown = stack.json("server", "show", VM)
        assert shown["status"] == "ACTIVE" and shown["OS-EXT-STS:task_state"] is None
        actions = stack.json("server", "event", "list", VM)
        assert [a["Action"] for a in actions] == ["createImage", "create"]
        event = stack.json("server", "event", "show", VM, actions[0]["Request ID"])
        assert [(e["event"], e["result"]) for e in event["events"]] == [
            ("compute_snapshot_instance", "Success")
        ]
        # over HTTP: 202 with the image's URL in Location; nova's 400 and 404
        url, headers = _compute(stack)
        action = f"{url}/servers/{server['id']}/action"
        answer = httpx.post(action, json={"createImage": {"name": "wire-snap-2",
                                                          "metadata": {"purpose": "test"}}},
                            headers=headers)  # fmt: skip
        assert answer.status_code == 202 and answer.content == b""
        image_id = answer.headers["Location"].rsplit("/images/", 1)[1]
        second = stack.wait_for("image", image_id, "status", "active")
        assert second["name"] == "wire-snap-2" and second["properties"]["purpose"] == "test"
        nameless = httpx.post(action, json={"createImage": {}}, headers=headers)
        assert nameless.status_code == 400
        message = nameless.json()["badRequest"]["message"]  # the request schema's words
        assert message == "Invalid input for field/attribute createImage/name: Field required"
        blank = httpx.post(action, json={"createImage": {"name": " x"}}, headers=headers)
        assert blank.status_code == 400 and "name" in blank.json()["badRequest"]["message"]
        nowhere = f"{url}/servers/{'4' * 8}-4444-4444-8444-{'4' * 12}/action"
        gone = httpx.post(nowhere, json={"createImage": {"name": "x"}}, headers=headers)
        assert gone.status_code == 404 and "itemNotFound" in gone.json()
        stack.run("image", "delete", image_id)
        # rebuilt from its own snapshot: the same host, the new image, ACTIVE again
        admin = stack.json("server", "show", server["id"], cloud="specstack-admin")
        stack.run("server", "rebuild", "--image", SNAP, "--wait", VM)
        rebuilt = stack.json("server", "show", server["id"], cloud="specstack-admin")
        assert rebuilt["status"] == "ACTIVE" and image["id"] in str(rebuilt["image"])
        assert rebuilt["OS-EXT-SRV-ATTR:host"] == admin["OS-EXT-SRV-ATTR:host"]
        assert rebuilt["addresses"] == admin["addresses"]
        actions = stack.json("server", "event", "list", VM)
        assert [a["Action"] for a in actions][:1] == ["rebuild"]
        event = stack.json("server", "event", "show", VM, actions[0]["Request ID"])
        assert [(e["event"], e["result"]) for e in event["events"]] == [
            ("compute_rebuild_instance", "Success")
        ]
        unknown = stack.run("server", "rebuild", "--image", "no-such-image", VM, check=False)
        assert unknown.returncode != 0
    finally:
        stack.run("image", "delete", SNAP, check=False)
        stack.run("server", "delete", "--wait", VM, check=False)


def test_volume_from_image_boot_from_volume_and_multiple_create(
    stack: Stack, tmp_path: Path
) -> None:
    """`volume create --image`: a bootable volume with the image's data and metadata;
    `server create --volume` and `--boot-from-volume SIZE --image` boot from a root volume
    (no image); `--min 2 --max 2` makes name-1 and name-2 (issue 15)."""
    roots: list[str] = []
    try:
        made = stack.json("volume", "create", "--image", "demo-image", "--size", "1", "wire-iv")
        volume = stack.wait_for("volume", made["id"], "status", "available")
        assert volume["bootable"] in (True, "true")  # the CLI shows a bool
        assert volume["volume_image_metadata"]["image_name"] == "demo-image"
        data = tmp_path / "image"
        stack.run("image", "save", "--file", str(data), "demo-image")
        disk = next((stack.data_dir / "volumes").glob(f"*/volume-{made['id']}.img"))
        with open(disk, "rb") as f:
            assert f.read(data.stat().st_size) == data.read_bytes()
        boot = ("--flavor", "m1.tiny", "--network", "private", "--wait")
        one = stack.json("server", "create", "--volume", "wire-iv", *boot, "wire-bfv-1")
        two = stack.json(
            "server", "create", "--boot-from-volume", "1", "--image", "demo-image", *boot,
            "wire-bfv-2",
        )  # fmt: skip
        for server in (one, two):
            assert server["status"] == "ACTIVE" and not server["image"].startswith("demo")
        assert [v["id"] for v in one["volumes_attached"]] == [made["id"]]
        # its image: the volume's cinder snapshot in the image's mappings, active, no data
        image = stack.json("server", "image", "create", "--wait", "--name", "wire-bfv-snap",
                           "wire-bfv-1")  # fmt: skip
        image = stack.json("image", "show", image["id"])
        assert (image["status"], image["size"]) == ("active", 0)
        (snap,) = stack.json("volume", "snapshot", "list", "--volume", made["id"])
        assert snap["Name"] == "snapshot for wire-bfv-snap"
        (mapping,) = json.loads(image["properties"]["block_device_mapping"])
        assert (mapping["snapshot_id"], mapping["boot_index"]) == (snap["ID"], 0)
        assert stack.json("server", "show", "wire-bfv-1")["status"] == "ACTIVE"
        (root,) = two["volumes_attached"]
        roots.append(root["id"])
        root_volume = stack.json("volume", "show", root["id"])
        assert root_volume["status"] == "in-use" and root_volume["bootable"] in (True, "true")
        assert root_volume["attachments"][0]["device"] == "/dev/vda"
        stack.run(
            "server", "create", "--image", "demo-image", "--min", "2", "--max", "2", *boot,
            "wire-multi",
        )  # fmt: skip
        listed = stack.json("server", "list", "--name", "^wire-multi")
        assert sorted(s["Name"] for s in listed) == ["wire-multi-1", "wire-multi-2"]
    finally:
        for name in ("wire-bfv-1", "wire-bfv-2", "wire-multi-1", "wire-multi-2"):
            stack.run("server", "delete", "--wait", name, check=False)
        stack.run("image", "delete", "wire-bfv-snap", check=False)
        for snap in stack.json(
            "volume", "snapshot", "list", "--name", "snapshot for wire-bfv-snap"
        ):
            stack.run("volume", "snapshot", "delete", snap["ID"], check=False)
        for volume_id in ("wire-iv", *roots):  # kept: delete_on_termination is false
            stack.run("volume", "delete", volume_id, check=False)


def test_server_shelve_offload_unshelve_and_console_url(stack: Stack) -> None:
    """`server shelve`, `shelve --offload` (an administrator's), `unshelve` and
    `console url show` through the CLI: SHELVED with the NAME-shelved image, offloaded
    from its host, ACTIVE again with the image gone, each recorded as nova names it."""
    vm = "wire-shelve-vm"
    server: dict[str, Any] = stack.json(
        "server", "create", "--image", "demo-image", "--flavor", "m1.tiny",
        "--network", "private", "--wait", vm,
    )  # fmt: skip
    try:
        console = stack.json("console", "url", "show", vm)
        assert console["type"] == "novnc"
        assert console["url"].endswith(f"/r/compute/servers/{server['id']}")
        stack.run("server", "shelve", "--wait", vm)
        assert stack.json("server", "show", vm)["status"] == "SHELVED"
        assert stack.json("image", "show", f"{vm}-shelved")["status"] == "active"
        # offloading is the administrators' (nova's policy)
        url, headers = _compute(stack)
        action = f"{url}/servers/{server['id']}/action"
        refused = httpx.post(action, json={"shelveOffload": None}, headers=headers)
        assert refused.status_code == 403 and "shelve_offload" in refused.text
        stack.run("server", "unshelve", vm)
        back = stack.wait_for("server", vm, "status", "ACTIVE")
        assert back["status"] == "ACTIVE", back
        # shelved and offloaded by an administrator (the CLI offloads what it shelves)
        stack.run("server", "shelve", "--offload", "--wait", server["id"], cloud="specstack-admin")
        admin = stack.json("server", "show", server["id"], cloud="specstack-admin")
        assert admin["status"] == "SHELVED_OFFLOADED" and not admin["OS-EXT-SRV-ATTR:host"]
        # its port unbound from the host (still the server's), bound again where it lands
        (port,) = stack.json("port", "list", "--device-id", server["id"], cloud="specstack-admin")
        assert not _port_host(stack, port["ID"])
        stack.run("server", "unshelve", vm)
        back = stack.wait_for("server", vm, "status", "ACTIVE")
        assert back["status"] == "ACTIVE", back
        host = stack.json("server", "show", server["id"], cloud="specstack-admin")[
            "OS-EXT-SRV-ATTR:host"
        ]
        assert host and _port_host(stack, port["ID"]) == host
        gone = stack.run("image", "show", f"{vm}-shelved", check=False)
        assert gone.returncode != 0  # the shelved image has served
        listed = stack.json("server", "event", "list", server["id"], cloud="specstack-admin")
        actions = [a["Action"] for a in listed]
        assert actions == ["unshelve", "shelveOffload", "shelve", "unshelve", "shelve", "create"]
    finally:
        stack.run("server", "delete", "--wait", vm, check=False)


def _port_host(stack: Stack, port_id: str) -> str:
    """The host neutron has the port bound to (an administrator sees it)."""
    return str(
        stack.json("port", "show", port_id, cloud="specstack-admin")["binding_host_id"] or ""
    )
