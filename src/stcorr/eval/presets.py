"""Propagation presets of the benchmarks: the Spa-then-Temp test configurations, per task and stride.

Source: ``qianduoduolr/Spa-then-Temp`` at commit ``4c943628`` (2023-07-06), ``configs/test/base_data.py``
(input sizes) and ``configs/test/res18_d8.py`` / ``res18_d4.py`` (``test_cfg``). Common to every task:
``precede_frames=20`` (context), ``topk=10``, ``temperature=0.07``, ``mode='square'``, ``with_first_neighbor=True`` (the
window also applies to the first frame), first-frame labels resized with PIL NEAREST, per-channel
min-max normalisation before the arg-max. The window half-width is ``neighbor_range // 2`` cells:

=========  ==========================  ====================  ==============================
task       input                       neighbor_range d8/d4  radius (cells) stride 8 / 4
=========  ==========================  ====================  ==============================
DAVIS-17   native 480p (short side     24 / 70               12 / 35
           480, a no-op for 854x480)
VIP        560x560, aspect not kept    32 / 70               16 / 35
JHMDB      320x320, aspect not kept    10 / 24               5 / 12
=========  ==========================  ====================  ==============================

JHMDB propagates Gaussian heatmaps (sigma 4 px, drawn at the original resolution, no background
channel), resized bilinearly to the grid, and decodes each joint from the top-5 pixels of the heatmap
upsampled to the original frame (VFS / Spa-then-Temp ``pck_evaluate``).

Known difference: the reference repeats frame 0 in the context while t <= 20 (it is both the first
frame and a previous frame); :mod:`stcorr.propagation.kernel` never duplicates a frame.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from stcorr.errors import InputError
from stcorr.propagation.options import PropagationOptions

__all__ = ["Benchmark", "BENCHMARKS", "EvalPreset", "PRESETS", "preset_for"]

Benchmark = Literal["davis", "vip", "jhmdb"]
BENCHMARKS: tuple[str, ...] = ("davis", "vip", "jhmdb")

_SOURCE = "Spa-then-Temp configs/test/base_data.py + res18_d{8,4}.py (commit 4c943628)"


@dataclass(frozen=True)
class EvalPreset:
    """How a benchmark propagates labels for a model of one stride.

    ``input_size`` is the (H, W) frames are resized to (aspect not kept), or None for the native size;
    ``resample`` how (``"reference"``: OpenCV's ``INTER_LINEAR`` on 8-bit frames, as the reference code).
    ``options`` are the propagation knobs (:class:`~stcorr.propagation.options.PropagationOptions`); they
    are also readable as attributes (``preset.radius``, ...).
    """

    benchmark: str
    stride: int
    input_size: tuple[int, int] | None
    options: PropagationOptions
    resample: str = "reference"
    source: str = _SOURCE

    def __getattr__(self, name: str) -> Any:
        if name in _OPTION_NAMES:
            return getattr(self.options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def with_overrides(self, **overrides: Any) -> EvalPreset:
        """A copy with the given knobs (preset fields or propagation options) replaced; ``None`` keeps a value."""
        own = {f.name for f in fields(self)} - {"options"}
        unknown = sorted(set(overrides) - own - _OPTION_NAMES)
        if unknown:
            raise InputError(f"unknown preset options {unknown}; known: {sorted(own | _OPTION_NAMES)}")
        given = {key: value for key, value in overrides.items() if value is not None and key in own}
        options = self.options.replace(**{k: v for k, v in overrides.items() if k in _OPTION_NAMES and v is not None})
        return replace(self, options=options, **given)

    def propagation_options(self) -> PropagationOptions:
        """The propagation options (for :func:`stcorr.propagate_labels` / :func:`stcorr.iter_propagate`)."""
        return self.options

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        size = list(self.input_size) if self.input_size is not None else None
        return {"benchmark": self.benchmark, "stride": self.stride, "input_size": size, "resample": self.resample,
                **self.options.to_dict(), "source": self.source}

    def describe(self) -> str:
        """One line: input size and knobs."""
        size = "native size" if self.input_size is None else f"{self.input_size[1]}x{self.input_size[0]}"
        return (
            f"{self.benchmark} stride {self.stride}: {size}, context {self.context}, radius {self.radius}, "
            f"top-{self.topk}, temperature {self.temperature:g}"
        )


_OPTION_NAMES = frozenset(f.name for f in fields(PropagationOptions))
# the paper's protocol is one-way: between anchors only the earlier ones count (directions="forward")
_MASKS = PropagationOptions(label_downsampling="nearest", minmax_normalize=True, directions="forward")
_KEYPOINTS = PropagationOptions(label_downsampling="bilinear", minmax_normalize=False, directions="forward")


PRESETS: dict[tuple[str, int], EvalPreset] = {
    ("davis", 8): EvalPreset("davis", 8, None, _MASKS.replace(radius=12)),
    ("davis", 4): EvalPreset("davis", 4, None, _MASKS.replace(radius=35)),
    ("vip", 8): EvalPreset("vip", 8, (560, 560), _MASKS.replace(radius=16)),
    ("vip", 4): EvalPreset("vip", 4, (560, 560), _MASKS.replace(radius=35)),
    ("jhmdb", 8): EvalPreset("jhmdb", 8, (320, 320), _KEYPOINTS.replace(radius=5)),
    ("jhmdb", 4): EvalPreset("jhmdb", 4, (320, 320), _KEYPOINTS.replace(radius=12)),
}


def preset_for(benchmark: str, stride: int) -> EvalPreset:
    """The preset of ``benchmark`` for a model of ``stride`` (8 or 4).

    Raises:
        InputError: unknown benchmark, or a stride with no published configuration.
    """
    if benchmark not in BENCHMARKS:
        raise InputError(f"unknown benchmark {benchmark!r}; expected one of {', '.join(BENCHMARKS)}")
    preset = PRESETS.get((benchmark, int(stride)))
    if preset is None:
        raise InputError(
            f"no {benchmark} preset for stride {stride}: the reference configurations cover strides 8 and 4"
        )
    return preset
