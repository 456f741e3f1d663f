"""The app's logic without a browser: paint layers <-> masks, corrections as anchors, export, bad input."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app_helpers import write_shapes_folder
from stcorr.app.painting import (
    PAINT_OPACITY,
    SUSPECT_BELOW,
    brush_colors,
    ids_to_layer,
    layer_to_ids,
    object_color_hex,
    reliability_strip,
)
from stcorr.app.workbench import Workbench, check_video_size
from stcorr.baselines import load_baseline
from stcorr.cli import main as cli_main
from stcorr.loading import load_encoder
from stcorr.errors import InputError, VideoReadError
from stcorr.io.masks import read_mask
from stcorr.propagation.options import PropagationOptions


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    return write_shapes_folder(tmp_path_factory.mktemp("app") / "clip")


@pytest.fixture(scope="module")
def model():
    return load_baseline("lab-pixels", device="cpu")


@pytest.fixture(scope="module")
def default_model():
    """The embedded default model (what the app uses unless told otherwise)."""
    return load_encoder(None, device="cpu")


def test_paint_layer_round_trip_for_every_id() -> None:
    ids = np.arange(256, dtype=np.uint8).reshape(16, 16)
    layer = ids_to_layer(ids)
    painted = round(255 * PAINT_OPACITY)  # semi-transparent: the frame shows through the paint
    assert (layer[..., 3][ids == 0] == 0).all() and (layer[..., 3][ids != 0] == painted).all() and painted < 200
    assert np.array_equal(layer_to_ids(layer), ids)
    assert object_color_hex(1) == "#800000" and object_color_hex(2) == "#008000"


def test_layer_to_ids_absorbs_stroke_edges() -> None:
    layer = np.zeros((2, 3, 4), np.uint8)
    layer[0, 0] = (120, 6, 3, 255)  # a blended edge of object 1 (128, 0, 0)
    layer[0, 1] = (0, 128, 0, 60)  # faint: not painted
    layer[1, 2] = (0, 125, 4, 200)  # object 2
    assert layer_to_ids(layer).tolist() == [[1, 0, 0], [0, 0, 2]]
    # semi-transparent strokes: one stroke (alpha 0.6), two strokes over each other (0.84), a stroke of
    # object 2 over a shown mask of object 1 (the later colour dominates the blend)
    one, two = round(255 * PAINT_OPACITY), round(255 * (1 - (1 - PAINT_OPACITY) ** 2))
    over = (np.array([0, 128, 0]) * PAINT_OPACITY + np.array([128, 0, 0]) * PAINT_OPACITY * (1 - PAINT_OPACITY))
    layer[0, 1] = (128, 0, 128, one)
    layer[1, 0] = (*(over / (PAINT_OPACITY + PAINT_OPACITY * (1 - PAINT_OPACITY))).round().astype(int), two)
    assert layer_to_ids(layer, range(1, 11)).tolist() == [[1, 5, 0], [2, 0, 2]]
    assert layer_to_ids(layer)[1, 0] not in (1, 2)  # among all 255 palette colours the blend is another id
    assert brush_colors()[1] == (object_color_hex(2), PAINT_OPACITY) and len(brush_colors()) == 10
    with pytest.raises(InputError, match="RGBA"):
        layer_to_ids(np.zeros((2, 3, 3), np.uint8))


def test_reliability_strip_rows_runs_anchors_and_current_frame() -> None:
    html = reliability_strip({1: [1.0, 0.9, 0.3, 0.2, None], 3: [None] * 5}, current=2, anchors=[0], num_frames=5)
    cells = re.findall(r'<rect data-object="(\d+)" data-first="(\d+)" data-last="(\d+)" data-state="(\w+)"[^>]*'
                       r'fill="([^"]+)"', html)
    assert cells == [("1", "0", "1", "ok", "#2e9e44"), ("1", "2", "3", "suspect", "#d83a2c"),
                     ("1", "4", "4", "none", "#b4b4b4"), ("3", "0", "4", "none", "#b4b4b4")]
    assert "lowest 0.20" in html and "lowest 0.90" in html  # the tooltip gives the run's lowest value
    assert f"background:{object_color_hex(3)}" in html and f"background:{object_color_hex(1)}" in html
    assert re.findall(r'class="anchor" data-frame="(\d+)"', html) == ["0"]
    assert re.findall(r'class="current" data-frame="(\d+)"', html) == ["2"]
    assert "no objects yet" in reliability_strip({}, current=0, anchors=[], num_frames=3)


def test_first_suspect_frame_and_strip_follow_the_session(clip, model, tmp_path: Path) -> None:
    """The user's first mask gives the top of the disc to the square (object 1); after a correction at frame 7
    the frames before it are predicted from both anchors and object 1 is flagged at some of them: the first
    suspect frame is the first frame whose result has an object below 0.5, the strip shows the session's values
    and the export's reliability.json agrees."""
    folder, truth = clip
    first = truth[0].copy()
    first[first == 2] = 0
    first[(truth[0] == 2) & (np.arange(96)[:, None] < 24)] = 1
    wb = Workbench(model, None, folder)
    wb.set_mask(0, first)
    assert wb.first_suspect() is None and wb.strip_rows() == {1: [None] * 12}  # nothing computed yet
    list(wb.propagate())
    assert all(v is not None for v in wb.strip_rows()[1])
    corrected = wb.mask(6).copy()
    corrected[corrected == 1] = 0
    corrected[truth[6] == 1] = 1
    wb.set_mask(6, corrected)
    assert wb.strip_rows()[1][6] is None  # stale until propagated
    list(wb.propagate())
    rows = wb.strip_rows()
    assert rows == {1: [wb.session.result(t).reliability[1] for t in range(12)]} and rows[1][6] == 1.0
    suspects = [t for t in range(12) if rows[1][t] < SUSPECT_BELOW]
    assert suspects and suspects[0] < 6  # the leak is flagged before the correction
    t, object_id, value = wb.first_suspect()
    assert (t, object_id, value) == (suspects[0], 1, rows[1][suspects[0]])
    html = wb.strip(current=t)
    assert f'data-object="1" data-first="{t}"' in html and 'data-state="suspect"' in html
    with zipfile.ZipFile(wb.export(tmp_path)) as archive:
        saved = json.loads(archive.read("reliability.json"))
    assert saved["first_suspect_frame"] == t and saved["suspect_frames"] == {"1": suspects}


