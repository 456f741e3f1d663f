#!/usr/bin/env bash
# Fetch OpenCV's sample data (Debian package opencv-doc: vtest.avi, the Aloe stereo pair, Graffiti 1->3, photos)
# into DEST (default data/opencv). Nothing here is redistributed with stcorr. Needs Debian/Ubuntu's apt-get
# (with package lists: run `apt-get update` once on a fresh container) and dpkg-deb. Prints DEST.
set -euo pipefail
dest="${1:-data/opencv}"
if [ -f "$dest/vtest.avi" ]; then echo "$dest"; exit 0; fi
fail() { printf 'fetch_opencv_data.sh: %s\n' "$*" >&2; exit 1; }
command -v apt-get >/dev/null 2>&1 || fail "apt-get not found: the sample clip comes from Debian's opencv-doc \
package, so this needs Debian or Ubuntu. Elsewhere, put vtest.avi from OpenCV's samples/data into $dest/ yourself."
command -v dpkg-deb >/dev/null 2>&1 || fail "dpkg-deb not found (Debian's dpkg package); install it with apt-get install dpkg"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download opencv-doc >"$tmp/apt.log" 2>&1); then
  sed 's/^/  apt-get: /' "$tmp/apt.log" >&2
  fail "apt-get download opencv-doc failed. On a fresh container the package lists are empty: run \
'apt-get update' (as root, or with sudo) and try again."
fi
dpkg-deb --fsys-tarfile "$tmp"/opencv-doc_*.deb | tar -x -C "$tmp" ./usr/share/doc/opencv-doc/examples/data
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp/usr/share/doc/opencv-doc/examples/data" "$dest"
echo "$dest"
