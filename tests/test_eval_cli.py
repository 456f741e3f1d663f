"""``python -m stcorr.eval``: generated DAVIS / VIP / JHMDB folders scored end to end.

Expected DAVIS numbers come from vos_benchmark's per-frame J and F and the documented aggregation;
VIP from a direct per-class count; JHMDB from the PCK function on the in-memory arrays.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from stcorr.eval import main
from stcorr.metrics import jhmdb

pytest.importorskip("vos_benchmark")  # the reference implementation compared against
from vos_benchmark.evaluator import Evaluator  # noqa: E402

PALETTE = [v for i in range(256) for v in ((37 * i) % 256, (91 * i) % 256, (173 * i) % 256)]


def write_index_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.astype(np.uint8).tobytes())
    image.putpalette(PALETTE)
    image.save(path)


def write_jpeg(path: Path, shape: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (shape[1], shape[0]), (90, 120, 150)).save(path)


def ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


# ------------------------------------------------------------------------------------------------
# DAVIS


def davis_sequences(rng: np.random.Generator) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """name -> (GT frames, predicted frames)."""
    sequences = {}

    shape, gts, preds = (48, 64), [], []  # 2 objects; object 2 leaves in frames 2-3; a void strip
    for t in range(6):
        gt = np.zeros(shape, np.uint8)
        gt[ellipse(shape, 20 + t, 15 + 2 * t, 8, 10)] = 1
        if t not in (2, 3):
            gt[ellipse(shape, 30, 45 - t, 6, 7)] = 2
        gt[:, 60:] = 255
        pred = np.roll(np.where(gt == 255, 0, gt), (t % 3 - 1, 1), axis=(0, 1)).astype(np.uint8)
        if t == 3:
            pred[ellipse(shape, 10, 50, 3, 3)] = 2  # a false positive while object 2 is absent
        gts.append(gt)
        preds.append(pred)
    sequences["bear"] = (gts, preds)

    shape, gts, preds = (480, 854), [], []  # ids {1, 3} in frame 0: 3 objects; id 4 appears later (ignored)
    for t in range(5):
        gt = np.zeros(shape, np.uint8)
        gt[ellipse(shape, 200, 300 + 10 * t, 80, 120)] = 1
        gt[ellipse(shape, 380, 700, 40, 60)] = 3
        if t >= 2:
            gt[ellipse(shape, 100, 700, 30, 30)] = 4
        gt[0:5, :] = 255
        pred = np.zeros(shape, np.uint8)
        pred[ellipse(shape, 205, 296 + 10 * t, 78, 125)] = 1
        pred[ellipse(shape, 380 + 3 * t, 705, 38, 66)] = 3
        pred[rng.random(shape) < 0.002] = 1
        gts.append(gt)
        preds.append(pred)
    sequences["cows"] = (gts, preds)

    shape = (30, 40)  # 3 frames: a single evaluated frame
    gt = np.zeros(shape, np.uint8)
    gt[5:20, 10:30] = 1
    sequences["dogs"] = ([gt, gt, gt], [gt, np.roll(gt, 4, axis=1), np.zeros(shape, np.uint8)])
    return sequences


def make_davis(tmp_path: Path) -> tuple[Path, Path, dict]:
    root, results = tmp_path / "DAVIS", tmp_path / "results"
    sequences = davis_sequences(np.random.default_rng(0))
    for name, (gts, preds) in sequences.items():
        for t, (gt, pred) in enumerate(zip(gts, preds)):
            write_index_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", gt)
            write_jpeg(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", gt.shape)
            if 0 < t < len(gts) - 1:  # the first and last frames are never read
                write_index_png(results / name / f"{t:05d}.png", pred)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("bear\ncows\ndogs\n")
    return root, results, sequences


def reference_frame_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    evaluator = Evaluator()
    evaluator.feed_frame(pred.astype(np.uint8), gt.astype(np.uint8))
    if 1 not in evaluator.object_iou:  # vos_benchmark skips objects absent from both masks
        return 1.0, 1.0
    return float(evaluator.object_iou[1][0]), float(evaluator.boundary_f[1][0])


def documented_statistics(values: np.ndarray) -> tuple[float, float, float]:
    edges = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    decay = values[edges[0] : edges[1] + 1].mean() - values[edges[3] : edges[4] + 1].mean()
    return values.mean(), float(np.mean(values > 0.5)), decay


def expected_davis(sequences: dict) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    per_object_stats, per_object_means = [], {}
    for name, (gts, preds) in sequences.items():
        first = np.where(gts[0] == 255, 0, gts[0])
        for k in range(1, int(first.max()) + 1):
            scores = np.array([reference_frame_scores(preds[t] == k, gts[t] == k) for t in range(1, len(gts) - 1)])
            j_stats, f_stats = documented_statistics(scores[:, 0]), documented_statistics(scores[:, 1])
            per_object_stats.append(j_stats + f_stats)
            per_object_means[f"{name}_{k}"] = (j_stats[0], f_stats[0])
    means = np.mean(per_object_stats, axis=0)
    names = ["J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    summary = dict(zip(names, means.tolist()))
    summary["J&F-Mean"] = (summary["J-Mean"] + summary["F-Mean"]) / 2
    return summary, per_object_means


def test_davis_scores_match_independent_computation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, results, sequences = make_davis(tmp_path)
    stale = {"global_results-val.csv": "J&F-Mean\n0.999\n", "per-sequence_results-val.csv": "Sequence\nbear_1\n"}
    for name, text in stale.items():  # the official tool would silently re-read these
        (results / name).write_text(text)
    out_json, out_csv = tmp_path / "out" / "davis.json", tmp_path / "out" / "per_object.csv"

    code = main(["davis", "--root", str(root), "--results", str(results), "--json", str(out_json), "--csv", str(out_csv)])

    assert code == 0
    expected_summary, expected_objects = expected_davis(sequences)
    data = json.loads(out_json.read_text())
    for key, value in expected_summary.items():
        assert data[key] == pytest.approx(value, abs=1e-9), key
    assert data["num_objects"] == 2 + 3 + 1 and data["num_sequences"] == 3
    assert set(data["per_object"]) == set(expected_objects)
    for key, (j_mean, f_mean) in expected_objects.items():
        assert data["per_object"][key]["J-Mean"] == pytest.approx(j_mean, abs=1e-9)
        assert data["per_object"][key]["F-Mean"] == pytest.approx(f_mean, abs=1e-9)
    assert data["per_sequence"]["dogs"]["frames"] == ["00001"]
    assert data["per_sequence"]["cows"]["J"]["2"] == [1.0, 1.0, 1.0]  # absent from GT and prediction
    with out_csv.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert rows[1:] == [[k, f"{j:.3f}", f"{f:.3f}"] for k, (j, f) in expected_objects.items()]
    for name, text in stale.items():
        assert (results / name).read_text() == text
    printed = capsys.readouterr().out
    assert "J&F-Mean" in printed and f"{expected_summary['J&F-Mean']:.3f}" in printed


def run_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_davis_errors_exit_with_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, results, _ = make_davis(tmp_path)
    base = ["davis", "--root", str(root), "--results", str(results)]
    assert "DAVIS root not found" in run_error(["davis", "--root", str(tmp_path / "nope"), "--results", str(results)], capsys)
    assert "results folder not found" in run_error(base[:3] + ["--results", str(tmp_path / "nope")], capsys)
    assert "sequence list" in run_error(base + ["--set", "test-dev"], capsys)

    frame = results / "bear" / "00002.png"
    frame.unlink()
    message = run_error(base, capsys)
    assert "missing result" in message and str(frame) in message
    write_index_png(frame, np.full((48, 64), 3, np.uint8))
    assert "predicted id 3" in run_error(base, capsys)
    write_index_png(frame, np.zeros((24, 32), np.uint8))
    assert "GT shape" in run_error(base, capsys)
    Image.new("RGB", (64, 48), (10, 20, 30)).save(frame)
    assert "not a label map" in run_error(base, capsys)


def test_module_entry_point_reports_bad_paths_without_test_only_imports(tmp_path: Path) -> None:
    """``python -m stcorr.eval`` exits 2 on a bad path, and never imports scipy, skimage or cv2."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['stcorr.eval', 'vip', '--root', {str(tmp_path / 'missing')!r}, '--results', {str(tmp_path)!r}]\n"
        "try:\n"
        "    runpy.run_module('stcorr.eval', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, [m for m in ('scipy', 'skimage', 'cv2') if m in sys.modules])\n"
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert process.stdout.strip() == "2 []"
    assert "VIP root not found" in process.stderr