def test_correction_recomputes_both_sides_and_replays(clip, default_model, tmp_path: Path) -> None:
    folder, truth = clip
    wb = Workbench(default_model, None, folder)
    with pytest.raises(InputError, match="paint a mask"):
        list(wb.propagate())
    assert not wb.set_mask(0, np.zeros_like(truth[0]))  # an empty mask on a fresh frame is no anchor
    assert wb.set_layer(0, ids_to_layer(truth[0]))
    assert [step.t for step in wb.propagate()] == list(range(12))
    before = {t: wb.mask(t).copy() for t in range(12)}
    assert not wb.set_mask(5, before[5])  # unchanged result: not a correction
    assert wb.session.stale_frames() == []

    corrected = truth[7].copy()
    assert wb.set_mask(7, corrected)
    stale = wb.session.stale_frames()
    assert stale == list(range(1, 12))  # both directions: the frames back to the previous anchor, and after
    steps = list(wb.propagate())
    assert sorted(s.t for s in steps) == stale and steps[-1].done == steps[-1].total == len(stale)
    assert np.array_equal(wb.mask(0), before[0])
    assert all(wb.session.direction_grids(t)[1] is not None for t in range(1, 7))
    assert np.array_equal(wb.mask(7), corrected)

    out = wb.export(tmp_path)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "export")
    assert {"overlay.mp4", "session.json"} <= set(names) and len([n for n in names if n.startswith("masks/")]) == 12
    session = json.loads((tmp_path / "export" / "session.json").read_text())
    assert session["model_name"] is None and [a["frame"] for a in session["anchors"]] == [0, 7]
    exported = [read_mask(tmp_path / "export" / "masks" / f"{t:05d}.png") for t in range(12)]
    assert all(np.array_equal(exported[t], wb.mask(t)) for t in range(12))

    assert cli_main(["propagate", "--session", str(tmp_path / "export" / "session.json"), "--video", str(folder),
                     "--out", str(tmp_path / "replay")]) == 0
    replayed = [read_mask(tmp_path / "replay" / "masks" / f"{t:05d}.png") for t in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(replayed, exported))


