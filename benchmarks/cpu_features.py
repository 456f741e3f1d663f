"""The default model's feature forward on CPU: what PyTorch offers, side by side with ONNX Runtime.

One process, one 640x480 frame (batch 1, as the CLI encodes on CPU), the same network in every variant, timed
in interleaved rounds (each round runs every variant once, in a shuffled order), so that load from other
processes hits all variants alike: compare the ratios, not the absolute times.

Variants (each checked against the plain forward: max |difference| of the L2-normalised features):

- ``extract_features``: :func:`stcorr.extract_features` on the frame (batch size 1, as on CPU by default);
- ``stcorr``: :func:`stcorr.features.encode_batch`, what ``extract_features`` runs per batch (on CPU: the
  model's inference twin, ``model.cpu_inference_twin()``: BatchNorm folded, convolutions fused with their
  ReLU6 / residual sum by oneDNN, weights reordered once; plus the L2 normalisation);
- ``onednn_fused``: that twin called directly (``model.cpu_inference_twin()(rgb)``);
- ``stcorr_before``: ``encode_batch`` as it ran before the fused twin (``bn_folded_cl`` + L2 normalisation);
- ``eager``: ``model(rgb)`` in float32 under ``torch.inference_mode`` (what ``extract_features`` runs);
- ``eager_pad_copy``: ``eager`` with every "same" convolution padding a copy of its input first (stcorr
  before the convolutions were changed to pad themselves where the padding is symmetric);
- ``channels_last``: the model and the input in channels-last memory format;
- ``bn_folded``: every BatchNorm folded into the convolution before it (:func:`stcorr.features.fold_batchnorm`);
- ``bn_folded_cl``: both;
- ``jit_frozen``: ``torch.jit.trace`` + ``torch.jit.freeze`` + ``optimize_for_inference`` (oneDNN fusions);
- ``compiled``: ``torch.compile`` (inductor, with freezing: the CPU inference setting), with ``--compile``
  (its compile time is reported; needs a C++ compiler);
- ``onnxruntime``: the same network exported to ONNX, run by ONNX Runtime's CPU provider with as many
  threads as PyTorch (needs ``pip install "stcorr[onnx]"``), called directly;
- ``stcorr_onnx``: ``encode_batch`` (what ``extract_features`` runs) with :class:`stcorr.OnnxEncoder`.

No bfloat16 variant: on a CPU without native bfloat16 (AVX2 only) autocast to bfloat16 is emulated and slower.
The model's parameters are float32 once loaded (the packaged float16 file is cast once at load time), so no
per-call weight conversion is there to remove.

    OMP_NUM_THREADS=1 python benchmarks/cpu_features.py --rounds 30 --json benchmarks/results/cpu_features.json
    python benchmarks/cpu_features.py --cpu-kind both      # this CPU, then AVX2 emulated (as benchmarks/avx2.py)

``--cpu-kind avx2`` re-runs the measurement in a fresh process restricted to AVX2 (PyTorch's kernels, oneDNN and
MKL; see ``benchmarks/avx2.py``); ONNX Runtime has no such switch and keeps this CPU's instructions, so on a
CPU with AVX-512 the emulated ratios against it favour ONNX Runtime. On an AVX2-only CPU both kinds are alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import stcorr
from stcorr.features import encode_batch, fold_batchnorm
from stcorr.io.frames import open_frames


def with_padded_copies(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with the "same" convolutions padding a copy of their input (stcorr before this benchmark)."""
    from stcorr.efficientnet import _same_padding, _SameConv2d

    def padded(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_padding(x.shape[-2], conv.kernel_size[0], conv.stride[0])
        left, right = _same_padding(x.shape[-1], conv.kernel_size[1], conv.stride[1])
        return torch.nn.Conv2d.forward(conv, F.pad(x, (left, right, top, bottom)))

    for module in model.modules():
        if isinstance(module, _SameConv2d):
            module.forward = padded.__get__(module)
    return model


def frame(height: int, width: int, video: Path) -> torch.Tensor:
    """The first frame of ``video`` at (height, width) when it is there, else seeded noise; (1, 3, H, W)."""
    if video.is_file():
        source = open_frames(video, max_frames=1).resized(size=(height, width))
        return next(iter(source))[None].contiguous()
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, height, width, generator=generator)


def onnx_runner(model: torch.nn.Module, rgb: torch.Tensor, threads: int) -> Callable[[], torch.Tensor]:
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "features.onnx"
    torch.onnx.export(model, (rgb,), str(path), input_names=["rgb"], output_names=["features"], opset_version=17,
                      dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"rgb": rgb.numpy()}
    return lambda: torch.from_numpy(session.run(None, feed)[0])


