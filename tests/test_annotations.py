"""Annotation formats: COCO RLE checked against pycocotools, and mask folders round-tripping pixel-exactly through
COCO and YouTube-VIS JSON (decoded by pycocotools too); malformed files give typed errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stcorr.cli import main
from stcorr.errors import InputError, InputNotFoundError, OutputWriteError
from stcorr.io import rle
from stcorr.io.annotations import convert_annotations, frame_ids, read_annotations
from stcorr.io.masks import read_mask, write_mask_png

mask_api = pytest.importorskip("pycocotools.mask")

# pycocotools 2.0.x on NumPy 2 warns inside its own decode
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = (37, 53)  # odd sizes: H, W
FRAMES = 6


def clip_masks() -> list[np.ndarray]:
    """Id maps with objects 1, 2, 3 and 7: 2 touches every border, 3 is absent on frames 2-3, 7 only on frame 4,
    1 and 2 touch each other; frame 5 has void (255) pixels; frame 0 holds one object only."""
    frames = []
    for t in range(FRAMES):
        ids = np.zeros(SIZE, np.uint8)
        ids[5 + t : 20 + t, 3 : 17] = 1
        ids[:, 17:19] = 2  # touches top and bottom
        ids[0, :] = 2  # touches the top border over the whole width
        ids[:, -1] = 2  # right border
        if t not in (2, 3):
            ids[25:36, 30 + t : 40 + t] = 3
        if t == 4:
            ids[-1, 0] = 7  # one pixel in the bottom-left corner
        if t == 5:
            ids[30:34, 2:6] = 255
        if t == 0:
            ids[ids != 1] = 0
        frames.append(ids)
    return frames


@pytest.fixture
def masks(tmp_path: Path) -> Path:
    folder = tmp_path / "run" / "masks"
    for t, ids in enumerate(clip_masks()):
        write_mask_png(folder / f"{t:05d}.png", ids)
    return folder


def read_folder(folder: Path) -> dict[str, np.ndarray]:
    return {path.stem: read_mask(path) for path in sorted(folder.glob("*.png"))}


# ------------------------------------------------------------------------------------------------ RLE


@pytest.mark.parametrize("seed", range(6))
def test_rle_matches_pycocotools(seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(1, 70, 2))
        mask = rng.random((height, width)) < rng.random()
        if seed == 0:  # large runs: counts of several 5-bit groups and negative differences
            mask = np.zeros((height, width), bool)
            mask[rng.integers(0, height):, rng.integers(0, width):] = True
        reference = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = rle.encode(mask)
        assert ours["counts"] == reference["counts"].decode("ascii")
        assert ours["size"] == [height, width] == list(reference["size"])
        assert rle.area(ours) == int(mask_api.area(reference))
        assert rle.bbox(ours) == mask_api.toBbox(reference).tolist()
        assert np.array_equal(rle.decode(ours), mask_api.decode(reference).astype(bool))
        uncompressed = rle.encode(mask, compressed=False)
        assert mask_api.frPyObjects(uncompressed, height, width)["counts"] == reference["counts"]
        assert rle.decompress(ours["counts"]) == uncompressed["counts"]
        assert np.array_equal(rle.decode(uncompressed), mask)


def test_rle_edge_masks():
    for mask in (np.zeros((3, 5), bool), np.ones((3, 5), bool), np.eye(4, dtype=bool), np.ones((1, 1), bool)):
        reference = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = rle.encode(mask)
        assert ours["counts"] == reference["counts"].decode("ascii")
        assert rle.bbox(ours) == mask_api.toBbox(reference).tolist()
        assert rle.area(ours) == int(mask_api.area(reference))


def test_rle_validated_before_allocating():
    with pytest.raises(InputError, match="sum to 7 pixels"):
        rle.decode({"size": [40000, 40000], "counts": [3, 4]})  # 1.6 GB if allocated
    with pytest.raises(InputError, match="more than"):
        rle.decode({"size": [10**6, 10**6], "counts": [10**12]})
    with pytest.raises(InputError, match="non-negative"):
        rle.decode({"size": [2, 2], "counts": [5, -1]})
    with pytest.raises(InputError, match="positive integers"):
        rle.decode({"size": [2, "2"], "counts": [4]})
    with pytest.raises(InputError, match="truncated"):
        rle.decompress("0P")  # 'P' (32 + 48) announces a following group
    with pytest.raises(InputError, match="alphabet"):
        rle.decompress("0 ")
    with pytest.raises(InputError, match="polygon"):
        rle.decode([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("to", ["coco", "ytvis"])
def test_round_trip_pixel_exact(masks: Path, tmp_path: Path, to: str):
    document = tmp_path / f"{to}.json"
    result = convert_annotations(masks, document, to=to, names={1: "person", 2: "rope", 3: "person"})
    assert (result.frames, result.objects, result.overlap) == (FRAMES, [1, 2, 3, 7], 0)
    back = convert_annotations(document, tmp_path / "back" / "masks", to="png")
    assert back.frames == FRAMES
    original, restored = read_folder(masks), read_folder(tmp_path / "back" / "masks")
    assert list(original) == list(restored) == [f"{t:05d}" for t in range(FRAMES)]
    for name in original:
        assert np.array_equal(original[name], restored[name]), name


def test_coco_decoded_by_pycocotools(masks: Path, tmp_path: Path):
    coco = convert_annotations(masks, tmp_path / "coco.json", to="coco", names={1: "person", 3: "person"}).path
    document = json.loads(coco.read_text())
    categories = {c["id"]: c["name"] for c in document["categories"]}
    assert sorted(categories.values()) == ["object", "person", "void"]
    images = {image["id"]: image for image in document["images"]}
    assert [image["file_name"] for image in document["images"]] == [f"{t:05d}.jpg" for t in range(FRAMES)]
    truth = clip_masks()
    seen = set()
    for annotation in document["annotations"]:
        image = images[annotation["image_id"]]
        t = image["frame_index"]
        segmentation = annotation["segmentation"]
        compressed = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
        decoded = mask_api.decode(compressed).astype(bool)
        object_id = annotation["track_id"]
        assert np.array_equal(decoded, truth[t] == object_id)
        assert annotation["area"] == int(mask_api.area(compressed)) > 0
        assert annotation["bbox"] == mask_api.toBbox(compressed).tolist()
        assert annotation["iscrowd"] == int(object_id == 255)
        assert categories[annotation["category_id"]] == {1: "person", 3: "person", 2: "object", 7: "object",
                                                         255: "void"}[object_id]
        seen.add((t, object_id))
    expected = {(t, int(i)) for t, ids in enumerate(truth) for i in np.unique(ids) if i}
    assert seen == expected  # one annotation per object per frame where it is present, none where absent
    from pycocotools.coco import COCO

    api = COCO(str(coco))  # pycocotools reads the file and converts every annotation to the same mask
    for annotation in api.loadAnns(api.getAnnIds()):
        t = images[annotation["image_id"]]["frame_index"]
        assert np.array_equal(api.annToMask(annotation).astype(bool), truth[t] == annotation["track_id"])


def test_ytvis_layout(masks: Path, tmp_path: Path):
    ytvis = convert_annotations(masks, tmp_path / "ytvis.json", to="ytvis").path
    document = json.loads(ytvis.read_text())
    (video,) = document["videos"]
    assert (video["name"], video["height"], video["width"], video["length"]) == ("run", *SIZE, FRAMES)
    assert video["file_names"][0] == "run/00000.jpg"
    truth = clip_masks()
    tracks = {a["track_id"]: a for a in document["annotations"]}
    assert sorted(tracks) == [1, 2, 3, 7, 255]
    for object_id, annotation in tracks.items():
        assert len(annotation["segmentations"]) == len(annotation["areas"]) == len(annotation["bboxes"]) == FRAMES
        for t, segmentation in enumerate(annotation["segmentations"]):
            if not (truth[t] == object_id).any():
                assert segmentation is None and annotation["areas"][t] is None and annotation["bboxes"][t] is None
                continue
            compressed = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
            assert np.array_equal(mask_api.decode(compressed).astype(bool), truth[t] == object_id)
            assert annotation["areas"][t] == int(mask_api.area(compressed))
            assert annotation["bboxes"][t] == mask_api.toBbox(compressed).tolist()
    assert tracks[3]["segmentations"][2] is None and tracks[7]["segmentations"][3] is None


def test_coco_to_ytvis_and_back(masks: Path, tmp_path: Path):
    coco = convert_annotations(masks, tmp_path / "a.json", to="coco", names={1: "person", 2: "rope"}).path
    converted = convert_annotations(coco, tmp_path / "b.json", to="ytvis", video="clip", names={2: "cable"})
    assert converted.names == {1: "person", 2: "cable", 3: "object", 7: "object"}  # the file's, then the given
    document = json.loads(converted.path.read_text())
    assert document["videos"][0]["name"] == "clip"
    categories = {c["id"]: c["name"] for c in document["categories"]}
    assert {a["track_id"]: categories[a["category_id"]] for a in document["annotations"]} == \
        {1: "person", 2: "cable", 3: "object", 7: "object", 255: "void"}
    ytvis = converted.path
    convert_annotations(ytvis, tmp_path / "back", to="png")
    for name, ids in read_folder(masks).items():
        assert np.array_equal(ids, read_mask(tmp_path / "back" / f"{name}.png"))


def test_foreign_coco_uncompressed_and_without_track_ids(tmp_path: Path):
    """A file from another tool: uncompressed counts, no track_id (ids by position in the image), overlaps."""
    first, second = np.zeros((4, 6), bool), np.zeros((4, 6), bool)
    first[:2, :4], second[1:, 3:] = True, True
    document = {"images": [{"id": 9, "file_name": "frames/a.jpg", "height": 4, "width": 6}],
                "annotations": [{"id": 1, "image_id": 9, "category_id": 1, "iscrowd": 1,
                                 "segmentation": rle.encode(m, compressed=False)} for m in (first, second)],
                "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(document))
    result = convert_annotations(path, tmp_path / "out", to="png")
    assert result.overlap == 1  # pixel (1, 3)
    ids = read_mask(tmp_path / "out" / "a.png")
    expected = np.zeros((4, 6), np.uint8)
    expected[first], expected[second] = 1, 2
    assert np.array_equal(ids, expected)


# ------------------------------------------------------------------------------------------------ bad input


def write_json(tmp_path: Path, document: object, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def coco_with(annotation: dict) -> dict:
    return {"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 5}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, **annotation}],
            "categories": [{"id": 1, "name": "x"}]}


@pytest.mark.parametrize(("document", "message"), [
    ({"annotations": []}, "COCO .* or YouTube-VIS"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 4}], "annotations": []}, "integer \"width\""),
    ({"images": "nope", "annotations": []}, "\"images\" to be a list"),
    (coco_with({"segmentation": {"size": [4, 6], "counts": [24]}}), "differs from its frame's 4x5"),
    (coco_with({"segmentation": {"size": [4, 5], "counts": [3, 4]}}), "sum to 7 pixels"),
    (coco_with({"segmentation": {"size": [4, 5], "counts": "x!"}}), "alphabet"),
    (coco_with({"segmentation": [[0, 0, 1, 0, 1, 1]]}), "polygon"),
    (coco_with({"segmentation": {"size": [4, 5], "counts": [20]}, "track_id": 300}), "outside 1..254"),
    ({**coco_with({"segmentation": {"size": [4, 5], "counts": [20]}}), "images": []}, "image_id 1 is not in"),
    ({"videos": [{"id": 1, "height": 4, "width": 5, "file_names": ["v/a.jpg"]}],
      "annotations": [{"video_id": 1, "category_id": 1, "segmentations": [None, None]}]}, "2 segmentations"),
    ({"videos": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": []}, "--video"),
    ({"images": [{"id": 1, "file_name": "a.jpg", "height": 20000, "width": 20000}], "annotations": []},
     "million pixels"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ("{\"images\": [", "not valid JSON"),
    ([1, 2], "JSON list"),
])
def test_bad_files_typed_errors(tmp_path: Path, document: object, message: str):
    path = write_json(tmp_path, document)
    with pytest.raises(InputError, match=message):
        read_annotations(path)
    assert main(["convert-annotations", str(path), str(tmp_path / "out"), "--to", "png"]) == 2
    assert not list((tmp_path / "out").glob("*.png")) if (tmp_path / "out").exists() else True


def test_missing_inputs(tmp_path: Path):
    with pytest.raises(InputNotFoundError):
        read_annotations(tmp_path / "none.json")
    with pytest.raises(InputNotFoundError):
        convert_annotations(tmp_path / "none", tmp_path / "x.json", to="coco")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .png masks"):
        convert_annotations(tmp_path / "empty", tmp_path / "x.json", to="coco")


# ------------------------------------------------------------------------------------------------ command line


def test_cli_round_trip_and_refusals(masks: Path, tmp_path: Path, capsys):
    coco = tmp_path / "coco.json"
    assert main(["convert-annotations", str(masks), str(coco), "--to", "coco", "--names", "1=person", "3=dog"]) == 0
    assert "6 frames, objects 1 (person), 2, 3 (dog), 7" in capsys.readouterr().out
    before = coco.read_bytes()
    assert main(["convert-annotations", str(masks), str(coco), "--to", "coco"]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err and coco.read_bytes() == before
    assert main(["convert-annotations", str(masks), str(coco), "--to", "coco", "--overwrite"]) == 0
    assert main(["convert-annotations", str(masks), str(coco), "--to", "coco", "--names", "9=cat",
                 "--overwrite"]) == 2  # no object 9
    assert main(["convert-annotations", str(masks), str(coco), "--to", "coco", "--names", "person",
                 "--overwrite"]) == 2
    out = tmp_path / "back"
    assert main(["convert-annotations", str(masks), str(coco), "--to", "coco", "--names", "1=person",
                 "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["convert-annotations", str(coco), str(out), "--to", "png"]) == 0
    assert "objects 1 (person), 2 (object), 3 (object), 7 (object)" in capsys.readouterr().out  # names of the file
    assert main(["convert-annotations", str(coco), str(out), "--to", "png"]) == 2  # holds PNGs
    assert main(["convert-annotations", str(coco), str(out), "--to", "png", "--overwrite"]) == 0
    for name, ids in read_folder(masks).items():
        assert np.array_equal(ids, read_mask(out / f"{name}.png"))
    # outputs never over inputs
    assert main(["convert-annotations", str(coco), str(tmp_path), "--to", "png", "--overwrite"]) == 2  # holds coco
    assert main(["convert-annotations", str(masks), str(masks), "--to", "png", "--overwrite"]) == 2
    assert main(["convert-annotations", str(masks), str(masks / "x.png"), "--to", "coco"]) == 2
    assert main(["convert-annotations", str(coco), str(coco), "--to", "ytvis", "--overwrite"]) == 2
    assert json.loads(coco.read_text())["images"]
    assert read_folder(masks).keys() == {f"{t:05d}" for t in range(FRAMES)}


def test_overwrite_is_atomic(masks: Path, tmp_path: Path, monkeypatch):
    import stcorr.io.annotations as annotations

    target = tmp_path / "coco.json"
    target.write_text("old")

    def broken(*args, **kwargs):
        raise InputError("boom")

    monkeypatch.setattr(annotations, "to_coco", broken)
    with pytest.raises(InputError):
        convert_annotations(masks, target, to="coco", overwrite=True)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(OutputWriteError):
        convert_annotations(masks, tmp_path, to="coco", overwrite=True)


def test_propagate_takes_a_json_first_mask(masks: Path, tmp_path: Path, capsys):
    """`stcorr propagate --mask FILE.json` starts from the file's first frame, exactly as from the PNG."""
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for t in range(3):
        Image.fromarray(rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8)).save(frames / f"{t:05d}.png")
    ytvis = convert_annotations(masks, tmp_path / "ytvis.json", to="ytvis").path
    common = ["propagate", "--video", str(frames), "--model", "lab-pixels", "--device", "cpu"]
    assert main([*common, "--mask", str(masks / "00001.png"), "--out", str(tmp_path / "png")]) == 0
    first = tmp_path / "first.json"  # the first frame of a file is its first image: keep frame 1 only
    document = json.loads(convert_annotations(masks, tmp_path / "coco.json", to="coco").path.read_text())
    document["images"] = [image for image in document["images"] if image["frame_index"] == 1]
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] == document["images"][0]["id"]]
    first.write_text(json.dumps(document))
    assert main([*common, "--mask", str(first), "--out", str(tmp_path / "coco")]) == 0
    assert main([*common, "--mask", str(ytvis), "--out", str(tmp_path / "ytvis"), "--format", "ytvis"]) == 0
    written = read_annotations(tmp_path / "ytvis" / "ytvis.json")  # --format ytvis: the run's masks as YouTube-VIS
    assert [frame.name for frame in written.frames] == ["00000", "00001", "00002"]
    for frame in written.frames:
        assert np.array_equal(frame_ids(frame)[0], read_mask(tmp_path / "ytvis" / "masks" / f"{frame.name}.png"))
    # an earlier run's file is refused before any work, replaced with --overwrite
    assert main([*common, "--mask", str(ytvis), "--out", str(tmp_path / "ytvis"), "--format", "ytvis"]) == 2
    assert main([*common, "--mask", str(ytvis), "--out", str(tmp_path / "ytvis"), "--format", "ytvis",
                 "--overwrite"]) == 0
    # the first mask is never overwritten by the run's own file
    assert main([*common, "--mask", str(ytvis), "--out", str(tmp_path), "--format", "ytvis", "--overwrite"]) == 2
    assert "--format" in capsys.readouterr().err and ytvis.is_file()
    for t in range(3):
        name = f"{t:05d}.png"
        from_png, from_json = (read_mask(tmp_path / run / "masks" / name) for run in ("png", "coco"))
        assert np.array_equal(from_png, from_json)
    assert np.array_equal(read_mask(tmp_path / "ytvis" / "masks" / "00000.png"), clip_masks()[0])


def test_bad_file_leaves_the_output_folder_alone(masks: Path, tmp_path: Path):
    """A malformed file is refused before --overwrite deletes the PNGs of the output folder."""
    out = tmp_path / "out"
    convert_annotations(masks, out, to="png")
    bad = write_json(tmp_path, coco_with({"segmentation": {"size": [4, 5], "counts": [3, 4]}}))
    assert main(["convert-annotations", str(bad), str(out), "--to", "png", "--overwrite"]) == 2
    assert sorted(p.name for p in out.glob("*.png")) == [f"{t:05d}.png" for t in range(FRAMES)]
