"""The app's export (no browser): its coco.json and ytvis.json, decoded by pycocotools, equal the exported PNG
masks pixel for pixel, and are what `stcorr propagate --format` / `stcorr convert-annotations` write."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app_helpers import write_shapes_folder
from stcorr.app.workbench import Workbench
from stcorr.baselines import load_baseline
from stcorr.io.annotations import convert_annotations
from stcorr.io.masks import read_mask

mask_api = pytest.importorskip("pycocotools.mask")
coco_api = pytest.importorskip("pycocotools.coco")

# pycocotools 2.0.x on NumPy 2 warns inside its own decode
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

FRAMES = 10


def _decode(segmentation: dict) -> np.ndarray:
    counts = segmentation["counts"]
    compressed = {"size": segmentation["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_api.decode(compressed).astype(bool)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """An export of a two-object clip with a correction where the disc enters (frame 4): the unzipped folder
    and its PNG masks in frame order."""
    root = tmp_path_factory.mktemp("export")
    folder, truth = write_shapes_folder(root / "shapes", count=FRAMES, disc_from=4)
    wb = Workbench(load_baseline("lab-pixels", device="cpu"), "lab-pixels", folder)
    assert wb.set_mask(0, truth[0])
    assert wb.set_mask(4, truth[4])  # object 2 appears at an anchor mid-video
    zip_path = wb.export(root)
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        archive.extractall(root / "unzipped")
    assert {"coco.json", "ytvis.json", "session.json", "reliability.json", "overlay.mp4"} <= names
    masks = [read_mask(root / "unzipped" / "masks" / f"{t:05d}.png") for t in range(FRAMES)]
    assert all(np.array_equal(masks[t], wb.mask(t)) for t in range(FRAMES))
    assert not (masks[0] == 2).any() and all((masks[t] == 2).any() for t in range(4, FRAMES))
    return root / "unzipped", masks


def test_export_coco_equals_the_png_masks(exported) -> None:
    out, masks = exported
    document = json.loads((out / "coco.json").read_text())
    images = {image["id"]: image for image in document["images"]}
    assert [image["file_name"] for image in document["images"]] == [f"{t:05d}.jpg" for t in range(FRAMES)]
    rebuilt = [np.zeros_like(m) for m in masks]
    api = coco_api.COCO(str(out / "coco.json"))  # pycocotools reads the file itself
    for annotation in api.loadAnns(api.getAnnIds()):
        t = images[annotation["image_id"]]["frame_index"]
        decoded = api.annToMask(annotation).astype(bool)
        assert np.array_equal(decoded, _decode(annotation["segmentation"]))
        assert not rebuilt[t][decoded].any()  # objects do not overlap
        rebuilt[t][decoded] = annotation["track_id"]
    for t in range(FRAMES):
        assert np.array_equal(rebuilt[t], masks[t]), t
    present = {(t, int(i)) for t, m in enumerate(masks) for i in np.unique(m) if i}
    assert {(images[a["image_id"]]["frame_index"], a["track_id"]) for a in document["annotations"]} == present


def test_export_ytvis_equals_the_png_masks(exported) -> None:
    out, masks = exported
    document = json.loads((out / "ytvis.json").read_text())
    (video,) = document["videos"]
    assert (video["name"], video["length"]) == ("shapes", FRAMES)  # named like the frame folder
    assert (video["height"], video["width"]) == masks[0].shape
    assert video["file_names"] == [f"shapes/{t:05d}.jpg" for t in range(FRAMES)]
    assert sorted(a["track_id"] for a in document["annotations"]) == [1, 2]
    rebuilt = [np.zeros_like(m) for m in masks]
    for annotation in document["annotations"]:
        for t, segmentation in enumerate(annotation["segmentations"]):
            if segmentation is None:
                assert not (masks[t] == annotation["track_id"]).any()
                continue
            rebuilt[t][_decode(segmentation)] = annotation["track_id"]
    for t in range(FRAMES):
        assert np.array_equal(rebuilt[t], masks[t]), t


def test_export_files_are_the_converters_output(exported, tmp_path: Path) -> None:
    """One writer: the export's JSON is byte for byte what `stcorr convert-annotations` makes of its masks."""
    out, _ = exported
    for form in ("coco", "ytvis"):
        converted = convert_annotations(out / "masks", tmp_path / f"{form}.json", to=form, video="shapes")
        assert converted.path.read_bytes() == (out / f"{form}.json").read_bytes()
