"""Evaluate on DAVIS-2017, VIP, JHMDB and TAP-Vid: ``python -m stcorr.eval {davis,vip,jhmdb,tapvid,offline}``.

Each benchmark subcommand scores either an existing result folder (``--results DIR``) or a model it
first propagates with the benchmark's preset (``--model NAME|PATH --out DIR``, presets in
:mod:`stcorr.eval.presets`, knobs overridable with ``--context --radius --topk --temperature``).
Under ``torchrun`` each rank propagates a slice of the videos and rank 0 scores the merged folder
(:mod:`stcorr.eval.sharding`). ``offline`` runs the benchmark that needs no dataset download
(:mod:`stcorr.eval.offline`). ``tapvid`` tracks the queries of a released TAP-Vid file and scores them
(:mod:`stcorr.eval.tapvid`).

Result layouts (``--results DIR``, or what ``--model`` writes to ``--out DIR``) are those of
:mod:`stcorr.eval.scoring`:

* DAVIS: ``DIR/<seq>/<frame>.png``, single-channel indexed PNGs at GT size, one per evaluated GT
  frame (the first and last frames are not read). Object ids as in the first GT frame.
* VIP: ``DIR/<video>/<frame>.png`` class-id PNGs, one per GT annotation, frame 0 included; another
  size is nearest-resized to the GT size.
* JHMDB: ``DIR/<class>/<video>.npy`` or ``.json`` keypoints of shape ``(T, 15, 2)``, pixel
  ``(x, y)`` in the original frame, ``-1`` for missing (:func:`stcorr.metrics.jhmdb.save_keypoints`).

Every score is recomputed from the PNGs / keypoint files; no cached CSV is ever read. A missing
folder or file, a malformed result, or a model that cannot be loaded stops the run with exit code 2
and a message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stcorr._atomic import atomic_path
from stcorr.datasets import DavisDataset, JhmdbDataset, VipDataset
from stcorr.distributed import BARRIER_TIMEOUT, all_succeeded, process_group, shard_device, shard_from_env
from stcorr.errors import StcorrError
from stcorr.eval import predict, tapvid
from stcorr.eval.offline import BASELINE_METHODS, SPLITS, OfflineConfig, default_models, run_offline, split_seeds
from stcorr.eval.point_benchmark import POINT_METHODS, PointBenchmarkConfig, fit_and_ablate, run_point_benchmark
from stcorr.eval.scoring import evaluate_davis, evaluate_jhmdb, evaluate_vip, write_davis_csv
from stcorr.loading import load_encoder
from stcorr.metrics import jhmdb

__all__ = ["build_parser", "main"]


# ------------------------------------------------------------------------------------------------
# Printing and writing


def _print_table(title: str, row: dict[str, float], fmt: str) -> None:
    print(title)
    widths = [max(len(key), 8) for key in row]
    print("  ".join(f"{key:>{w}}" for key, w in zip(row, widths)))
    print("  ".join(f"{value:>{w}{fmt}}" for value, w in zip(row.values(), widths)))


def _write_json(data: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


def _propagated(args: argparse.Namespace, benchmark: str, subset: Any) -> tuple[Path | None, dict[str, Any]]:
    """The folder to score and what to add to the JSON: ``--results`` as given, or ``--out`` once
    ``--model`` has been propagated over this process's shard (None on ranks other than 0).
    ``subset`` is the dataset's set, split or list file."""
    if args.model is None:
        return args.results, {}
    writers = {"davis": predict.predict_davis, "vip": predict.predict_vip, "jhmdb": predict.predict_jhmdb}
    datasets = {"davis": DavisDataset, "vip": VipDataset, "jhmdb": JhmdbDataset}
    datasets[benchmark](args.root, subset)  # a missing folder or list fails before the model loads
    shard = shard_from_env()
    with process_group(shard, timeout=BARRIER_TIMEOUT):
        succeeded = False
        try:
            model = load_encoder(args.model, device=shard_device(shard, args.device))
            knobs = {name: getattr(args, name) for name in ("context", "radius", "topk", "temperature")}
            preset = predict.model_preset(model, benchmark, **knobs)
            if shard.is_main:
                ranks = f" on {shard.world_size} ranks" if shard.distributed else ""
                print(f"propagating {args.model}{ranks}: {preset.describe()}", flush=True)
            write = writers[benchmark]
            write(model, args.root, args.out, subset, preset=preset, shard=shard, batch_size=args.batch_size or 8,
                  progress=True, batch_videos=args.batch_videos)
            succeeded = True
        finally:
            everyone = all_succeeded(shard, succeeded)
    if not everyone:
        raise StcorrError(f"rank {shard.rank}: another rank failed (see its error); {args.out} is incomplete")
    if not shard.is_main:
        return None, {}
    return args.out, {"model": str(args.model), "propagation": preset.to_dict(), "world_size": shard.world_size}


