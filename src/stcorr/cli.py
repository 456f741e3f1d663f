"""The ``stcorr`` command line (also ``python -m stcorr``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from stcorr.errors import InputError, StcorrError
from stcorr.working_size import CPU_MAX_SIDE

__all__ = ["main", "build_parser"]


def _cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from stcorr.hub import sha256_of
    from stcorr.loading import PICKLE_SUFFIXES, load_model
    from stcorr.model import WEIGHTS_NAME

    if Path(args.source).suffix in PICKLE_SUFFIXES and args.stride is None:
        raise InputError(f"{args.source} is a .pth checkpoint: give its output stride with --stride 8 or --stride 4")
    model = load_model(args.source, device="cpu", stride=args.stride)
    model = model.to(getattr(torch, args.dtype))
    model.save_pretrained(args.out_dir)
    weights = Path(args.out_dir) / WEIGHTS_NAME
    print(f"converted {args.source} -> {args.out_dir} ({model.arch}, stride {model.stride}, "
          f"{model.feature_dim} channels, {args.dtype}, {weights.stat().st_size / 2**20:.1f} MiB)")
    print(f"sha256 {sha256_of(weights)}  {weights}")
    return 0


def _model_status(entry) -> str:  # noqa: ANN001 - ManifestEntry, imported lazily
    from huggingface_hub import try_to_load_from_cache

    from stcorr.paths import release_dir, stcorr_home

    if entry.kind == "embedded":
        return "embedded"
    if entry.kind == "hub":
        cached = try_to_load_from_cache(entry.hub.repo_id, entry.hub.filename, revision=entry.hub.revision)
        return "cached" if isinstance(cached, str) else "not cached"
    if entry.kind == "package":
        from importlib import util

        module, pip_name = entry.package.get("module", ""), entry.package.get("pip", "")
        return "installed" if module and util.find_spec(module) is not None else f"needs pip install {pip_name}"
    converted = release_dir(entry.name) / "model.safetensors"
    on_disk = converted.is_file() or (stcorr_home() / f"{entry.name}.pth").is_file()
    pin = "" if entry.sha256 else ", unpinned"  # the authors publish no checksum for their Google Drive files
    return f"on disk{pin}" if on_disk else f"not on disk (Google Drive{pin})"


def _model_rows() -> list[dict]:
    """One row per name ``--model`` accepts: the manifest's models, then the baselines."""
    from stcorr.baseline_catalog import BASELINE_ARCHS, BASELINE_DESCRIPTIONS, BASELINE_STRIDE, baseline_status
    from stcorr.manifest import default_model_name, load_manifest

    default = default_model_name()
    manifest = load_manifest()
    rows = [{"name": name, "kind": entry.kind, "arch": entry.arch, "stride": entry.stride,
             "status": _model_status(entry), "description": entry.description, "default": name == default,
             "reported": entry.reported} for name, entry in sorted(manifest.items())]
    rows += [{"name": name, "kind": "baseline", "arch": BASELINE_ARCHS[name], "stride": BASELINE_STRIDE,
              "status": baseline_status(name), "description": description, "default": False, "reported": {}}
             for name, description in BASELINE_DESCRIPTIONS.items()
             if name not in manifest]  # efficientnet-lite0 is also a manifest model, with the same features
    return rows


def format_table(rows: Sequence[dict[str, str]], columns: Sequence[str]) -> str:
    """Plain-text table whose columns line up (each as wide as its longest cell); the last column is not padded."""
    widths = [max(len(column), *(len(row[column]) for row in rows)) for column in columns]
    lines = [[column for column in columns]] + [[row[column] for column in columns] for row in rows]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def _cmd_models(args: argparse.Namespace) -> int:
    rows = _model_rows()
    if args.json:
        print(json.dumps({row.pop("name"): row for row in rows}, indent=2))
        return 0
    cells = [{**{key: str(value) for key, value in row.items()},
              "description": row["description"] + (" (default)" if row["default"] else "")} for row in rows]
    print(format_table(cells, ("name", "kind", "arch", "stride", "status", "description")))
    print("\nGive a name to --model (Python: stcorr.load_model(name); baselines: stcorr.load_encoder(name)).")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import huggingface_hub
    import numpy
    import torch
    import torchvision

    from stcorr._version import __version__
    from stcorr.device import resolve_device

    try:
        import av

        av_version = av.__version__
    except ImportError:
        av_version = "not installed (pip install 'stcorr[video]')"
    rows = {
        "stcorr": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "numpy": numpy.__version__,
        "av": av_version,
        "default device": str(resolve_device(None)),
        "cuda devices": str(torch.cuda.device_count()),
        "cpu threads": str(torch.get_num_threads()),
    }
    for key, value in rows.items():
        print(f"{key:<16} {value}")
    return 0