def test_usage_errors_exit_with_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["davis"])
    assert exit_info.value.code == 2 and "--root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["jhmdb", "--root", ".", "--results", ".", "--protocol", "uvc"])


# ------------------------------------------------------------------------------------------------
# VIP


def make_vip(tmp_path: Path, category_ids: bool = True) -> tuple[Path, Path, list, list]:
    rng = np.random.default_rng(1)
    root, results = tmp_path / "VIP", tmp_path / "vip_results"
    fine = root / "VIP_Fine"
    annotations = fine / "Annotations" / ("Category_ids" if category_ids else "")
    gts, preds = [], []
    for video, shape in (("videos1", (24, 32)), ("videos7", (20, 30))):
        for t in range(3):
            gt = rng.integers(0, 6, shape).astype(np.uint8)
            gt[:, :3] = 255
            pred = np.where(rng.random(shape) < 0.8, np.where(gt == 255, 0, gt), rng.integers(0, 8, shape)).astype(np.uint8)
            if video == "videos7":  # half-size prediction: nearest-resized to the GT size
                pred = pred[::2, ::2]
                resized = np.asarray(Image.fromarray(pred).resize(shape[::-1], Image.Resampling.NEAREST))
            else:
                resized = pred
            write_index_png(annotations / video / f"{100 + 7 * t:06d}.png", gt)
            write_jpeg(fine / "Images" / video / f"{100 + 7 * t:06d}.jpg", shape)
            write_index_png(results / video / f"{100 + 7 * t:06d}.png", pred)
            gts.append(gt)
            preds.append(resized)
    (fine / "lists").mkdir(parents=True)
    (fine / "lists" / "val_videos.txt").write_text("videos1\nvideos7\n")
    return root, results, gts, preds


