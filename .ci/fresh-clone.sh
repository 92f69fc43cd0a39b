#!/usr/bin/env bash
# The README's Quickstart as a newcomer meets it, on a machine with nothing but Python:
# clone the repository into an empty directory, `pip install nox uv` into a new venv, then
# `nox -s run -- --once` (all 15 steps, exit 0) and `nox -s dev` (specstack and openstack
# in .venv/bin), with the optional system tools the README lists (PlantUML, Graphviz,
# chromium, QEMU, libvirt, pkg-config, the database and broker clients, npm) hidden from
# PATH. Prints how long each step took. Run by .ci/run; runs alone too.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=$(python3 -c 'import sys; print(sys.executable)')  # the one tool a newcomer has
work=$(mktemp -d "${TMPDIR:-/tmp}/specstack-fresh-XXXXXX")
trap 'rm -rf "$work"' EXIT

# A PATH of the system's basic commands, without the optional tools.
mkdir "$work/bin"
for dir in /usr/bin /bin /usr/sbin /sbin; do
  for exe in "$dir"/*; do
    name=${exe##*/}
    case "$name" in
      plantuml | dot | dot_* | dot2* | dotty | java* | chromium* | chromedriver | qemu-* | \
        virsh | virt-* | virtlogd | virtlockd | libvirtd | xmllint | pkg-config | *-pkg-config | \
        rabbitmq* | psql | pg_* | mysql* | mariadb* | redis-* | node* | npm | npx | uv | uvx | nox)
        continue ;;
    esac
    [ -e "$work/bin/$name" ] || ln -s "$exe" "$work/bin/$name"
  done
done
bare_path="$work/tools/bin:$(dirname "$python"):$work/bin"
for tool in plantuml dot chromium qemu-system-x86_64 pkg-config virsh npm; do
  if PATH=$bare_path command -v "$tool" >/dev/null; then
    echo "fresh clone: $tool is still on the bare PATH" >&2
    exit 1
  fi
done

elapsed() { echo $(($(date +%s) - $1)); }

git clone -q "$repo" "$work/clone"
cd "$work/clone"
started=$(date +%s)
"$python" -m venv "$work/tools"
"$work/tools/bin/pip" install -q nox uv >"$work/pip.log" 2>&1 || { cat "$work/pip.log"; exit 1; }
echo "fresh clone: pip install nox uv in $(elapsed "$started") s"

export PATH=$bare_path
unset VIRTUAL_ENV CI SPECSTACK_REQUIRE_VIRT
started=$(date +%s)
if ! nox -s run -- --once >"$work/run.log" 2>&1; then
  cat "$work/run.log"
  echo "fresh clone: nox -s run -- --once failed" >&2
  exit 1
fi
steps=$(grep -cE '^\[ ?[0-9]+/15\] ' "$work/run.log" || true)
if [ "$steps" != 15 ] || ! grep -q '^server demo-vm (.*) is ACTIVE$' "$work/run.log"; then
  cat "$work/run.log"
  echo "fresh clone: the demo did not show all 15 steps and an ACTIVE server" >&2
  exit 1
fi
if ! grep -q 'Creating virtual environment (uv)' "$work/run.log"; then
  head -5 "$work/run.log"
  echo "fresh clone: nox did not use uv, which is installed beside it" >&2
  exit 1
fi
echo "fresh clone: nox -s run -- --once: 15 steps, ACTIVE, in $(elapsed "$started") s" \
  "(the install with uv included)"

started=$(date +%s)
nox -s dev >"$work/dev.log" 2>&1 || { cat "$work/dev.log"; exit 1; }
# shellcheck disable=SC1091
. .venv/bin/activate
specstack validate >/dev/null
openstack --version >/dev/null
flow=$(grep -o 'specstack trace req-[0-9a-f-]*' "$work/run.log" | cut -d' ' -f3)
specstack trace "$flow" | grep -q 'Request volume attachment'
echo "fresh clone: nox -s dev, then specstack and openstack on PATH, in $(elapsed "$started") s"