def test_a_correction_repairs_the_frames_before_it_and_keeps_other_objects(clip, model) -> None:
    """The user's first mask gives the top of the disc (object 2) to the square (object 1), an identity error
    that comes back at frames 5-6; the user erases object 1's error at frame 7, which anchors object 1 only:
    frames 5-6 are repaired too (one way they keep the error), and object 2, which the user did not touch,
    keeps its propagated labels at frame 7 (and takes back the freed pixels)."""
    folder, truth = clip
    first = truth[0].copy()
    first[(truth[0] == 2) & (np.arange(96)[:, None] < 24)] = 1
    errors = {}
    for directions in ("forward", "both"):
        wb = Workbench(model, None, folder, options=PropagationOptions(directions=directions))
        wb.set_mask(0, first)
        list(wb.propagate())
        shown = wb.mask(7).copy()
        edited = np.where((shown == 1) & (truth[7] != 1), 0, shown).astype(np.uint8)  # the eraser
        assert wb.set_mask(7, edited)
        assert wb.session.anchor_objects == {0: (1, 2), 7: (1,)}
        list(wb.propagate())
        assert ((wb.mask(7) == 2) >= (shown == 2)).all() and np.array_equal(wb.mask(7) == 1, edited == 1)
        errors[directions] = [int(((wb.mask(t) == 1) & (truth[t] == 2)).sum()) for t in range(12)]
    assert sum(errors["forward"][1:7]) > 150 and sum(errors["both"][1:7]) < 0.2 * sum(errors["forward"][1:7])


def test_export_again_and_replay_into_a_used_folder(clip, model, tmp_path: Path, capsys) -> None:
    """Exports never meet an earlier export; a replay obeys propagate's output-folder rule (--overwrite)."""
    folder, truth = clip
    wb = Workbench(model, "lab-pixels", folder, max_frames=4)
    wb.set_mask(0, truth[0])
    first = wb.export(tmp_path)
    wb.set_mask(2, truth[2])
    again = wb.export(tmp_path)  # same zip name, replaced atomically; the work folders are gone
    assert again == first and sorted(p.name for p in tmp_path.iterdir()) == [first.name]
    with zipfile.ZipFile(again) as archive:
        archive.extractall(tmp_path / "export")
        assert [a["frame"] for a in json.loads(archive.read("session.json"))["anchors"]] == [0, 2]
    replay = ["propagate", "--session", str(tmp_path / "export" / "session.json"), "--video", str(folder),
              "--out", str(tmp_path / "replay")]
    assert cli_main(replay) == 0
    stray = tmp_path / "replay" / "masks" / "99999.png"
    stray.write_bytes(b"earlier run")
    capsys.readouterr()
    assert cli_main(replay) == 2 and "--overwrite" in capsys.readouterr().err
    assert cli_main([*replay, "--overwrite"]) == 0 and not stray.exists()
    for t in range(4):
        assert np.array_equal(read_mask(tmp_path / "replay" / "masks" / f"{t:05d}.png"), wb.mask(t))


def test_delete_object_and_new_object_mid_video(model, tmp_path: Path) -> None:
    folder, truth = write_shapes_folder(tmp_path / "late_disc", disc_from=4)
    wb = Workbench(model, None, folder)
    wb.set_mask(0, np.where(truth[0] == 1, 1, 0).astype(np.uint8))
    list(wb.propagate())
    wb.set_mask(4, truth[4])  # object 2 first appears in an anchor at frame 4
    assert wb.session.object_ids == [1, 2]
    list(wb.propagate())
    assert all((wb.mask(t) == 2).sum() > 0.5 * (truth[t] == 2).sum() for t in range(5, 12))
    assert not any((wb.mask(t) == 2).any() for t in range(4))
    wb.delete_object(2)
    assert wb.session.object_ids == [1]
    list(wb.propagate())
    assert not any((wb.mask(t) == 2).any() for t in range(12))
    with pytest.raises(InputError, match="no object 5"):
        wb.delete_object(5)


