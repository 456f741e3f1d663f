"""The newcomer trial's friction 2 on vtest.avi (issue 21): anchors at 0 and 8 (8 = the propagated result
copied), then frame 0 again with a new object 2; prints object 2's area (pixels) on frames 0..13.

    python benchmarks/session_newcomer.py [--directions forward|both]   # needs data/opencv/vtest.avi

Before issue 21 object 2 had 0 px at frame 8 (the anchor at 8 erased it); without that anchor, ~425 px.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from stcorr import load_model
from stcorr.io.frames import open_frames
from stcorr.io.masks import read_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default="data/opencv/vtest.avi")
    parser.add_argument("--mask", default="examples/data/vtest_first_mask.png")
    parser.add_argument("--directions", default=None, choices=("forward", "both"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = load_model(device="cpu")
    mask = read_mask(args.mask)
    only1 = np.where(mask == 1, 1, 0).astype(np.uint8)
    both = np.where(mask == 2, 2, only1).astype(np.uint8)
    keywords = {} if args.directions is None else {"directions": args.directions}
    session = model.session(open_frames(args.video, max_frames=16), max_side=480, **keywords)
    session.add_mask(0, only1)
    list(session.propagate())
    session.add_mask(8, session.result(8).labels.copy())
    list(session.propagate())
    session.add_mask(0, both)
    list(session.propagate())
    print([int((session.result(t).labels == 2).sum()) for t in range(14)])


if __name__ == "__main__":
    main()
