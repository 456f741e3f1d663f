"""Training data: frame sources found on disk, the two datasets, and a deterministic sharded sampler.

Sources (found recursively under ``--data``, hidden entries skipped, in sorted order):

* a **frame folder** is any folder that directly holds .jpg/.jpeg/.png files (YouTube-VOS
  ``JPEGImages/<video>/<frame>.jpg``, DAVIS, ...). When a folder named ``JPEGImages`` exists, only frames
  below such folders are used (so annotation PNGs are never read as frames);
* a **video file** is any file with a video suffix (``VIDEO_SUFFIXES``); ``--data`` may also be one file.

Frames are read with :func:`stcorr.io.frames.open_frames` and downscaled (never upscaled) to the short side
``cache_short_side`` (like the dev repo's ``JPEGImages_s256``). Frame folders and image files are read
from disk on access (symbolic links are followed). **Video files are decoded once and kept in memory** as
uint8 at that size (random access into a compressed video costs O(index)); e.g. ``vtest.avi`` (795 frames
768x576) takes 208 MB.

Determinism: :class:`InfiniteSampler` yields ``(item, seed)`` keys. The item order is a fresh permutation per
epoch of a global stream, rank ``r`` of ``w`` takes stream positions ``r, r + w, ...``, and every sample's
randomness (pair offset and gap, crop, flip, MoCo views) comes from its own seed, derived from the run seed
and the stream position. Samples therefore do not depend on the number of DataLoader workers, and resuming at
step ``s`` only needs the position ``s * batch_size * accumulate``; there is no sampler state to save.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from stcorr.errors import VideoReadError
from stcorr.io.frames import IMAGE_SUFFIXES, FrameSource, open_frames
from stcorr.train.augment import crop_pair, moco_v2_transform, two_views
from stcorr.train.presets import TrainConfig

__all__ = [
    "VIDEO_SUFFIXES",
    "derive_seed",
    "seeded_generator",
    "Clip",
    "DiskFrames",
    "ImageFiles",
    "MemoryFrames",
    "find_sources",
    "video_clips",
    "image_items",
    "FramePairs",
    "ImageViews",
    "JointSamples",
    "InfiniteSampler",
    "make_loader",
]

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".ogv"})
SampleKey = tuple[int, int]  # (item index, sample seed)


# ------------------------------------------------------------------------------------------ randomness


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, identical in every process (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seeded_generator(*parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


# --------------------------------------------------------------------------------------------- clips


class Clip(Protocol):
    """Frames of one video (or one image): ``len`` and ``frame(i)`` -> float32 RGB (3, H, W) in [0, 1]."""

    name: str

    def __len__(self) -> int: ...

    def frame(self, index: int) -> torch.Tensor: ...


def _open_downscaled(path: Path, short_side: int) -> FrameSource:
    source = open_frames(path)
    if short_side and min(source.size) > short_side:
        source = open_frames(path, short_side=short_side)
    return source


class DiskFrames:
    """A frame folder, read from disk on access (the opened source is not pickled to DataLoader workers)."""

    def __init__(self, path: Path, short_side: int) -> None:
        self.name = str(path)
        self._path, self._short_side = path, short_side
        self._source: FrameSource | None = _open_downscaled(path, short_side)
        self._count = len(self._source)

    def __len__(self) -> int:
        return self._count

    def frame(self, index: int) -> torch.Tensor:
        if self._source is None:
            self._source = _open_downscaled(self._path, self._short_side)
        return self._source[index]

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_source": None}


class ImageFiles:
    """Independent image files (any sizes) as the "frames" of one clip, each read from disk on access."""

    def __init__(self, name: str, paths: Sequence[Path], short_side: int) -> None:
        self.name, self.paths, self._short_side = name, list(paths), short_side

    def __len__(self) -> int:
        return len(self.paths)

    def frame(self, index: int) -> torch.Tensor:
        return _open_downscaled(self.paths[index], self._short_side)[0]


class MemoryFrames:
    """Frames decoded once and held as uint8 (T, 3, H, W)."""

    def __init__(self, name: str, frames: torch.Tensor) -> None:
        self.name = name
        self.frames = frames

    def __len__(self) -> int:
        return self.frames.shape[0]

    def frame(self, index: int) -> torch.Tensor:
        return self.frames[index].float().div_(255.0)

    @classmethod
    def decode(cls, path: Path, short_side: int, keep: int | None = None) -> MemoryFrames:
        """Decode a video file; with ``keep``, only that many evenly spaced frames are held."""
        source = _open_downscaled(path, short_side)
        wanted = _evenly_spaced(len(source), keep) if keep else None
        frames = [
            frame.mul(255.0).round_().to(torch.uint8)
            for index, frame in enumerate(source)
            if wanted is None or index in wanted
        ]
        return cls(str(path), torch.stack(frames))


def _evenly_spaced(count: int, keep: int) -> set[int]:
    if keep >= count:
        return set(range(count))
    return {round(i * (count - 1) / max(keep - 1, 1)) for i in range(keep)}


# ------------------------------------------------------------------------------------------- discovery


def _visible(name: str) -> bool:
    return not name.startswith(".")


def find_sources(root: str | os.PathLike[str]) -> tuple[list[Path], list[Path], list[Path]]:
    """``(frame folders, image files, video files)`` under ``root`` (see the module docstring).

    Raises:
        VideoReadError: ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise VideoReadError(f"training data {root} does not exist; expected a folder of images/videos or a video file")
    if root.is_file():
        is_image = root.suffix.lower() in IMAGE_SUFFIXES
        return [], [root] if is_image else [], [] if is_image else [root]
    folders, images, videos = [], [], []
    for directory, subdirs, files in os.walk(root, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if _visible(d))
        names = sorted(f for f in files if _visible(f))
        frames = [Path(directory) / f for f in names if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        if frames:
            folders.append(Path(directory))
            images.extend(frames)
        videos.extend(Path(directory) / f for f in names if Path(f).suffix.lower() in VIDEO_SUFFIXES)
    jpeg_folders = [folder for folder in folders if "JPEGImages" in folder.parts]
    if jpeg_folders:
        folders, images = jpeg_folders, [image for image in images if "JPEGImages" in image.parent.parts]
    return folders, images, videos


def _describe(root: Path) -> str:
    return f"{root} (frame folders, image files and video files: {', '.join(sorted(VIDEO_SUFFIXES))})"


def video_clips(root: str | os.PathLike[str], short_side: int, min_frames: int = 2) -> list[Clip]:
    """Every frame folder and video file under ``root`` with at least ``min_frames`` frames.

    Raises:
        VideoReadError: nothing usable (or ``root`` missing / unreadable).
    """
    folders, _, videos = find_sources(root)
    clips: list[Clip] = [DiskFrames(folder, short_side) for folder in folders]
    clips += [MemoryFrames.decode(video, short_side) for video in videos]
    usable = [clip for clip in clips if len(clip) >= min_frames]
    if not usable:
        raise VideoReadError(
            f"no video with at least {min_frames} frames found in {_describe(Path(root))}: found "
            f"{len(folders)} frame folders and {len(videos)} video files"
        )
    return usable


def image_items(
    root: str | os.PathLike[str], short_side: int, frames_per_video: int
) -> tuple[list[Clip], list[tuple[int, int]]]:
    """Still images and evenly spaced video frames under ``root``: ``(clips, [(clip, frame), ...])``.

    Raises:
        VideoReadError: no image and no video frame found.
    """
    _, images, videos = find_sources(root)
    clips: list[Clip] = [ImageFiles(str(root), images, short_side)] if images else []
    clips += [MemoryFrames.decode(video, short_side, keep=frames_per_video) for video in videos]
    items = [(c, f) for c, clip in enumerate(clips) for f in range(len(clip))]
    if not items:
        raise VideoReadError(f"no image or video frame found in {_describe(Path(root))}")
    return clips, items


# -------------------------------------------------------------------------------------------- datasets


class FramePairs(Dataset):
    """Stage-2 samples: (reference, target) frames of one clip, (2, 3, S, S) RGB in [0, 1].

    One item per clip (as the official per-video sampling): gap ~ U{MIN..min(MAX, n - 1)}, offset uniform,
    then :func:`~stcorr.train.augment.crop_pair`. Frame 0 is the reference (earlier), frame 1 the target.
    """

    def __init__(self, clips: Sequence[Clip], config: TrainConfig) -> None:
        self.clips = list(clips)
        self.config = config

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: SampleKey) -> torch.Tensor:
        item, seed = key
        clip, generator = self.clips[item], torch.Generator().manual_seed(seed)
        low, high = self.config.frame_gap
        gap = int(torch.randint(low, min(high, len(clip) - 1) + 1, (), generator=generator))
        offset = int(torch.randint(0, len(clip) - gap, (), generator=generator))
        frames = torch.stack([clip.frame(offset), clip.frame(offset + gap)])
        config = self.config
        return crop_pair(
            frames, config.image_size, generator, area=config.crop_area, aspect=config.crop_aspect,
            jitter=config.crop_jitter,
        )


