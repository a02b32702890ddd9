#!/usr/bin/env bash
# Run HERE (Debian 12): downloads the .deb files of scripts/device/packages.txt into
# .device-debs/ (ignored by git), for the `device` tool to carry to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .device-debs
pkgs=$(grep -v '^#' scripts/device/packages.txt | tr '\n' ' ')
have=1
for p in $pkgs; do ls .device-debs/"${p}"_*.deb >/dev/null 2>&1 || have=0; done
if [ "$have" = 1 ]; then echo "fetch-debs: all present in .device-debs"; exit 0; fi
apt-get update -qq >/dev/null 2>&1 || true
(cd .device-debs && apt-get download -qq $pkgs)
echo "fetch-debs: $(ls .device-debs/*.deb | wc -l) packages, $(du -sh .device-debs | cut -f1) in .device-debs"
