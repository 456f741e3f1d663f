"""Public path of the writers for propagation results (they live in :mod:`stcorr.io`).

Every writer is atomic (through :func:`stcorr._atomic.atomic_path`): it writes a hidden temporary
file in the destination folder (creating missing parent folders) and renames it onto the destination
only once the write succeeded, so an exception never leaves a half-written output behind. Files are
not fsync'ed: the rename is atomic for other processes, not a guarantee against power loss.
"""

from stcorr._atomic import write_atomic
from stcorr.io.masks import davis_palette, write_confidence_png, write_mask_png
from stcorr.io.render import as_uint8_rgb, overlay, write_image
from stcorr.io.tracks import write_points_csv, write_points_json
from stcorr.io.video import VideoWriter, require_av

__all__ = [
    "davis_palette",
    "write_atomic",
    "as_uint8_rgb",
    "write_image",
    "write_mask_png",
    "write_confidence_png",
    "overlay",
    "write_points_json",
    "write_points_csv",
    "VideoWriter",
    "require_av",
]
