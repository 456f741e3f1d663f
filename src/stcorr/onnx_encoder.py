"""An encoder run by ONNX Runtime on CPU, behind the same API (optional: ``pip install "stcorr[onnx]"``).

``OnnxEncoder(model)`` is an encoder module like ``model`` (same ``stride`` and ``feature_dim``), accepted by
every function that takes one (:func:`stcorr.extract_features`, :func:`stcorr.propagate_labels`,
:class:`stcorr.PropagationSession`, :func:`stcorr.match_points`, ...). For each input size (H, W) it meets, it
exports ``model``'s forward to ONNX once (cached on disk under ``$STCORR_HOME/onnx``, named by a digest of the
weights and configuration, written atomically), opens it with ONNX Runtime's CPU provider, and checks the
runtime's features against PyTorch's on that first input (L2-normalised, within :data:`TOLERANCE`); a size
that fails the check is run by PyTorch, with a warning. The weights are read once: train or change the
PyTorch model afterwards and build a new ``OnnxEncoder``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stcorr._atomic import atomic_path
from stcorr.errors import InputError
from stcorr.paths import stcorr_home

__all__ = ["OnnxEncoder", "TOLERANCE"]

logger = logging.getLogger(__name__)

TOLERANCE = 1e-4  # max |difference| of the L2-normalised features, ONNX Runtime against PyTorch
_OPSET = 17


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError('OnnxEncoder needs ONNX Runtime and onnx: pip install "stcorr[onnx]"') from exc
    return onnxruntime


def _digest(model: nn.Module) -> str:
    """A digest of the model's class, configuration and weights (the name of its exported files)."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    digest.update(json.dumps(getattr(model, "config", None), sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


class OnnxEncoder(nn.Module):
    """``model`` (an encoder module mapping RGB in [0, 1], (B, 3, H, W), to features) run by ONNX Runtime on CPU.

    Args:
        model: the PyTorch encoder (put in eval mode and on CPU).
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
        cache_dir: where exported networks are kept (default ``$STCORR_HOME/onnx``).
    """

    def __init__(self, model: nn.Module, *, threads: int | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        stride = getattr(model, "stride", None)
        if not isinstance(model, nn.Module) or isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise InputError(f"OnnxEncoder wraps an encoder module with an integer `stride` (pixels per feature "
                             f"cell), got {type(model).__name__} with stride {stride!r}; pass e.g. stcorr.load_model()")
        self._runtime = _runtime()
        self._model = [model.cpu().eval()]  # a list, not a submodule: .to() and state_dict() leave it alone
        self.stride = int(model.stride)
        self.feature_dim = getattr(model, "feature_dim", None)
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)  # says "cpu" to the feature code
        self._threads = int(threads or torch.get_num_threads())
        self._folder = Path(cache_dir) if cache_dir is not None else stcorr_home() / "onnx"
        self._digest = _digest(model)
        self._sessions: dict[tuple[int, int], Any] = {}
        self.eval()

    @property
    def device(self) -> torch.device:
        """Always the CPU."""
        return torch.device("cpu")

    def export_path(self, size: tuple[int, int]) -> Path:
        """The ONNX file of this model for input frames of ``size`` (H, W)."""
        return self._folder / f"{self._digest}-{size[0]}x{size[1]}.onnx"

    def _export(self, size: tuple[int, int]) -> Path:
        path = self.export_path(size)
        if path.is_file():
            return path
        example = torch.zeros(1, 3, *size)
        with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's tracer and deprecation warnings
            torch.onnx.export(self._model[0], (example,), str(tmp), input_names=["rgb"], output_names=["features"],
                              dynamic_axes={"rgb": {0: "batch"}, "features": {0: "batch"}}, opset_version=_OPSET,
                              dynamo=False)
        logger.info("exported %s", path)
        return path

    def _session(self, rgb: torch.Tensor) -> Any:
        """The runtime session for ``rgb``'s size, made (and checked against PyTorch on ``rgb``) on first use;
        None where the check failed (PyTorch runs that size)."""
        size = (int(rgb.shape[-2]), int(rgb.shape[-1]))
        if size not in self._sessions:
            options = self._runtime.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            session = self._runtime.InferenceSession(str(self._export(size)), options,
                                                     providers=["CPUExecutionProvider"])
            with torch.inference_mode():
                expected = F.normalize(self._model[0](rgb).float(), dim=1)
            got = F.normalize(self._run(session, rgb), dim=1)
            difference = float((got - expected).abs().max())
            if difference > TOLERANCE:
                logger.warning("ONNX Runtime's features differ from PyTorch's by %.1e at %dx%d; PyTorch runs this "
                               "size", difference, size[1], size[0])
                session = None
            self._sessions[size] = session
        return self._sessions[size]

    @staticmethod
    def _run(session: Any, rgb: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"rgb": rgb.detach().float().contiguous().numpy()})[0])

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """Raw features of ``rgb`` (B, 3, H, W) in [0, 1], as ``model(rgb)`` gives them (on CPU)."""
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise InputError(f"expected RGB frames (B, 3, H, W), got shape {tuple(rgb.shape)}")
        rgb = rgb.cpu()
        session = self._session(rgb)
        if session is None:
            with torch.inference_mode():
                return self._model[0](rgb)
        return self._run(session, rgb)
