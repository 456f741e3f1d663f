"""Semi-synthetic videos: real photos moved with known motion, with exact masks and point tracks.

A :class:`Scene` is drawn from a seed: a background photo seen by a slowly moving camera (a smooth
homography: drift, rotation, zoom and a slight perspective change) and 1-3 foreground objects, each
an ellipse or a star-shaped polygon cut from another photo, moving along its own smooth (cubic
Bézier) path while rotating, scaling and changing brightness slightly (shading). Objects are drawn
back to front, so later objects occlude earlier ones. The camera's exposure and white balance drift
smoothly, and Gaussian noise (seeded per frame) plays the sensor; both act on whole frames.

Every pixel is rendered at its centre with no antialiasing across object edges, so the masks are
exact: a pixel of object k shows object k's (shaded) texture sampled at that pixel's object
coordinates, then the frame's exposure (:meth:`Scene.expose`).

Motion is defined in frames (a path spans :data:`HORIZON` frames), so a shorter video is a prefix of
a longer one with the same seed. Given the same photo library, everything is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from stcorr.errors import InputError
from stcorr.eval.sources import Photo, photo_library
from stcorr.eval.warp import apply_homography, image_tensor, sample_image

__all__ = ["HORIZON", "Camera", "MovingObject", "Scene", "SyntheticVideo", "make_scene", "render_video", "make_video"]

HORIZON = 24
"""Frames over which a path, rotation or zoom runs its course (longer videos extend the horizon)."""
_COVER = 1.35  # background photos cover this multiple of the frame, leaving room for the camera motion
_MAX_ATTEMPTS = 100


def _translation(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])


def _rotation_scale(angle: float, scale: float) -> np.ndarray:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _bezier(control: np.ndarray, tau: float) -> np.ndarray:
    weights = np.array([(1 - tau) ** 3, 3 * (1 - tau) ** 2 * tau, 3 * (1 - tau) * tau**2, tau**3])
    return weights @ control


def _resize_photo(photo: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1) < 1e-9:
        return photo
    size = (max(2, round(photo.shape[0] * scale)), max(2, round(photo.shape[1] * scale)))
    resized = F.interpolate(image_tensor(photo), size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _inside_polygon(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: which (N, 2) points lie inside the polygon (V, 2)."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = vertices[:, 0][None], vertices[:, 1][None]
    x1, y1 = np.roll(vertices[:, 0], -1)[None], np.roll(vertices[:, 1], -1)[None]
    straddles = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = x < x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return np.logical_xor.reduce(straddles & crossing, axis=1)


@dataclass(frozen=True)
class MovingObject:
    """A textured shape moving over the frames.

    ``outline`` is ``("ellipse", (a, b))`` semi-axes or ``("polygon", vertices (V, 2))`` in object
    coordinates (pixels, centred at 0). The texture is ``photo`` sampled at ``texture_center`` plus the
    object coordinates. The pose at frame t maps object to frame coordinates: rotation and scale about
    the object's centre, which follows the Bézier ``path`` (4, 2).
    """

    photo: str
    outline: tuple[str, np.ndarray] = field(repr=False)
    texture: np.ndarray = field(repr=False)
    texture_center: tuple[float, float]
    path: np.ndarray = field(repr=False)
    angle: tuple[float, float]
    scale: tuple[float, float]
    shading: tuple[float, float] = (1.0, 1.0)

    def brightness(self, tau: float) -> float:
        """Multiplier of the texture at path time ``tau`` (the object moving through light and shade)."""
        return self.shading[0] + (self.shading[1] - self.shading[0]) * tau

    def pose(self, tau: float) -> np.ndarray:
        """3x3 object -> frame transform at path time ``tau``."""
        centre = _bezier(self.path, tau)
        angle = self.angle[0] + (self.angle[1] - self.angle[0]) * tau
        scale = self.scale[0] + (self.scale[1] - self.scale[0]) * tau
        return _translation(*centre) @ _rotation_scale(angle, scale)

    def contains(self, local: np.ndarray) -> np.ndarray:
        """Which (N, 2) object-coordinate points lie inside the shape."""
        kind, params = self.outline
        if kind == "ellipse":
            return (local[:, 0] / params[0]) ** 2 + (local[:, 1] / params[1]) ** 2 <= 1
        return _inside_polygon(local, params)

    @property
    def extent(self) -> float:
        """Largest distance from the centre to the outline, in object coordinates."""
        kind, params = self.outline
        return float(max(params)) if kind == "ellipse" else float(np.linalg.norm(params, axis=1).max())


@dataclass(frozen=True)
class Camera:
    """Camera motion (frame -> background-photo homography) and exposure over path time tau in [0, 1].

    Motion: ``drift`` (4, 2) Bézier shift of the photo centre, rotation and zoom growing linearly to
    ``rotation`` (rad) and ``1 + zoom``, and a perspective tilt growing to ``tilt``. Exposure: a gain
    ``1 + gain[0] tau + gain[1] sin(pi tau)`` times a per-channel white balance ``1 + white_balance tau``.
    """

    photo_centre: np.ndarray = field(repr=False)
    drift: np.ndarray = field(repr=False)
    rotation: float
    zoom: float
    tilt: tuple[float, float]
    gain: tuple[float, float] = (0.0, 0.0)
    white_balance: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def matrix(self, tau: float, size: tuple[int, int]) -> np.ndarray:
        """3x3 frame -> photo transform of an (H, W) frame."""
        height, width = size
        tilt = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [self.tilt[0] * tau, self.tilt[1] * tau, 1.0]])
        return (
            _translation(*(self.photo_centre + _bezier(self.drift, tau)))
            @ _rotation_scale(self.rotation * tau, 1 + self.zoom * tau)
            @ tilt
            @ _translation(-(width - 1) / 2, -(height - 1) / 2)
        )

    def exposure(self, tau: float) -> np.ndarray:
        """Per-channel (3,) multiplier of the light reaching the sensor."""
        gain = 1 + self.gain[0] * tau + self.gain[1] * math.sin(math.pi * tau)
        return gain * (1 + np.asarray(self.white_balance) * tau)


@dataclass(frozen=True)
class Scene:
    """A background under camera motion and objects in depth order (first = furthest)."""

    seed: int
    size: tuple[int, int]
    horizon: int
    background_photo: str
    background: np.ndarray = field(repr=False)
    camera: Camera
    objects: tuple[MovingObject, ...]
    noise: float = 0.0

    @cached_property
    def _images(self) -> tuple[torch.Tensor, ...]:
        """Float (1, 3, h, w) copies of the background and object textures, made once."""
        return (image_tensor(self.background), *(image_tensor(obj.texture) for obj in self.objects))

    def tau(self, t: int) -> float:
        return t / (self.horizon - 1)

    def camera_matrix(self, t: int) -> np.ndarray:
        """3x3 frame -> background-photo transform at frame t."""
        return self.camera.matrix(self.tau(t), self.size)

    def expose(self, image: np.ndarray, t: int) -> np.ndarray:
        """Scene radiance (..., 3) float -> the frame's pixel values at t, before noise and rounding."""
        return image * self.camera.exposure(self.tau(t))

    def background_frame(self, t: int) -> np.ndarray:
        """(H, W, 3) float background at frame t."""
        return sample_image(self._images[0], apply_homography(self.camera_matrix(t), self.size))

    def layer(self, k: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Object k alone at frame t: its (H, W, 3) float shaded texture and (H, W) bool support (before
        occlusion and exposure)."""
        obj = self.objects[k]
        local = apply_homography(np.linalg.inv(obj.pose(self.tau(t))), self.size)
        support = obj.contains(local.reshape(-1, 2)).reshape(self.size)
        texture = sample_image(self._images[k + 1], local + np.asarray(obj.texture_center))
        return texture * obj.brightness(self.tau(t)), support

    def render(self, t: int, *, noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Frame t as (H, W, 3) uint8 and its exact (H, W) uint8 mask (0 = background, k + 1 = object k)."""
        image = self.background_frame(t)
        mask = np.zeros(self.size, np.uint8)
        for k in range(len(self.objects)):
            texture, support = self.layer(k, t)
            image[support] = texture[support]
            mask[support] = k + 1
        image = self.expose(image, t)
        if noise and self.noise > 0:
            rng = np.random.default_rng((self.seed, 1, t))
            image = image + rng.normal(0.0, self.noise, image.shape)
        return np.clip(np.round(image), 0, 255).astype(np.uint8), mask

    def track(self, k: int, points: np.ndarray, t: int) -> np.ndarray:
        """Frame-t pixel (x, y) of object-coordinate points (N, 2) of object k (occlusion not checked)."""
        local = np.asarray(points, np.float64)
        homogeneous = np.concatenate([local, np.ones((len(local), 1))], axis=1).T
        mapped = self.objects[k].pose(self.tau(t)) @ homogeneous
        return (mapped[:2] / mapped[2:]).T


@dataclass(frozen=True)
class SyntheticVideo:
    """Rendered frames (T, H, W, 3) uint8 and exact masks (T, H, W) uint8 of a :class:`Scene`."""

    name: str
    scene: Scene = field(repr=False)
    frames: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)

    @property
    def num_objects(self) -> int:
        return len(self.scene.objects)