def working_batch_size(batch_size: int | None, device_type: str) -> int:
    """Frames per encoder batch: ``--batch-size`` as given, else 1 on CPU (features stream frame by frame, so
    progress never waits for a batch; batching does not make a CPU faster per frame) and 8 on accelerators."""
    if batch_size is None:
        from stcorr.features import default_batch_size

        return default_batch_size(device_type)
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    return batch_size


def _propagation_options(args: argparse.Namespace) -> dict:
    from stcorr.device import resolve_device
    from stcorr.propagation.options import PropagationOptions

    options = PropagationOptions(context=args.context, radius=args.radius, topk=args.topk,
                                 temperature=args.temperature)
    return dict(options=options, batch_size=working_batch_size(args.batch_size, resolve_device(args.device).type))


def _progress_bar(total: int, unit: str = "frame"):  # noqa: ANN202 - tqdm instance
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True, file=sys.stderr)


def working_max_side(max_side: int | None, device_type: str) -> int | None:
    """The longest side frames are processed at: ``--max-side`` as given (0 = full resolution), else
    :data:`CPU_MAX_SIDE` on CPU and full resolution on accelerators (the Python API's default too)."""
    from stcorr.working_size import working_max_side as resolve

    return resolve(max_side, device_type, name="--max-side")


def _max_side(args: argparse.Namespace) -> int:
    """The library's ``max_side`` for ``--max-side``: the resolved working size, 0 for full resolution."""
    from stcorr.device import resolve_device

    return working_max_side(args.max_side, resolve_device(args.device).type) or 0


def _run_video_job(args: argparse.Namespace, **prompt: Path | None) -> int:
    """``propagate`` / ``points``: one video's job (:func:`stcorr.video_jobs.run_video_job`), its lines printed."""
    from stcorr.loading import load_encoder
    from stcorr.video_jobs import VideoRequest, run_video_job

    request = VideoRequest(args.video, **prompt, frame=args.frame, max_frames=args.max_frames, model=args.model,
                           overlay=args.overlay, resize_mask=getattr(args, "resize_mask", False),
                           confidence=getattr(args, "confidence", False),
                           overlay_pngs=getattr(args, "overlay_pngs", None))
    if request.kind != "session":  # a session replays its own working size and options
        request = dataclasses.replace(request, max_side=_max_side(args))
        settings = _propagation_options(args)
    else:
        settings = dict(options=None, batch_size=1)
    outcome = run_video_job(request, args.out, encoder=lambda name: load_encoder(name, device=args.device),
                            overwrite=getattr(args, "overwrite", False), bar=_progress_bar, **settings)
    for line in outcome.lines:
        print(line)
    return 0


def _refuse_session_extras(args: argparse.Namespace) -> None:
    """``--session`` replays the session's anchors and writes its masks only: options it would ignore are refused."""
    ignored = [option for option, given in (("--mask", args.mask is not None), ("--frame", args.frame != 0),
                                            ("--resize-mask", args.resize_mask), ("--confidence", args.confidence),
                                            ("--overlay", args.overlay is not None),
                                            ("--overlay-pngs", args.overlay_pngs is not None)) if given]
    if ignored:
        raise InputError(f"--session replays the session's own anchors and writes its masks only, so "
                         f"{', '.join(ignored)} would be ignored; drop {'it' if len(ignored) == 1 else 'them'}, or "
                         "use --mask without --session")