class ImageViews(Dataset):
    """Stage-1 samples: two MoCo v2 views of one image or video frame, (2, 3, S, S) RGB in [0, 1]."""

    def __init__(self, clips: Sequence[Clip], items: Sequence[tuple[int, int]], config: TrainConfig) -> None:
        self.clips, self.items = list(clips), list(items)
        self.transform = moco_v2_transform(config.image_size, config.view_scale)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: SampleKey) -> torch.Tensor:
        item, seed = key
        clip, index = self.items[item]
        return two_views(self.clips[clip].frame(index), self.transform, seed)


class JointSamples(Dataset):
    """Joint-stage samples: a frame pair and, drawn from the same seed, two views of a random image."""

    def __init__(self, pairs: FramePairs, views: ImageViews) -> None:
        self.pairs, self.views = pairs, views

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        item, seed = key
        view_item = derive_seed(seed, "view") % len(self.views)
        return self.pairs[key], self.views[(view_item, derive_seed(seed, "views"))]


# -------------------------------------------------------------------------------------------- sampling


class InfiniteSampler(torch.utils.data.Sampler[SampleKey]):
    """Endless ``(item, seed)`` keys for one rank, starting after ``start`` keys of that rank."""

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        self.length, self.seed, self.rank, self.world_size, self.start = length, seed, rank, world_size, start

    def __iter__(self) -> Iterator[SampleKey]:
        position = self.start * self.world_size + self.rank
        epoch, order = -1, torch.empty(0, dtype=torch.long)
        while True:
            if position // self.length != epoch:
                epoch = position // self.length
                order = torch.randperm(self.length, generator=seeded_generator(self.seed, "epoch", epoch))
            yield int(order[position % self.length]), derive_seed(self.seed, "sample", position)
            position += self.world_size


def make_loader(dataset: Dataset, sampler: InfiniteSampler, batch_size: int, workers: int) -> DataLoader:
    """A DataLoader over an endless sampler (pinned memory when CUDA is available)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
    )
