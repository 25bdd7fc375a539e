"""The classical baseline of ``pet_nac_to_pct``: an attenuation map for PET without a CT.
Serves this bundle only (the CT-AC conversion every task shares is :func:`common.physics.ct_to_mu`).

- :func:`segment_nac`: the classical mu-map used when no CT exists, from the non-attenuation-
  corrected (NAC) PET alone: body outline, lungs inside it, everything else soft tissue, no bone.
- :func:`classes_to_hu` / :func:`baseline_pseudo_ct`: that segmentation as a pseudo-CT in HU, so
  that the baseline's mu-map, the network's and the true CT's all go through the one conversion
  :func:`common.physics.hu_to_mu` (DESIGN section 3).

Class values (HU at 120 kVp) are those of the 4-class Dixon MR attenuation map of
Martinez-Moeller et al. (J Nucl Med 2009;50:520) without fat: lung 0.018 /cm, soft tissue
0.100 /cm at 511 keV, turned into HU through the inverse of the Carney bilinear below its
break point (mu = 9.6e-5 (HU + 1000) /cm): literature values, not fitted to the phantoms. The
segmentation thresholds are parameters whose defaults were chosen on two training-seed phantoms
of the ``pet_nac_to_pct`` dataset (bundles/pet_nac_to_pct/docs/README.md).

Layout: volumes are [X, Y, Z] (Z axial), spacing (sx, sy, sz) in mm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from common.physics import CARNEY_SOFT_SLOPE

__all__ = [
    "AIR",
    "LUNG",
    "SOFT_TISSUE",
    "CLASS_NAMES",
    "BASELINE_MU_511",
    "BASELINE_HU",
    "body_mask",
    "segment_nac",
    "classes_to_hu",
    "baseline_pseudo_ct",
]

AIR, LUNG, SOFT_TISSUE = 0, 1, 2
CLASS_NAMES = {AIR: "air", LUNG: "lung", SOFT_TISSUE: "soft_tissue"}
# mu at 511 keV (1/cm), Martinez-Moeller et al. 2009 4-class MRAC without the fat class.
BASELINE_MU_511 = {AIR: 0.0, LUNG: 0.018, SOFT_TISSUE: 0.100}
# The same as CT numbers: inverse of mu = 9.6e-5 (HU + 1000) (Carney 2006 below its break point,
# REFERENCE.md section 2), so hu_to_mu(BASELINE_HU) gives BASELINE_MU_511 back at 511 keV.
BASELINE_HU = {k: mu / CARNEY_SOFT_SLOPE - 1000.0 for k, mu in BASELINE_MU_511.items()}


def _check_volume(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 3:
        raise ValueError(f"{name} must be a 3D volume [X, Y, Z], got shape {tuple(x.shape)}.")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf.")
    return x


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing_mm)
    if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
        raise ValueError(f"spacing_mm must be three positive numbers (mm), got {spacing_mm!r}.")
    return sp


def _smooth(nac: np.ndarray, spacing_mm: Sequence[float], fwhm_mm: float) -> np.ndarray:
    sigma = [fwhm_mm / 2.3548 / s for s in spacing_mm]
    return ndimage.gaussian_filter(nac.astype(np.float64), sigma, mode="nearest")


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def _fill_axial_holes(mask: np.ndarray) -> np.ndarray:
    # per axial slice: lungs and cold organs are holes of the body outline, not outside air
    out = np.empty_like(mask)
    for z in range(mask.shape[2]):
        out[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    return out


def _tissue_level(smoothed: np.ndarray) -> float:
    """Typical uptake of the body: the median of voxels above 30% of the 99th percentile.

    Scales with injected dose and count level, so thresholds relative to it are dose-invariant.
    """
    p99 = float(np.percentile(smoothed, 99.0))
    if p99 <= 0:
        raise ValueError("nac has no positive uptake: cannot find a body outline.")
    return float(np.median(smoothed[smoothed > 0.3 * p99]))


def body_mask(
    nac: torch.Tensor, spacing_mm: Sequence[float], body_fraction: float = 0.45, smooth_fwhm_mm: float = 8.0
) -> torch.Tensor:
    """Body outline of a NAC PET: smoothed uptake above ``body_fraction`` of the tissue level,
    axial holes filled, largest connected component.

    Args:
        nac: NAC PET [X, Y, Z] in any unit proportional to activity (Bq/mL, SUV, counts).
        spacing_mm: voxel size in mm.
        body_fraction: threshold as a fraction of the body's median uptake (see ``_tissue_level``);
            scatter and randoms put the background well below it.
        smooth_fwhm_mm: Gaussian smoothing before thresholding (noise).

    Returns:
        boolean [X, Y, Z] on ``nac``'s device.
    """
    x = _check_volume(nac, "nac")
    sp = _check_spacing(spacing_mm)
    s = _smooth(x.detach().cpu().numpy(), sp, smooth_fwhm_mm)
    body = s > body_fraction * _tissue_level(s)
    body = _largest_component(_fill_axial_holes(body))
    return torch.from_numpy(body).to(x.device)


def segment_nac(
    nac: torch.Tensor,
    spacing_mm: Sequence[float],
    body_fraction: float = 0.45,
    lung_range: tuple[float, float] = (1.25, 1.8),
    smooth_fwhm_mm: float = 8.0,
    min_lung_mL: float = 200.0,
    lung_dilation_mm: float = 8.0,
) -> torch.Tensor:
    """Three-class attenuation segmentation of a NAC PET: air, lung, soft tissue (no bone).

    Without attenuation correction the lungs look *hot*: little tissue attenuates the photons
    that leave them, so the smoothed NAC in the lungs is 1.3-1.6 times the body's typical uptake
    (measured on the torso phantoms), while in an attenuation-corrected image they are cold.
    Lungs are therefore the (at most two) largest regions inside the body, away from its surface,
    with smoothed NAC within ``lung_range`` times the tissue level (above it: heart, bladder), each
    of at least ``min_lung_mL``, then dilated by ``lung_dilation_mm`` (smoothing shrinks them) but
    kept off the body surface. Everything else inside the body is soft tissue.

    Args:
        nac: NAC PET [X, Y, Z] (any unit proportional to activity).
        spacing_mm: voxel size in mm.
        body_fraction: see :func:`body_mask`.
        lung_range: (low, high) lung thresholds as multiples of the tissue level.
        smooth_fwhm_mm: Gaussian smoothing before thresholding (noise).
        min_lung_mL: smallest lung component kept (mL).
        lung_dilation_mm: dilation of the found lungs (mm).

    Returns:
        int64 class map [X, Y, Z] with values :data:`AIR`, :data:`LUNG`, :data:`SOFT_TISSUE`, on
        ``nac``'s device.
    """
    x = _check_volume(nac, "nac")
    sp = _check_spacing(spacing_mm)
    lo, hi = (float(v) for v in lung_range)
    if not 0 < lo < hi:
        raise ValueError(f"lung_range must be (low, high) with 0 < low < high, got {lung_range!r}.")
    s = _smooth(x.detach().cpu().numpy(), sp, smooth_fwhm_mm)
    level = _tissue_level(s)
    body = _largest_component(_fill_axial_holes(s > body_fraction * level))
    # lungs never reach the skin: keep a layer of chest wall
    wall = max(1, int(round(12.0 / min(sp))))
    interior = ndimage.binary_erosion(body, iterations=wall)
    cand = ndimage.binary_opening(interior & (s > lo * level) & (s < hi * level))
    lab, n = ndimage.label(cand)
    lung = np.zeros_like(body)
    if n:
        sizes = ndimage.sum_labels(cand, lab, index=np.arange(1, n + 1)) * (sp[0] * sp[1] * sp[2] / 1000.0)
        keep = [1 + int(k) for k in np.argsort(sizes)[::-1][:2] if sizes[k] >= min_lung_mL]
        lung = np.isin(lab, keep)
        grow = int(round(lung_dilation_mm / min(sp)))
        if grow and lung.any():
            lung = ndimage.binary_dilation(lung, iterations=grow) & ndimage.binary_erosion(body, iterations=max(1, wall // 2))
    classes = np.full(body.shape, AIR, dtype=np.int64)
    classes[body] = SOFT_TISSUE
    classes[lung] = LUNG
    return torch.from_numpy(classes).to(x.device)


def classes_to_hu(classes: torch.Tensor, class_hu: Mapping[int, float] | None = None) -> torch.Tensor:
    """Class map -> pseudo-CT in HU (float32), with :data:`BASELINE_HU` by default."""
    class_hu = dict(BASELINE_HU if class_hu is None else class_hu)
    classes = torch.as_tensor(classes)
    unknown = sorted(set(torch.unique(classes).tolist()) - set(class_hu))
    if unknown:
        raise ValueError(f"classes holds ids {unknown} with no HU value; known: {sorted(class_hu)}.")
    hu = torch.empty(classes.shape, dtype=torch.float32, device=classes.device)
    for k, v in class_hu.items():
        hu[classes == k] = float(v)
    return hu


def baseline_pseudo_ct(nac: torch.Tensor, spacing_mm: Sequence[float], **kwargs) -> torch.Tensor:
    """The segmentation baseline as a pseudo-CT in HU: :func:`segment_nac` then :func:`classes_to_hu`.

    ``kwargs`` go to :func:`segment_nac`.
    """
    return classes_to_hu(segment_nac(nac, spacing_mm, **kwargs))