def _cmd_davis(args: argparse.Namespace) -> int:
    results, extra = _propagated(args, "davis", args.set)
    if results is None:
        return 0
    evaluation = evaluate_davis(args.root, results, args.set, progress=True)
    summary = evaluation.summary
    sequences = len(evaluation.evaluated_frames)
    _print_table(
        f"DAVIS 2017 {args.set}, semi-supervised: {sequences} sequences, {summary.num_objects} objects",
        summary.as_dict(),
        ".3f",
    )
    if args.csv:
        write_davis_csv(evaluation, args.csv)
    return _finish({**evaluation.to_json(), **extra}, args)


def _cmd_vip(args: argparse.Namespace) -> int:
    results, extra = _propagated(args, "vip", args.split)
    if results is None:
        return 0
    evaluation = evaluate_vip(args.root, results, args.split, progress=True)
    title = f"VIP {args.split}: {evaluation.num_videos} videos, {evaluation.num_frames} frames (frame 0 included)"
    _print_table(title, {"mIoU": evaluation.miou}, ".3f")
    return _finish({**evaluation.to_json(), **extra}, args)


def _cmd_jhmdb(args: argparse.Namespace) -> int:
    results, extra = _propagated(args, "jhmdb", args.list)
    if results is None:
        return 0
    evaluation = evaluate_jhmdb(args.root, results, args.list, args.protocol, progress=True)
    title = f"JHMDB PCK (%), protocol {args.protocol}: {evaluation.num_videos} videos"
    _print_table(title, evaluation.result.as_dict(), ".2f")
    return _finish({**evaluation.to_json(), **extra}, args)


def _cmd_offline(args: argparse.Namespace) -> int:
    if args.fit_visibility:
        name = (args.models or default_models() or ["efficientnet-lite0"])[0]
        points = PointBenchmarkConfig.quick() if args.quick else PointBenchmarkConfig()
        points = dataclasses.replace(points, refine=not args.no_refine, refine_scale=args.refine_scale)
        print(fit_and_ablate(name, points))
        return 0
    config = OfflineConfig.quick() if args.quick else OfflineConfig()
    baselines = BASELINE_METHODS if args.baselines is None else args.baselines
    data: dict[str, Any] = {}
    try:
        if not args.points_only:
            if args.videos is not None or args.split is not None:
                seeds = split_seeds(args.split or "tune", len(config.seeds) if args.videos is None else args.videos)
                config = dataclasses.replace(config, seeds=seeds)
            report = run_offline(args.models, config=config, device=args.device, progress=True, baselines=baselines)
            print(report.to_markdown())
            data = report.to_json()
        if not args.no_points:
            models = default_models() if args.models is None else args.models
            names = [name for name in baselines if name in POINT_METHODS] + list(models)
            encoders = {name: load_encoder(name, device=args.device) for name in dict.fromkeys(names)}
            points = PointBenchmarkConfig.quick() if args.quick else PointBenchmarkConfig()
            points = dataclasses.replace(points, refine=not args.no_refine, refine_scale=args.refine_scale)
            if encoders:
                point_report = run_point_benchmark(encoders, config=points)
                print(point_report.to_markdown())
                data["points"] = point_report.to_json()
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _finish(data, args)


def _cmd_tapvid(args: argparse.Namespace) -> int:
    videos = tapvid.load_tapvid(args.data)[: args.max_videos]
    shard = shard_from_env()
    if shard.distributed and args.out is None:
        raise StcorrError("under torchrun, tapvid needs --out DIR (a folder every rank can write to)")
    knobs = {name: getattr(args, name) for name in ("context", "radius", "topk", "temperature")
             if getattr(args, name) is not None}
    with process_group(shard, timeout=BARRIER_TIMEOUT):
        succeeded = False
        try:
            model = load_encoder(args.model, device=shard_device(shard, args.device))
            mine = videos[shard.rank :: shard.world_size]
            per_video = tapvid.evaluate_videos(model, mine, args.query_mode, args.resolution,
                                               progress=shard.is_main, batch_size=args.batch_size or 8, **knobs)
            if args.out is not None:
                tapvid.write_shard(per_video, args.out, shard.rank)
            succeeded = True
        finally:
            everyone = all_succeeded(shard, succeeded)
    if not everyone:
        raise StcorrError(f"rank {shard.rank}: another rank failed (see its error); {args.out} is incomplete")
    if not shard.is_main:
        return 0
    if shard.distributed:
        per_video = tapvid.read_shards(args.out, shard.world_size)
    summary = tapvid.summarize(per_video)
    title = (f"TAP-Vid {Path(args.data).name}, {args.query_mode} queries, {args.resolution} resolution: "
             f"{len(per_video)} videos, {args.model}")
    _print_table(title, {"AJ": summary["average_jaccard"], "<δavg": summary["average_pts_within_thresh"],
                         "OA": summary["occlusion_accuracy"]}, ".3f")
    def finite(row: dict[str, float]) -> dict[str, float | None]:  # 0/0 (no scored point) is NaN: null in JSON
        return {key: value if math.isfinite(value) else None for key, value in row.items()}

    data = {"data": str(args.data), "model": str(args.model), "query_mode": args.query_mode,
            "resolution": args.resolution, "world_size": shard.world_size, "options": knobs, "mean": finite(summary),
            "per_video": {name: finite(row) for name, row in per_video.items()}}
    return _finish(data, args)