def test_bad_inputs_say_what_to_do(clip, model, tmp_path: Path) -> None:
    folder, truth = clip
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    with pytest.raises((VideoReadError, ImportError)):
        Workbench(model, None, not_video)
    with pytest.raises(InputError, match=r"too large.*--max-side \d+"):
        check_video_size(folder, None, budget=12 * 96 * 128 - 1)
    check_video_size(folder, 64, budget=12 * 48 * 64)  # fits once downscaled
    wb = Workbench(model, None, folder)
    with pytest.raises(InputError, match="does not match|frames are"):
        wb.set_mask(0, np.ones((10, 10), np.uint8))
    wb.set_mask(3, truth[3])
    wb.set_mask(3, np.zeros_like(truth[3]))  # erasing an anchor entirely removes it
    assert wb.session.anchors == {}
    bad_session = tmp_path / "bad.json"
    bad_session.write_text(json.dumps({"anchors": {}}))
    assert cli_main(["propagate", "--session", str(bad_session), "--video", str(folder),
                     "--out", str(tmp_path / "o")]) == 2


def test_first_frames_at_a_working_size_replay(clip, model, tmp_path: Path) -> None:
    folder, truth = clip
    wb = Workbench(model, "lab-pixels", folder, max_side=64, max_frames=6)
    assert wb.session.num_frames == 6 and wb.session.working_size == (48, 64)
    wb.set_mask(2, truth[2])  # propagates both ways from frame 2
    out = wb.export(tmp_path)
    with zipfile.ZipFile(out) as archive:
        archive.extractall(tmp_path / "export")
    assert cli_main(["propagate", "--session", str(tmp_path / "export" / "session.json"), "--video", str(folder),
                     "--out", str(tmp_path / "replay")]) == 0
    for t in range(6):
        mask = read_mask(tmp_path / "export" / "masks" / f"{t:05d}.png")
        replayed = read_mask(tmp_path / "replay" / "masks" / f"{t:05d}.png")
        assert mask.shape == (96, 128) and np.array_equal(mask, replayed)
    assert not (tmp_path / "replay" / "masks" / "00006.png").exists()


def test_uploaded_png_mask_becomes_an_anchor(clip, model, tmp_path: Path) -> None:
    from stcorr.io.masks import write_mask_png

    folder, truth = clip
    wb = Workbench(model, None, folder)
    half = truth[3][::2, ::2]  # a mask drawn at half the frames' size is resized (nearest)
    assert wb.load_mask_file(3, write_mask_png(tmp_path / "m.png", half))
    anchor = wb.session.anchors[3]
    assert anchor.shape == (96, 128) and np.array_equal(anchor[::2, ::2], half)


def test_workbench_streams_features_frame_by_frame_on_cpu(clip, model) -> None:
    """Like the CLI, the app encodes one frame per pass on CPU (progress never waits for a batch), and the
    result is the same as with 8-frame batches."""
    from stcorr.features import default_batch_size

    assert default_batch_size("cpu") == 1 and default_batch_size("cuda") == 8
    folder, masks = clip
    streamed = Workbench(model, "lab-pixels", folder)
    assert streamed.session._batch_size == 1
    batched = Workbench(model, "lab-pixels", folder)
    batched.session._batch_size = 8
    for wb in (streamed, batched):
        wb.set_mask(0, masks[0])
        list(wb.propagate())
    for t in range(streamed.session.num_frames):
        assert np.array_equal(streamed.mask(t), batched.mask(t))