def variants(model: torch.nn.Module, rgb: torch.Tensor,
             args: argparse.Namespace) -> dict[str, Callable[[], torch.Tensor]]:
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    folded = fold_batchnorm(copy.deepcopy(model))
    folded_cl = copy.deepcopy(folded).to(memory_format=torch.channels_last)
    rgb_cl = rgb.contiguous(memory_format=torch.channels_last)

    def run(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with torch.inference_mode():
                return module(x)
        return call

    twin = model.cpu_inference_twin() if hasattr(model, "cpu_inference_twin") else None

    def before() -> torch.Tensor:
        with torch.inference_mode():
            return F.normalize(folded_cl(rgb_cl).float(), dim=1)

    found = {
        "extract_features": lambda: stcorr.extract_features(model, rgb, batch_size=1),
        "stcorr": lambda: encode_batch(model, rgb),  # what extract_features runs per batch (the CPU inference twin)
        "stcorr_before": before,
        "eager": run(model, rgb),
        "eager_pad_copy": run(with_padded_copies(copy.deepcopy(model)), rgb),
        "channels_last": run(cl_model, rgb_cl),
        "bn_folded": run(folded, rgb),
        "bn_folded_cl": run(folded_cl, rgb_cl),
    }
    if twin is not None:
        found["onednn_fused"] = run(twin, rgb)
    with torch.no_grad():
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(copy.deepcopy(model), rgb)))
    found["jit_frozen"] = run(traced, rgb)
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # inference: weights as constants, oneDNN weight prepacking and fusions
        compiled = torch.compile(copy.deepcopy(model))
        start = time.perf_counter()
        run(compiled, rgb)()
        print(f"torch.compile: first call {time.perf_counter() - start:.1f} s")
        found["compiled"] = run(compiled, rgb)
    if not args.no_onnx:
        try:
            found["onnxruntime"] = onnx_runner(model, rgb, torch.get_num_threads())
            encoder = stcorr.OnnxEncoder(model, cache_dir=tempfile.mkdtemp())
            found["stcorr_onnx"] = lambda: encode_batch(encoder, rgb)  # extract_features(stcorr.OnnxEncoder(model))
        except ImportError as exc:
            print(f"onnxruntime skipped: {exc}")
    return found


EMULATION = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "STCORR_CPU_BF16": "0"}


def run_kinds(kinds: list[str], argv: list[str], json_path: str | None) -> None:
    """Each CPU kind in a fresh process (one after the other, in this one run); their results in one file."""
    results = {}
    for kind in kinds:
        env = {**os.environ, **(EMULATION if kind == "avx2" else {})}
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "result.json"
            print(f"== {kind} ==", flush=True)
            subprocess.run([sys.executable, __file__, *argv, "--cpu-kind", "this", "--json", str(out)], env=env,
                           check=True)
            results[kind] = json.loads(out.read_text())
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--video", type=Path, default=Path(__file__).resolve().parents[1] / "data/opencv/vtest.avi",
                        help="the frame's video (default data/opencv/vtest.avi; seeded noise if absent)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (compiles for minutes)")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--cpu-kind", choices=("this", "native", "avx2", "both"), default="this",
                        help="this process as it is (default); native / avx2 / both: fresh processes, avx2 emulated")
    args = parser.parse_args()
    if args.cpu_kind != "this":
        argv = [a for a in sys.argv[1:] if a not in ("native", "avx2", "both", "--cpu-kind")]
        if "--json" in argv:
            del argv[argv.index("--json"): argv.index("--json") + 2]
        run_kinds(["native", "avx2"] if args.cpu_kind == "both" else [args.cpu_kind], argv, args.json)
        return

    model = stcorr.load_model(device="cpu").eval()
    rgb = frame(args.height, args.width, args.video)
    print(f"frame: {'the first of ' + str(args.video) if args.video.is_file() else 'seeded noise'}")
    runs = variants(model, rgb, args)
    reference = F.normalize(runs["eager"]().float(), dim=1)
    differences = {name: float((F.normalize(fn().float(), dim=1) - reference).abs().max()) for name, fn in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for _ in range(args.rounds):
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median["eager"]
    ort = median.get("onnxruntime")
    # paired: each round's time over the same round's ONNX Runtime time, then the median (load that drifts
    # between rounds cancels out; the ratio of the medians is printed too)
    paired = {name: statistics.median(v / o for v, o in zip(values, times["onnxruntime"]))
              for name, values in times.items()} if ort else {}
    print("| variant | median s/frame | eager / variant | variant / onnxruntime (ratio of medians) "
          "| variant / onnxruntime (median of per-round ratios) | max abs diff vs eager |")
    print("|---|---|---|---|---|---|")
    for name in runs:
        vs_ort = f"{median[name] / ort:.2f}" if ort else "-"
        vs_ort_paired = f"{paired[name]:.2f}" if ort else "-"
        print(f"| {name} | {median[name]:.4f} | {base / median[name]:.2f} | {vs_ort} | {vs_ort_paired} "
              f"| {differences[name]:.1e} |")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"
    emulated = os.environ.get("ONEDNN_MAX_CPU_ISA")
    print(f"machine: {cpu} (ISA: {isa}{', emulated as ' + emulated if emulated else ''}; PyTorch capability "
          f"{torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.rounds} interleaved rounds, {args.width}x{args.height}, load average {os.getloadavg()[0]:.1f}")
    if ort:
        ratio = paired["extract_features"]
        verdict = "met" if ratio <= 1.25 else "NOT met"
        print(f"acceptance: extract_features / onnxruntime = {ratio:.2f} (median of per-round ratios; ratio of "
              f"medians {median['extract_features'] / ort:.2f}; target <= 1.25: {verdict})")
    if isa != "avx512":
        print("this CPU has no AVX-512: the AVX-512 kind is not measured by this run")
    if args.json:
        emulation = {key: os.environ.get(key) for key in EMULATION}
        result = {"cpu": cpu, "isa": isa, "emulation": emulation, "load_average": os.getloadavg()[0],
                  "threads": torch.get_num_threads(),
                  "torch": torch.__version__,
                  "size": [args.height, args.width], "rounds": args.rounds, "median_s": median,
                  "median_ratio_to_onnxruntime": paired,
                  "max_abs_diff_vs_eager": differences, "times_s": times}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
