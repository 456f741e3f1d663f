"""Tiny generated training data for the training tests, and a runner used under torchrun.

``torchrun ... tests/train_helpers.py ARGV_JSON`` runs ``stcorr.train`` once per argument list of the JSON
list in the same processes and process group (one launch for several stages keeps the tests fast).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread during training tests: on a shared 2-core machine two OpenMP threads become
    20-50x slower whenever another process holds a core, one thread stays steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def texture(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random colour texture, uint8 (H, W, 3)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=generator)
    fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    fine = fine + 0.15 * torch.rand(1, 3, height, width, generator=generator)
    return (fine.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def moving_frames(seed: int, count: int, height: int, width: int, speed: int = 2) -> np.ndarray:
    """``count`` frames of a texture panning by ``speed`` pixels per frame, uint8 (T, H, W, 3)."""
    canvas = texture(seed, height + speed * count, width + speed * count)
    windows = [(t * speed, t * speed // 2) for t in range(count)]
    return np.stack([canvas[y : y + height, x : x + width] for y, x in windows])


def write_images(folder: Path, count: int, height: int = 72, width: int = 88) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(texture(100 + index, height, width)).save(folder / f"image{index}.png")
    return folder


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_ytvos(root: Path, videos: int = 2, frames: int = 6, height: int = 64, width: int = 96) -> Path:
    """``root/JPEGImages/<video>/<frame>.jpg`` plus an ``Annotations`` tree that must be ignored."""
    for v in range(videos):
        for t, frame in enumerate(moving_frames(200 + v, frames, height, width)):
            for kind, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
                folder = root / kind / f"video{v}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(frame if kind == "JPEGImages" else frame[..., 0]).save(folder / f"{t * 5:05d}{suffix}")
    return root


def make_data(root: Path) -> dict[str, Path]:
    """8 images, a folder of 2 small mp4 videos, a YouTube-VOS layout, and a mixed folder."""
    images = write_images(root / "images", 8)
    videos = root / "videos"
    write_video(videos / "a.mp4", moving_frames(1, 12, 64, 96))
    write_video(videos / "b.mp4", moving_frames(2, 10, 64, 80))
    mixed = write_images(root / "mixed", 3)
    write_video(mixed / "clip.mp4", moving_frames(3, 8, 64, 64))
    return {"images": images, "videos": videos, "ytvos": write_ytvos(root / "ytvos"), "mixed": mixed}


if __name__ == "__main__":
    import torch.distributed as dist

    from stcorr.train.cli import main

    dist.init_process_group("gloo")  # once: the runs below join it instead of re-creating it
    try:
        for argv in json.loads(sys.argv[1]):
            code = main(argv)
            if code:
                sys.exit(code)
    finally:
        dist.destroy_process_group()
