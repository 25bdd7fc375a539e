"""Input checks and unit constants shared by the dose engines of :mod:`common.dosimetry`.

Errors are :class:`common.errors.InputError` (a ``ValueError``) and name the argument and the
problem. The library refuses any negative activity; clipping the small negatives of a reconstructed
image (DESIGN section 7) is the job of a bundle's input transform, before this library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from common.errors import InputError

__all__ = ["KEV_TO_J", "MEV_TO_J", "check_activity", "check_spacing_mm", "check_same_shape", "voxel_volume_mL"]

KEV_TO_J = 1.602176634e-16
MEV_TO_J = 1.602176634e-13


def check_activity(activity: torch.Tensor, name: str = "activity") -> torch.Tensor:
    """A 3D activity concentration map [X, Y, Z] in Bq/mL: floating, finite, non-negative.

    Returns:
        the tensor as floating point (integer input becomes float32), on its device.

    Raises:
        InputError: not 3D, NaN/Inf, or negative values (with their count and minimum).
    """
    activity = torch.as_tensor(activity)
    if activity.dim() != 3:
        raise InputError(f"{name} must be a 3D map [X, Y, Z] in Bq/mL, got shape {tuple(activity.shape)}.")
    if not activity.is_floating_point():
        activity = activity.float()
    bad = ~torch.isfinite(activity)
    if bad.any():
        raise InputError(f"{name} contains NaN or Inf in {int(bad.sum())} voxels.")
    negative = activity < 0
    if negative.any():
        raise InputError(
            f"{name} has {int(negative.sum())} negative voxels (minimum {float(activity.min()):.4g} Bq/mL); "
            "activity concentration must be >= 0 Bq/mL."
        )
    return activity


def check_spacing_mm(spacing_mm: float | Sequence[float]) -> tuple[float, float, float]:
    """Voxel spacing in mm as three finite positive numbers (a scalar means isotropic)."""
    values = [spacing_mm] * 3 if isinstance(spacing_mm, (int, float)) else list(spacing_mm)
    if len(values) != 3 or not all(isinstance(v, (int, float)) or torch.is_tensor(v) for v in values):
        raise InputError(f"spacing_mm must be 3 numbers (mm), got {spacing_mm!r}.")
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) and v > 0 for v in out):
        raise InputError(f"spacing_mm must be finite and positive, got {out}.")
    return out  # type: ignore[return-value]


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise :class:`InputError` when two maps differ in spatial shape."""
    if tuple(a.shape[-3:]) != tuple(b.shape[-3:]):
        raise InputError(
            f"{name_a} {tuple(a.shape[-3:])} and {name_b} {tuple(b.shape[-3:])} differ in shape; "
            "resample them to one grid first."
        )


def voxel_volume_mL(spacing_mm: Sequence[float]) -> float:
    """Volume of one voxel in mL (cm3) from its spacing in mm."""
    sx, sy, sz = check_spacing_mm(spacing_mm)
    return sx * sy * sz * 1e-3
