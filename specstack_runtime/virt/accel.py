"""Which accelerator a guest on this host can really use: KVM or TCG.

`/dev/kvm` is not proof that KVM works. On these machines it is provided by the
`kvm_pvm` module while the CPU shows no vmx/svm flag: a stock guest kernel hangs
under it before printing anything, and QEMU's `accel=kvm:tcg` does not fall back
because the VM does get created. So KVM is used only when /dev/kvm is usable,
the CPU has hardware virtualisation and the host is not a kvm_pvm guest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

_HW_FLAGS = frozenset({"vmx", "svm"})


def cpu_has_virtualization(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when a `flags` line of cpuinfo lists vmx (Intel) or svm (AMD)."""
    try:
        text = cpuinfo.read_text("utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and _HW_FLAGS & set(value.split()):
            return True
    return False


def kvm_usable(
    dev: Path = Path("/dev/kvm"),
    pvm_module: Path = Path("/sys/module/kvm_pvm"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> bool:
    """KVM only where it really works (see the module docstring)."""
    if pvm_module.exists() or not cpu_has_virtualization(cpuinfo):
        return False
    return dev.exists() and os.access(dev, os.R_OK | os.W_OK)


def qemu_binary() -> str | None:
    """qemu-system-x86_64 (or $SPECSTACK_QEMU_BINARY) on the PATH."""
    return shutil.which(os.environ.get("SPECSTACK_QEMU_BINARY", "qemu-system-x86_64"))


def qemu_accelerator() -> str:
    """QEMU's -accel: $SPECSTACK_QEMU_ACCEL when it is kvm or tcg, else KVM where it works."""
    forced = os.environ.get("SPECSTACK_QEMU_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    return "kvm" if kvm_usable() else "tcg"


def libvirt_virt_type() -> str:
    """The libvirt domain type for x86 guests here: 'kvm' or 'qemu' (TCG)."""
    return "kvm" if kvm_usable() else "qemu"


def libvirt_types(uri: str) -> tuple[str, str]:
    """(virt type of the templates, <domain type>) for a connection URI."""
    scheme = urlsplit(uri).scheme.split("+", 1)[0]
    if scheme == "test":
        return "qemu", "test"
    if scheme in ("xen", "libxl"):
        return "xen", "xen"
    if scheme == "lxc":
        return "lxc", "lxc"
    virt = libvirt_virt_type()
    return virt, virt


__all__ = [
    "cpu_has_virtualization",
    "kvm_usable",
    "libvirt_types",
    "libvirt_virt_type",
    "qemu_accelerator",
    "qemu_binary",
]
