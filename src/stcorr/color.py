"""Colour conversion: RGB in [0, 1] to CIE Lab, as the encoder's input expects.

The conversion follows OpenCV's float ``COLOR_RGB2Lab`` (sRGB gamma, D65 white point), which is what
the official pipeline applies to each frame. It runs batched on any device.
"""

from __future__ import annotations

import torch

from stcorr.errors import InputError

__all__ = ["rgb_to_lab", "lab_to_rgb", "normalize_lab", "denormalize_lab", "normalize_imagenet", "LAB_MEAN", "LAB_STD"]

# sRGB (D65) -> XYZ, rows X, Y, Z, the matrix OpenCV uses.
_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.950456, 1.0, 1.088754)
_EPSILON = 0.008856  # (6/29) ** 3, CIE threshold between the cube root and the linear segment
_KAPPA = 903.3

# Encoder normalisation of Lab channels: (L - 50) / 50, a / 127, b / 127.
LAB_MEAN = (50.0, 0.0, 0.0)
LAB_STD = (50.0, 127.0, 127.0)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_rgb(rgb: torch.Tensor) -> None:
    if not isinstance(rgb, torch.Tensor) or rgb.dim() < 3 or rgb.shape[-3] != 3:
        shape = tuple(rgb.shape) if isinstance(rgb, torch.Tensor) else type(rgb).__name__
        raise InputError(f"expected an RGB tensor of shape (..., 3, H, W), got {shape}")
    if not rgb.is_floating_point():
        raise InputError(f"expected a float RGB tensor in [0, 1], got dtype {rgb.dtype}; divide uint8 by 255")


def _srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    curve = rgb.add(0.055).div_(1.055).clamp_min_(0).pow_(2.4)
    return torch.where(rgb <= 0.04045, rgb * (1.0 / 12.92), curve)


def _lab_f(t: torch.Tensor) -> torch.Tensor:
    cube_root = t.clamp_min(_EPSILON).pow_(1.0 / 3.0)
    return torch.where(t > _EPSILON, cube_root, t.mul(7.787).add_(16.0 / 116.0))


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """Convert RGB in [0, 1], shape (..., 3, H, W), to Lab: L in [0, 100], a and b roughly in [-127, 127].

    Computed in float32 (or float64 if given float64), whatever the input precision.
    """
    _check_rgb(rgb)
    dtype = torch.float64 if rgb.dtype == torch.float64 else torch.float32
    linear = _srgb_to_linear(rgb.to(dtype))
    matrix = torch.tensor(_RGB_TO_XYZ, dtype=dtype, device=rgb.device)
    white = torch.tensor(_WHITE_D65, dtype=dtype, device=rgb.device)
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear) / white[:, None, None]
    x, y, z = xyz.unbind(dim=-3)
    fx, fy, fz = _lab_f(x), _lab_f(y), _lab_f(z)
    lightness = torch.where(y > _EPSILON, 116.0 * fy - 16.0, _KAPPA * y)
    return torch.stack((lightness, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def _linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    curve = linear.clamp_min(0.0031308).pow(1.0 / 2.4).mul_(1.055).sub_(0.055)
    return torch.where(linear <= 0.0031308, linear * 12.92, curve)


def _lab_f_inverse(f: torch.Tensor) -> torch.Tensor:
    return torch.where(f > _EPSILON ** (1.0 / 3.0), f.pow(3), (f - 16.0 / 116.0) / 7.787)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_lab`: Lab (..., 3, H, W) -> sRGB, not clipped (out-of-gamut colours leave [0, 1])."""
    if not isinstance(lab, torch.Tensor) or lab.dim() < 3 or lab.shape[-3] != 3 or not lab.is_floating_point():
        shape = tuple(lab.shape) if isinstance(lab, torch.Tensor) else type(lab).__name__
        raise InputError(f"expected a float Lab tensor of shape (..., 3, H, W), got {shape}")
    dtype = torch.float64 if lab.dtype == torch.float64 else torch.float32
    lightness, a, b = lab.to(dtype).unbind(dim=-3)
    fy = (lightness + 16.0) / 116.0
    y = torch.where(lightness > _KAPPA * _EPSILON, fy.pow(3), lightness / _KAPPA)
    xyz = torch.stack((_lab_f_inverse(fy + a / 500.0), y, _lab_f_inverse(fy - b / 200.0)), dim=-3)
    white = torch.tensor(_WHITE_D65, dtype=dtype, device=lab.device)
    inverse = torch.linalg.inv(torch.tensor(_RGB_TO_XYZ, dtype=torch.float64)).to(dtype=dtype, device=lab.device)
    linear = torch.einsum("ij,...jhw->...ihw", inverse, xyz * white[:, None, None])
    return _linear_to_srgb(linear)


def _normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[:, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - m) / s


def normalize_lab(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> the encoder's Lab input: (L - 50) / 50, a / 127, b / 127."""
    return _normalize(rgb_to_lab(rgb), LAB_MEAN, LAB_STD)


def denormalize_lab(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of the encoder's Lab normalisation: (L - 50) / 50, a / 127, b / 127 -> L, a, b."""
    m = torch.tensor(LAB_MEAN, dtype=lab.dtype, device=lab.device)[:, None, None]
    s = torch.tensor(LAB_STD, dtype=lab.dtype, device=lab.device)[:, None, None]
    return lab * s + m


def normalize_imagenet(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> ImageNet mean/std normalised RGB (the input of ImageNet-trained teachers)."""
    _check_rgb(rgb)
    return _normalize(rgb.float(), _IMAGENET_MEAN, _IMAGENET_STD)