def _random_outline(rng: np.random.Generator, radius: float) -> tuple[str, np.ndarray]:
    if rng.random() < 0.5:
        return "ellipse", np.array([radius, radius * rng.uniform(0.55, 1.0)])
    count = int(rng.integers(5, 10))
    angles = rng.uniform(0, 2 * np.pi) + (np.arange(count) + rng.uniform(-0.35, 0.35, count)) * 2 * np.pi / count
    radii = radius * rng.uniform(0.6, 1.0, count)
    return "polygon", np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _random_path(rng: np.random.Generator, size: tuple[int, int], target: np.ndarray | None) -> np.ndarray:
    height, width = size
    low, high = np.array([0.2 * width, 0.2 * height]), np.array([0.8 * width, 0.8 * height])
    start = rng.uniform(low, high)
    if target is not None:  # head for another object, so that they cross
        direction = target - start + rng.normal(0, 0.05 * min(size), 2)
        direction /= max(np.linalg.norm(direction), 1e-6)
    else:
        heading = rng.uniform(0, 2 * np.pi)
        direction = np.array([math.cos(heading), math.sin(heading)])
    end = np.clip(
        start + direction * rng.uniform(0.2, 0.5) * min(size),
        0.1 * np.array([width, height]),
        0.9 * np.array([width, height]),
    )
    normal = np.array([-direction[1], direction[0]])
    wiggle = rng.uniform(-0.25, 0.25, 2) * np.linalg.norm(end - start)
    middle = [start + (end - start) * f + normal * w for f, w in zip((1 / 3, 2 / 3), wiggle)]
    return np.stack([start, *middle, end])


