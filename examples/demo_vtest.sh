#!/usr/bin/env bash
# The README's first command: carry a first-frame mask of three pedestrians (examples/data/
# vtest_first_mask.png, drawn for this clip) through OpenCV's vtest.avi and write an overlay video.
# Usage: examples/demo_vtest.sh [MODEL] [FRAMES]
#   MODEL: default = the embedded default model (load_model() with no argument); any --model value
#          works, e.g. efficientnet-lite0 (the ImageNet baseline) or a training run folder.
#   FRAMES: default 200.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-}"
frames="${2:-200}"
data="$(examples/fetch_opencv_data.sh data/opencv)"
python -m stcorr propagate --video "$data/vtest.avi" --mask examples/data/vtest_first_mask.png \
  ${model:+--model "$model"} --max-frames "$frames" --out outputs/vtest --overlay outputs/vtest_overlay.mp4
