"""Classical baseline of low-dose PET denoising: a Gaussian post-filter whose FWHM is tuned on
validation data, separately for each dose reduction factor (DRF).

This is what a clinic does with a low-count study: smooth it more the fewer counts it has. The
FWHM that minimises the NRMSE against the full-dose reconstruction in the body (REFERENCE.md 5(a),
UDPET convention) on the validation subjects is chosen from a grid, per DRF; the network is
judged against this best-case filter, not against an arbitrary one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from common.learning.metrics import nrmse
from common.physics.projectors import gaussian_filter_mm

__all__ = ["FWHM_PER_SIGMA", "DEFAULT_FWHM_GRID_MM", "gaussian_filter_fwhm", "tune_gaussian_fwhm", "fwhm_for"]

#: FWHM = 2 sqrt(2 ln 2) sigma for a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Candidate FWHMs (mm): 0 (no filter) to 20 mm; clinical FDG post-filters are 4-8 mm, the grid
#: goes well beyond so that the optimum at DRF 100 is not clipped by the grid.
DEFAULT_FWHM_GRID_MM: tuple[float, ...] = (0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0, 14.0, 16.0, 20.0)


def gaussian_filter_fwhm(image: torch.Tensor, fwhm_mm: float | Sequence[float], spacing_mm: Sequence[float]) -> torch.Tensor:
    """Isotropic (or per-axis) Gaussian filter given by its FWHM in mm.

    Args:
        image: ``[X, Y, Z]`` or ``[..., X, Y, Z]`` (e.g. ``[B, C, X, Y, Z]``), any device.
        fwhm_mm: FWHM in mm, one value or one per axis; 0 leaves an axis unfiltered.
        spacing_mm: voxel size (sx, sy, sz) in mm.

    Returns:
        filtered image, same shape, dtype and device. Edges use replicate padding, so a volume
        cut through the body (the axial ends of a torso) keeps its level at the border, and the
        filter preserves the total of a volume away from its border.
    """
    image = torch.as_tensor(image)
    if image.dim() < 3:
        raise ValueError(f"image must be [..., X, Y, Z], got shape {tuple(image.shape)}")
    if len(spacing_mm) != 3 or any(not (float(s) > 0) for s in spacing_mm):
        raise ValueError(f"spacing_mm must be 3 positive values in mm, got {tuple(spacing_mm)}")
    if not image.is_floating_point():
        image = image.float()
    out = gaussian_filter_mm(image, fwhm_mm, spacing_mm, mode="replicate")
    return out.clone() if out is image else out


def tune_gaussian_fwhm(
    pairs: Iterable[tuple[float, torch.Tensor, torch.Tensor, torch.Tensor | None, Sequence[float]]],
    fwhm_grid_mm: Sequence[float] = DEFAULT_FWHM_GRID_MM,
    criterion: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], float] = nrmse,
) -> dict[float, dict[str, object]]:
    """Choose, per dose reduction factor, the FWHM that minimises ``criterion`` on validation data.

    Args:
        pairs: ``(drf, low_dose [X, Y, Z], full_dose [X, Y, Z], body_mask or None, spacing_mm)``
            for each validation subject and DRF (e.g. from :func:`pet_lowdose_denoising.evaluation.iter_dose_pairs`).
        fwhm_grid_mm: candidate FWHMs in mm (>= 0).
        criterion: ``f(pred, ref, mask) -> float``, lower is better; default NRMSE (UDPET).

    Returns:
        ``{drf: {"fwhm_mm": best, "criterion": {fwhm: mean value over subjects}, "n_subjects": n}}``,
        sorted by DRF.
    """
    grid = [float(f) for f in fwhm_grid_mm]
    if not grid or any(not math.isfinite(f) or f < 0 for f in grid):
        raise ValueError(f"fwhm_grid_mm must be a non-empty list of FWHMs >= 0 mm, got {fwhm_grid_mm!r}")
    sums: dict[float, list[float]] = {}
    counts: dict[float, int] = {}
    for drf, low, full, mask, spacing in pairs:
        drf = float(drf)
        acc = sums.setdefault(drf, [0.0] * len(grid))
        counts[drf] = counts.get(drf, 0) + 1
        for i, f in enumerate(grid):
            acc[i] += criterion(gaussian_filter_fwhm(low, f, spacing), full, mask)
    if not sums:
        raise ValueError("tune_gaussian_fwhm needs at least one validation pair")
    out: dict[float, dict[str, object]] = {}
    for drf in sorted(sums):
        means = [v / counts[drf] for v in sums[drf]]
        best = min(range(len(grid)), key=lambda i: means[i])
        out[drf] = {"fwhm_mm": grid[best], "criterion": dict(zip(grid, means)), "n_subjects": counts[drf]}
    return out


def fwhm_for(tuned: Mapping, drf: float) -> float:
    """The tuned FWHM (mm) for ``drf`` from :func:`tune_gaussian_fwhm`'s result (keys may be
    strings after a JSON round trip); ValueError when the DRF was not tuned."""
    for key, value in tuned.items():
        if math.isclose(float(key), float(drf), rel_tol=1e-6):
            return float(value["fwhm_mm"])
    raise ValueError(f"no tuned Gaussian FWHM for dose reduction factor {drf:g}; tuned: {sorted(float(k) for k in tuned)}")