def _finish(data: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        _write_json(data, args.json)
    return 0


# ------------------------------------------------------------------------------------------------
# Parser


_MODEL_OPTIONS = ("out", "device", "batch_size", "context", "radius", "topk", "temperature")


def _add_common(parser: argparse.ArgumentParser, results_help: str) -> None:
    """Dataset root, result source (``--results`` or ``--model``, exclusive) and outputs."""
    parser.add_argument("--root", type=Path, required=True, help="dataset root folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", type=Path, help=results_help)
    source.add_argument(
        "--model",
        help="propagate this model first: manifest name, hf-hub:org/repo, folder, checkpoint, or a baseline "
        "(lab-pixels, random-r18, efficientnet-lite0); needs --out",
    )
    parser.add_argument("--json", type=Path, help="write the scores (and per-video data) to this JSON file")
    model = parser.add_argument_group("with --model", "preset of the model's stride unless overridden")
    model.add_argument("--out", type=Path, help="folder for the propagated results (then scored)")
    model.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available; one GPU per rank)")
    model.add_argument("--batch-size", type=int, help="frames per encoder batch (default 8)")
    model.add_argument(
        "--batch-videos", type=int, default=1, metavar="N",
        help="propagate N videos of one working size together: one encoder pass and one batched propagation "
        "step per frame, results as one at a time (default 1)",
    )
    model.add_argument("--context", type=int, help="preceding frames in the context (preset: 20)")
    model.add_argument("--radius", type=int, help="search window half-width in feature cells (preset per task)")
    model.add_argument("--topk", type=int, help="candidates kept per position (preset: 10)")
    model.add_argument("--temperature", type=float, help="softmax temperature (preset: 0.07)")