def test_object_panel_names_visibility_and_selection(clip, model) -> None:
    folder, truth = clip
    wb = Workbench(model, None, folder)
    assert wb.objects() == [] and "No objects yet" in wb.panel()
    wb.set_mask(0, truth[0])
    wb.rename(2, "  the   blue disc ")
    wb.select(2)
    objects = wb.objects()
    assert [(o.id, o.color, o.name, o.visible, o.anchors) for o in objects] == [
        (1, "#800000", "", True, (0,)), (2, "#008000", "the blue disc", True, (0,))]
    assert objects[1].label == "2 green: the blue disc" and objects[0].label == "1 dark red"
    panel = wb.panel()
    assert re.search(r'data-object="2" data-visible="true" data-selected="true"', panel)
    assert "the blue disc" in panel and 'data-object="1" data-visible="true" data-selected="false"' in panel
    wb.rename(1, "<b>square</b>")
    assert "&lt;b&gt;square&lt;/b&gt;" in wb.panel()  # names are text, never markup
    # hiding an object takes it out of the overlay only (the editor's layer and the masks keep it)
    list(wb.propagate())
    shown = wb.view(5)
    wb.set_visible(2, False)
    hidden = wb.view(5)
    disc, square = wb.mask(5) == 2, wb.mask(5) == 1
    assert np.array_equal(hidden[disc], wb.session.frame(5)[disc]) and not np.array_equal(shown[disc], hidden[disc])
    assert np.array_equal(hidden[square], shown[square])
    assert layer_to_ids(wb.editor_value(5)["layers"][0])[disc].min() == 2
    assert 'data-object="2" data-visible="false"' in wb.panel()
    wb.set_visible(2, True)
    assert np.array_equal(wb.view(5), shown)
    # unsaved paint: the overlay can show the editor's layer instead of the saved mask
    painted = np.zeros_like(truth[5])
    painted[:10, :10] = 3
    assert np.array_equal(wb.view(5, layer=ids_to_layer(painted)), wb.view(5, layer=ids_to_layer(painted)))
    assert not np.array_equal(wb.view(5, layer=ids_to_layer(painted))[:10, :10], wb.session.frame(5)[:10, :10])
    with pytest.raises(InputError, match="1 to 10"):
        wb.select(11)
    with pytest.raises(InputError, match="at most 40 characters"):
        wb.rename(1, "x" * 41)
    with pytest.raises(InputError, match="1 to 254"):
        wb.set_visible(0, False)
    with pytest.raises(InputError, match="paint layer is 10x10"):
        wb.view(0, layer=np.zeros((10, 10, 4), np.uint8))


def test_undo_anchor_correction_removal_and_deletion(clip, model) -> None:
    """Undo restores the anchors (and names) before the last change; frames still cached from them are up to
    date again at once, the others are recomputed to the same masks as before the change."""
    folder, truth = clip
    wb = Workbench(model, None, folder)
    with pytest.raises(InputError, match="nothing to undo"):
        wb.undo()
    wb.set_mask(0, truth[0])
    list(wb.propagate())
    before = [wb.mask(t).copy() for t in range(12)]
    corrected = np.where(before[6] == 2, 0, before[6]).astype(np.uint8)  # erase the disc at frame 6
    assert wb.set_mask(6, corrected) and wb.can_undo == "the anchor at frame 6 (object 2)"
    assert wb.undo() == "the anchor at frame 6 (object 2)"
    assert sorted(wb.session.anchors) == [0] and wb.session.stale_frames() == []  # nothing to recompute
    assert all(np.array_equal(wb.mask(t), before[t]) for t in range(12))
    # a correction that was propagated, then undone: recomputed to the same masks
    wb.set_mask(6, corrected)
    list(wb.propagate())
    assert not (wb.mask(6) == 2).any()
    wb.undo()
    assert wb.session.stale_frames() == list(range(1, 12))
    list(wb.propagate())
    assert all(np.array_equal(wb.mask(t), before[t]) for t in range(12))
    # a removed anchor and a deleted object (with its name) come back
    wb.set_mask(6, corrected)
    wb.remove_anchor(6)
    assert wb.undo() == "removing the anchor at frame 6" and sorted(wb.session.anchors) == [0, 6]
    wb.undo()
    wb.rename(2, "disc")
    wb.set_visible(2, False)
    assert wb.session.stale_frames() == []
    wb.delete_object(2)
    assert wb.session.object_ids == [1] and wb.names == {} and wb.hidden == set()
    assert wb.undo() == "deleting object 2 (disc)"
    assert wb.session.object_ids == [1, 2] and wb.names == {2: "disc"} and wb.session.stale_frames() == []
    assert all(np.array_equal(wb.mask(t), before[t]) for t in range(12))
    with pytest.raises(InputError, match="not an anchor"):
        wb.remove_anchor(3)
    assert wb.unexported


