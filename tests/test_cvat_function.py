"""stcorr.integrations.cvat, the CVAT tracking function, driven through CVAT's protocol objects as its agent
(``cvat-cli function run-agent``) drives it, on a generated clip: every frame's mask, encoded and decoded with
cvat-sdk's mask encoding, equals the mask `stcorr propagate` writes for that object alone, with the same
(default) model and working size. No CVAT server is reachable here: the server's requests are built as the agent
receives them."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import attrs
import numpy as np
import pytest
from PIL import Image

cvataa = pytest.importorskip("cvat_sdk.auto_annotation")
cvat_masks = pytest.importorskip("cvat_sdk.masks")

from app_helpers import write_shapes_folder  # noqa: E402
from stcorr.cli import main as cli_main  # noqa: E402
from stcorr.errors import InputError  # noqa: E402
from stcorr.integrations import cvat as stcorr_cvat  # noqa: E402
from stcorr.io.masks import read_mask, write_mask_png  # noqa: E402

FRAMES = 8
# wider than the CPU working size's 640 px: frames are encoded at 640x183, masks come back at 700x200
SIZE = (200, 700)
OBJECTS = (1, 2)  # the red square and the blue disc of the generated clip


class _Context(cvataa.TrackingFunctionContext):
    """The context the agent gives ``preprocess_image`` (empty in cvat-sdk's protocol)."""


class _ShapeContext(cvataa.TrackingFunctionShapeContext):
    """The context the agent gives ``init_tracking_state`` and ``track``: the tracked shape's type."""

    def __init__(self, original_shape_type: str) -> None:
        self._type = original_shape_type

    @property
    def original_shape_type(self) -> str:
        return self._type


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    return write_shapes_folder(tmp_path_factory.mktemp("cvat") / "clip", count=FRAMES, size=SIZE)


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory) -> dict[int, list[np.ndarray]]:
    """Per object: `stcorr propagate`'s masks (bool, per frame) from a first mask holding that object alone."""
    folder, truth = clip
    root = tmp_path_factory.mktemp("reference")
    masks = {}
    for object_id in OBJECTS:
        first = root / f"first_{object_id}.png"
        write_mask_png(first, (truth[0] == object_id).astype(np.uint8))
        out = root / f"out_{object_id}"
        assert cli_main(["propagate", "--video", str(folder), "--mask", str(first), "--out", str(out),
                         "--device", "cpu"]) == 0
        masks[object_id] = [read_mask(out / "masks" / f"{t:05d}.png") == 1 for t in range(FRAMES)]
    # the reference is a real track: the object is found on every frame and moves
    for object_id, frames in masks.items():
        assert all(m.any() for m in frames), object_id
        assert not np.array_equal(frames[0], frames[-1]), object_id
    return masks


@pytest.fixture(scope="module")
def function():
    """The function as the agent loads it from ``--function-module stcorr.integrations.cvat`` (no -p parameters:
    the module's ``create()``), on CPU as the reference."""
    return stcorr_cvat.create(device="cpu")


def _frame(folder: Path, t: int) -> Image.Image:
    with Image.open(folder / f"{t:05d}.png") as image:
        image.load()
        return image


def _decoded(shape_dict: dict | None, size: tuple[int, int]) -> np.ndarray:
    """A shape as the agent posts it (``attrs.asdict``, sent as JSON), decoded with cvat-sdk's decoder."""
    if shape_dict is None:
        return np.zeros(size, bool)
    sent = json.loads(json.dumps(shape_dict))
    assert sent["type"] == "mask"
    return cvat_masks.decode_mask(sent["points"], image_width=size[1], image_height=size[0])


def test_spec_is_a_mask_tracker(function) -> None:
    assert isinstance(function.spec, cvataa.TrackingFunctionSpec)
    assert function.spec.supported_shape_types == frozenset({"mask"})


