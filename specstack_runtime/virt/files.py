"""An instance's files on its compute host, as the drivers that run real guests make them:
root disks made from the image cache, kernel and ramdisk copies, volumes that are local files,
and the directory a move's source keeps aside (both drivers' moves).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specstack_runtime.virt import VirtError

if TYPE_CHECKING:
    from generated.drivers.types import ImageMeta

GIB = 1024**3
VOLUME_TYPES = ("file", "local")
DISK_FORMATS = ("raw", "qcow2")


def qemu_img(*args: str) -> str:
    exe = shutil.which("qemu-img")
    if exe is None:
        raise VirtError("qemu-img is not installed (package qemu-utils)")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VirtError(f"qemu-img {args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def image_format(path: Path) -> str:
    """The format of an image file as qemu-img sees it (raw when qemu-img is absent)."""
    if shutil.which("qemu-img") is None:
        return "raw"
    info = json.loads(qemu_img("info", "--output=json", str(path)))
    return str(info.get("format") or "raw")


def virtual_size(path: Path) -> int:
    return int(json.loads(qemu_img("info", "--output=json", str(path)))["virtual-size"])


def _bootable(image: ImageMeta, fmt: str) -> None:
    if fmt not in DISK_FORMATS:
        raise VirtError(f"image {image.get('id')} is {fmt}; only raw and qcow2 can boot")


def root_format(image: ImageMeta) -> str | None:
    """The format of the instance's own root disk on the image file: a qcow2 overlay where
    qemu-img can make one, else a copy in the image's format; None without an image file."""
    if not image.get("path"):
        return None
    if shutil.which("qemu-img") is not None:
        return "qcow2"
    fmt = str(image.get("disk_format") or "raw")
    _bootable(image, fmt)
    return fmt


def make_root(image: ImageMeta, root_gb: int, path: Path, fmt: str, whole: bool = False) -> None:
    """The root disk at `path`: an overlay on the image file grown to the flavor's size, or a
    copy of it. `whole`: the image is a moved guest's own disk, copied (converted to `fmt`
    if it is not in it) and grown to the flavor's size."""
    base = Path(str(image.get("path"))).resolve()
    if not base.is_file():
        raise VirtError(f"image {image.get('id')} has no file at {base}")
    if whole:
        _copy_grown(base, root_gb, path, fmt)
    elif fmt == "qcow2" and shutil.which("qemu-img") is not None:
        base_fmt = image_format(base)
        _bootable(image, base_fmt)
        size = [f"{root_gb}G"] if root_gb * GIB > virtual_size(base) else []
        qemu_img("create", "-q", "-f", "qcow2", "-F", base_fmt, "-b", str(base), str(path), *size)
    else:
        shutil.copyfile(base, path)


def _copy_grown(disk: Path, root_gb: int, path: Path, fmt: str) -> None:
    """A guest's disk copied to `path` in `fmt` (an overlay stays one: on the same image)
    and grown to `root_gb` (never shrunk)."""
    if shutil.which("qemu-img") is None:
        shutil.copyfile(disk, path)  # raw: qemu-img made no qcow2 here
        if root_gb * GIB > path.stat().st_size:
            os.truncate(path, root_gb * GIB)  # sparse
        return
    if image_format(disk) == fmt:
        shutil.copyfile(disk, path)
    else:
        qemu_img("convert", "-q", "-O", fmt, str(disk), str(path))
    if root_gb * GIB > virtual_size(path):
        qemu_img("resize", "-q", "-f", fmt, str(path), f"{root_gb}G")


def kept_dir(base: Path, uuid: str) -> Path:
    """Where a move's source keeps a guest's directory until the move is confirmed (then it
    is removed) or reverted (then it is the guest's again): nova's `<uuid>_resize`."""
    return base / f"{uuid}_resize"


def set_aside(base: Path, uuid: str, kept: bool) -> Path:
    """The guest's directory `base/<uuid>` moved to its kept place (`kept`) or back from it;
    what was at the other place goes. Returns where the directory is now."""
    here, there = base / uuid, kept_dir(base, uuid)
    old, new = (here, there) if kept else (there, here)
    if old.exists():
        shutil.rmtree(new, ignore_errors=True)
        old.rename(new)
    return new


def boot_files(image: ImageMeta, inst_dir: Path) -> dict[str, tuple[str, str]]:
    """Direct kernel boot: {"kernel"|"ramdisk": (image file, its copy in the instance dir)}."""
    wanted = {"kernel": image.get("kernel_path"), "ramdisk": image.get("ramdisk_path")}
    files = {name: (str(path), str(inst_dir / name)) for name, path in wanted.items() if path}
    if "ramdisk" in files and "kernel" not in files:
        raise VirtError(f"image {image.get('id')} has a ramdisk but no kernel")
    return files


def image_files(image: ImageMeta) -> list[Path]:
    """The files of the image a guest boots from (they may still be downloading)."""
    paths = (image.get("path"), image.get("kernel_path"), image.get("ramdisk_path"))
    return [Path(p) for p in paths if p]


def copy_boot_files(image: ImageMeta, inst_dir: Path) -> None:
    for name, (src, dst) in boot_files(image, inst_dir).items():
        if not Path(src).is_file():
            raise VirtError(f"image {image.get('id')}: its {name} {src} is not a file")
        shutil.copyfile(src, dst)


def console_tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of a guest's console log as text ("" before it has one)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - limit))  # from the end: a long log is not read
            return fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def snapshot_root(root: Path, target: Path) -> str:
    """The root disk `root` written whole (its backing image merged in) to `target`: qcow2
    where qemu-img is there (it reads a disk a running guest holds: crash-consistent), else
    a copy of the raw file. Returns the format written."""
    if not root.is_file():
        raise VirtError(f"the guest has no local root disk at {root} (it boots from a volume)")
    if shutil.which("qemu-img") is None:
        shutil.copyfile(root, target)
        return "raw"
    qemu_img("convert", "-U", "-O", "qcow2", str(root), str(target))
    return "qcow2"


@dataclass(frozen=True)
class LocalVolume:
    """A volume the guest can use directly: a file (or device) on this host."""

    path: str
    serial: str
    format: str
    readonly: bool


def local_volume(connection_info: Any, driver: str) -> LocalVolume:
    """The local file of cinder's connection_info, checked; other kinds are refused."""
    if not isinstance(connection_info, dict) or "driver_volume_type" not in connection_info:
        raise VirtError("connection_info must be an object with a driver_volume_type")
    kind = connection_info["driver_volume_type"]
    if kind not in VOLUME_TYPES:
        raise VirtError(
            f"volume type {kind!r} is not supported by the {driver} driver: it attaches "
            f"volumes that are local files ({', '.join(VOLUME_TYPES)})"
        )
    data = connection_info.get("data") or {}
    path = data.get("device_path") or data.get("path")
    if not path:
        raise VirtError(f"connection_info of type {kind} needs data.device_path")
    if not Path(str(path)).exists():
        raise VirtError(f"volume file {path} does not exist on this host")
    fmt = str(data.get("format") or "raw")
    if fmt not in DISK_FORMATS:
        raise VirtError(f"volume format {fmt!r} is not supported ({', '.join(DISK_FORMATS)})")
    return LocalVolume(
        path=str(path),
        serial=str(data.get("serial") or data.get("volume_id") or ""),
        format=fmt,
        readonly=data.get("access_mode") == "ro",
    )
