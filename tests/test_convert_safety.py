"""Converting over an existing model folder never destroys it, and convert's output is reproducible.

The kill tests overwrite a model folder and SIGKILL the writer at every file-system step (and in the middle
of each file write); after every kill the folder must load and be entirely the old or entirely the new model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from stcorr import load_model
from stcorr.cli import main as cli_main
from stcorr.errors import OutputWriteError
from stcorr.model import CorrespondenceModel

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _tiny_model(seed: int) -> CorrespondenceModel:
    torch.manual_seed(seed)
    return CorrespondenceModel("resnet18", layers=("layer1",))


# One process: save the old model, then for each kill point fork a child that overwrites it with the new
# model and SIGKILLs itself at that point; the parent checks the folder after each kill.
_KILL_DRIVER = textwrap.dedent(
    """
    import json, os, shutil, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    import stcorr._atomic as atomic
    import stcorr.checkpoint as checkpoint
    from stcorr.model import CorrespondenceModel

    folder = Path(sys.argv[1])
    def model(seed):
        torch.manual_seed(seed)
        return CorrespondenceModel("resnet18", layers=("layer1",))
    old, new = model(0), model(1)

    def run_child(kill_at):
        steps = [0]
        def step(name):
            steps[0] += 1
            if steps[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        def wrap(owner, name):
            real = getattr(owner, name)
            def wrapped(*args, **kwargs):
                step(name)
                result = real(*args, **kwargs)
                step(name + " done")
                return result
            setattr(owner, name, wrapped)
        for name in ("rename", "replace", "fsync", "chmod", "unlink", "rmdir", "mkdir"):
            wrap(os, name)
        wrap(atomic, "_exchange")
        real_save = checkpoint.save_file
        def save_half_then_continue(tensors, path, metadata=None):
            real_save(tensors, path, metadata=metadata)
            size = os.path.getsize(path)
            with open(path, "r+b") as handle:  # the file as it is half-way through the write
                data = handle.read()
                handle.seek(0); handle.truncate(size // 2)
            step("half-written weights")
            with open(path, "wb") as handle:
                handle.write(data)
        checkpoint.save_file = save_half_then_continue
        new.save_pretrained(folder)
        return steps[0]

    old.save_pretrained(folder)
    results = []
    kill_at = 1
    while True:
        pid = os.fork()
        if pid == 0:
            total = run_child(kill_at)
            os._exit(100 if total < kill_at else 0)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 100:
            break  # no step left to kill at: the last run completed
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        results.append({"kill_at": kill_at, "killed": killed})
        print(json.dumps(results[-1]), flush=True)
        # the checks happen in the test process; restore the old model for the next kill point
        yield_dir = Path(sys.argv[2]) / f"after_{kill_at:03d}"
        shutil.copytree(folder, yield_dir, symlinks=True)
        leftovers = sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("." + folder.name))
        (yield_dir.parent / f"after_{kill_at:03d}.leftovers").write_text(json.dumps(leftovers))
        old.save_pretrained(folder)
        kill_at += 1
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill driver forks (POSIX only)")
def test_overwrite_survives_sigkill_at_every_step(tmp_path):
    work, snapshots = tmp_path / "work", tmp_path / "snapshots"
    work.mkdir()
    snapshots.mkdir()
    folder = work / "model"
    _tiny_model(0).save_pretrained(tmp_path / "old")
    _tiny_model(1).save_pretrained(tmp_path / "new")
    old, new = _digests(tmp_path / "old"), _digests(tmp_path / "new")
    assert old["model.safetensors"] != new["model.safetensors"]
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", _KILL_DRIVER, str(folder), str(snapshots)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    points = sorted(snapshots.glob("after_*[0-9]"))
    assert len(points) >= 15, done.stdout  # every rename, fsync, chmod, unlink, ... and mid-write
    seen = set()
    for snapshot in points:
        digests = _digests(snapshot)
        assert digests in (old, new), f"{snapshot.name}: a mix of old and new files {digests}"
        seen.add("old" if digests == old else "new")
        load_model(snapshot, device="cpu")
    assert seen == {"old", "new"}  # the kill points span the swap
    # a killed writer leaves at most its hidden staging folder, which the next save removes
    final = work.iterdir()
    assert sorted(p.name for p in final) == ["model"]


def _strace() -> str | None:
    return shutil.which("strace")


@pytest.mark.skipif(_strace() is None, reason="strace is not installed (apt-get install strace)")
@pytest.mark.parametrize(("call", "when"), [("rename", 1), ("renameat2", 1)])
def test_convert_killed_at_a_rename_syscall_leaves_the_old_model(tmp_path, call, when):
    """The issue's reproduction: SIGKILL at the first and second rename of an overwrite (the weights' and
    the config's, inside the staging folder), and at the swap itself (strace counts each syscall apart)."""
    _tiny_model(0).save_pretrained(tmp_path / "source")
    target = tmp_path / "target"
    _tiny_model(1).save_pretrained(target)
    before = _digests(target)
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONDONTWRITEBYTECODE": "1"}
    command = [_strace(), "-f", "-qq", "-o", os.devnull, "-e", f"trace={call}",
               "-e", f"inject={call}:signal=KILL:when={when}",
               sys.executable, "-m", "stcorr", "convert", str(tmp_path / "source"), str(target)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0, "the kill did not happen"
    after = _digests(target)
    assert after == before or after == _digests(tmp_path / "source")
    load_model(target, device="cpu")


def test_convert_twice_gives_byte_identical_files(tmp_path, capsys):
    _tiny_model(3).save_pretrained(tmp_path / "source")
    printed = []
    for name in ("a", "b"):
        assert cli_main(["convert", str(tmp_path / "source"), str(tmp_path / name), "--dtype", "float16"]) == 0
        printed.append(capsys.readouterr().out.splitlines()[-1].split()[1])
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert printed[0] == printed[1] == _digests(tmp_path / "a")["model.safetensors"]


def test_save_pretrained_refuses_a_folder_with_other_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(OutputWriteError, match="notes.txt"):
        _tiny_model(0).save_pretrained(folder)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_both_model_families_save_by_folder_swap(tmp_path, monkeypatch):
    """save_pretrained lives on ModelBase: the EfficientNet-Lite family swaps in a whole new folder too."""
    import stcorr.model as model_module
    from stcorr.model import LiteCorrespondenceModel

    swapped = []
    real = model_module.replace_folder

    def recording(destination):
        swapped.append(Path(destination))
        return real(destination)

    monkeypatch.setattr(model_module, "replace_folder", recording)
    folder = tmp_path / "lite"
    torch.manual_seed(0)
    LiteCorrespondenceModel("efficientnet-lite0").save_pretrained(folder)
    first = _digests(folder)
    torch.manual_seed(1)
    LiteCorrespondenceModel("efficientnet-lite0").save_pretrained(folder)  # over the old model
    assert swapped == [folder, folder]
    assert _digests(folder) != first and sorted(_digests(folder)) == sorted(first)
    assert [p.name for p in tmp_path.iterdir()] == ["lite"]  # no staging folder left beside it
    loaded = load_model(folder, device="cpu")
    assert isinstance(loaded, LiteCorrespondenceModel)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputWriteError, match="notes.txt"):
        LiteCorrespondenceModel("efficientnet-lite0").save_pretrained(folder)
