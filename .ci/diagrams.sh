#!/usr/bin/env bash
# What the diagrams and the conformance report need (issue 7): PlantUML and Graphviz to draw
# the SVGs, Debian's chromium for the report's browser test, DejaVu fonts for both.
# Idempotent: installs only what is missing; prints how long the install took.
set -euo pipefail

need=()
command -v plantuml >/dev/null || need+=(plantuml)
command -v dot >/dev/null || need+=(graphviz)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)

if [ ${#need[@]} -gt 0 ]; then
  started=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null
  echo "diagrams: installed ${need[*]} in $(( $(date +%s) - started )) s"
else
  echo "diagrams: plantuml, graphviz, chromium and fonts already present"
fi
plantuml -version 2>/dev/null | head -1
chromium --version 2>/dev/null || true

# Mermaid's own browser bundle, to check that the .mmd files render (tests/diagrams/test_mermaid.py).
MERMAID_DIR=/opt/specstack/mermaid
if [ ! -f "$MERMAID_DIR/mermaid.min.js" ] && command -v npm >/dev/null; then
  started=$(date +%s)
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "mermaid@11" >/dev/null && tar xzf mermaid-*.tgz package/dist/mermaid.min.js)
  mkdir -p "$MERMAID_DIR"
  mv "$tmp/package/dist/mermaid.min.js" "$MERMAID_DIR/mermaid.min.js"
  rm -rf "$tmp"
  echo "diagrams: mermaid 11 browser bundle in $MERMAID_DIR ($(( $(date +%s) - started )) s)"
fi