def _annotation_file(args: argparse.Namespace) -> Path | None:
    """``OUT/coco.json`` or ``OUT/ytvis.json`` for ``--format``, refused before any work if it exists (unless
    ``--overwrite``); None for ``--format png``."""
    if args.format == "png":
        return None
    from stcorr.io.claims import check_apart

    path = Path(args.out) / f"{args.format}.json"
    check_apart([args.video, args.mask, args.session], files={"--format": path})
    if path.exists() and not args.overwrite:
        raise InputError(f"{path} exists from an earlier run; pass --overwrite to replace it, or choose another --out")
    return path


def _cmd_propagate(args: argparse.Namespace) -> int:
    annotation_file = _annotation_file(args)
    if args.session is not None:
        _refuse_session_extras(args)
        code = _run_video_job(args, session=args.session)
    elif args.mask is None:
        raise InputError("give the first-frame mask with --mask FILE (or a session exported by the app with --session)")
    else:
        code = _run_video_job(args, mask=args.mask)
    if annotation_file is not None:
        from stcorr.io.annotations import convert_annotations

        result = convert_annotations(Path(args.out) / "masks", annotation_file, to=args.format, overwrite=True)
        print(f"wrote {result.path} ({args.format}, {result.frames} frames)")
    return code


def _cmd_propagate_many(args: argparse.Namespace) -> int:
    """Exit code 0 when every video is done (or was done earlier), 1 when some failed (see DIR/summary.json)."""
    from stcorr.batch import ManySettings, run_many
    from stcorr.batch_manifest import read_manifest
    from stcorr.distributed import shard_device, shard_from_env
    from stcorr.propagation.options import PropagationOptions

    if args.batch_videos < 1:
        raise InputError(f"--batch-videos must be at least 1, got {args.batch_videos}")
    rows = read_manifest(args.manifest)
    shard = shard_from_env()
    device = shard_device(shard, args.device)
    options = PropagationOptions(context=args.context, radius=args.radius, topk=args.topk,
                                 temperature=args.temperature)
    settings = ManySettings(model=args.model, device=str(device), options=options,
                            max_side=working_max_side(args.max_side, device.type) or 0, max_frames=args.max_frames,
                            batch_size=working_batch_size(args.batch_size, device.type),
                            batch_videos=args.batch_videos, resize_mask=args.resize_mask,
                            confidence=args.confidence, overlay=args.overlay, overlay_pngs=args.overlay_pngs,
                            overwrite=args.overwrite)
    result = run_many(rows, args.out, settings, shard=shard, progress=True)
    if shard.is_main:
        for video in result.summary["videos"]:
            if video["status"] == "failed":
                error = video["error"]
                print(f"failed: {video['name']} (manifest line {video['line']}): {error['type']}: {error['message']}",
                      file=sys.stderr)
        counts = result.summary["counts"]
        print(f"{counts['done']} videos done, {counts['skipped']} already done, {counts['failed']} failed: "
              f"{args.out / 'summary.json'}")
    return 1 if result.failed else 0


def _cmd_app(args: argparse.Namespace) -> int:
    from stcorr.app import launch

    allowed = [name for value in args.allowed_hosts for name in value.split(",")]
    launch(args.video, model=args.model, host=args.host, port=args.port, max_side=args.max_side,
           max_frames=args.max_frames, device=args.device, allowed_hosts=allowed, max_upload_mb=args.max_upload_mb)
    return 0


def _cmd_points(args: argparse.Namespace) -> int:
    return _run_video_job(args, points=args.points)


def parse_names(values: Sequence[str]) -> dict[int, str]:
    """``--names 1=person 2=dog`` as ``{1: "person", 2: "dog"}``."""
    names: dict[int, str] = {}
    for value in values:
        key, sep, name = value.partition("=")
        if not sep or not key.strip().isdigit() or not 1 <= int(key) <= 254 or not name.strip():
            raise InputError(f"--names takes ID=NAME with an object id in 1..254 and a name, e.g. 1=person; "
                             f"got {value!r}")
        if int(key) in names:
            raise InputError(f"--names names object {int(key)} twice")
        names[int(key)] = name.strip()
    return names