def test_tracks_like_stcorr_propagate(clip, reference, function) -> None:
    """The protocol as cvat-cli's agent calls it: per request, ``preprocess_image`` once, then
    ``init_tracking_state`` per shape (an init request) or ``track`` per state (a track request), frame by frame."""
    folder, truth = clip
    image = _frame(folder, 0)
    pp_image = function.preprocess_image(_Context(), image)
    assert pp_image.geometry.working == (183, 640)  # the CPU default, as `stcorr propagate`
    shapes = [cvataa.TrackableShape(type="mask", points=cvat_masks.encode_mask(truth[0] == i)) for i in OBJECTS]
    states = [function.init_tracking_state(_ShapeContext(shape.type), pp_image, shape) for shape in shapes]
    for t in range(1, FRAMES):
        image = _frame(folder, t)
        pp_image = function.preprocess_image(_Context(), image)
        outputs = [function.track(_ShapeContext("mask"), pp_image, state) for state in states]
        for object_id, shape in zip(OBJECTS, outputs):
            assert shape is not None and isinstance(shape, cvataa.TrackableShape) and shape.type == "mask"
            decoded = _decoded(attrs.asdict(shape), SIZE)
            assert np.array_equal(decoded, reference[object_id][t]), (object_id, t)


def test_working_size_is_checked(clip, reference) -> None:
    """The equality above depends on the working size: at the full size (max_side=0) the masks differ."""
    folder, truth = clip
    function = stcorr_cvat.create(device="cpu", max_side=0)
    pp_image = function.preprocess_image(_Context(), _frame(folder, 0))
    assert pp_image.geometry.working == SIZE
    shape = cvataa.TrackableShape(type="mask", points=cvat_masks.encode_mask(truth[0] == 1))
    state = function.init_tracking_state(_ShapeContext("mask"), pp_image, shape)
    differing = []
    for t in range(1, FRAMES):
        output = function.track(_ShapeContext("mask"), function.preprocess_image(_Context(), _frame(folder, t)), state)
        differing.append(int((_decoded(attrs.asdict(output), SIZE) != reference[1][t]).sum()))
    assert min(differing) > 0, differing


class _InlineExecutor:
    """cvat-cli's RecoverableExecutor interface, running the worker's jobs in this process (the agent runs them
    in one spawned worker process)."""

    def submit(self, func, /, *args, **kwargs) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(func(*args, **kwargs))
        return future

    def result(self, future: concurrent.futures.Future):
        return future.result()


class _Media:
    def __init__(self, image: Image.Image) -> None:
        self._image = image

    def load_image(self) -> Image.Image:
        return self._image


class _Sample:
    def __init__(self, image: Image.Image) -> None:
        self.media = _Media(image)


def test_cvat_cli_agent_requests(clip, reference, monkeypatch) -> None:
    """cvat-cli's own agent code: the function loaded by its loader from ``--function-module`` with ``-p``
    parameters, its worker initialised, and init_tracking / track requests answered by its tracking driver
    (the server's task frames are served from the clip instead of downloaded)."""
    pytest.importorskip("cvat_cli")
    from cvat_cli._internal import agent
    from cvat_cli._internal.agent_driver_tracking import AgentTrackingFunctionDriver
    from cvat_cli._internal.common import FunctionLoader
    from cvat_cli._internal.parsers import parse_function_parameter

    folder, truth = clip
    parameters = dict(parse_function_parameter(p) for p in ("device=str:cpu", "max_side=int:640"))
    agent._worker_init(FunctionLoader("stcorr.integrations.cvat", None, parameters), lambda: f"state-{id(object())}")
    spec = agent._worker_job_get_function_spec()
    driver_class = agent.get_function_driver_class(spec)
    assert driver_class is AgentTrackingFunctionDriver
    # what `cvat-cli function create-native` registers with the server
    assert driver_class.FUNCTION_KIND == "tracker"
    assert driver_class.get_remote_function_fields(spec) == {"supported_shape_types": ["mask"]}

    driver = driver_class(None, _InlineExecutor(), spec)
    driver.validate_function_compatibility({"supported_shape_types": ["mask"]})
    monkeypatch.setattr(driver, "_get_sample_from_ar_params", lambda ar: (_Sample(_frame(folder, ar["frame"])), None))
    task = 7

    def check_in(*, current_progress: float) -> None:
        raise AssertionError("interactive requests do not check in")

    init = {"type": "init_tracking", "task": task, "frame": 0,
            "shapes": [{"type": "mask", "points": cvat_masks.encode_mask(truth[0] == i)} for i in OBJECTS]}
    states = driver.calculate_result_for_ar(json.loads(json.dumps(init)), check_in)["states"]
    assert len(states) == len(OBJECTS) and len(set(states)) == len(OBJECTS)
    for t in range(1, FRAMES):
        request = {"type": "track", "task": task, "frame": t, "states": states}
        result = json.loads(json.dumps(driver.calculate_result_for_ar(request, check_in)))
        assert result["states"] == states
        for object_id, shape in zip(OBJECTS, result["shapes"]):
            assert np.array_equal(_decoded(shape, SIZE), reference[object_id][t]), (object_id, t)


