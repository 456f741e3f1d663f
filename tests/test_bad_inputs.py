"""The acceptance table of bad inputs: API, CLI, weights and training.

Each row feeds one bad (or borderline) input and states the outcome: a typed stcorr error whose message
matches, or a documented result. Every row runs under a watchdog, so none can hang; the whole table uses a
tiny stand-in encoder and runs in seconds.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import stcorr
from stcorr import errors
from stcorr.cli import main as cli_main
from stcorr.features import extract_features
from stcorr.model import CorrespondenceModel
from stcorr.pipelines import propagate_video_mask
from stcorr import iter_propagate, match_points, propagate_labels
from stcorr.train.__main__ import main as train_main
from stcorr.train.checkpoints import read_resume_checkpoint
from stcorr.train.distributed import Distributed, use_sync_bn
from stcorr.train.loop import RunOptions, _Trainer
from stcorr.train.presets import resolve_config

SIZE = (32, 40)  # (H, W) of the test frames
WATCHDOG_S = 30


class TinyEncoder(nn.Module):
    """A stride-8 stand-in encoder: one strided convolution (fast, deterministic)."""

    stride = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 8, stride=8)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.conv(rgb)


class ExplodingEncoder(TinyEncoder):
    """Fails the row if any feature work happens."""

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        raise AssertionError("features were extracted before the bad input was rejected")


@pytest.fixture(autouse=True)
def watchdog():
    """Fail (instead of hang) any row that takes longer than WATCHDOG_S seconds."""

    def timeout(*_: Any) -> None:
        raise TimeoutError(f"the row took more than {WATCHDOG_S} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(WATCHDOG_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def frames(count: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, *SIZE, 3), dtype=np.uint8)


def mask(size: tuple[int, int] = SIZE) -> np.ndarray:
    ids = np.zeros(size, np.uint8)
    ids[8:20, 10:30] = 1
    return ids


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bad files on disk, made once."""
    root = tmp_path_factory.mktemp("bad_inputs")
    video = root / "video"
    video.mkdir()
    for t, frame in enumerate(frames()):
        Image.fromarray(frame).save(video / f"{t:05d}.png")
    Image.fromarray(mask()).save(root / "mask.png")
    Image.fromarray(mask((16, 16))).save(root / "small_mask.png")
    (root / "points_strings.json").write_text(json.dumps([["x", 1]]))
    (root / "points_ragged.json").write_text(json.dumps([[1, 2], [3]]))
    (root / "points_bad.json").write_text("{not json")
    (root / "a_file").write_text("I am a file")
    model_dir = root / "model"
    CorrespondenceModel("resnet18", layers=("layer1",)).save_pretrained(model_dir)
    for name, content in (("null", b"null"), ("list", b"[1, 2, 3]"), ("latin1", "{\"arch\": \"r\xe9\"}".encode("latin-1")),
                          ("arch", b'{"arch": "resnet99", "stride": 8}'), ("stride", b'{"arch": "resnet18", "stride": 5}')):
        folder = root / f"config_{name}"
        shutil.copytree(model_dir, folder)
        (folder / "config.json").write_bytes(content)
    (root / "no_weights").mkdir()
    (root / "no_weights" / "config.json").write_text("{}")
    truncated = root / "truncated"
    shutil.copytree(model_dir, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    torch.save({"conv1.weight": torch.zeros(1)}, root / "plain.pth")
    (root / "evil.pth").write_bytes(pickle.dumps(Path("/")))  # a pickle of a class, not tensors
    (root / "weights.txt").write_text("not weights")
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("mine")
    (root / "empty.pt").write_bytes(b"")
    (root / "cut.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    return {"root": root, "video": video, "mask": root / "mask.png", "model": model_dir}


@dataclass(frozen=True)
class Row:
    """One bad input: ``run(files)`` must raise ``error`` matching ``match`` (or, with ``error=None``,
    return a value ``check`` accepts: a documented result)."""

    name: str
    run: Callable[[dict[str, Path]], Any]
    error: type[BaseException] | None
    match: str = ""
    check: Callable[[Any], bool] | None = None


M = TinyEncoder()
E = errors


def prop(**kwargs: Any) -> Callable[[dict[str, Path]], Any]:
    options = {"first_labels": mask(), **kwargs}
    model = options.pop("model", M)
    video = options.pop("frames", None)
    return lambda f: propagate_labels(model, frames() if video is None else video, **options)


def iterate(**kwargs: Any) -> Callable[[dict[str, Path]], Any]:
    return lambda f: next(iter_propagate(M, frames(), mask(), **kwargs))


def cli(*argv: str) -> Callable[[dict[str, Path]], Any]:
    """Run the CLI with ``{name}`` replaced by the files' paths; a typed error exits with 2."""

    def run(f: dict[str, Path]) -> int:
        return cli_main([arg.format(**{k: str(v) for k, v in f.items()}) for arg in argv])

    return run


def train(*argv: str) -> Callable[[dict[str, Path]], Any]:
    def run(f: dict[str, Path]) -> int:
        args = [arg.format(**{k: str(v) for k, v in f.items()}) for arg in argv]
        return train_main([*args, "--preset", "cpu", "--no-progress", "--workers", "0"])

    return run


def flipped_embedded(name: str | None) -> Callable[[dict[str, Path]], Any]:
    """Load embedded model ``name`` (None: the default) from a copy of the package folder in which every
    embedded weights file has one byte flipped."""
    import stcorr.loading as loading
    from importlib import resources

    def run(f: dict[str, Path]) -> Any:
        package = Path(str(resources.files("stcorr")))
        copy = f["root"] / "package_copy"
        if not copy.exists():
            shutil.copytree(package / "weights", copy / "weights")
            for weights in (copy / "weights").glob("*/model.safetensors"):
                data = bytearray(weights.read_bytes())
                data[len(data) // 2] ^= 0x01
                weights.write_bytes(bytes(data))
        real = loading.resources.files
        loading.resources.files = lambda _: copy  # type: ignore[assignment]
        try:
            return stcorr.load_model(name, device="cpu")
        finally:
            loading.resources.files = real  # type: ignore[assignment]

    return run


def trainer_on_full_disk(f: dict[str, Path]) -> Any:
    """A checkpoint write on a full disk (torch reports it as 'unexpected pos')."""
    import stcorr.train.checkpoints as checkpoints

    task = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    trainer = _Trainer("temporal", task, optimizer, scheduler, resolve_config("temporal", "cpu"),
                       RunOptions(out=f["root"] / "full_disk_run"), Distributed())
    real = checkpoints.torch.save

    def full(*_: Any, **__: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    checkpoints.torch.save = full
    try:
        return trainer.save(1)
    finally:
        checkpoints.torch.save = real


def resume_after_truncated_latest(f: dict[str, Path]) -> Path:
    run = f["root"] / "resume_run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "stage": "temporal", "step": 2}, run / "checkpoints" / "step_00000002.pt")
    (run / "checkpoints" / "step_00000004.pt").write_bytes(b"PK\x03\x04 truncated")
    return read_resume_checkpoint(run / "checkpoints" / "step_00000004.pt", run, "latest")[0]


def stale_masks(f: dict[str, Path]) -> Any:
    out = f["root"] / "stale_out"
    propagate_video_mask(M, f["video"], mask(), out)  # an earlier run
    return propagate_video_mask(M, f["video"], mask(), out, max_frames=3)  # a shorter one into the same folder


def stale_masks_overwrite(f: dict[str, Path]) -> int:
    out = f["root"] / "stale_out_overwrite"
    propagate_video_mask(M, f["video"], mask(), out)
    propagate_video_mask(M, f["video"], mask(), out, max_frames=3, overwrite=True)
    return len(list((out / "masks").glob("*.png")))


def sync_bn_on_cpu(_: dict[str, Path]) -> bool:
    config = resolve_config("temporal", "r18-s8")  # the default preset asks for sync-BN
    assert config.sync_bn
    return use_sync_bn(config, Distributed(rank=0, world_size=2, device=torch.device("cpu")))


ROWS = [
    # ---- propagation API: labels (all rejected before any feature work)
    Row("mask of the wrong size", prop(model=ExplodingEncoder(), first_labels=mask((16, 16))), E.InputError, "fit frames"),
    Row("mask ids above 255", prop(first_labels=np.full(SIZE, 300)), E.InputError, r"\[0, 254\]"),
    Row("float mask with fractions", prop(first_labels=np.full(SIZE, 0.5)), E.InputError, "integer ids"),
    Row("string mask", prop(first_labels=np.full(SIZE, "a")), E.InputError, "dtype"),
    Row("mask with only void", prop(first_labels=np.full(SIZE, 255, np.uint8)), E.InputError, "no labels"),
    Row("string keypoints", prop(model=ExplodingEncoder(), first_labels=np.array([["a", "b"]])), E.InputError, "numbers"),
    Row("keypoint outside the image", prop(first_labels=np.array([[100.0, 5.0]])), E.InputError, "outside"),
    Row("NaN keypoint", prop(first_labels=np.array([[np.nan, 5.0]])), E.InputError, "outside"),
    Row("no keypoints", prop(first_labels=np.zeros((0, 2))), E.InputError, "no keypoints"),
    Row("negative soft labels", prop(first_labels=-np.ones((2, *SIZE))), E.InputError, "non-negative"),
    Row("all-zero soft labels", prop(first_labels=np.zeros((2, *SIZE))), E.InputError, "all zero"),
    Row("labels as a nested list of strings", prop(first_labels=[["a"]]), E.InputError, "do not fit"),
    # anchors
    Row("anchors as a list", prop(model=ExplodingEncoder(), anchors=[mask()]), E.InputError, "dict"),
    Row("anchor beyond the video", prop(anchors={99: mask()}), E.InputError, "outside the video's 5 frames"),
    Row("anchor at -1", prop(anchors={-1: mask()}), E.InputError, "outside"),
    Row("anchor at '2'", prop(anchors={"2": mask()}), E.InputError, "integers"),
    Row("anchor at the start frame", prop(anchors={0: mask()}), E.InputError, "start frame"),
    Row("anchor of another kind", prop(anchors={2: np.array([[1.0, 1.0]])}), E.InputError, "same kind"),
    Row("anchor with a new id", prop(anchors={2: mask() * 3}), E.InputError, "not among"),
    Row("anchor of the wrong size", prop(model=ExplodingEncoder(), anchors={2: mask((8, 8))}), E.InputError, "frame 2"),
    # start, direction and options
    Row("start 2.5", prop(start=2.5), E.InputError, "integer"),
    Row("start -1", prop(start=-1), E.InputError, "outside"),
    Row("start beyond the video", prop(start=99), E.InputError, "outside"),
    Row("unknown direction", iterate(direction="sideways"), E.InputError, "direction"),
    Row("batch_size 0", prop(model=ExplodingEncoder(), batch_size=0), E.InputError, "batch_size"),
    Row("batch_size -3 (iter_propagate)", iterate(batch_size=-3), E.InputError, "batch_size"),
    Row("batch_size 2.5", prop(batch_size=2.5), E.InputError, "batch_size"),
    Row("radius -1", prop(radius=-1), E.InputError, "radius"),
    Row("topk 0", prop(topk=0), E.InputError, "topk"),
    Row("temperature 0", prop(temperature=0.0), E.InputError, "temperature"),
    Row("temperature NaN", prop(temperature=float("nan")), E.InputError, "temperature"),
    Row("context -1", prop(context=-1), E.InputError, "context"),
    Row("unknown label downsampling", prop(label_downsampling="cubic"), E.InputError, "label_downsampling"),
    Row("autocast dtype int8", prop(dtype=torch.int8), E.InputError, "dtype"),
    Row("compute dtype int32", prop(compute_dtype=torch.int32), E.InputError, "compute_dtype"),
    # models and fusion
    Row("model=None", prop(model=None), E.InputError, "torch.nn.Module"),
    Row("model given as a name", prop(model="embedded-r18-s8"), E.InputError, "torch.nn.Module"),
    Row("no models to fuse", prop(model=[]), E.InputError, "empty sequence"),
    Row("fusion weight NaN", prop(model=[M, M], fusion_weights=[float("nan"), 1.0]), E.InputError, "finite"),
    Row("negative fusion weight", prop(model=[M, M], fusion_weights=[-1.0, 2.0]), E.InputError, "non-negative"),
    Row("one fusion weight for two models", prop(model=[M, M], fusion_weights=[1.0]), E.InputError, "one finite"),
    # frames
    Row("a single frame", prop(frames=frames(1)), E.InputError, "at least 2 frames"),
    Row("frames without a time axis", prop(frames=frames()[0]), E.InputError, "time axis"),
    Row("float frames above 1", prop(frames=frames().astype(np.float32)), E.InputError, "255"),
    Row("an empty frame list", prop(frames=[]), E.InputError, "empty list"),
    Row("frames of mixed sizes", prop(frames=[frames()[0], frames()[0][:16]]), E.InputError, "all frames must match"),
    Row("a frames path that does not exist", prop(frames="/no/such/video.mp4"), E.VideoReadError, "does not exist"),
    Row("RGBA frame array: alpha dropped, like RGBA lists",
        prop(frames=np.concatenate([frames(), np.full((5, *SIZE, 1), 255, np.uint8)], axis=3)), None,
        check=lambda result: result.labels.shape == (5, *SIZE)),
    # matching and features
    Row("match_points radius -1", lambda f: match_points(M, frames()[0], frames()[1], [[4, 4]], radius=-1),
        E.InputError, "radius"),
    Row("match_points string points", lambda f: match_points(M, frames()[0], frames()[1], [["x", 1]]),
        E.InputError, "numbers"),
    Row("match_points point outside", lambda f: match_points(M, frames()[0], frames()[1], [[400, 4]]),
        E.InputError, "outside"),
    Row("match_points given a video", lambda f: match_points(M, frames(), frames()[1], [[4, 4]]),
        E.InputError, "one frame"),
    Row("extract_features batch_size 0", lambda f: extract_features(M, frames(), batch_size=0), E.InputError,
        "batch_size"),
    # devices
    Row("load_model on cuda:99", lambda f: stcorr.load_model(device="cuda:99"), E.DeviceError, "cpu"),
    Row("load_model on a tpu", lambda f: stcorr.load_model(device="tpu"), E.DeviceError, "not a device name"),
    Row("extract_features on cuda:99", lambda f: extract_features(M, frames(), device="cuda:99"), E.DeviceError,
        "cuda:99"),
    # model names, configs and weights
    Row("load_model(123)", lambda f: stcorr.load_model(123), E.InputError, "int"),
    Row("load_model('hf-hub:')", lambda f: stcorr.load_model("hf-hub:"), E.UnknownModelError, "org/repo"),
    Row("load_model('hf-hub:a/b/c')", lambda f: stcorr.load_model("hf-hub:a/b/c"), E.UnknownModelError, "org/repo"),
    Row("an unknown model name", lambda f: stcorr.load_model("stt-r99"), E.UnknownModelError, "stcorr models"),
    Row("config.json of null", lambda f: stcorr.load_model(f["root"] / "config_null"), E.CheckpointError, "NoneType"),
    Row("config.json of [1, 2, 3]", lambda f: stcorr.load_model(f["root"] / "config_list"), E.CheckpointError, "list"),
    Row("config.json not UTF-8", lambda f: stcorr.load_model(f["root"] / "config_latin1"), E.CheckpointError, "UTF-8"),
    Row("config.json with an unknown arch", lambda f: stcorr.load_model(f["root"] / "config_arch"),
        E.CheckpointError, "config"),
    Row("config.json with stride 5", lambda f: stcorr.load_model(f["root"] / "config_stride"), E.CheckpointError,
        "config"),
    Row("a folder without weights", lambda f: stcorr.load_model(f["root"] / "no_weights"),
        E.WeightsUnavailableError, "model.safetensors"),
    Row("truncated safetensors", lambda f: stcorr.load_model(f["root"] / "truncated"), E.CheckpointError, "truncated"),
    Row("flipped byte in the default embedded weights (embedded-lite2-s8)", flipped_embedded(None), E.ChecksumError,
        "sha256"),
    Row("flipped byte in the embedded-r18-s8 weights", flipped_embedded("embedded-r18-s8"), E.ChecksumError,
        "sha256"),
    Row("a pickle that is not tensors", lambda f: stcorr.load_model(f["root"] / "evil.pth", stride=8),
        E.CheckpointError, "tensors only"),
    Row(".pth without a stride", lambda f: stcorr.load_model(f["root"] / "plain.pth"), E.InputError, "stride"),
    Row("a .txt weights file", lambda f: stcorr.load_model(f["root"] / "weights.txt"), E.InputError, ".safetensors"),
    Row("a release not downloaded", lambda f: stcorr.load_model("stt-r18-s8"), E.WeightsUnavailableError,
        "Google Drive"),
    Row("save_pretrained into a folder with other files",
        lambda f: CorrespondenceModel("resnet18", layers=("layer1",)).save_pretrained(f["root"] / "foreign"),
        E.OutputWriteError, "notes.txt"),
    # output folders
    Row("propagating into a folder with an earlier run's masks", stale_masks, E.OutputWriteError, "--overwrite"),
    Row("... with overwrite=True: only this run's masks", stale_masks_overwrite, None, check=lambda n: n == 3),
    # command line (a typed error exits with 2)
    Row("cli: a missing mask file", cli("propagate", "--video", "{video}", "--mask", "{root}/nope.png",
                                         "--out", "{root}/o1"), None, check=lambda code: code == 2),
    Row("cli: a mask of the wrong size", cli("propagate", "--video", "{video}", "--mask", "{root}/small_mask.png",
                                              "--out", "{root}/o2"), None, check=lambda code: code == 2),
    Row("cli: --batch-size 0", cli("propagate", "--video", "{video}", "--mask", "{mask}", "--model", "lab-pixels",
                                   "--batch-size", "0", "--out", "{root}/o3"), None, check=lambda code: code == 2),
    Row("cli: --device tpu", cli("propagate", "--video", "{video}", "--mask", "{mask}", "--device", "tpu",
                                 "--out", "{root}/o4"), None, check=lambda code: code == 2),
    Row("cli: points file of strings", cli("points", "--video", "{video}", "--points", "{root}/points_strings.json",
                                           "--out", "{root}/o5"), None, check=lambda code: code == 2),
    Row("cli: ragged points file", cli("points", "--video", "{video}", "--points", "{root}/points_ragged.json",
                                       "--out", "{root}/o6"), None, check=lambda code: code == 2),
    Row("cli: points file not JSON", cli("points", "--video", "{video}", "--points", "{root}/points_bad.json",
                                         "--out", "{root}/o7"), None, check=lambda code: code == 2),
    Row("cli: points file missing", cli("points", "--video", "{video}", "--points", "{root}/none.json",
                                        "--out", "{root}/o8"), None, check=lambda code: code == 2),
    Row("cli: convert onto a file", cli("convert", "{model}", "{root}/a_file"), None, check=lambda code: code == 2),
    Row("cli: convert below a file", cli("convert", "{model}", "{root}/a_file/sub"), None,
        check=lambda code: code == 2),
    Row("cli: convert a .pth without --stride", cli("convert", "{root}/plain.pth", "{root}/o9"), None,
        check=lambda code: code == 2),
    Row("cli: convert into a folder with other files", cli("convert", "{model}", "{root}/foreign"), None,
        check=lambda code: code == 2),
    Row("cli: sheet frame out of range", cli("sheet", "{video}", "--frames", "0", "99", "--out", "{root}/s.png"),
        None, check=lambda code: code == 2),
    # training
    Row("train: resume from a 0-byte checkpoint", train("temporal", "--data", "{video}", "--out", "{root}/r1",
                                                        "--resume", "{root}/empty.pt"), None,
        check=lambda code: code == 2),
    Row("train: resume from a truncated checkpoint", train("temporal", "--data", "{video}", "--out", "{root}/r2",
                                                           "--resume", "{root}/cut.pt"), None,
        check=lambda code: code == 2),
    Row("train: resume from a missing checkpoint", train("temporal", "--data", "{video}", "--out", "{root}/r3",
                                                         "--resume", "{root}/none.pt"), None,
        check=lambda code: code == 2),
    Row("train: data that does not exist", train("temporal", "--data", "{root}/nothing", "--out", "{root}/r4"),
        None, check=lambda code: code == 2),
    Row("train: unknown device", train("temporal", "--data", "{video}", "--out", "{root}/r5", "--device", "tpu"),
        None, check=lambda code: code == 2),
    Row("train: checkpoint on a full disk", trainer_on_full_disk, E.OutputWriteError, "MiB are free"),
    Row("train: --resume with a truncated newest checkpoint falls back to the previous",
        resume_after_truncated_latest, None, check=lambda path: path.name == "step_00000002.pt"),
    Row("train: sync-BN of the default preset on CPU is turned off", sync_bn_on_cpu, None,
        check=lambda used: used is False),
    Row("train: unknown preset", lambda f: resolve_config("temporal", "r99"), E.InputError, "unknown preset"),
    Row("train: log_every 0", lambda f: RunOptions(out=Path("x"), log_every=0), E.InputError, "log_every"),
]


def test_the_table_is_large_enough():
    assert len(ROWS) >= 60
    assert len({row.name for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_input(row: Row, files: dict[str, Path]) -> None:
    if row.error is None:
        result = row.run(files)
        assert row.check is not None and row.check(result), f"undocumented result {result!r}"
        return
    with pytest.raises(row.error, match=row.match) as caught:
        row.run(files)
    assert isinstance(caught.value, E.StcorrError)
    assert str(caught.value).strip() and not str(caught.value).rstrip().endswith(":")


def test_messages_name_the_problem(files, capsys, caplog):
    """Spot checks of the wording: the fix is named, nothing ends in an empty colon."""
    assert cli_main(["propagate", "--video", str(files["video"]), "--mask", str(files["root"] / "nope.png"),
                     "--out", str(files["root"] / "m1")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert train_main(["temporal", "--data", str(files["video"]), "--out", str(files["root"] / "m2"),
                       "--resume", str(files["root"] / "empty.pt"), "--no-progress"]) == 2
    assert "empty (0 bytes)" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING, logger="stcorr.train.distributed"):
        assert sync_bn_on_cpu(files) is False
    assert len(caplog.records) == 1 and "--no-sync-bn" in caplog.records[0].getMessage()
    with pytest.raises(E.DeviceError) as caught:
        stcorr.load_model(device="cuda:99")
    assert "cpu" in str(caught.value)