def _check_model_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not hasattr(args, "results"):  # offline, tapvid
        return
    if args.model is not None and args.out is None:
        parser.error("--model needs --out DIR, the folder the propagated results are written to")
    given = [f"--{name.replace('_', '-')}" for name in _MODEL_OPTIONS if getattr(args, name) is not None]
    if args.model is None and given:
        parser.error(f"{', '.join(given)}: only with --model (they configure the propagation)")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m stcorr.eval`` parser: one subcommand per benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m stcorr.eval",
        description="Score result folders, or models propagated with the paper's presets, on DAVIS-2017 (J&F), "
        "VIP (mIoU) and JHMDB (PCK) like the reference tools; or run the offline benchmark.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log library messages")
    sub = parser.add_subparsers(dest="benchmark", required=True)

    davis_parser = sub.add_parser("davis", help="DAVIS-2017 semi-supervised J&F (davis2017-evaluation protocol)")
    _add_common(davis_parser, "folder of <seq>/<frame>.png indexed PNGs")
    davis_parser.add_argument("--set", default="val", help="sequence list ImageSets/2017/<set>.txt (default: val)")
    davis_parser.add_argument("--csv", type=Path, help="also write per-object means (Sequence,J-Mean,F-Mean) here")
    davis_parser.set_defaults(func=_cmd_davis)

    vip_parser = sub.add_parser("vip", help="VIP mIoU over 20 classes, confusion pooled over all frames")
    _add_common(vip_parser, "folder of <video>/<frame>.png class-id PNGs")
    vip_parser.add_argument("--split", default="val", help="video list lists/<split>_videos.txt (default: val)")
    vip_parser.set_defaults(func=_cmd_vip)

    jhmdb_parser = sub.add_parser("jhmdb", help="JHMDB PCK@0.1..0.5 of propagated keypoints")
    _add_common(jhmdb_parser, "folder of <class>/<video>.npy or .json keypoints, shape (T, 15, 2) pixel (x, y)")
    jhmdb_parser.add_argument("--list", type=Path, help="split list file (default: <root>/testlist_split1.txt)")
    jhmdb_parser.add_argument(
        "--protocol",
        choices=jhmdb.PROTOCOLS,
        default="stt",
        help="stt (default): VFS/Spa-then-Temp, frame 0 counted, visible = predicted x > 0; "
        "crw: CRW/UVC, frame 0 skipped, visible = predicted x >= 0",
    )
    jhmdb_parser.set_defaults(func=_cmd_jhmdb)

    tapvid_parser = sub.add_parser(
        "tapvid", help="TAP-Vid point tracking (AJ, <δavg, OA) on a released file: tapvid_davis.pkl, ...",
        description="Track every query of a TAP-Vid file (tapnet's 'first' or 'strided' sampling) with the model "
        "and score the tracks with the TAP-Vid metrics at 256x256.",
    )
    tapvid_parser.add_argument("--data", type=Path, required=True,
                               help="tapvid_davis.pkl, tapvid_rgb_stacking.pkl, or the folder of Kinetics *.pkl")
    tapvid_parser.add_argument("--model", required=True, help="model name, folder, checkpoint or baseline")
    tapvid_parser.add_argument("--query-mode", choices=tapvid.QUERY_MODES, default="first",
                               help="first: each track from its first visible frame (default); strided: every 5 "
                               "frames")
    tapvid_parser.add_argument("--resolution", choices=tapvid.RESOLUTIONS, default="256",
                               help="256: the model sees 256x256 frames (default); full: the frames as stored, "
                               "tracks rescaled to 256x256 (a separate category)")
    tapvid_parser.add_argument("--out", type=Path, help="folder for per-rank metrics (needed under torchrun)")
    tapvid_parser.add_argument("--json", type=Path, help="write the means and per-video metrics to this JSON file")
    tapvid_parser.add_argument("--max-videos", type=int, help="only the first N videos (a quick check)")
    tapvid_parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    tapvid_parser.add_argument("--batch-size", type=int, help="frames per encoder batch (default 8)")
    tapvid_parser.add_argument("--context", type=int, help="preceding frames in the context (default 20)")
    tapvid_parser.add_argument("--radius", type=int, help="search window half-width in feature cells (default 12)")
    tapvid_parser.add_argument("--topk", type=int, help="candidates kept per position (default 10)")
    tapvid_parser.add_argument("--temperature", type=float, help="softmax temperature (default 0.07)")
    tapvid_parser.set_defaults(func=_cmd_tapvid)

    offline_parser = sub.add_parser(
        "offline",
        help="benchmark with no dataset download: real image pairs with exact GT and semi-synthetic videos",
    )
    offline_parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="NAME",
        help="models to add to the baselines (default: the embedded model, if this build ships one)",
    )
    offline_parser.add_argument(
        "--baselines",
        nargs="*",
        default=None,
        metavar="NAME",
        help=f"baselines to run (default: all of {', '.join(BASELINE_METHODS)}; the flag alone: none)",
    )
    offline_parser.add_argument("--json", type=Path, help="write every score to this JSON file")
    offline_parser.add_argument(
        "--quick", action="store_true", help="a reduced run (fewer and shorter videos, smaller pairs)"
    )
    offline_parser.add_argument(
        "--videos", type=int, metavar="N",
        help="synthetic videos per split (default: 8, --quick 3); e.g. --videos 40 for decisions worth a point",
    )
    offline_parser.add_argument(
        "--split", choices=SPLITS,
        help="seeds of the synthetic videos: tune (0..N-1, the default; decide here), heldout (1000..1000+N-1; "
        "only to confirm a decision) or all (both)",
    )
    offline_parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    points_group = offline_parser.add_mutually_exclusive_group()
    points_group.add_argument("--no-points", action="store_true",
                              help="skip the point benchmark (tracks with occlusion, TAP-Vid metrics)")
    points_group.add_argument("--points-only", action="store_true", help="run only the point benchmark")
    points_group.add_argument("--fit-visibility", action="store_true",
                              help="fit the visibility model on the point benchmark's fitting scenes (the first of "
                              "--models, default the embedded model) and score it and its ablations")
    offline_parser.add_argument("--no-refine", action="store_true",
                                help="point benchmark: report the propagated positions without track_points' "
                                "refinement (to measure what it brings)")
    offline_parser.add_argument("--refine-scale", type=int, default=1, metavar="S",
                                help="point benchmark: refine tracks on the frames upsampled S times "
                                "(track_points' refine_scale; default 1)")
    offline_parser.set_defaults(func=_cmd_offline)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for a bad path, malformed input or a model that cannot load)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_model_options(parser, args)
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except StcorrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