def _cmd_convert_annotations(args: argparse.Namespace) -> int:
    from stcorr.io.annotations import convert_annotations

    result = convert_annotations(args.source, args.out, to=args.to, names=parse_names(args.names or []),
                                 video=args.video, overwrite=args.overwrite)
    objects = ", ".join(f"{i} ({result.names[i]})" if i in result.names else str(i) for i in result.objects) or "none"
    print(f"wrote {result.path} ({args.to}): {result.frames} frames, objects {objects}")
    if result.overlap:
        print(f"warning: objects overlapped on {result.overlap} pixels of the input; the later annotation won there",
              file=sys.stderr)
    return 0


def _cmd_sheet(args: argparse.Namespace) -> int:
    from stcorr.pipelines import contact_sheet

    print(f"wrote {contact_sheet(args.video, args.frames, args.out, width=args.width)}")
    return 0


_PROPAGATE_EXAMPLE = """example:
  stcorr propagate --video clip.mp4 --mask first.png --out out/ --overlay out/overlay.mp4
  stcorr propagate --video frames/ --mask 00030.png --frame 30 --max-side 0 --device cuda   # full size on a GPU

Writes out/masks/<frame>.png (palette PNGs at the input's size) and, with --overlay, an mp4.
"""

_MANY_EXAMPLE = """example:
  printf 'name,video,mask\\ncat,cat.mp4,cat_first.png\\ndog,dog_frames/,dog_00000.png\\n' > videos.csv
  stcorr propagate-many --manifest videos.csv --out out/ --overlay
  torchrun --standalone --nproc_per_node 4 -m stcorr propagate-many --manifest videos.csv --out out/

Writes out/<name>/masks/<frame>.png per video (as `stcorr propagate`) and out/summary.json. Run it again
to resume: finished videos are skipped, unfinished ones redone. Exit code 1 if some video failed.
"""

_POINTS_EXAMPLE = """example:
  echo '{"points": [[120, 80], [300, 210]], "point_names": ["nose", "hand"]}' > pts.json
  stcorr points --video clip.mp4 --points pts.json --out out/ --overlay out/points.mp4

Writes out/points.json ({"frame_names", "point_names", "points": T x N x [x, y], "scores": T x N,
"visible": T x N}) and out/points.csv (last column visible); a score is the estimated probability that the
point is visible. The overlay draws hidden points as rings. The older input key "names" for point names is
still read.
"""


