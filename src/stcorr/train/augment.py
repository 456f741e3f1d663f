"""Augmentations of the two stages, on float RGB tensors in [0, 1] (torchvision.transforms.v2).

* Stage 2 (:func:`crop_pair`): one crop and one flip shared by every frame of a clip, as the official
  pipeline: crop area U(0.6, 1) of the frame, aspect ratio w/h log-uniform in [1.5, 2], up to 20 attempts,
  else a centred square of side min(H, W); resized to a square (aspect not kept); horizontal flip p = 0.5.
  Optionally (``crop_jitter``, not official) the later frames get a rescaled and shifted copy of the box.
  Randomness comes from an explicit ``torch.Generator``. Resizing is bilinear *with* antialiasing (the
  official cv2 resize has none), then clamped to [0, 1].
* Stage 1 (:func:`moco_v2_transform`, :func:`two_views`): MoCo v2 "aug+": RandomResizedCrop (scale
  0.2-1), colour jitter 0.4/0.4/0.4/0.1 with p = 0.8, grayscale p = 0.2, Gaussian blur p = 0.5, horizontal
  flip. MoCo's blur is sigma in [0.1, 2] at 224 px; here sigma and the kernel (~10% of the side, odd) scale
  with the crop size. torchvision draws from the global RNG, so :func:`two_views` runs under a forked RNG
  seeded per sample: the views depend only on the image and the seed.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = ["CropBox", "sample_crop_box", "jitter_crop_box", "crop_pair", "moco_v2_transform", "two_views"]

CropBox = tuple[int, int, int, int]  # top, left, height, width
_MOCO_BLUR_SIGMA = (0.1, 2.0)
_MOCO_REFERENCE_SIZE = 224


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def sample_crop_box(
    height: int,
    width: int,
    generator: torch.Generator,
    area: tuple[float, float] = (0.6, 1.0),
    aspect: tuple[float, float] = (1.5, 2.0),
    attempts: int = 20,
) -> CropBox:
    """A random crop box like the official ``RandomResizedCrop`` (see the module docstring)."""
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(attempts):
        target_area = height * width * _uniform(generator, *area)
        ratio = math.exp(_uniform(generator, log_low, log_high))
        crop_w = round(math.sqrt(target_area * ratio))
        crop_h = round(math.sqrt(target_area / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return _randint(generator, 0, height - crop_h), _randint(generator, 0, width - crop_w), crop_h, crop_w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def jitter_crop_box(
    box: CropBox, height: int, width: int, generator: torch.Generator, scale: float, shift: float
) -> CropBox:
    """``box`` rescaled by a log-uniform factor in [1/scale, scale] and moved by up to ``shift`` of its size.

    The result keeps the box's aspect ratio where the frame allows and stays inside the frame.
    """
    top, left, crop_h, crop_w = box
    factor = math.exp(_uniform(generator, -math.log(scale), math.log(scale)))
    new_h, new_w = min(height, max(1, round(crop_h * factor))), min(width, max(1, round(crop_w * factor)))
    centre_y = top + crop_h / 2 + _uniform(generator, -shift, shift) * crop_h
    centre_x = left + crop_w / 2 + _uniform(generator, -shift, shift) * crop_w
    new_top = min(max(0, round(centre_y - new_h / 2)), height - new_h)
    new_left = min(max(0, round(centre_x - new_w / 2)), width - new_w)
    return new_top, new_left, new_h, new_w


def crop_pair(
    frames: torch.Tensor,
    size: int,
    generator: torch.Generator,
    *,
    area: tuple[float, float] = (0.6, 1.0),
    aspect: tuple[float, float] = (1.5, 2.0),
    flip_p: float = 0.5,
    jitter: tuple[float, float] = (1.0, 0.0),
) -> torch.Tensor:
    """Crop every frame of (T, 3, H, W) with one box, resize to (size, size), flip all or none.

    ``jitter = (scale, shift)`` other than (1, 0) gives every frame after the first its own box, the first
    frame's rescaled and moved by :func:`jitter_crop_box` (not in the official pipeline: scale and position
    changes between the frames of a pair).
    """
    height, width = frames.shape[-2:]
    box = sample_crop_box(height, width, generator, area, aspect)
    if tuple(jitter) == (1.0, 0.0):
        out = TF.resized_crop(frames, *box, size=[size, size], antialias=True)
    else:
        boxes = [box] + [jitter_crop_box(box, height, width, generator, *jitter) for _ in range(len(frames) - 1)]
        out = torch.stack(
            [TF.resized_crop(frame, *b, size=[size, size], antialias=True) for frame, b in zip(frames, boxes)]
        )
    out = out.clamp_(0.0, 1.0)
    return out.flip(-1) if float(torch.rand((), generator=generator)) < flip_p else out


def moco_v2_transform(size: int, scale: tuple[float, float] = (0.2, 1.0)) -> v2.Compose:
    """MoCo v2 "aug+" for one view of a float RGB image (3, H, W) in [0, 1]."""
    factor = size / _MOCO_REFERENCE_SIZE
    kernel = 2 * max(1, round(size * 0.05)) + 1
    sigma = (_MOCO_BLUR_SIGMA[0] * factor, _MOCO_BLUR_SIGMA[1] * factor)
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(kernel, sigma=sigma)], p=0.5),
            v2.RandomHorizontalFlip(),
        ]
    )


def two_views(image: torch.Tensor, transform: v2.Compose, seed: int) -> torch.Tensor:
    """Two independent augmentations of ``image``, (2, 3, S, S); deterministic given ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(image).clamp(0.0, 1.0), transform(image).clamp(0.0, 1.0)])
