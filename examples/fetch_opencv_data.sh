#!/usr/bin/env bash
# Fetch OpenCV's sample data (Debian package opencv-doc: vtest.avi, the Aloe stereo pair, Graffiti 1->3, photos)
# into DEST (default data/opencv). Nothing here is redistributed with stcorr. Needs apt-get and dpkg-deb.
set -euo pipefail
dest="${1:-data/opencv}"
if [ -f "$dest/vtest.avi" ]; then echo "$dest"; exit 0; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download opencv-doc >/dev/null 2>&1)
dpkg-deb --fsys-tarfile "$tmp"/opencv-doc_*.deb | tar -x -C "$tmp" ./usr/share/doc/opencv-doc/examples/data
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp/usr/share/doc/opencv-doc/examples/data" "$dest"
echo "$dest"
