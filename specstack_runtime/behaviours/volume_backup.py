"""Volume backups (cinder-backup's swift driver) on the back end that holds the volume: the
data streams between a volume's file and the project's object store.

What a backup is (fields, quotas, states, the restore action and its checks) is
spec/resources/block-storage.yaml's. A backup is objects in the container the backup names
(`volumebackups` by default) of the owner's account, written with the user's token the
message carries: `<prefix>-00001`... each a chunk of the file that holds data (chunks that
are holes are not stored) and `<prefix>_metadata`, the chunks' offsets, lengths and md5s.
The prefix is cinder's `volume_<volume id>/<time>/az_<zone>_backup_<backup id>`. An
incremental backup writes only chunks unlike its parent's; its metadata names those by their
parent's objects (a parent with dependents cannot be deleted: the spec's rule).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx

from specstack_runtime.behaviours.volume_backend import data_extents, snapshot_path, volume_path
from specstack_runtime.behaviours.volume_base import GIB, Doc, store_of
from specstack_runtime.context import Call
from specstack_runtime.registry import behaviour

logger = logging.getLogger(__name__)

CHUNK = 4 << 20  # bytes an object holds (cinder's backup_swift_object_size is larger)
TABLE = "backups"


class BackupFailed(Exception):
    """The object store or the file failed; the backup (and its volume) say why."""


def _chunks(path: Path) -> list[tuple[int, bytes]]:
    """(offset, data) of each CHUNK of the file that holds data and is not all zeros."""
    out: list[tuple[int, bytes]] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        starts = sorted(
            {
                n * CHUNK
                for start, end in data_extents(f.fileno(), size)
                for n in range(start // CHUNK, (end - 1) // CHUNK + 1)
            }
        )
        for offset in starts:
            f.seek(offset)
            data = f.read(CHUNK)
            if data.count(0) != len(data):
                out.append((offset, data))
    return out


def _write(path: Path, size: int, chunks: list[tuple[int, bytes]]) -> None:
    """The volume's file as the backup has it: emptied to `size` bytes, then each chunk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(0)
        f.truncate(size)
        for offset, data in chunks:
            f.seek(offset)
            f.write(data)


async def _swift(call: Call, operation: str, backup: Doc, obj: str | None, **kw: Any) -> bytes:
    """One object store operation on the backup's container, with the user's token."""
    params = {"account": f"AUTH_{backup['project_id']}", "container": str(backup["container"])}
    if obj is not None:
        params["object"] = obj
    rt = call.rt
    try:
        resp = await rt.clients.call(
            rt.info.api_of_type("object-store"),
            operation,
            params,
            token=call.token,
            context=call.flow_context(),
            **kw,
        )
    except httpx.HTTPError as exc:
        raise BackupFailed(f"The object store is unreachable: {exc}") from exc
    if resp.status_code >= 300 and not (operation == "deleteObject" and resp.status_code == 404):
        raise BackupFailed(f"The object store answered {operation} with {resp.status_code}.")
    return bytes(resp.content)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def _put(call: Call, backup: Doc, name: str, data: bytes, md5: str | None = None) -> None:
    md5 = md5 or _md5(data)
    await _swift(call, "putObject", backup, name, body=data, headers={"ETag": md5})


async def _failed(call: Call, backup: Doc, source: tuple[str, str, str], exc: Exception) -> None:
    logger.error("backup %s of volume %s failed: %s", backup["id"], backup["volume_id"], exc)
    await store_of(call).update(TABLE, backup["id"], {"status": "error", "fail_reason": str(exc)})
    await store_of(call).update(source[0], source[1], {"status": source[2]})


