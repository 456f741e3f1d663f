#!/usr/bin/env bash
# Fetch OpenCV's sample clip vtest.avi (795 frames, 768x576, pedestrians, static camera) from Debian's
# opencv-doc package into data/ -- the clip is not redistributed with stcorr. Needs apt-get and dpkg-deb.
set -euo pipefail
dest="${1:-data}"
mkdir -p "$dest"
if [ -f "$dest/vtest.avi" ]; then echo "$dest/vtest.avi"; exit 0; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download opencv-doc >/dev/null 2>&1)
dpkg-deb --fsys-tarfile "$tmp"/opencv-doc_*.deb \
  | tar -x -C "$tmp" ./usr/share/doc/opencv-doc/examples/data/vtest.avi
mv "$tmp/usr/share/doc/opencv-doc/examples/data/vtest.avi" "$dest/vtest.avi"
echo "$dest/vtest.avi"
