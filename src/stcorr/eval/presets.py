"""Propagation presets of the benchmarks: the Spa-then-Temp test configurations, per task and stride.

Source: ``qianduoduolr/Spa-then-Temp`` at commit ``4c943628`` (2023-07-06), ``configs/test/base_data.py``
(input sizes) and ``configs/test/res18_d8.py`` / ``res18_d4.py`` (``test_cfg``), summarised in
``method.md`` §4.2 and ``propagation-and-metrics.md`` §1.5. Common to every task: ``precede_frames=20``
(context), ``topk=10``, ``temperature=0.07``, ``mode='square'``, ``with_first_neighbor=True`` (the
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

__all__ = ["Benchmark", "BENCHMARKS", "EvalPreset", "PRESETS", "preset_for"]

Benchmark = Literal["davis", "vip", "jhmdb"]
BENCHMARKS: tuple[str, ...] = ("davis", "vip", "jhmdb")

_SOURCE = "Spa-then-Temp configs/test/base_data.py + res18_d{8,4}.py (commit 4c943628)"


@dataclass(frozen=True)
class EvalPreset:
    """How a benchmark propagates labels for a model of one stride.

    ``input_size`` is the (H, W) frames are resized to (aspect not kept), or None for the native size.
    The propagation knobs are those of :func:`stcorr.propagate_labels`.
    """

    benchmark: str
    stride: int
    input_size: tuple[int, int] | None
    radius: int
    context: int = 20
    topk: int = 10
    temperature: float = 0.07
    label_downsampling: str = "nearest"
    minmax_normalize: bool = True
    sigma: float = 4.0
    source: str = _SOURCE

    def with_overrides(self, **overrides: Any) -> EvalPreset:
        """A copy with the given knobs replaced; ``None`` values keep the preset's value."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"unknown preset options {unknown}; known: {sorted(known)}")
        given = {key: value for key, value in overrides.items() if value is not None}
        return replace(self, **given) if given else self

    def propagation_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`stcorr.propagate_labels` / :func:`stcorr.iter_propagate`."""
        return {
            "context": self.context,
            "radius": self.radius,
            "topk": self.topk,
            "temperature": self.temperature,
            "label_downsampling": self.label_downsampling,
            "minmax_normalize": self.minmax_normalize,
            "sigma": self.sigma,
        }

    def describe(self) -> str:
        """One line: input size and knobs."""
        size = "native size" if self.input_size is None else f"{self.input_size[1]}x{self.input_size[0]}"
        return (
            f"{self.benchmark} stride {self.stride}: {size}, context {self.context}, radius {self.radius}, "
            f"top-{self.topk}, temperature {self.temperature:g}"
        )


PRESETS: dict[tuple[str, int], EvalPreset] = {
    ("davis", 8): EvalPreset("davis", 8, None, radius=12),
    ("davis", 4): EvalPreset("davis", 4, None, radius=35),
    ("vip", 8): EvalPreset("vip", 8, (560, 560), radius=16),
    ("vip", 4): EvalPreset("vip", 4, (560, 560), radius=35),
    ("jhmdb", 8): EvalPreset("jhmdb", 8, (320, 320), radius=5, label_downsampling="bilinear", minmax_normalize=False),
    ("jhmdb", 4): EvalPreset("jhmdb", 4, (320, 320), radius=12, label_downsampling="bilinear", minmax_normalize=False),
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
