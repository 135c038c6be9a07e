#!/usr/bin/env bash
# Installs the two C libraries Claire links (libzstd, OpenBLAS) when they are
# missing. Needs Debian/Ubuntu apt; runs apt through sudo when not root.
set -euo pipefail
missing=()
for pkg in libzstd-dev libopenblas-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
