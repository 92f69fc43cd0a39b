"""Volume backups through the real `openstack` CLI and the legacy `cinder` CLI: `volume
backup create/list/show/restore/delete`, the data in swift's `volumebackups` container of
the demo project, restored into a new volume and (with --force) over an existing one, and
`cinder backup-list` (issue 15); a backup of a snapshot (`--snapshot`), and a restore into a
new volume refused over the project's gigabytes quota."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .conftest import Stack
from .test_legacy_clis import cli, rows

DATA = b"wire backup data " * 512


def _file(stack: Stack, volume_id: str) -> Path:
    """The back end's file of a volume (on this machine in either mode)."""
    found = list(stack.data_dir.rglob(f"volume-{volume_id}.img"))
    assert len(found) == 1, found
    return found[0]


def _wait(stack: Stack, kind: list[str], name: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        shown: dict[str, Any] = stack.json(*kind, "show", name)
        if shown["status"] == status:
            return shown
        assert time.monotonic() < deadline, f"{name} is {shown['status']}, not {status}"
        time.sleep(0.3)


def test_volume_backup_create_list_show_restore_delete(stack: Stack) -> None:
    vol = stack.json("volume", "create", "--size", "1", "wire-backup-vol")
    _wait(stack, ["volume"], vol["id"], "available")
    with open(_file(stack, vol["id"]), "r+b") as f:
        f.write(DATA)
    made = stack.json("volume", "backup", "create", "--name", "wire-backup", vol["id"])
    assert made["name"] == "wire-backup"
    backup = _wait(stack, ["volume", "backup"], "wire-backup", "available")
    assert backup["volume_id"] == vol["id"] and backup["size"] == 1
    assert backup["container"] == "volumebackups" and backup["is_incremental"] is False
    listed = stack.json("volume", "backup", "list")
    assert [(b["Name"], b["Status"], b["Size"]) for b in listed if b["ID"] == made["id"]] == [
        ("wire-backup", "available", 1)
    ]
    # the data is in the demo project's object store, as cinder's swift driver names it
    objects = [o["Name"] for o in stack.json("object", "list", "volumebackups")]
    assert f"volume_{vol['id']}" in {o.split("/")[0] for o in objects}
    assert any(o.endswith(f"backup_{made['id']}_metadata") for o in objects)
    # the legacy CLI lists it too
    legacy = {r[0]: r for r in rows(cli(stack, "cinder", "backup-list"))}
    assert legacy[made["id"]][1:5] == [vol["id"], "available", "wire-backup", "1"]

    restored = stack.json("volume", "backup", "restore", "wire-backup", "wire-restored")
    assert restored["id"] == made["id"] and restored["volume_name"] == "wire-restored"
    _wait(stack, ["volume"], restored["volume_id"], "available")
    with open(_file(stack, restored["volume_id"]), "rb") as f:
        assert f.read(len(DATA)) == DATA
    # over an existing volume: only with --force; its own data goes
    with open(_file(stack, vol["id"]), "r+b") as f:
        f.write(b"changed")
    refused = stack.run("volume", "backup", "restore", "wire-backup", vol["id"], check=False)
    assert refused.returncode != 0 and "--force" in refused.stderr
    stack.run("volume", "backup", "restore", "--force", "wire-backup", vol["id"])
    _wait(stack, ["volume"], vol["id"], "available")
    with open(_file(stack, vol["id"]), "rb") as f:
        assert f.read(len(DATA)) == DATA
    _wait(stack, ["volume", "backup"], "wire-backup", "available")

    stack.run("volume", "backup", "delete", "wire-backup")
    deadline = time.monotonic() + 60
    while made["id"] in {b["ID"] for b in stack.json("volume", "backup", "list")}:
        assert time.monotonic() < deadline, "the backup was never deleted"
        time.sleep(0.3)
    left = [o["Name"] for o in stack.json("object", "list", "volumebackups")]
    assert not any(made["id"] in o for o in left)
    stack.run("volume", "delete", vol["id"], restored["volume_id"])


def test_volume_backup_of_a_snapshot_and_a_restore_over_quota(stack: Stack) -> None:
    admin = "specstack-admin"
    project = str(stack.json("token", "issue")["project_id"])
    vol = stack.json("volume", "create", "--size", "1", "wire-snap-backup-vol")
    _wait(stack, ["volume"], vol["id"], "available")
    with open(_file(stack, vol["id"]), "r+b") as f:
        f.write(DATA)
    snap = stack.json("volume", "snapshot", "create", "--volume", vol["id"], "wire-snap")
    _wait(stack, ["volume", "snapshot"], snap["id"], "available")
    with open(_file(stack, vol["id"]), "r+b") as f:
        f.write(b"after the snapshot")
    made = stack.json("volume", "backup", "create", "--snapshot", snap["id"],
                      "--name", "wire-snap-backup", vol["id"])  # fmt: skip
    backup = _wait(stack, ["volume", "backup"], "wire-snap-backup", "available")
    assert (backup["snapshot_id"], backup["volume_id"]) == (snap["id"], vol["id"])
    assert _wait(stack, ["volume", "snapshot"], snap["id"], "available")["id"] == snap["id"]
    # restoring it into a new volume needs room in the project's gigabytes
    used = sum(int(v["Size"]) for v in stack.json("volume", "list"))
    limit = {r["Resource"]: r["Limit"] for r in stack.json("quota", "show", project)}["gigabytes"]
    stack.run("quota", "set", "--gigabytes", str(used), project, cloud=admin)
    try:
        names = {v["Name"] for v in stack.json("volume", "list")}
        refused = stack.run("volume", "backup", "restore", made["id"], "wire-over", check=False)
        assert refused.returncode != 0 and "exceeds allowed gigabytes quota" in refused.stderr
        assert {v["Name"] for v in stack.json("volume", "list")} == names
        assert stack.json("volume", "backup", "show", made["id"])["status"] == "available"
    finally:
        stack.run("quota", "set", "--gigabytes", str(limit), project, cloud=admin)
    restored = stack.json("volume", "backup", "restore", made["id"], "wire-from-snap")
    _wait(stack, ["volume"], restored["volume_id"], "available")
    with open(_file(stack, restored["volume_id"]), "rb") as f:
        assert f.read(len(DATA)) == DATA  # the snapshot's data, not the volume's since
    _wait(stack, ["volume", "backup"], "wire-snap-backup", "available")
    stack.run("volume", "backup", "delete", made["id"])
    deadline = time.monotonic() + 60
    while made["id"] in {b["ID"] for b in stack.json("volume", "backup", "list")}:
        assert time.monotonic() < deadline, "the backup was never deleted"
        time.sleep(0.3)
    stack.run("volume", "snapshot", "delete", snap["id"])
    deadline = time.monotonic() + 60
    while snap["id"] in {s["ID"] for s in stack.json("volume", "snapshot", "list")}:
        assert time.monotonic() < deadline, "the snapshot was never deleted"
        time.sleep(0.3)
    stack.run("volume", "delete", vol["id"], restored["volume_id"])
