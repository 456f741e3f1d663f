"""The ``stcorr`` command line (also ``python -m stcorr``)."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from stcorr.errors import StcorrError

__all__ = ["main", "build_parser"]


def _cmd_convert(args: argparse.Namespace) -> int:
    from stcorr.hub import sha256_of
    from stcorr.loading import load_checkpoint
    from stcorr.model import WEIGHTS_NAME

    model = load_checkpoint(args.checkpoint, stride=args.stride)
    model.save_pretrained(args.out_dir)
    weights = Path(args.out_dir) / WEIGHTS_NAME
    print(f"converted {args.checkpoint} -> {args.out_dir} ({model.arch}, stride {model.stride}, {model.feature_dim} channels)")
    print(f"sha256 {sha256_of(weights)}  {weights}")
    return 0


def _model_status(entry) -> str:  # noqa: ANN001 - ManifestEntry, imported lazily
    from huggingface_hub import try_to_load_from_cache
    from stcorr.loading import release_dir, stcorr_home

    if entry.kind == "embedded":
        return "embedded"
    if entry.kind == "hub":
        cached = try_to_load_from_cache(entry.hub.repo_id, entry.hub.filename, revision=entry.hub.revision)
        return "cached" if isinstance(cached, str) else "not cached"
    on_disk = (release_dir(entry.name) / "model.safetensors").is_file() or (stcorr_home() / f"{entry.name}.pth").is_file()
    return "on disk" if on_disk else "not on disk (download from Google Drive)"


def _cmd_models(args: argparse.Namespace) -> int:
    from stcorr.manifest import default_model_name, load_manifest

    entries = load_manifest()
    default = default_model_name()
    if args.json:
        print(json.dumps({name: {"kind": e.kind, "arch": e.arch, "stride": e.stride, "status": _model_status(e),
                                 "reported": e.reported, "default": name == default} for name, e in entries.items()},
                         indent=2))
        return 0
    print(f"{'name':<22} {'arch':<9} {'stride':>6}  {'status':<12} description")
    for name, entry in sorted(entries.items()):
        marker = " (default)" if name == default else ""
        print(f"{name:<22} {entry.arch:<9} {entry.stride:>6}  {_model_status(entry):<12} {entry.description}{marker}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import huggingface_hub
    import numpy
    import torch
    import torchvision

    from stcorr import __version__
    from stcorr.loading import resolve_device

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="stcorr", description="Dense video correspondence with stcorr.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log library messages")
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="convert an official .pth checkpoint to config.json + model.safetensors")
    convert.add_argument("checkpoint", type=Path, help="the authors' released .pth (or a torchvision-keyed one)")
    convert.add_argument("out_dir", type=Path, help="output folder")
    convert.add_argument("--stride", type=int, choices=(8, 4), required=True, help="output stride of the model")
    convert.set_defaults(func=_cmd_convert)

    models = sub.add_parser("models", help="list the manifest's models and whether they are on disk")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=_cmd_models)

    info = sub.add_parser("info", help="versions and the default device")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for a typed stcorr error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except StcorrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
