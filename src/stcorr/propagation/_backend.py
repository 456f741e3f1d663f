"""Which kernel propagates: the fused Triton kernel (:mod:`._triton_kernel`) or the torch block kernel.

- ``"auto"`` (default): Triton on CUDA devices when Triton is installed (it comes with PyTorch's CUDA wheels
  on Linux) and ``topk`` <= :data:`MAX_TRITON_TOPK`; the torch kernel otherwise (CPU, CUDA without Triton,
  MPS). On CPU nothing changes.
- ``"triton"``: the fused kernel, or an :class:`~stcorr.errors.InputError` saying why it cannot run. On CPU
  tensors it runs under Triton's interpreter, which needs ``TRITON_INTERPRET=1`` in the environment before
  Python starts (slow: for testing only).
- ``"torch"``: the torch block kernel on any device.

The choice is logged once per (backend, device type, reason) at INFO level.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import torch

from stcorr.errors import InputError

__all__ = ["BACKENDS", "MAX_TRITON_TOPK", "resolve_backend", "triton_unavailable"]

BACKENDS = ("auto", "triton", "torch")
# Largest top-k the fused kernel takes: it keeps up to 16 x topk candidates per query in registers.
MAX_TRITON_TOPK = 32

_log = logging.getLogger(__name__)
_logged: set[tuple[str, str, str]] = set()


def triton_unavailable(device: torch.device) -> str | None:
    """Why the fused kernel cannot run on ``device``, or None when it can."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install triton; PyTorch's CUDA wheels for Linux include it)"
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") == "1":
            return None
        return (
            "on CPU the Triton kernel runs only under Triton's interpreter: set TRITON_INTERPRET=1 before "
            "starting Python"
        )
    return f"the Triton kernel needs a CUDA device, got {device.type}"


def resolve_backend(backend: str, device: torch.device, topk: int) -> str:
    """``"triton"`` or ``"torch"`` for propagating on ``device`` with this ``topk`` (see the module doc)."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return _chosen("torch", device, "requested")
    reason = triton_unavailable(device)
    if reason is None and topk > MAX_TRITON_TOPK:
        reason = f"topk {topk} is above the fused kernel's maximum {MAX_TRITON_TOPK}"
    if backend == "triton":
        if reason is not None:
            raise InputError(f"backend='triton' cannot run: {reason}; use backend='torch' or 'auto'")
        return _chosen("triton", device, "requested")
    if device.type != "cuda":
        return _chosen("torch", device, f"{device.type} device")
    if reason is not None:
        return _chosen("torch", device, reason)
    return _chosen("triton", device, "CUDA with Triton")


def _chosen(backend: str, device: torch.device, reason: str) -> str:
    key = (backend, device.type, reason)
    if key not in _logged:
        _logged.add(key)
        _log.info("label propagation on %s: %s kernel (%s)", device.type, backend, reason)
    return backend