def _random_object(
    rng: np.random.Generator, photo: Photo, size: tuple[int, int], target: np.ndarray | None
) -> MovingObject:
    radius = rng.uniform(0.12, 0.22) * min(size)
    outline = _random_outline(rng, radius)
    start_scale = rng.uniform(0.9, 1.1)
    scale = (start_scale, start_scale * (1 + rng.uniform(-0.2, 0.2)))
    reach = radius * max(scale) * 1.05 + 2
    texture = _resize_photo(photo.image, max(1.0, 2.2 * reach / min(photo.image.shape[:2])) * rng.uniform(1.0, 1.3))
    th, tw = texture.shape[:2]
    centre = (rng.uniform(reach, tw - 1 - reach), rng.uniform(reach, th - 1 - reach))
    start_angle = rng.uniform(0, 2 * np.pi)
    angle = (start_angle, start_angle + rng.uniform(-0.5, 0.5))
    start_light = rng.uniform(0.9, 1.1)
    shading = (start_light, start_light * (1 + rng.uniform(-0.25, 0.25)))
    return MovingObject(photo.name, outline, texture, centre, _random_path(rng, size, target), angle, scale, shading)


def _random_camera(rng: np.random.Generator, size: tuple[int, int], photo_size: tuple[int, int]) -> Camera:
    height, width = size
    centre = np.array([(photo_size[1] - 1) / 2, (photo_size[0] - 1) / 2])
    end = rng.uniform(-0.1, 0.1, 2) * np.array([width, height])
    drift = np.stack([np.zeros(2), end / 3 + rng.normal(0, 0.02, 2) * width, 2 * end / 3, end])
    tilt = tuple(float(v) for v in rng.uniform(-1, 1, 2) * 2e-4 * 320 / max(size))
    gain = (float(rng.uniform(-0.2, 0.2)), float(rng.uniform(-0.1, 0.1)))
    white_balance = tuple(float(v) for v in rng.uniform(-0.06, 0.06, 3))
    return Camera(
        centre, drift, float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.08, 0.08)), tilt, gain, white_balance
    )


