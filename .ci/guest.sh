#!/usr/bin/env bash
# The real-guest tests (tests/guest, tests/virt/test_qemu.py, guest bench figures), idempotent:
# qemu-system-x86_64 (.ci/virt.sh installs it too), and apt's package lists, which
# `apt-get download` needs to fetch the guest's Debian packages (generator/tools/guestimage.py).
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"

if ! command -v qemu-system-x86_64 >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 >/dev/null
fi
if ! apt-cache show linux-image-cloud-amd64 busybox-static syslinux mtools >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
echo "guest: $(qemu-system-x86_64 --version | head -1); guest packages known to apt"
