"""KVM only where it really works; TCG otherwise (kvm_pvm hosts, CPUs without vmx/svm)."""

from __future__ import annotations

from pathlib import Path

from specstack_runtime.virt.accel import cpu_has_virtualization, kvm_usable

INTEL = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse2\n"
NO_VIRT = "processor\t: 0\nflags\t\t: fpu vme de pse sse2 hypervisor\n"


def _host(tmp_path: Path, cpuinfo: str, pvm: bool, dev: bool) -> dict[str, Path]:
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    if pvm:
        (tmp_path / "kvm_pvm").mkdir()
    if dev:
        (tmp_path / "kvm").write_text("")
    return {
        "dev": tmp_path / "kvm",
        "pvm_module": tmp_path / "kvm_pvm",
        "cpuinfo": tmp_path / "cpuinfo",
    }


def test_kvm_with_vmx_and_device(tmp_path: Path) -> None:
    assert kvm_usable(**_host(tmp_path, INTEL, pvm=False, dev=True))


def test_tcg_when_kvm_comes_from_kvm_pvm(tmp_path: Path) -> None:
    assert not kvm_usable(**_host(tmp_path, INTEL, pvm=True, dev=True))


def test_tcg_when_the_cpu_has_no_vmx_or_svm(tmp_path: Path) -> None:
    assert not kvm_usable(**_host(tmp_path, NO_VIRT, pvm=False, dev=True))


def test_tcg_without_dev_kvm(tmp_path: Path) -> None:
    assert not kvm_usable(**_host(tmp_path, INTEL, pvm=False, dev=False))


def test_svm_counts_and_a_flag_substring_does_not(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("flags\t: fpu svm\n")
    (tmp_path / "b").write_text("flags\t: fpu vmx_ept_1gb\nmodel name\t: vmx cpu\n")
    assert cpu_has_virtualization(tmp_path / "a")
    assert not cpu_has_virtualization(tmp_path / "b")
    assert not cpu_has_virtualization(tmp_path / "missing")