@behaviour("volume.backup_create", needs=("object-store",))
async def backup_create(call: Call) -> None:
    """The volume's data chunks and their metadata into the object store; the backup becomes
    available (an incremental one notes its parent, the volume's latest backup) and the volume
    goes back to the status it had (a snapshot's backup: the snapshot's copy, available again)."""
    store = store_of(call)
    backup = await store.get(TABLE, call.payload["backup_id"])
    if backup is None or backup["status"] != "creating":
        return
    vid, back_to = str(backup["volume_id"]), backup.get("volume_status") or "available"
    sid = backup.get("snapshot_id")  # a snapshot's: its copy read, the snapshot backing-up
    table, of, at = ("snapshots", str(sid), snapshot_path) if sid else ("volumes", vid, volume_path)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    prefix = f"volume_{vid}/{stamp}/az_{backup.get('availability_zone')}_backup_{backup['id']}"
    wanted = {"volume_id": vid, "status": "available"} if backup.get("incremental") else None
    found = await store.list(TABLE, wanted) if wanted else []
    parent = max(found, key=lambda b: str(b.get("created_at")), default=None)  # the latest
    try:
        shared = parent if parent and parent.get("container") == backup["container"] else None
        had = {int(o["offset"]): o for o in await _objects(call, shared)} if shared else {}
        chunks = await asyncio.to_thread(_chunks, at(call.rt, of))
        await _swift(call, "createContainer", backup, None)
        objects, written = [], 0
        for n, (offset, data) in enumerate(chunks, 1):
            md5, same = _md5(data), had.get(offset)
            if same is not None and (same.get("length"), same.get("md5")) == (len(data), md5):
                objects.append(same)
                continue
            await _put(call, backup, f"{prefix}-{n:05d}", data, md5)
            objects.append({"name": f"{prefix}-{n:05d}", "offset": offset, "length": len(data)})
            objects[-1].update(md5=md5, compression="none")
            written += 1
        meta = {"version": "1.0.0", "backup_id": backup["id"], "volume_id": vid, "objects": objects}
        await _put(call, backup, f"{prefix}_metadata", json.dumps(meta).encode())
    except (OSError, BackupFailed, ValueError, KeyError) as exc:
        await _failed(call, backup, (table, of, back_to), exc)
        return
    done: Doc = {"status": "available", "object_count": written + 1}
    done["service_metadata"] = prefix
    if parent is not None:
        done["parent_id"] = parent["id"]  # its has_dependent_backups: the spec's join
    await store.update(TABLE, backup["id"], done, expect={"status": "creating"})
    await store.update(table, of, {"status": back_to}, expect={"status": "backing-up"})


async def _objects(call: Call, backup: Doc) -> list[Doc]:
    meta = await _swift(call, "getObject", backup, f"{backup['service_metadata']}_metadata")
    objects: list[Doc] = json.loads(meta)["objects"]
    return objects


@behaviour("volume.backup_restore", needs=("object-store",))
async def backup_restore(call: Call) -> None:
    """The backup's chunks read back (each md5 checked) into the volume's file; the volume and
    the backup are available again (on a failure: the volume error_restoring, the backup
    available)."""
    store = store_of(call)
    backup = await store.get(TABLE, call.payload["backup_id"])
    volume = await store.get("volumes", call.payload["volume_id"])
    if backup is None or volume is None:
        return
    try:
        chunks = []
        for obj in await _objects(call, backup):
            data = await _swift(call, "getObject", backup, obj["name"])
            if len(data) != obj["length"] or _md5(data) != obj["md5"]:
                raise BackupFailed(f"object {obj['name']} does not hold the data backed up")
            chunks.append((int(obj["offset"]), data))
        size = int(volume["size"]) * GIB
        await asyncio.to_thread(_write, volume_path(call.rt, volume["id"]), size, chunks)
        status = "available"
    except (OSError, BackupFailed, ValueError, KeyError) as exc:
        logger.error("restoring backup %s to %s failed: %s", backup["id"], volume["id"], exc)
        status = "error_restoring"
    await store.update("volumes", volume["id"], {"status": status})
    await store.update(TABLE, backup["id"], {"status": "available"}, expect={"status": "restoring"})


@behaviour("volume.backup_delete", needs=("object-store",))
async def backup_delete(call: Call) -> None:
    """The backup's objects removed from the object store, then its row; on a failure it is
    error_deleting."""
    store = store_of(call)
    backup = await store.get(TABLE, call.payload["backup_id"])
    if backup is None:
        return
    try:
        if backup.get("service_metadata"):
            own = f"{backup['service_metadata']}-"  # not its parent's, which it reuses
            for obj in await _objects(call, backup):
                if str(obj["name"]).startswith(own):
                    await _swift(call, "deleteObject", backup, obj["name"])
            await _swift(call, "deleteObject", backup, f"{backup['service_metadata']}_metadata")
    except (BackupFailed, ValueError, KeyError) as exc:
        logger.error("deleting backup %s failed: %s", backup["id"], exc)
        await store.update(TABLE, backup["id"], {"status": "error_deleting"})
        return
    await store.delete(TABLE, backup["id"])
