"""Speed of the propagation kernel's similarity matmul in each arithmetic this CPU offers, and the error
bound an int8 similarity would carry.

    python benchmarks/matmul_dtypes.py [--threads 2] [--json benchmarks/results/matmul_dtypes.json]

Run it as is for this CPU; under ``benchmarks/avx2.py``'s environment (``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``) for an AVX2-only one. The shape is one (band, chunk)
matmul of the kernel at DAVIS scale: 14 row blocks of 48 queries, C = 256, 8 frames x 28 x 36 keys.

The error bounds answer whether an int8 preselection could be certified like the bfloat16 one: for int8 each
unit vector v is quantised with its own scale (127 / max |v_i|), and |q.k - q'.k'| <= |q - q'| + |k - k'| +
|q - q'| |k - k'| (Cauchy-Schwarz; q', k' the dequantised vectors); for bfloat16 the kernel's own
:func:`~stcorr.propagation.kernel.cosine_error_bound`. Their medians over random pairs of unit vectors are
printed, and, with ``data/opencv/vtest.avi`` present, over the default model's features of its frames at
640 px, next to the gap the certificate must separate: per query of frame 4, its 10th best minus its 31st best
cosine among the radius-12 window candidates of frames 0-3.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def _seconds(fn, repeats: int = 20) -> float:  # noqa: ANN001
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _int8(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 quantisation of unit rows: (int8 values, dequantised float32 rows)."""
    scale = 127.0 / v.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    q = torch.round(v * scale).clamp(-127, 127)
    return q.to(torch.int8), q / scale


def _random_pairs(count: int, pairs: int = 100_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeded index vectors into ``count`` rows: the random pairs the bounds are taken over."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(count, (pairs,), generator=g), torch.randint(count, (pairs,), generator=g)


def int8_bound(vectors: torch.Tensor) -> float:
    """Median of the int8 similarity error bound over random pairs of the given unit rows."""
    _, dequantised = _int8(vectors)
    error = torch.linalg.vector_norm(vectors - dequantised, dim=-1)
    a, b = _random_pairs(len(vectors))
    return float((error[a] + error[b] + error[a] * error[b]).median())


def bf16_bound(vectors: torch.Tensor) -> float:
    """Median of the kernel's bfloat16 cosine error bound over random pairs of the given unit rows."""
    from stcorr.propagation._ranking import rounding_error
    from stcorr.propagation.kernel import cosine_error_bound

    error = rounding_error(vectors, torch.bfloat16)
    a, b = _random_pairs(len(vectors))
    computed = (vectors[a].bfloat16().float() * vectors[b].bfloat16().float()).sum(-1).bfloat16()
    bound = cosine_error_bound(computed, error[a], error[b], torch.bfloat16, vectors.shape[-1])
    return float(bound.median())


def window_gaps(frames: torch.Tensor, radius: int = 12, k: int = 10, runner_up: int = 31) -> torch.Tensor:
    """Per query cell of the last frame: its k-th minus its ``runner_up``-th best cosine among the
    (2 radius + 1)^2 window cells of every earlier frame (frames: (T, C, h, w) unit features)."""
    *context, target = frames
    size = 2 * radius + 1
    c, h, w = target.shape
    candidates = []
    for frame in context:
        keys = F.unfold(frame[None], size, padding=radius)  # (1, C * size^2, h * w), zeros off the grid
        on_grid = F.unfold(torch.ones(1, 1, h, w), size, padding=radius)[0] > 0  # (size^2, h * w)
        cos = (keys.view(c, size * size, h * w) * target.reshape(c, 1, h * w)).sum(0)
        candidates.append(torch.where(on_grid, cos, float("-inf")))
    best = torch.cat(candidates).topk(runner_up, dim=0).values
    return best[k - 1] - best[runner_up - 1]


def _real_features() -> torch.Tensor | None:
    """The default model's unit features of vtest.avi's first 5 frames at 640 px, (5, C, h, w)."""
    clip = Path("data/opencv/vtest.avi")
    if not clip.exists():
        return None
    from stcorr import extract_features, load_model
    from stcorr.io.frames import open_frames

    features = extract_features(load_model(), open_frames(clip, max_side=640, max_frames=5))
    return F.normalize(features.float(), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(14 * 48, 256, generator=g)
    keys = torch.randn(256, 8 * 28 * 36, generator=g)
    qi, _ = _int8(F.normalize(queries, dim=-1))
    ki, _ = _int8(F.normalize(keys.t(), dim=-1))
    ki = ki.t().contiguous()
    rows = {"float32": _seconds(lambda: queries @ keys)}
    for dtype in (torch.bfloat16, torch.float16):
        a, b = queries.to(dtype), keys.to(dtype)
        rows[str(dtype).removeprefix("torch.")] = _seconds(lambda: a @ b, repeats=3)
    rows["int8 (torch._int_mm)"] = _seconds(lambda: torch._int_mm(qi, ki))
    result = {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": args.threads,
        "seconds": rows,
        "speed_vs_float32": {name: rows["float32"] / s for name, s in rows.items()},
    }
    random_rows = F.normalize(torch.randn(20_000, 256, generator=g), dim=-1)
    result["bound_median_random"] = {"int8": int8_bound(random_rows), "bfloat16": bf16_bound(random_rows)}
    real = _real_features()
    if real is not None:
        rows = real.flatten(2).transpose(1, 2).reshape(-1, real.shape[1])
        result["bound_median_vtest_default_model"] = {"int8": int8_bound(rows), "bfloat16": bf16_bound(rows)}
        gaps = window_gaps(real)
        bounds = result["bound_median_vtest_default_model"]
        # a query certifies when its gap exceeds the bounds of both its k-th and its runner-up: about twice one
        result["vtest_gap_10th_vs_31st"] = {
            "median": float(gaps.median()),
            "share_below_twice_median_bound": {name: float((gaps < 2 * b).float().mean()) for name, b in bounds.items()},
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