_ANNOTATIONS_EXAMPLE = """example:
  stcorr convert-annotations out/masks out/coco.json --to coco --names 1=person 2=dog
  stcorr convert-annotations out/masks out/ytvis.json --to ytvis
  stcorr convert-annotations out/coco.json back/masks --to png

One COCO RLE per object and frame (compressed counts, as pycocotools writes them; "track_id" is the object id);
void pixels (255) are a "void" category with iscrowd 1. Round trips are pixel-exact.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps epilog line breaks and appends "(default: X)" to options that have a non-empty default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default is None or default is False or default is argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _add_video_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="a video file or a folder of JPEG/PNG frames")
    parser.add_argument("--frame", type=int, default=0, help="index of the annotated frame")
    parser.add_argument("--out", type=Path, default=Path("stcorr_out"), help="output folder")
    parser.add_argument("--overlay", type=Path, help="also write an overlay video here (e.g. out.mp4)")
    _add_model_arguments(parser)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, its device, the working size and the propagation options (every propagating command)."""
    parser.add_argument("--model", default=None,
                        help="model name, hf-hub:org/repo, folder, checkpoint, or a baseline (lab-pixels, random-r18, "
                             "efficientnet-lite0); `stcorr models` lists the names (default: the embedded model)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument("--max-side", type=int,
                        help=f"process frames downscaled to this longest side in pixels, 0 = full resolution; outputs "
                             f"keep the input's size (default: {CPU_MAX_SIDE} on CPU, full resolution on CUDA)")
    parser.add_argument("--max-frames", type=int, help="use only the first N frames (default: all)")
    parser.add_argument("--context", type=int, default=20, help="preceding frames in the context")
    parser.add_argument("--radius", type=int, default=12, help="search window half-width in feature cells")
    parser.add_argument("--topk", type=int, default=10, help="candidates per position")
    parser.add_argument("--temperature", type=float, default=0.07, help="softmax temperature")
    parser.add_argument("--batch-size", type=int,
                        help="frames per encoder batch (default: 1 on CPU, so progress moves every frame; 8 on CUDA)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    epilog = ("example:\n  stcorr propagate --video clip.mp4 --mask first.png --out out/\n"
              "  stcorr propagate --help      # every option with its default")
    parser = argparse.ArgumentParser(prog="stcorr", description="Dense video correspondence with stcorr.",
                                     formatter_class=_HelpFormatter, epilog=epilog)
    parser.add_argument("-v", "--verbose", action="store_true", help="log library messages")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, help_text: str, example: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, epilog=example,
                              formatter_class=_HelpFormatter)

    propagate = add_command("propagate", "carry a first-frame mask through a video", _PROPAGATE_EXAMPLE)
    _add_video_job_arguments(propagate)
    propagate.add_argument("--mask", type=Path, help="first-frame mask PNG (palette, grey or RGB), or a COCO / "
                           "YouTube-VIS .json (its first frame)")
    propagate.add_argument("--session", type=Path,
                           help="replay a session.json exported by `stcorr app` instead of --mask (its anchors, "
                                "options and model; --model overrides the model)")
    propagate.add_argument("--resize-mask", action="store_true", help="resize a mask of another size (nearest)")
    propagate.add_argument("--confidence", action="store_true", help="also write confidence PNGs")
    propagate.add_argument("--overlay-pngs", type=Path, help="also write one overlay PNG per frame into this folder")
    propagate.add_argument("--format", choices=("png", "coco", "ytvis"), default="png",
                           help="png: the mask PNGs only; coco / ytvis: also OUT/coco.json or OUT/ytvis.json (COCO RLE "
                                "or YouTube-VIS, as `stcorr convert-annotations` writes them)")
    propagate.add_argument("--overwrite", action="store_true",
                           help="delete the PNGs of an earlier run in the output folders first (default: refuse)")
    propagate.set_defaults(func=_cmd_propagate)

    many = add_command("propagate-many", "propagate many videos listed in a manifest (CSV or JSON lines), "
                       "resumably; scales over processes with torchrun", _MANY_EXAMPLE)
    many.add_argument("--manifest", type=Path, required=True,
                      help="CSV (with a header) or JSON lines: one row per video (see the README)")
    many.add_argument("--out", type=Path, required=True,
                      help="output folder: DIR/<name>/ per video as `stcorr propagate` writes it, DIR/summary.json")
    _add_model_arguments(many)
    many.add_argument("--resize-mask", action="store_true", help="resize masks of another size (nearest)")
    many.add_argument("--confidence", action="store_true", help="also write DIR/<name>/confidence/ PNGs")
    many.add_argument("--overlay", action="store_true", help="also write DIR/<name>/overlay.mp4")
    many.add_argument("--overlay-pngs", action="store_true", help="also write DIR/<name>/overlay/ PNGs")
    many.add_argument("--batch-videos", type=int, default=1, metavar="N",
                      help="propagate up to N mask videos annotated on frame 0 with one working size together "
                           "(one encoder pass and one batched kernel step per frame; for GPUs)")
    many.add_argument("--overwrite", action="store_true",
                      help="redo every video (default: skip the videos an earlier run completed, redo the others)")
    many.set_defaults(func=_cmd_propagate_many)

    points = add_command("points", "track points given on one frame through a video", _POINTS_EXAMPLE)
    _add_video_job_arguments(points)
    points.add_argument("--points", required=True, type=Path,
                        help='JSON [[x, y], ...] or {"points": [[x, y], ...], "point_names": [...]}')
    points.set_defaults(func=_cmd_points)

    sheet = add_command("sheet", "save chosen frames of a video side by side as one image",
                        "example:\n  stcorr sheet out/overlay.mp4 --frames 0 100 199 --out sheet.jpg --width 1500")
    sheet.add_argument("video", help="a video file or a folder of frames (e.g. an overlay video)")
    sheet.add_argument("--frames", type=int, nargs="+", required=True, help="frame indices, e.g. 0 100 199")
    sheet.add_argument("--out", type=Path, required=True, help="output image (.png or .jpg)")
    sheet.add_argument("--width", type=int, default=1200, help="width of the output image in pixels")
    sheet.set_defaults(func=_cmd_sheet)

    app = sub.add_parser("app", help="browser app: paint a mask, propagate, correct frames, export (stcorr[app])")
    app.add_argument("video", nargs="?", help="a video file or a folder of frames to open at start")
    app.add_argument("--model", default=None, help="model name or path (default: the embedded model)")
    app.add_argument("--max-side", type=int,
                     help=f"process frames downscaled to this longest side in pixels, 0 = full resolution; masks "
                          f"keep the input's size (default: {CPU_MAX_SIDE} on CPU, full resolution on CUDA)")
    app.add_argument("--max-frames", type=int, help="use only the first N frames")
    app.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    app.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 shares it)")
    app.add_argument("--allowed-hosts", action="append", default=[], metavar="NAMES",
                     help="also answer requests for these host names (comma-separated, repeatable; '*' = any). "
                          "By default the app answers only localhost names and the --host address, which stops "
                          "DNS-rebinding pages")
    app.add_argument("--max-upload-mb", type=float, default=500, help="largest upload in MB (default 500)")
    app.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    app.set_defaults(func=_cmd_app)


    annotations = add_command(
        "convert-annotations", "convert masks between PNG folders, COCO RLE JSON and YouTube-VIS JSON",
        _ANNOTATIONS_EXAMPLE)
    annotations.add_argument("source", type=Path,
                             help="a folder of id PNGs (OUT/masks) or a COCO / YouTube-VIS .json (detected from its "
                                  "keys)")
    annotations.add_argument("out", type=Path, help="output folder (--to png) or .json file (--to coco, ytvis)")
    annotations.add_argument("--to", required=True, choices=("png", "coco", "ytvis"), help="output format")
    annotations.add_argument("--names", nargs="+", metavar="ID=NAME",
                             help="category names of objects in JSON outputs, e.g. 1=person 2=dog (default: object)")
    annotations.add_argument("--video", help="the video to read from a YouTube-VIS file holding several (name or id); "
                             "the video's name in a YouTube-VIS output (default: the masks' run folder)")
    annotations.add_argument("--overwrite", action="store_true",
                             help="replace an existing output file, or delete the PNGs in the output folder first")
    annotations.set_defaults(func=_cmd_convert_annotations)

    convert = add_command("convert", "write config.json + model.safetensors from an official .pth checkpoint or "
                          "any loadable model",
                          "example:\n  stcorr convert res18_d8.pth ~/.cache/stcorr/stt-r18-s8 --stride 8")
    convert.add_argument("source", help="the authors' released .pth (or a torchvision-keyed one), a training run "
                         "folder, a model folder or a manifest name")
    convert.add_argument("out_dir", type=Path, help="output folder")
    convert.add_argument("--stride", type=int, choices=(8, 4), default=None,
                         help="output stride of the model (required for .pth checkpoints)")
    convert.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                         help="stored weight precision (float16 halves the file; loading casts back to float32)")
    convert.set_defaults(func=_cmd_convert)

    models = add_command("models", "list the names --model accepts (manifest models and baselines) and whether "
                         "each is on disk")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=_cmd_models)

    info = add_command("info", "versions and the default device")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for a typed stcorr error, 130 after Ctrl-C, 143 after
    SIGTERM)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from stcorr._signals import Interrupted, handled_interrupts

    try:
        with handled_interrupts():
            return args.func(args)
    except StcorrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: temporary files are gone, finished frames complete
        print("error: interrupted; the frames written so far are complete, temporary files were removed",
              file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else 130
