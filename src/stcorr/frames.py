"""Public path of the frame sources and the mask reader (they live in :mod:`stcorr.io`)."""

from stcorr.io.frames import IMAGE_SUFFIXES, FrameSource, open_frames
from stcorr.io.masks import read_mask

__all__ = ["FrameSource", "open_frames", "read_mask", "IMAGE_SUFFIXES"]