def test_history_is_bounded(clip, model) -> None:
    from stcorr.app.workbench import HISTORY_LENGTH

    folder, truth = clip
    wb = Workbench(model, None, folder)
    for i in range(HISTORY_LENGTH + 5):
        assert wb.set_mask(0, np.where(truth[0] == 1, 1 + i % 2, 0).astype(np.uint8))
    undone = 0
    while wb.can_undo:
        wb.undo()
        undone += 1
    assert undone == HISTORY_LENGTH


def test_delete_object_recomputes_only_the_frames_it_reaches(clip, model) -> None:
    """Object 2 lives only in an anchor at frame 8: deleting it leaves frames 0-4 (predicted from the anchors
    at 0 and 4) cached, and the recomputed frames equal a session that never had object 2."""
    folder, truth = clip
    square = np.where(truth == 1, 1, 0).astype(np.uint8)
    wb = Workbench(model, None, folder)
    wb.set_mask(0, square[0])
    wb.set_mask(4, square[4])
    wb.session.add_mask(8, np.where(truth[8] == 2, 2, 0).astype(np.uint8), objects=[2])
    list(wb.propagate())
    assert wb.delete_object(2) == list(range(5, 12))
    assert wb.session.stale_frames() == list(range(5, 12))
    assert sorted(wb.session.anchors) == [0, 4]
    list(wb.propagate())
    fresh = Workbench(model, None, folder)
    fresh.set_mask(0, square[0])
    fresh.set_mask(4, square[4])
    list(fresh.propagate())
    assert all(np.array_equal(wb.mask(t), fresh.mask(t)) for t in range(12))


def test_cancel_request_stops_the_run_after_the_current_frame(clip, model) -> None:
    folder, truth = clip
    wb = Workbench(model, None, folder)
    wb.set_mask(0, truth[0])
    steps = []
    for step in wb.propagate():
        steps.append(step)
        if step.done == 3:
            wb.cancel_requested = True  # what the Cancel button does, from another thread
    assert len(steps) == 3 and len(wb.session.stale_frames()) == 12 - 3 and not wb.cancel_requested
    assert len(list(wb.propagate())) == 9  # the next run finishes the rest


def test_box_prompt_gives_the_object_and_is_undoable(clip, model) -> None:
    from stcorr.app.prompts import box_mask, normalise_box

    folder, truth = clip
    wb = Workbench(model, None, folder)
    wb.set_mask(0, np.where(truth[0] == 1, 1, 0).astype(np.uint8))
    wb.select(2)
    disc = truth[0] == 2
    pixels = wb.apply_box(0, (104, 38), (76, 10))  # corners in any order, around the disc (centre 90, 24; r 11)
    shown = wb.mask(0)
    iou = ((shown == 2) & disc).sum() / ((shown == 2) | disc).sum()
    assert pixels == (shown == 2).sum() and iou > 0.9, iou
    assert np.array_equal(shown == 1, truth[0] == 1)  # the other object keeps its pixels
    assert wb.can_undo == "the box for object 2 at frame 0"
    # a box over another object takes background pixels only; a second box replaces the object's pixels
    wb.apply_box(5, (10, 16), (50, 48), object_id=1)
    square = wb.mask(5) == 1
    assert (((truth[5] == 1) & square).sum() / ((truth[5] == 1) | square).sum()) > 0.9
    wb.undo()
    wb.undo()
    assert sorted(wb.session.anchors) == [0] and wb.session.object_ids == [1]
    assert normalise_box((5.7, 90), (-3, 2), (96, 128)) == (0, 2, 6, 91)
    with pytest.raises(InputError, match="smaller than 4x4"):
        normalise_box((5, 5), (6, 30), (96, 128))
    with pytest.raises(InputError, match="whole frame"):
        box_mask(wb.session.frame(0), (0, 0, 128, 96))
    with pytest.raises(InputError, match="uint8 RGB"):
        box_mask(np.zeros((4, 4)), (0, 0, 2, 2))
    # a box on flat background finds nothing and changes nothing
    flat = np.full((40, 40, 3), 90, np.uint8)
    assert not box_mask(flat, (10, 10, 20, 20)).any()
