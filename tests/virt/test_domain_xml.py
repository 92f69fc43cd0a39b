"""Domain XML per virt type, from the templates: valid for libvirt's schema, with every device."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from specstack_runtime.virt.domain_xml import (
    VIRT_TYPES,
    Disk,
    Guest,
    Interface,
    render_disk,
    render_domain,
    render_interface,
)

from .conftest import unavailable

UUID = "6b5c0b2f-3c38-4c8e-9d7a-0e6a6e7c1f10"


def guest(tmp_path: Path, **extra: object) -> Guest:
    d = tmp_path / UUID
    fields: dict[str, object] = {
        "name": f"instance-{UUID}",
        "uuid": UUID,
        "title": "web-1",
        "host": "compute-1",
        "domain_type": "qemu",
        "memory_mb": 256,
        "vcpus": 2,
        "console_log": str(d / "console.log"),
        "root_gb": 1,
        "image_id": "img-1",
        "disks": [
            Disk(path=str(d / "disk"), dev="vda", format="qcow2"),
            Disk(path="/var/lib/volumes/v1.img", dev="vdb", serial="v1", format="raw"),
        ],
        "interfaces": [Interface(mac="fa:16:3e:00:00:01", vif_id="p1")],
    }
    fields.update(extra)
    return Guest(**fields)  # type: ignore[arg-type]


def validate(xml: str, tmp_path: Path) -> None:
    """libvirt's own schema check of a domain document."""
    exe = shutil.which("virt-xml-validate")
    if exe is None or shutil.which("xmllint") is None:
        unavailable(
            "virt-xml-validate or xmllint is missing (apt-get install libvirt-clients libxml2-utils)"
        )
    doc = tmp_path / "domain.xml"
    doc.write_text(xml)
    proc = subprocess.run([str(exe), str(doc), "domain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr + xml


@pytest.mark.parametrize("virt_type", VIRT_TYPES)
def test_every_virt_type_is_valid_domain_xml(virt_type: str, tmp_path: Path) -> None:
    g = guest(tmp_path, domain_type=virt_type)
    validate(render_domain(virt_type, g), tmp_path)


@pytest.mark.parametrize("virt_type", ["kvm", "qemu", "xen"])
def test_direct_kernel_boot_is_valid(virt_type: str, tmp_path: Path) -> None:
    g = guest(tmp_path, domain_type=virt_type, kernel="/k/vmlinuz", initrd="/k/initrd", disks=[])
    xml = render_domain(virt_type, g)
    validate(xml, tmp_path)
    os_el = ET.fromstring(xml).find("os")
    assert os_el is not None
    assert os_el.findtext("kernel") == "/k/vmlinuz"
    assert os_el.findtext("initrd") == "/k/initrd"
    assert os_el.findtext("cmdline") == "console=ttyS0"
    assert os_el.find("boot") is None


@pytest.mark.parametrize("virt_type", ["kvm", "qemu"])
def test_x86_guest_devices(virt_type: str, tmp_path: Path) -> None:
    g = guest(tmp_path, domain_type=virt_type)
    root = ET.fromstring(render_domain(virt_type, g))
    assert root.get("type") == virt_type
    # libvirt's disk hot-plug needs ACPI (nova always sets both)
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None
    assert root.findtext("memory") == "256" and root.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert root.findtext("vcpu") == "2"
    disks = {d.find("target").get("dev"): d for d in root.findall("devices/disk")}  # type: ignore[union-attr]
    assert disks["vda"].find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disks["vdb"].findtext("serial") == "v1"
    assert disks["vdb"].find("target").get("bus") == "virtio"  # type: ignore[union-attr]
    iface = root.find("devices/interface")
    assert iface is not None and iface.get("type") == "user"
    assert iface.find("mac").get("address") == "fa:16:3e:00:00:01"  # type: ignore[union-attr]
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == g.console_log  # type: ignore[union-attr]
    assert (root.find("cpu") is not None) is (virt_type == "kvm")


def test_xen_uses_xen_disks_and_bridges(tmp_path: Path) -> None:
    root = ET.fromstring(render_domain("xen", guest(tmp_path, domain_type="xen")))
    assert [t.get("dev") for t in root.findall("devices/disk/target")] == ["xvda", "xvdb"]
    assert {t.get("bus") for t in root.findall("devices/disk/target")} == {"xen"}
    assert root.find("devices/interface").get("type") == "bridge"  # type: ignore[union-attr]


def test_lxc_mounts_the_image_as_root(tmp_path: Path) -> None:
    root = ET.fromstring(render_domain("lxc", guest(tmp_path, domain_type="lxc")))
    assert root.findtext("os/type") == "exe" and root.findtext("os/init") == "/sbin/init"
    targets = [t.get("dir") for t in root.findall("devices/filesystem/target")]
    assert targets == ["/", "/mnt/vdb"]


def test_names_are_escaped(tmp_path: Path) -> None:
    g = guest(tmp_path, title="a<b & 'c'\nd", host='h"1')
    root = ET.fromstring(render_domain("qemu", g))
    assert root.findtext("title") == "a<b & 'c' d"  # newlines: libvirt refuses them in titles
    ns = {"s": g.metadata_ns}
    assert root.findtext("metadata/s:instance/s:host", namespaces=ns) == 'h"1'
    assert root.findtext("metadata/s:instance/s:name", namespaces=ns) == "a<b & 'c' d"


def test_hot_plug_fragments_match_the_domain(tmp_path: Path) -> None:
    disk = ET.fromstring(render_disk("qemu", Disk(path="/v/x.img", dev="vdc", serial="x")))
    assert disk.tag == "disk" and disk.findtext("serial") == "x"
    assert disk.find("target").get("dev") == "vdc"  # type: ignore[union-attr]
    iface = ET.fromstring(
        render_interface("kvm", Interface(mac="fa:16:3e:aa:bb:cc", kind="bridge", source="br0"))
    )
    assert iface.get("type") == "bridge" and iface.find("source").get("bridge") == "br0"  # type: ignore[union-attr]


def test_unknown_virt_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown virt type 'hyperv'"):
        render_domain("hyperv", guest(tmp_path))
