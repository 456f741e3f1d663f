"""Propagating first-frame labels through a video: masks, soft labels and keypoints.

Data flows one way: frames -> features (:mod:`stcorr.features`) -> windowed affinities and top-k
(:mod:`stcorr.propagation.kernel`) -> labels at image resolution (:mod:`stcorr.propagation.labels`).

Accepted first labels (resolved against the frame size (H, W)):

- an integer mask (H, W): ids 0..254, 255 = void (unknown pixels, which carry no label); outputs use the
  same ids;
- soft labels (K, H, W), e.g. one-hot or probabilities: outputs are channel indices 0..K-1;
- keypoints (N, 2) as (x, y) pixels: propagated as Gaussian heatmaps (``sigma`` px, the JHMDB protocol)
  and decoded per frame by the top-5 weighted mean; outputs are (N, 2) points and (N,) scores (the
  decoded heatmap's peak value; 0 and (-1, -1) when the heatmap vanished).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stcorr.errors import InputError
from stcorr.features import Encoder, batch_frames, encode_batch, feature_stride
from stcorr.io.frames import FrameSource, open_frames
from stcorr.propagation.heatmaps import decode_heatmaps_topk, draw_gaussian_heatmaps
from stcorr.propagation.kernel import LabelPropagator
from stcorr.propagation.labels import LabelSet, confidence_map, decode_ids, mask_to_onehot, to_grid, upsample

__all__ = ["FramePrediction", "PropagationResult", "iter_propagate", "iter_propagate_batch", "propagate_labels"]

LabelsInput = np.ndarray | torch.Tensor | Sequence[Sequence[float]]
DIRECTIONS = ("forward", "backward")


@dataclass
class FramePrediction:
    """The prediction for frame ``t``. Unpacks as ``(t, labels, confidence)`` for masks and soft labels,
    ``(t, points, point_scores)`` for keypoints."""

    t: int
    ids: tuple[int, ...] = ()  # the id of each label channel (point index for keypoints)
    labels: np.ndarray | None = None  # (H, W) uint8 ids
    confidence: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    probabilities: np.ndarray | None = None  # (K, H, W) float32, on request
    points: np.ndarray | None = None  # (N, 2) float32 (x, y) pixels
    point_scores: np.ndarray | None = None  # (N,) float32

    def __iter__(self) -> Iterator[Any]:
        if self.points is not None:
            return iter((self.t, self.points, self.point_scores))
        return iter((self.t, self.labels, self.confidence))


@dataclass
class PropagationResult:
    """Labels of every frame at input resolution (see :func:`propagate_labels`)."""

    labels: np.ndarray | None  # (T, H, W) uint8 ids; None for keypoints
    confidence: np.ndarray | None  # (T, H, W) float32; None for keypoints
    ids: tuple[int, ...]  # the id of each label channel
    probabilities: np.ndarray | None = None  # (T, K, H, W) float32 when requested
    points: np.ndarray | None = None  # (T, N, 2) for keypoints
    point_scores: np.ndarray | None = None  # (T, N) for keypoints


@dataclass(frozen=True)
class _Prompt:
    """First (or anchor) labels, prepared for the feature grid."""

    kind: str  # "mask", "soft" or "points"
    grid: torch.Tensor  # (K, h, w)
    labels: LabelSet
    image: FramePrediction  # what the annotated frame itself outputs


@dataclass(frozen=True)
class _Settings:
    context: int
    radius: int
    topk: int
    temperature: float
    label_downsampling: str
    minmax: bool
    sigma: float
    return_probabilities: bool
    compute_dtype: torch.dtype | None


def _as_array(labels: LabelsInput) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu().numpy()
    return np.asarray(labels)


def _prompt_kind(array: np.ndarray, size: tuple[int, int]) -> str:
    if array.shape == size:
        return "mask"
    if array.ndim == 3 and array.shape[1:] == size:
        return "soft"
    if array.ndim == 2 and array.shape[1] == 2:
        return "points"
    raise InputError(
        f"first labels of shape {array.shape} do not fit frames of size {size}: expected an integer mask "
        f"{size}, soft labels (K, {size[0]}, {size[1]}), or keypoints (N, 2); resize the mask to the frames "
        "(nearest neighbour) or open the frames at the mask's size"
    )


def _soft_labels(array: np.ndarray) -> torch.Tensor:
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)) or array.min() < 0:
        raise InputError("soft labels must be finite, non-negative numbers (one channel per label)")
    if array.shape[0] < 1 or array.shape[0] > 255:
        raise InputError(f"soft labels need 1 to 255 channels, got {array.shape[0]}")
    if not array.any():
        raise InputError("soft labels are all zero: at least one pixel must carry a label")
    return torch.from_numpy(array.astype(np.float32))


def _check_points(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    points = points.astype(np.float32)
    if len(points) == 0:
        raise InputError("no keypoints given: expected (N, 2) (x, y) pixels with N >= 1")
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width - 1) & (points[:, 1] >= 0) & (points[:, 1] <= height - 1)
    if not np.all(np.isfinite(points)) or not inside.all():
        bad = np.flatnonzero(~inside | ~np.isfinite(points).all(1)).tolist()
        raise InputError(
            f"keypoints {bad} lie outside the {width}x{height} image; (x, y) must be within "
            f"[0, {width - 1}] x [0, {height - 1}] pixels"
        )
    return points


def _make_prompt(
    labels: LabelsInput, t: int, size: tuple[int, int], grid: tuple[int, int], stride: int, settings: _Settings,
    label_set: LabelSet | None = None,
) -> _Prompt:
    array = _as_array(labels)
    kind = _prompt_kind(array, size)
    if kind == "points":
        points = _check_points(array, size)
        heatmaps = draw_gaussian_heatmaps(points, size, settings.sigma)
        grid_maps = to_grid(heatmaps, grid, stride, "bilinear")
        label_set = LabelSet(tuple(range(len(points))))
        image = FramePrediction(t, label_set.ids, points=points, point_scores=np.ones(len(points), np.float32))
        return _Prompt("points", grid_maps, label_set, image)
    if kind == "soft":
        probs = _soft_labels(array)
        if label_set is not None and len(label_set) != len(probs):
            raise InputError(f"anchor soft labels have {len(probs)} channels, the first frame {len(label_set)}")
        label_set = label_set or LabelSet(tuple(range(len(probs))))
        ids = decode_ids(probs, label_set)
    else:
        probs, label_set = mask_to_onehot(array, None if label_set is None else label_set.ids)
        ids = array.astype(np.uint8)
    image = FramePrediction(t, label_set.ids, labels=ids, confidence=np.ones(size, np.float32),
                            probabilities=probs.numpy() if settings.return_probabilities else None)
    return _Prompt(kind, to_grid(probs, grid, stride, settings.label_downsampling), label_set, image)


def _decode(t: int, grid_probs: torch.Tensor, prompt: _Prompt, size: tuple[int, int], stride: int,
            settings: _Settings) -> FramePrediction:
    full = upsample(grid_probs, size, stride)
    if prompt.kind == "points":
        coords, scores = decode_heatmaps_topk(full, k=5)
        return FramePrediction(t, prompt.labels.ids, points=coords.cpu().numpy().astype(np.float32),
                               point_scores=scores.cpu().numpy().astype(np.float32))
    return FramePrediction(
        t,
        prompt.labels.ids,
        labels=decode_ids(full, prompt.labels, minmax=settings.minmax),
        confidence=confidence_map(full),
        probabilities=full.cpu().numpy() if settings.return_probabilities else None,
    )


def _frame_order(count: int, start: int, direction: str) -> range:
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not 0 <= start < count:
        raise InputError(f"start frame {start} is outside the video's {count} frames")
    return range(start, count) if direction == "forward" else range(start, -1, -1)


def _frames_in_order(source: FrameSource, order: range) -> Iterator[torch.Tensor]:
    """Frames in ``order``: forward passes stream; backward passes use :meth:`FrameSource.iter_backward`."""
    if order.step < 0:
        yield from source.iter_backward(order.start)
        return
    for index, frame in enumerate(source):
        if index >= order.start:
            yield frame


def _features_in_order(model: Encoder, source: FrameSource, order: range, batch_size: int,
                       dtype: torch.dtype | None, fusion_weights: Sequence[float] | None) -> Iterator[torch.Tensor]:
    for batch in batch_frames(_frames_in_order(source, order), batch_size):
        yield from encode_batch(model, batch, dtype=dtype, fusion_weights=fusion_weights)


def iter_propagate(
    model: Encoder,
    frames: Any,
    first_labels: LabelsInput,
    *,
    start: int = 0,
    direction: str = "forward",
    anchors: Mapping[int, LabelsInput] | None = None,
    context: int = 20,
    radius: int = 12,
    topk: int = 10,
    temperature: float = 0.07,
    label_downsampling: str = "bilinear",
    minmax_normalize: bool = False,
    sigma: float = 4.0,
    return_probabilities: bool = False,
    batch_size: int = 8,
    dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
    backend: str = "auto",
) -> Iterator[FramePrediction]:
    """Yield a :class:`FramePrediction` per frame, from ``start`` towards the end (or the beginning).

    Holds only the context (frame ``start``, anchors and the last ``context`` frames' features and soft
    labels), so memory does not grow with the video's length. Frame ``start`` yields the given labels.
    See :func:`propagate_labels` for the arguments.
    """
    source = frames if isinstance(frames, FrameSource) else open_frames(frames)
    order = _frame_order(len(source), start, direction)
    settings = _Settings(context, radius, topk, temperature, label_downsampling, minmax_normalize, sigma,
                         return_probabilities, compute_dtype)
    stride, size = feature_stride(model), source.size
    anchors = dict(anchors or {})
    propagator: LabelPropagator | None = None
    prompt: _Prompt | None = None
    for t, features in zip(order, _features_in_order(model, source, order, batch_size, dtype, fusion_weights)):
        grid = tuple(features.shape[-2:])
        if propagator is None:
            prompt = _make_prompt(first_labels, t, size, grid, stride, settings)
            propagator = LabelPropagator(features, prompt.grid.to(features.device), context=context, radius=radius,
                                         topk=topk, temperature=temperature, compute_dtype=compute_dtype,
                                         backend=backend)
            yield prompt.image
        elif t in anchors:
            anchor = _make_prompt(anchors[t], t, size, grid, stride, settings, prompt.labels)
            if anchor.kind != prompt.kind:
                raise InputError(f"the anchor at frame {t} is {anchor.kind}, the first labels are {prompt.kind}")
            propagator.add_anchor(features, anchor.grid.to(features.device))
            yield anchor.image
        else:
            grid_probs, _ = propagator.step(features)
            yield _decode(t, grid_probs, prompt, size, stride, settings)


def iter_propagate_batch(
    model: Encoder,
    videos: Sequence[Any],
    first_labels: Sequence[LabelsInput],
    *,
    context: int = 20,
    radius: int = 12,
    topk: int = 10,
    temperature: float = 0.07,
    label_downsampling: str = "bilinear",
    minmax_normalize: bool = False,
    sigma: float = 4.0,
    return_probabilities: bool = False,
    dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
    backend: str = "auto",
) -> Iterator[list[FramePrediction | None]]:
    """Propagate frame 0's labels through several videos of one frame size at once, forwards.

    Frame t of every video is encoded in one forward pass and propagated in one batched
    :class:`~stcorr.propagation.LabelPropagator` step (videos may have different label counts and lengths: a
    video that has ended repeats its last frame, whose outputs are dropped; propagation is causal, so this
    changes nothing). Yields, for t = 0, 1, ..., each video's :class:`FramePrediction` for frame t, or None
    once that video has ended. Each video's predictions are those of :func:`iter_propagate` on it alone, up
    to the encoder's floating-point differences between batch sizes. Arguments as :func:`propagate_labels`.
    """
    sources = [v if isinstance(v, FrameSource) else open_frames(v) for v in videos]
    if not sources or len(first_labels) != len(sources):
        raise InputError(f"expected first labels for each of {len(sources)} videos (at least one), "
                         f"got {len(first_labels)}")
    sizes = {source.size for source in sources}
    if len(sizes) != 1:
        raise InputError(f"videos of one batch must have one frame size, got {sorted(sizes)}; group them by size")
    settings = _Settings(context, radius, topk, temperature, label_downsampling, minmax_normalize, sigma,
                         return_probabilities, compute_dtype)
    stride, size = feature_stride(model), sources[0].size
    lengths = [len(source) for source in sources]
    frames = [iter(source) for source in sources]
    last: list[torch.Tensor] = []
    prompts: list[_Prompt] = []
    propagator: LabelPropagator | None = None
    for t in range(max(lengths)):
        batch = [next(it) if t < n else last[b] for b, (it, n) in enumerate(zip(frames, lengths))]
        last = batch
        features = encode_batch(model, torch.stack(batch), dtype=dtype, fusion_weights=fusion_weights)
        if propagator is None:
            grid = tuple(features.shape[-2:])
            prompts = [_make_prompt(labels, 0, size, grid, stride, settings) for labels in first_labels]
            propagator = LabelPropagator(features, [p.grid.to(features.device) for p in prompts], context=context,
                                         radius=radius, topk=topk, temperature=temperature,
                                         compute_dtype=compute_dtype, backend=backend)
            yield [p.image for p in prompts]
            continue
        grid_probs, _ = propagator.step(features)
        yield [_decode(t, probs, prompt, size, stride, settings) if t < n else None
               for probs, prompt, n in zip(grid_probs, prompts, lengths)]


def propagate_labels(
    model: Encoder,
    frames: Any,
    first_labels: LabelsInput,
    *,
    start: int = 0,
    anchors: Mapping[int, LabelsInput] | None = None,
    context: int = 20,
    radius: int = 12,
    topk: int = 10,
    temperature: float = 0.07,
    label_downsampling: str = "bilinear",
    minmax_normalize: bool = False,
    sigma: float = 4.0,
    return_probabilities: bool = False,
    batch_size: int = 8,
    dtype: torch.dtype | None = None,
    compute_dtype: torch.dtype | None = None,
    fusion_weights: Sequence[float] | None = None,
    backend: str = "auto",
) -> PropagationResult:
    """Propagate labels of frame ``start`` through the whole video (forwards, and backwards when start > 0).

    Args:
        model: an encoder (e.g. from :func:`stcorr.load_model`), or a sequence of encoders fused late.
        frames: anything :func:`stcorr.io.frames.open_frames` accepts (array, tensor, folder, video, PIL list).
        first_labels: integer mask (H, W), soft labels (K, H, W) or keypoints (N, 2); see the module docstring.
        start: index of the annotated frame.
        anchors: corrected labels at other frames ({t: labels}, same kind and ids as ``first_labels``);
            each is output as given and joins frame ``start`` as a fixed context frame from then on.
        context: number of preceding frames in the context (besides ``start`` and anchors).
        radius: half-width of the square search window, in feature cells.
        topk: candidates kept per position, jointly over the context.
        temperature: softmax temperature over the top-k cosine similarities.
        label_downsampling: ``"bilinear"`` (default) or ``"nearest"`` (the official protocol).
        minmax_normalize: per-channel min-max normalisation before the arg-max (the official DAVIS/VIP step).
        sigma: Gaussian sigma in pixels for keypoint heatmaps.
        return_probabilities: also return the (T, K, H, W) probabilities (large: K x 4 bytes per pixel).
        batch_size: frames encoded per forward pass.
        dtype: autocast dtype of the encoder (``torch.bfloat16``/``torch.float16``).
        compute_dtype: dtype of the affinity matmuls; None picks bfloat16 on CPUs with native bfloat16 matmuls,
            float32 elsewhere. Only the speed depends on it: the kernel ranks candidates exactly whatever this
            dtype (see :mod:`stcorr.propagation.kernel`); outputs float32.
        fusion_weights: per-model weights for late fusion.
        backend: propagation kernel, ``"auto"`` (the fused Triton kernel on CUDA when Triton is installed,
            else the torch kernel), ``"triton"`` or ``"torch"``; see :class:`stcorr.propagation.LabelPropagator`.

    Returns:
        a :class:`PropagationResult`; frames hold uint8 ids (255 where no label reached a pixel).
        For long videos use :func:`iter_propagate`, which streams.
    """
    source = frames if isinstance(frames, FrameSource) else open_frames(frames)
    if len(source) < 2:
        raise InputError(f"propagation needs at least 2 frames, got {len(source)}")
    options = dict(anchors=anchors, context=context, radius=radius, topk=topk, temperature=temperature,
                   label_downsampling=label_downsampling, minmax_normalize=minmax_normalize, sigma=sigma,
                   return_probabilities=return_probabilities, batch_size=batch_size, dtype=dtype,
                   compute_dtype=compute_dtype, fusion_weights=fusion_weights, backend=backend)
    predictions: list[FramePrediction | None] = [None] * len(source)
    directions = ["forward"] + (["backward"] if start > 0 else [])
    for direction in directions:
        for prediction in iter_propagate(model, source, first_labels, start=start, direction=direction, **options):
            predictions[prediction.t] = prediction
    return _collect(predictions)


def _stack(values: list[np.ndarray | None]) -> np.ndarray | None:
    return None if values[0] is None else np.stack(values)  # type: ignore[arg-type]


def _collect(predictions: list[FramePrediction | None]) -> PropagationResult:
    frames = [p for p in predictions if p is not None]
    return PropagationResult(
        labels=_stack([p.labels for p in frames]),
        confidence=_stack([p.confidence for p in frames]),
        ids=frames[0].ids,
        probabilities=_stack([p.probabilities for p in frames]),
        points=_stack([p.points for p in frames]),
        point_scores=_stack([p.point_scores for p in frames]),
    )
