#!/usr/bin/env bash
# libvirt and QEMU for the hypervisor driver tests (idempotent): packages, /dev/kvm, daemons.
# There is no systemd: virtlogd and libvirtd are started by hand when they are down.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"

# libvirt-dev, pkg-config, gcc and python3-dev: libvirt-python has no wheel on PyPI and is
# built from source; libxml2-utils: xmllint, which virt-xml-validate runs.
packages=(libvirt-daemon-system qemu-system-x86 qemu-utils libvirt-clients libxml2-utils
  libvirt-dev pkg-config gcc python3-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# As udev would set it: with /dev/kvm at 0600 root:root libvirtd re-probes QEMU at every
# define (about 40 s each).
if [ -e /dev/kvm ]; then
  $SUDO chown root:kvm /dev/kvm
  $SUDO chmod 0660 /dev/kvm
fi

pgrep -x virtlogd >/dev/null || $SUDO virtlogd -d
pgrep -x libvirtd >/dev/null || $SUDO libvirtd -d
for _ in $(seq 1 50); do
  $SUDO virsh -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.2
done
$SUDO virsh -c qemu:///system version >/dev/null
echo "virt: libvirtd $(libvirtd --version | awk '{print $NF}') and QEMU are up"