def _visible_at_start(scene: Scene) -> bool:
    """Every object shows at least half its area at frame 0, and at least 1 % of the frame."""
    _, mask = scene.render(0, noise=False)
    for k in range(len(scene.objects)):
        _, support = scene.layer(k, 0)
        visible = np.count_nonzero(mask == k + 1)
        if visible < 0.5 * np.count_nonzero(support) or visible < 0.01 * mask.size:
            return False
    return True


def make_scene(
    seed: int,
    *,
    size: tuple[int, int] = (256, 320),
    horizon: int = HORIZON,
    num_objects: int | None = None,
    noise: float = 2.0,
    photos: Sequence[Photo] | None = None,
) -> Scene:
    """Draw a scene from ``seed``: background and object photos, shapes, paths and camera motion.

    Args:
        seed: the random seed; the same seed and photo library give the same scene.
        size: (H, W) of the frames.
        horizon: frames over which motions run their course.
        num_objects: 1-3 objects (default: drawn from the seed).
        noise: standard deviation of the per-frame Gaussian noise, in grey levels.
        photos: the photo library (default :func:`stcorr.eval.sources.photo_library`); at least 2 photos.
    """
    photos = tuple(photos) if photos is not None else photo_library()
    if len(photos) < 2:
        raise InputError(f"a scene needs at least 2 photos (background and objects), got {len(photos)}")
    if num_objects is not None and not 1 <= num_objects <= 3:
        raise InputError(f"num_objects must be 1, 2 or 3, got {num_objects}")
    if horizon < 2 or min(size) < 16:
        raise InputError(f"need horizon >= 2 and frames of at least 16x16 pixels, got {horizon} and {size}")
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_ATTEMPTS):
        order = rng.permutation(len(photos))
        back = photos[order[0]]
        count = num_objects or int(rng.integers(1, 4))
        cover = _COVER * max(size[0] / back.image.shape[0], size[1] / back.image.shape[1])
        background = _resize_photo(back.image, cover)
        camera = _random_camera(rng, size, background.shape[:2])
        objects: list[MovingObject] = []
        for k in range(count):
            photo = photos[order[1 + k % (len(photos) - 1)]]
            target = _bezier(objects[0].path, 0.5) if objects and rng.random() < 0.6 else None
            objects.append(_random_object(rng, photo, size, target))
        scene = Scene(seed, size, horizon, back.name, background, camera, tuple(objects), noise)
        if _visible_at_start(scene):
            return scene
    raise InputError(f"seed {seed}: no scene with every object visible at frame 0 in {_MAX_ATTEMPTS} attempts")


def render_video(scene: Scene, num_frames: int, *, name: str | None = None) -> SyntheticVideo:
    """Render frames 0 .. num_frames - 1 of ``scene``."""
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    rendered = [scene.render(t) for t in range(num_frames)]
    frames = np.stack([frame for frame, _ in rendered])
    masks = np.stack([mask for _, mask in rendered])
    return SyntheticVideo(name or f"synthetic-{scene.seed:03d}", scene, frames, masks)


def make_video(
    seed: int,
    num_frames: int = HORIZON,
    *,
    size: tuple[int, int] = (256, 320),
    num_objects: int | None = None,
    noise: float = 2.0,
    photos: Sequence[Photo] | None = None,
) -> SyntheticVideo:
    """:func:`make_scene` (horizon ``max(HORIZON, num_frames)``) rendered for ``num_frames`` frames."""
    scene = make_scene(
        seed, size=size, horizon=max(HORIZON, num_frames), num_objects=num_objects, noise=noise, photos=photos
    )
    return render_video(scene, num_frames)
