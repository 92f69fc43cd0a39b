"""cinder-scheduler and the file back end of cinder-volume: placing a volume on the back
end with the fewest allocated GiB, and the sparse raw files that are the volumes.

The scheduler consumes `create_volume` (cast by createVolume's hook), records the chosen
host in the volume's `host` column and casts `volume_create` to it; that back end makes
`<data_dir>/volumes/<host>/volume-<id>.img` and marks the volume `available`. Exports
(`attachment_update`) answer how a compute host reaches the file. A snapshot is a copy of
the file beside it (`snapshot-<id>.img`), which a revert writes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from specstack_runtime.behaviours.volume_base import (
    BACKEND_MESSAGE,
    DEFAULT_AVAILABILITY_ZONE,
    GIB,
    Doc,
    remove_volume_rows,
    set_status,
    store_of,
    volume_not_found,
)
from specstack_runtime.bindings import bind
from specstack_runtime.context import Call, Reply
from specstack_runtime.errors import NotFound
from specstack_runtime.filewriter import atomic_write
from specstack_runtime.messaging import send
from specstack_runtime.registry import behaviour
from specstack_runtime.services import ServiceRuntime

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@#-]{0,127}$")


# -- cinder-scheduler ------------------------------------------------------------------------


def _backend_hosts(rt: ServiceRuntime) -> list[tuple[str, str]]:
    """(host, availability zone) of every instance of the components that create volumes."""
    hosts: list[tuple[str, str]] = []
    for comp in rt.info.components.values():
        if not any(c.get("message") == BACKEND_MESSAGE for c in comp.get("consumes") or []):
            continue
        for node in comp.get("nodes") or []:
            zone = rt.info.nodes[node].get("availability_zone") or DEFAULT_AVAILABILITY_ZONE
            hosts += [
                (h, zone) for h in rt.info.node_hosts(node, rt.config) if (h, zone) not in hosts
            ]
    return hosts


def availability_zones(rt: ServiceRuntime) -> set[str]:
    return {zone for _host, zone in _backend_hosts(rt)} or {DEFAULT_AVAILABILITY_ZONE}


@behaviour("volume.availability_zones")
async def list_availability_zones(call: Call) -> Reply:
    """GET .../os-availability-zone: the back ends' zones (the topology's), each available."""
    zones = sorted(availability_zones(call.rt))
    info = [{"zoneName": z, "zoneState": {"available": True}} for z in zones]
    return Reply(200, {"availabilityZoneInfo": info})


@behaviour("volume.schedule_create")
async def schedule_create(call: Call) -> None:
    """cinder-scheduler: pick the back end with the fewest allocated GiB; cast volume_create."""
    rt = call.rt
    store = store_of(call)
    volume_id = call.payload["volume_id"]
    volume = await store.get("volumes", volume_id)
    if volume is None or volume.get("status") != "creating":
        logger.info("volume %s is gone or no longer creating; not scheduling it", volume_id)
        return
    zone = call.payload.get("availability_zone")
    candidates = [h for h, z in _backend_hosts(rt) if zone is None or z == zone]
    if not candidates:
        logger.error("no volume back end for volume %s (zone %s)", volume_id, zone)
        await set_status(store, volume_id, "error")
        return
    allocated: dict[str, int] = {}
    for host in candidates:
        rows = await store.list("volumes", {"host": host})
        allocated[host] = sum(int(v.get("size") or 0) for v in rows)
    chosen = min(candidates, key=lambda h: allocated[h])
    placed = await set_status(store, volume_id, "creating", host=chosen)
    if placed is None:
        return
    await send(
        call, BACKEND_MESSAGE, {"volume_id": volume_id, "size": int(volume["size"])}, host=chosen
    )


# -- cinder-volume (file back end) -----------------------------------------------------------


def volume_path(rt: ServiceRuntime, volume_id: str) -> Path:
    """The back end's file for a volume: <data_dir>/volumes/<host>/volume-<id>.img."""
    for part, what in ((rt.host, "host"), (volume_id, "volume id")):
        if not _SAFE_NAME.match(part) or part in (".", ".."):
            raise ValueError(f"{what} {part!r} cannot name a file")
    return rt.data_dir / "volumes" / rt.host / f"volume-{volume_id}.img"


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The (start, end) ranges of a sparse file that hold data (its holes read as zeros)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: nothing but a hole after pos
            return
        pos = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, pos


