"""Domain XML for libvirt, rendered from the templates in ./templates (one per virt type).

The driver turns an instance, its image, ports and volumes into a `Guest` (plain
data); the templates turn a Guest into XML. Device templates are shared by the
domain templates and by hot-plug (attach a disk or interface to a running guest).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).parent / "templates"
VIRT_TYPES = ("kvm", "qemu", "xen", "lxc")
# Which device macros each virt type uses.
_DEVICES = {"kvm": "devices-x86", "qemu": "devices-x86", "xen": "devices-xen", "lxc": "devices-lxc"}
METADATA_NS = "https://specstack.dev/xmlns/libvirt/instance/1"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(enabled_extensions=("xml", "j2"), default=True),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass
class Disk:
    path: str
    dev: str  # vda, vdb... (xen renders xvdX)
    format: str = "raw"  # raw or qcow2
    serial: str | None = None
    readonly: bool = False


@dataclass
class Interface:
    mac: str
    vif_id: str = ""
    kind: str = "user"  # user, bridge or network
    source: str = ""  # the bridge or network name


@dataclass
class Guest:
    name: str  # the libvirt domain name
    uuid: str
    title: str  # the instance's name
    host: str  # compute host that owns it
    domain_type: str  # the <domain type>: the virt type, or 'test' for libvirt's test driver
    memory_mb: int
    vcpus: int
    console_log: str
    root_gb: int = 0
    image_id: str = ""
    machine: str = "pc"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str = "console=ttyS0"
    init: str = "/sbin/init"
    disks: list[Disk] = field(default_factory=list)
    interfaces: list[Interface] = field(default_factory=list)
    dac_label: str | None = None
    instances_path: str = ""  # the directory of its host's guests: which stack it belongs to
    metadata_ns: str = METADATA_NS


_TITLE_UNSAFE = re.compile(r"[\r\n]+")


def _check_virt_type(virt_type: str) -> None:
    if virt_type not in VIRT_TYPES:
        raise ValueError(f"unknown virt type {virt_type!r}; known: {', '.join(VIRT_TYPES)}")


def render_domain(virt_type: str, guest: Guest) -> str:
    """The domain XML of `guest` for libvirt's `virt_type` (kvm, qemu, xen, lxc)."""
    _check_virt_type(virt_type)
    g = asdict(guest)
    g["title"] = _TITLE_UNSAFE.sub(" ", guest.title)  # libvirt refuses titles with newlines
    return _env.get_template(f"domain-{virt_type}.xml.j2").render(g=g)


def _macro(virt_type: str, name: str) -> Any:
    _check_virt_type(virt_type)
    return getattr(_env.get_template(f"{_DEVICES[virt_type]}.xml.j2").module, name)


def render_disk(virt_type: str, disk: Disk) -> str:
    """One <disk> (or <filesystem> for lxc) element, for hot-plug."""
    return str(_macro(virt_type, "disk")(asdict(disk)))


def render_interface(virt_type: str, interface: Interface) -> str:
    """One <interface> element, for hot-plug."""
    return str(_macro(virt_type, "interface")(asdict(interface)))


__all__ = [
    "METADATA_NS",
    "VIRT_TYPES",
    "Disk",
    "Guest",
    "Interface",
    "render_disk",
    "render_domain",
    "render_interface",
]