def direct_miou(gts: list[np.ndarray], preds: list[np.ndarray]) -> float:
    ious = []
    for c in range(20):
        inter = sum(np.count_nonzero((g == c) & (p == c)) for g, p in zip(gts, preds))
        union = sum(np.count_nonzero(((g == c) | (p == c)) & (g != 255)) for g, p in zip(gts, preds))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious))


@pytest.mark.parametrize("category_ids", [True, False])
def test_vip_scores_match_direct_computation(tmp_path: Path, category_ids: bool) -> None:
    root, results, gts, preds = make_vip(tmp_path, category_ids)
    out = tmp_path / "vip.json"
    given_root = root / "VIP_Fine" if category_ids else root  # both the parent and VIP_Fine itself are accepted
    assert main(["vip", "--root", str(given_root), "--results", str(results), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["mIoU"] == pytest.approx(direct_miou(gts, preds), abs=1e-12)
    assert data["num_frames"] == 6 and data["num_videos"] == 2
    assert data["IoU"]["left-shoe"] is None  # class 19 absent everywhere: NaN, skipped


def test_vip_missing_prediction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, results, _, _ = make_vip(tmp_path)
    (results / "videos1" / "000100.png").unlink()  # frame 0 is scored too
    assert "missing result" in run_error(["vip", "--root", str(root), "--results", str(results)], capsys)


# ------------------------------------------------------------------------------------------------
# JHMDB


def make_jhmdb(tmp_path: Path) -> tuple[Path, Path, list]:
    rng = np.random.default_rng(2)
    root, results = tmp_path / "JHMDB", tmp_path / "pose_results"
    foreign = "/media/someone/DATA/JHMDB"
    lines, pairs = [], []
    videos = (("pour", "Bartender_pour_u_cm_np1_fr_med_1", 4), ("run", "jog_run_f_nm_np1_ri_med_0", 3))
    for i, (cls, video, frames) in enumerate(videos):
        gt = rng.uniform(20, 200, (frames, 15, 2))
        mat_dir = root / "joint_positions" / cls / video
        mat_dir.mkdir(parents=True)
        scipy.io.savemat(mat_dir / "joint_positions.mat", {"pos_img": gt.transpose(2, 1, 0) + 1})  # (2, 15, T), 1-based
        for t in range(frames):
            write_jpeg(root / "Rename_Images" / cls / video / f"{t + 1:05d}.png", (240, 320))
        pred = gt + rng.normal(0, 6, gt.shape)
        pred[1, 4] = (-1, -1)
        pred[2, 7, 0] = 0.0  # counted by crw only
        mat, images = f"{foreign}/joint_positions/{cls}/{video}/joint_positions.mat", f"{foreign}/Rename_Images/{cls}/{video}"
        lines.append(f"{mat} {images}" if i == 0 else f"{images} {mat}")  # UVC and CRW column orders
        if i == 0:
            jhmdb.save_keypoints(results / cls / f"{video}.npy", np.concatenate([pred, pred[:2]]))  # longer: truncated
        else:
            jhmdb.save_keypoints(results / cls / f"{video}.json", pred)
        pairs.append((pred, gt))
    (root / "testlist_split1.txt").write_text("\n".join(lines) + "\n")
    return root, results, pairs


@pytest.mark.parametrize("protocol", [None, "stt", "crw"])
def test_jhmdb_pck_through_the_cli(tmp_path: Path, protocol: str | None) -> None:
    root, results, pairs = make_jhmdb(tmp_path)
    out = tmp_path / "pck.json"
    argv = ["jhmdb", "--root", str(root), "--results", str(results), "--json", str(out)]
    code = main(argv + (["--protocol", protocol] if protocol else []))
    assert code == 0
    data = json.loads(out.read_text())
    expected = jhmdb.pck(pairs, protocol=protocol or "stt")
    assert data["protocol"] == (protocol or "stt") and data["num_videos"] == 2
    for key, value in expected.as_dict().items():
        assert data[key] == pytest.approx(value, abs=1e-9)
    assert data["counted"]["neck"] == (7 if protocol != "crw" else 5)


def test_jhmdb_missing_or_ambiguous_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, results, _ = make_jhmdb(tmp_path)
    argv = ["jhmdb", "--root", str(root), "--results", str(results)]
    (results / "pour" / "Bartender_pour_u_cm_np1_fr_med_1.json").write_text('{"keypoints": []}')
    assert "ambiguous" in run_error(argv, capsys)
    for path in (results / "pour").iterdir():
        path.unlink()
    assert "missing results" in run_error(argv, capsys)
    assert "JHMDB list file not found" in run_error(argv + ["--list", str(tmp_path / "nope.txt")], capsys)
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("only_one_column\n")
    assert "expected a .mat path" in run_error(argv + ["--list", str(bad_list)], capsys)
