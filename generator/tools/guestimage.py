"""A tiny bootable guest, built from Debian packages only: `python -m generator.tools.guestimage OUT_DIR`.

The packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x`
(nothing is installed, nothing runs as a privileged step, no loop device):

- the cloud kernel (`linux-image-<version>-cloud-amd64`): its vmlinuz, plus the
  virtio, virtio_pci, virtio_blk, ATA and SCSI modules (they are `=m`);
- `busybox-static`: the whole userland of the initramfs;
- `syslinux`, `syslinux-common` and `mtools`: the boot loader and the tools that
  write a FAT file system into a plain file.

The result is one raw disk (MBR, one bootable FAT partition with syslinux, the
kernel and the initramfs) that glance can store as a `raw`/`bare` image, and
the kernel and initramfs alone for direct kernel boot. The guest's /init prints
`MARKER` and its disk list (`name:serial` per disk; virtio-blk serials are the
first 20 characters of what the host set) to the serial console at boot and
again whenever the list changes, so a disk hot-plugged later shows up; then it
idles.

Everything is cached (downloads, unpacked trees, the built image keyed by the
package versions and this recipe), so a second build is instant.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MARKER = "SPECSTACK-GUEST-UP"
RECIPE = 3  # bump when the image's content changes for the same packages
MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "ata_piix",
    "ata_generic",
    "sd_mod",
)
BOOT_PACKAGES = ("busybox-static", "syslinux", "syslinux-common", "mtools")
PART_OFFSET = 1 << 20  # the FAT partition starts at 1 MiB, as partitioning tools do
PART_SIZE = 24 << 20
CMDLINE = "console=ttyS0 quiet panic=-1"

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /lib/modules/load-order); do insmod /lib/modules/$m.ko 2>/dev/null; done
disks() {{
  for d in /sys/block/*; do
    n=${{d##*/}}
    case $n in loop*|ram*) continue;; esac
    s=$(cat $d/serial 2>/dev/null)
    printf '%s:%s ' "$n" "${{s:--}}"
  done
}}
last=
while true; do
  now=$(disks)
  if [ "$now" != "$last" ]; then
    echo "{MARKER} disks: $now" > /dev/ttyS0
    last=$now
  fi
  # ACPI hot-plug announces new disks; a rescan also finds one added while booting
  echo 1 > /sys/bus/pci/rescan 2>/dev/null
  sleep 1
done
"""

SYSLINUX_CFG = f"""DEFAULT guest
PROMPT 0
TIMEOUT 0
LABEL guest
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND {CMDLINE}
"""


class GuestImageError(RuntimeError):
    """The guest image could not be built (a package, a tool or the disk layout)."""


@dataclass(frozen=True)
class GuestImage:
    """The built guest: a bootable raw disk, and its kernel and initramfs for direct boot."""

    disk: Path
    kernel: Path
    initrd: Path
    marker: str = MARKER
    cmdline: str = CMDLINE


def default_cache_dir() -> Path:
    env = os.environ.get("SPECSTACK_GUEST_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "specstack" / "guest"


def _run(cmd: list[str], **kw: object) -> str:
    try:
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise GuestImageError(f"{cmd[0]} is not installed: {exc}") from exc
    except subprocess.CalledProcessError as exc:
        raise GuestImageError(
            f"{' '.join(cmd)} failed ({exc.returncode}): {(exc.stderr or exc.stdout).strip()}"
        ) from exc
    out: str = done.stdout
    return out


def kernel_package() -> str:
    """The versioned cloud kernel package the `linux-image-cloud-amd64` meta package names."""
    out = _run(["apt-cache", "depends", "linux-image-cloud-amd64"])
    found = re.findall(r"Depends:\s*(linux-image-\S+-cloud-amd64)\b", out)
    if not found:
        raise GuestImageError(
            "apt knows no linux-image-cloud-amd64 (run `apt-get update` on a Debian host)"
        )
    return str(found[0])


def _download(package: str, debs: Path) -> Path:
    """The package's .deb in `debs`, downloaded once with `apt-get download`."""
    debs.mkdir(parents=True, exist_ok=True)
    stem = package + "_"
    have = sorted(p for p in debs.glob("*.deb") if p.name.startswith(stem))
    if have:
        return have[-1]
    # As root apt would drop to the _apt user, who cannot write to the cache directory.
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    _run(["apt-get", "download", "-q", *sandbox, package], cwd=debs)
    have = sorted(p for p in debs.glob("*.deb") if p.name.startswith(stem))
    if not have:
        raise GuestImageError(f"apt-get download {package} left no .deb in {debs}")
    return have[-1]


def _unpack(deb: Path, trees: Path) -> Path:
    target = trees / deb.stem
    if not (target / ".unpacked").exists():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(target)])
        (target / ".unpacked").touch()
    return target


# -- initramfs ----------------------------------------------------------------------------


class _Cpio:
    """A `newc` cpio archive written in memory, so that device nodes need no privilege."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def _module_index(moddir: Path) -> dict[str, Path]:
    return {p.stem.replace("-", "_"): p for p in (moddir / "kernel").rglob("*.ko")}


def _depends(ko: Path) -> list[str]:
    """The `depends=` field of a module's .modinfo section."""
    match = re.search(rb"\0depends=([^\0]*)\0", ko.read_bytes())
    if match is None or not match.group(1):
        return []
    return [d.decode().replace("-", "_") for d in match.group(1).split(b",") if d]