def sparse_copy(source: Path, target: Path) -> None:
    """`source` copied over `target`, its holes kept (a volume is mostly an empty file)."""
    part = target.with_name(target.name + ".part")
    with open(source, "rb") as src, open(part, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        for start, end in data_extents(src.fileno(), size):
            src.seek(start)
            dst.seek(start)
            while start < end:
                chunk = src.read(min(end - start, 1 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                start += len(chunk)
        dst.truncate(size)
    os.replace(part, target)


def snapshot_path(rt: ServiceRuntime, snapshot_id: str) -> Path:
    """A snapshot's copy of its volume's file, beside the volumes of this host."""
    return volume_path(rt, snapshot_id).with_name(f"snapshot-{snapshot_id}.img")


async def _image_data(call: Call, volume: Doc) -> bytes:
    """The data of the image a volume is made from, from glance (its md5 checked)."""
    rt, image_id = call.rt, str(volume["image_id"])
    resp = await rt.clients.call(
        rt.info.api_of_type("image"),
        "downloadImageData",
        {"image_id": image_id},
        token=await rt.service_token(),
    )
    want = (volume.get("volume_image_metadata") or {}).get("checksum")
    if resp.status_code != 200 or (want and hashlib.md5(resp.content).hexdigest() != want):
        raise OSError(f"image {image_id}: glance answered {resp.status_code} or other data")
    return resp.content


@behaviour("volume.backend_create", needs=("image",))
async def backend_create(call: Call) -> None:
    """cinder-volume on rt.host: a sparse raw file of `size` GiB (with the data of the image
    or the source volume it is made from); the volume becomes available."""
    store = store_of(call)
    volume_id = call.payload["volume_id"]
    size = int(call.payload["size"])
    volume = await store.get("volumes", volume_id)
    if volume is None:
        logger.info("volume %s was deleted before its back end created it", volume_id)
        return
    path = volume_path(call.rt, volume_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        source_id = volume.get("source_volid")
        source = volume_path(call.rt, source_id) if source_id else None
        if source is not None and source.exists():
            sparse_copy(source, path)
        elif volume.get("image_id"):
            atomic_write(path, await _image_data(call, volume))
        else:
            with open(path, "wb"):
                pass
        os.truncate(path, size * GIB)
    except OSError as exc:
        logger.error("creating the file of volume %s failed: %s", volume_id, exc)
        await set_status(store, volume_id, "error")
        return
    if await set_status(store, volume_id, "available") is None:
        current = await store.get("volumes", volume_id)
        if current is None:  # deleted meanwhile: do not leave the file behind
            path.unlink(missing_ok=True)


@behaviour("volume.backend_export")
async def backend_export(call: Call) -> Doc:
    """The connection info of a volume file for an attachment (grown first if extended), as
    the consumer's `args` state it (`reply`: `{file}`, `{volume.*}`, `{mode}` filled in)."""
    store = store_of(call)
    volume_id = call.payload["volume_id"]
    volume = await store.get("volumes", volume_id)
    if volume is None:
        raise volume_not_found(call.rt, volume_id)
    path = volume_path(call.rt, volume_id)
    if not path.exists():
        raise NotFound(
            f"Volume {volume_id} has no data file on {call.rt.host}.",
            kind="VolumeBackendAPIException",
        )
    wanted = int(volume["size"]) * GIB
    if path.stat().st_size < wanted:  # os-extend changed the size: grow the sparse file
        os.truncate(path, wanted)
    att = await store.get("attachments", call.payload["attachment_id"])
    mode = (att or {}).get("mode") or "rw"
    # the reply the consumer's args state, of the file, the volume and the access mode
    reply: Doc = bind(
        call.args["reply"], {"file": str(path.resolve()), "volume": volume, "mode": mode}
    )
    return reply


@behaviour("volume.backend_unexport")
async def backend_unexport(call: Call) -> Doc:
    """The file back end keeps no export state: acknowledge."""
    return {"volume_id": call.payload["volume_id"]}


@behaviour("volume.backend_delete")
async def backend_delete(call: Call) -> None:
    """Remove the volume's file and its rows."""
    volume_id = call.payload["volume_id"]
    volume_path(call.rt, volume_id).unlink(missing_ok=True)
    await remove_volume_rows(store_of(call), volume_id)


@behaviour("volume.backend_snapshot")
async def backend_snapshot(call: Call) -> Doc:
    """A snapshot's copy of the volume's file (a call: the snapshot is taken when answered)."""
    volume_id, snapshot_id = call.payload["volume_id"], call.payload["snapshot_id"]
    await asyncio.to_thread(
        sparse_copy, volume_path(call.rt, volume_id), snapshot_path(call.rt, snapshot_id)
    )
    return {"snapshot_id": snapshot_id}


@behaviour("volume.backend_snapshot_delete")
async def backend_snapshot_delete(call: Call) -> None:
    """Remove the snapshot's copy and its row."""
    snapshot_id = call.payload["snapshot_id"]
    snapshot_path(call.rt, snapshot_id).unlink(missing_ok=True)
    await store_of(call).delete("snapshots", snapshot_id)


@behaviour("volume.backend_revert")
async def backend_revert(call: Call) -> Doc:
    """revert (3.40): the snapshot's copy written over the volume's file, at the volume's size
    (an extended volume keeps its size)."""
    volume_id, snapshot_id = call.payload["volume_id"], call.payload["snapshot_id"]
    copy, path = snapshot_path(call.rt, snapshot_id), volume_path(call.rt, volume_id)
    if not copy.exists():
        raise NotFound(
            f"Snapshot {snapshot_id} has no data on {call.rt.host}.",
            kind="VolumeBackendAPIException",
        )
    size = path.stat().st_size
    await asyncio.to_thread(sparse_copy, copy, path)
    os.truncate(path, max(size, path.stat().st_size))
    return {"volume_id": volume_id}