def test_function_file_loads_the_same_function(clip) -> None:
    """``--function-file PATH`` (the module's file, executed outside the package) tracks as ``--function-module``."""
    pytest.importorskip("cvat_cli")
    from cvat_cli._internal.common import FunctionLoader

    folder, truth = clip
    parameters = {"model": "lab-pixels", "device": "cpu"}
    by_file = FunctionLoader(None, Path(stcorr_cvat.__file__), parameters).load()
    by_module = FunctionLoader("stcorr.integrations.cvat", None, parameters).load()
    assert type(by_file).__module__ == "__cvat_function__" and by_file.spec == by_module.spec
    shape = cvataa.TrackableShape(type="mask", points=cvat_masks.encode_mask(truth[0] == 1))
    outputs = []
    for function in (by_file, by_module):
        state = function.init_tracking_state(_ShapeContext("mask"), function.preprocess_image(_Context(),
                                                                                             _frame(folder, 0)), shape)
        outputs.append(function.track(_ShapeContext("mask"), function.preprocess_image(_Context(), _frame(folder, 1)),
                                      state))
    assert outputs[0] is not None and outputs[0] == outputs[1]


def test_bad_shapes_say_what_to_do(clip, function) -> None:
    folder, truth = clip
    pp_image = function.preprocess_image(_Context(), _frame(folder, 0))
    context = _ShapeContext("mask")
    with pytest.raises(InputError, match="tracks mask shapes"):
        function.init_tracking_state(_ShapeContext("rectangle"), pp_image,
                                     cvataa.TrackableShape(type="rectangle", points=[1, 2, 30, 40]))
    empty = cvataa.TrackableShape(type="mask", points=cvat_masks.encode_mask(np.zeros(SIZE, bool), bbox=[0, 0, 4, 4]))
    with pytest.raises(InputError, match="empty"):
        function.init_tracking_state(context, pp_image, empty)
    wrong_size = cvataa.TrackableShape(type="mask", points=[1, 0, 0, SIZE[1] + 5, 0])
    with pytest.raises(InputError, match="do not encode a mask of the 700x200 image"):
        function.init_tracking_state(context, pp_image, wrong_size)
    state = function.init_tracking_state(
        context, pp_image, cvataa.TrackableShape(type="mask", points=cvat_masks.encode_mask(truth[0] == 1)))
    smaller = function.preprocess_image(_Context(), _frame(folder, 1).resize((350, 100)))
    with pytest.raises(InputError, match="same model and working size"):
        function.track(context, smaller, state)


def test_vanished_object_is_none(clip, function) -> None:
    """``track`` returns None (CVAT: not found on this frame) when no pixel keeps the object."""
    folder, _ = clip
    pp_image = function.preprocess_image(_Context(), _frame(folder, 0))
    speck = np.zeros(SIZE, bool)
    speck[199, 699] = True  # one pixel in the background's corner: too small to survive a step
    state = function.init_tracking_state(_ShapeContext("mask"), pp_image,
                                         cvataa.TrackableShape(type="mask", points=cvat_masks.encode_mask(speck)))
    assert function.track(_ShapeContext("mask"), function.preprocess_image(_Context(), _frame(folder, 1)),
                          state) is None


def test_create_refuses_bad_parameters() -> None:
    with pytest.raises(InputError, match="max_side"):
        stcorr_cvat.create(device="cpu", max_side=-1)
    with pytest.raises(InputError, match="topk"):
        stcorr_cvat.create(device="cpu", model="lab-pixels", topk=0)