def _load_order(wanted: Iterable[str], index: dict[str, Path]) -> list[str]:
    """The modules to insmod, each after the ones it depends on."""
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in order or name in stack:
            return
        if name not in index:
            raise GuestImageError(f"the kernel package has no module {name}")
        for dep in _depends(index[name]):
            visit(dep, (*stack, name))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def build_initramfs(busybox: Path, moddir: Path) -> bytes:
    index = _module_index(moddir)
    order = _load_order(MODULES, index)
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/ttyS0", 4, 64)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.file("init", INIT.encode(), 0o755)
    for name in order:
        cpio.file(f"lib/modules/{name}.ko", index[name].read_bytes())
    cpio.file("lib/modules/load-order", ("\n".join(order) + "\n").encode())
    # mtime 0: the same packages give the same bytes
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


# -- the raw disk ----------------------------------------------------------------------------


def _mbr(boot_code: bytes, disk_size: int) -> bytes:
    """Sector 0: syslinux's MBR code and one active FAT16 (LBA) partition at PART_OFFSET."""
    start, count = PART_OFFSET // 512, PART_SIZE // 512
    entry = bytes([0x80, 0xFE, 0xFF, 0xFF, 0x0E, 0xFE, 0xFF, 0xFF])
    entry += start.to_bytes(4, "little") + count.to_bytes(4, "little")
    mbr = boot_code[:440].ljust(440, b"\0") + b"\0" * 6 + entry + b"\0" * 48 + b"\x55\xaa"
    assert len(mbr) == 512 and disk_size >= PART_OFFSET + PART_SIZE
    return mbr


def build_disk(kernel: Path, initrd: Path, boot: Path, out: Path) -> None:
    """MBR + a FAT partition holding syslinux, the kernel and the initramfs, in one file."""
    env = {**os.environ, "PATH": f"{boot / 'usr/bin'}:{os.environ.get('PATH', '')}"}
    env["MTOOLS_SKIP_CHECK"] = "1"
    with tempfile.TemporaryDirectory(prefix="guestdisk-") as tmp:
        part = Path(tmp) / "part.img"
        with open(part, "wb") as fh:
            fh.truncate(PART_SIZE)
        mtools = str(boot / "usr/bin/mtools")
        sectors = PART_SIZE // 512
        _run([mtools, "-c", "mformat", "-i", str(part), "-v", "GUEST", "-T", str(sectors),
              "-h", "64", "-s", "32", "-H", str(PART_OFFSET // 512), "::"], env=env)  # fmt: skip
        # Debian's syslinux is the mtools installer: it writes ldlinux.sys and its boot sector.
        _run([str(boot / "usr/bin/syslinux"), "--install", str(part)], env=env)
        cfg = Path(tmp) / "syslinux.cfg"
        cfg.write_text(SYSLINUX_CFG)
        for src, name in ((kernel, "vmlinuz"), (initrd, "initrd.gz"), (cfg, "syslinux.cfg")):
            _run([mtools, "-c", "mcopy", "-i", str(part), str(src), f"::{name}"], env=env)
        mbr_code = (boot / "usr/lib/syslinux/mbr/mbr.bin").read_bytes()
        tmp_out = out.with_suffix(".tmp")
        with open(tmp_out, "wb") as fh:
            fh.write(_mbr(mbr_code, PART_OFFSET + PART_SIZE))
            fh.seek(PART_OFFSET)
            with open(part, "rb") as src_fh:
                shutil.copyfileobj(src_fh, fh)
        os.replace(tmp_out, out)


# -- putting it together ----------------------------------------------------------------------


def build(out_dir: Path | str, cache_dir: Path | str | None = None) -> GuestImage:
    """Build (or reuse from the cache) the guest and copy it into out_dir."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    debs, trees = cache / "debs", cache / "trees"
    kpkg = kernel_package()
    deb_paths = [_download(p, debs) for p in (kpkg, *BOOT_PACKAGES)]
    key = hashlib.sha256(
        json.dumps([RECIPE, MODULES, CMDLINE, [p.name for p in deb_paths]]).encode()
    ).hexdigest()[:16]
    built = cache / "built" / key
    if not (built / "disk.raw").exists():
        kernel_tree, busybox_tree, *boot_trees = (_unpack(d, trees) for d in deb_paths)
        # syslinux, syslinux-common and mtools laid over each other: one tree of boot tools
        boot = cache / "trees" / f"boot-{key}"
        if not boot.exists():
            for tree in boot_trees:
                shutil.copytree(tree, boot, symlinks=True, dirs_exist_ok=True)
        vmlinuz = next((kernel_tree / "boot").glob("vmlinuz-*"), None)
        moddirs = list((kernel_tree / "lib/modules").glob("*"))
        if vmlinuz is None or len(moddirs) != 1:
            raise GuestImageError(f"{deb_paths[0].name} has no vmlinuz or no single module tree")
        staging = built.with_name(built.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copyfile(vmlinuz, staging / "vmlinuz")
        (staging / "initrd.gz").write_bytes(
            build_initramfs(busybox_tree / "bin/busybox", moddirs[0])
        )
        build_disk(staging / "vmlinuz", staging / "initrd.gz", boot, staging / "disk.raw")
        shutil.rmtree(built, ignore_errors=True)
        os.replace(staging, built)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("disk.raw", "vmlinuz", "initrd.gz"):
        target = out / name
        if not target.exists() or target.stat().st_size != (built / name).stat().st_size:
            shutil.copyfile(built / name, target)
    return GuestImage(disk=out / "disk.raw", kernel=out / "vmlinuz", initrd=out / "initrd.gz")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m generator.tools.guestimage",
        description="Build the tiny test guest (raw disk, kernel, initramfs) from Debian packages.",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: %(default)s")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        image = build(args.out_dir, args.cache_dir)
    except GuestImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "disk": str(image.disk),
                "kernel": str(image.kernel),
                "initrd": str(image.initrd),
                "marker": image.marker,
                "build_s": round(time.perf_counter() - started, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
