"""Image and task metrics on torch tensors.

Global image metrics follow the ultra-low-dose PET challenge (UDPET, REFERENCE.md 5(a)) unless a
``data_range`` is given, which gives the SynthRAD convention (REFERENCE.md 5(b): clip HU first,
e.g. to [-1024, 3000] with data_range 4024). Every metric takes an optional boolean ``mask`` of the
image's shape (e.g. the body) and returns a Python float.

Task metrics: regional mean relative error (attenuation-correction bias per organ), a
bone-adjacent soft-tissue region, and lesion SUVmax / SUVmean / SUVpeak bias and contrast recovery.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "nrmse",
    "psnr",
    "ssim",
    "mae",
    "region_mean_error",
    "regional_mean_error",
    "bone_adjacent_mask",
    "dilate_box",
    "suv_peak",
    "lesion_stats",
    "relative_bias",
    "contrast_recovery",
    "lesion_metrics",
]


def _check_mask(mask: torch.Tensor | None, shape: torch.Size, name: str = "mask") -> torch.Tensor | None:
    if mask is None:
        return None
    mask = torch.as_tensor(mask)
    if mask.shape != shape:
        raise ValueError(f"{name} shape {tuple(mask.shape)} differs from the image shape {tuple(shape)}.")
    mask = mask.bool()
    if not mask.any():
        raise ValueError(f"{name} is empty.")
    return mask


def _values(image: torch.Tensor, mask: torch.Tensor | None = None, name: str = "image") -> torch.Tensor:
    """Voxel values of ``image`` inside ``mask`` (all voxels without a mask), as float64."""
    image = torch.as_tensor(image)
    if not torch.isfinite(image).all():
        raise ValueError(f"{name} contains NaN or Inf.")
    mask = _check_mask(mask, image.shape)
    x = image.double()
    return x.flatten() if mask is None else x[mask.to(x.device)]


def _pair(pred, ref, mask) -> tuple[torch.Tensor, torch.Tensor]:
    pred, ref = torch.as_tensor(pred), torch.as_tensor(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from ref shape {tuple(ref.shape)}.")
    return _values(pred, mask, "pred"), _values(ref, mask, "ref")


def _rmse(p: torch.Tensor, r: torch.Tensor) -> float:
    return (p - r).square().mean().sqrt().item()


def nrmse(pred: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """RMSE / (max(ref) - min(ref)) over the mask (UDPET)."""
    p, r = _pair(pred, ref, mask)
    span = (r.max() - r.min()).item()
    if span <= 0:
        raise ValueError("ref is constant inside the mask: NRMSE is undefined.")
    return _rmse(p, r) / span


def psnr(
    pred: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None, data_range: float | None = None
) -> float:
    """PSNR in dB: 20 log10(peak / RMSE), peak = max(ref) in the mask (UDPET) or ``data_range`` (SynthRAD).

    Identical images give +inf.
    """
    p, r = _pair(pred, ref, mask)
    peak = r.max().item() if data_range is None else float(data_range)
    if peak <= 0:
        raise ValueError(f"PSNR peak {peak:g} must be positive (max(ref) or data_range).")
    rmse = _rmse(p, r)
    return math.inf if rmse == 0 else 20.0 * math.log10(peak / rmse)


def mae(pred: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean absolute error over the mask, in the image's unit (e.g. HU in the body, SynthRAD)."""
    p, r = _pair(pred, ref, mask)
    return (p - r).abs().mean().item()


def _ssim_map(x: torch.Tensor, y: torch.Tensor, kernel_size: int, sigma: float, data_range: float, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """MONAI's SSIM map of ``x, y [N, 1, X, Y, Z]`` (Gaussian window, valid region) by separable passes."""
    d = torch.arange((1 - kernel_size) / 2, (1 + kernel_size) / 2, 1.0)
    w = torch.exp(-((d / sigma) ** 2) / 2)
    w = (w / w.sum()).tolist()
    x, y = x.float(), y.float()
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # the five local means in one pass
    for dim in (2, 3, 4):
        n = stack.shape[dim] - kernel_size + 1
        acc = stack.narrow(dim, 0, n) * w[0]
        for k in range(1, kernel_size):
            acc.add_(stack.narrow(dim, k, n), alpha=w[k])
        stack = acc
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = stack.unbind(1)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    sigma_x, sigma_y, sigma_xy = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y, mu_xy - mu_x * mu_y
    cs = (2 * sigma_xy + c2) / (sigma_x + sigma_y + c2)
    return (((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs).unsqueeze(1)


def ssim(
    pred: torch.Tensor,
    ref: torch.Tensor,
    mask: torch.Tensor | None = None,
    data_range: float | None = None,
    kernel_size: int = 11,
    kernel_sigma: float = 1.5,
) -> float:
    """3D SSIM (Gaussian window, MONAI's ``compute_ssim_and_cs``), mean of the SSIM map in the mask.

    The window is MONAI's (an outer product of 1D Gaussians, no padding), applied one axis at a
    time: the same map within float rounding, 30-40x faster on CPU than its 11^3-tap conv3d
    (1.4 s per 128 x 128 x 96 volume, a third of the denoiser's evaluation; issue 18).

    With ``data_range=None`` both volumes are divided by max(ref) and data range 1 is used (UDPET's
    max-normalised volumes; normalising by the reference's max keeps a global scale error visible).
    Otherwise the raw values are used with that data range (SynthRAD, after clipping).
    The map is computed without padding, so a mask is cropped by ``kernel_size // 2`` at each border.

    Args:
        pred, ref: [..., X, Y, Z], each spatial size >= ``kernel_size``.
    """
    p, r = _pair(pred, ref, None)
    shape = torch.as_tensor(ref).shape
    if len(shape) < 3 or min(shape[-3:]) < kernel_size:
        raise ValueError(f"ssim needs [..., X, Y, Z] with every spatial size >= {kernel_size}, got {tuple(shape)}.")
    if data_range is None:
        peak = r.max().item()
        if peak <= 0:
            raise ValueError("max(ref) must be positive for max-normalised SSIM.")
        p, r, data_range = p / peak, r / peak, 1.0
    p, r = (x.reshape(-1, 1, *shape[-3:]) for x in (p, r))
    smap = _ssim_map(p, r, kernel_size, kernel_sigma, float(data_range))
    mask = _check_mask(mask, shape)
    if mask is None:
        return smap.mean().item()
    h = kernel_size // 2
    m = mask.reshape(-1, 1, *shape[-3:])[..., h : shape[-3] - h, h : shape[-2] - h, h : shape[-1] - h]
    if not m.any():
        raise ValueError("mask is empty after cropping the SSIM window border.")
    return smap[m.to(smap.device)].mean().item()


def region_mean_error(pred: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    """Relative error of the region mean: mean(pred in mask) / mean(ref in mask) - 1."""
    p, r = _pair(pred, ref, mask)
    ref_mean = r.mean().item()
    if ref_mean == 0:
        raise ValueError("ref mean in the region is 0: relative error is undefined.")
    return p.mean().item() / ref_mean - 1.0


def regional_mean_error(
    pred: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor, region_ids: Sequence[int]
) -> dict[int, float]:
    """:func:`region_mean_error` for each label id in ``region_ids`` (signed; take abs() to average).

    Args:
        pred, ref: images [X, Y, Z] (e.g. PET in Bq/mL reconstructed with two mu-maps).
        labels: integer label map of the same shape.
        region_ids: label ids; an id absent from ``labels`` raises ValueError.
    """
    labels = torch.as_tensor(labels)
    out = {}
    for rid in region_ids:
        region = labels == int(rid)
        if not region.any():
            raise ValueError(f"region id {rid} is not present in labels.")
        out[int(rid)] = region_mean_error(pred, ref, region)
    return out


def bone_adjacent_mask(
    labels: torch.Tensor,
    spacing_mm: Sequence[float],
    bone_ids: Sequence[int],
    tissue_ids: Sequence[int],
    distance_mm: float = 10.0,
) -> torch.Tensor:
    """Soft-tissue voxels whose centre lies within ``distance_mm`` of a bone voxel's centre.

    Args:
        labels: integer label map [X, Y, Z].
        spacing_mm: voxel size (sx, sy, sz) in mm; distances are Euclidean in mm (scipy EDT).
        bone_ids: label ids of (cortical) bone.
        tissue_ids: label ids counted as soft tissue.
        distance_mm: maximal distance, 10 mm in DESIGN.md section 5.

    Returns:
        boolean tensor like ``labels`` (same device); all False when there is no bone.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 3 or len(spacing_mm) != 3:
        raise ValueError(f"labels must be [X, Y, Z] with 3 spacings, got {tuple(labels.shape)}, {spacing_mm}.")
    lab = labels.cpu().numpy()
    bone = np.isin(lab, list(bone_ids))
    if not bone.any():
        return torch.zeros_like(labels, dtype=torch.bool)
    dist = ndimage.distance_transform_edt(~bone, sampling=[float(s) for s in spacing_mm])
    near = np.isin(lab, list(tissue_ids)) & (dist <= distance_mm)
    return torch.from_numpy(near).to(labels.device)


def dilate_box(mask: torch.Tensor, radius_vox: Sequence[int]) -> torch.Tensor:
    """Box dilation of a boolean [X, Y, Z] mask by ``radius_vox`` voxels per axis.

    A box maximum is separable: one 1D pass per axis gives the same mask as the 3D box at
    (2r + 1) instead of (2r + 1)^3 comparisons per voxel (0.9 s -> about 0.03 s at 128^3, r = 5)."""
    x = torch.as_tensor(mask)[None, None].float()
    for axis, r in enumerate(int(r) for r in radius_vox):
        k, pad = [1, 1, 1], [0, 0, 0]
        k[axis], pad[axis] = 2 * r + 1, r
        x = F.max_pool3d(x, kernel_size=k, stride=1, padding=pad)
    return x[0, 0] > 0


def suv_peak(
    image: torch.Tensor, mask: torch.Tensor, spacing_mm: Sequence[float], volume_mL: float = 1.0
) -> float:
    """Mean of ``image`` in a sphere of ``volume_mL`` centred on the hottest voxel of ``mask``.

    The sphere (radius 6.2 mm for 1 mL) holds the voxels whose centres lie within the radius of the
    hottest voxel's centre, inside or outside the mask, clipped at the image border. Among tied
    hottest voxels the one nearest their centroid is used. This is the "sphere at the maximum"
    variant, not PERCIST's search for the hottest sphere position.
    """
    image = torch.as_tensor(image)
    _values(image, mask)  # validates finiteness and mask
    mask = _check_mask(mask, image.shape).to(image.device)
    hottest = mask & (image == image[mask].max())
    # ties (e.g. a uniform noise-free lesion): take the hottest voxel nearest their centroid
    coords = hottest.nonzero()
    centre = coords[(coords - coords.double().mean(0)).square().sum(1).argmin()]
    radius = (3.0 * volume_mL * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    sp = torch.tensor([float(s) for s in spacing_mm], dtype=torch.float64, device=image.device)
    axes = [torch.arange(-int(radius // s), int(radius // s) + 1, device=image.device) for s in sp.tolist()]
    offsets = torch.cartesian_prod(*axes).reshape(-1, 3)
    offsets = offsets[((offsets * sp).square().sum(1) <= radius**2)]
    idx = centre + offsets
    inside = ((idx >= 0) & (idx < torch.tensor(image.shape, device=image.device))).all(1)
    idx = idx[inside]
    return image[idx[:, 0], idx[:, 1], idx[:, 2]].double().mean().item()


def lesion_stats(image: torch.Tensor, mask: torch.Tensor, spacing_mm: Sequence[float]) -> dict[str, float]:
    """SUVmax, SUVmean and SUVpeak (:func:`suv_peak`, 1 mL) of a lesion; ``image`` in SUV (or Bq/mL)."""
    v = _values(image, mask)
    return {"max": v.max().item(), "mean": v.mean().item(), "peak": suv_peak(image, mask, spacing_mm)}


def relative_bias(value: float, ref_value: float) -> float:
    """value / ref_value - 1."""
    if ref_value == 0:
        raise ValueError("ref_value is 0: relative bias is undefined.")
    return value / ref_value - 1.0


def _contrast(image, lesion_mask, background_mask) -> float:
    return relative_bias(_values(image, lesion_mask).mean().item(), _values(image, background_mask).mean().item())


def contrast_recovery(
    pred: torch.Tensor, ref: torch.Tensor, lesion_mask: torch.Tensor, background_mask: torch.Tensor
) -> float:
    """(lesion / background - 1) of ``pred`` divided by the same contrast of ``ref`` (region means)."""
    ref_contrast = _contrast(ref, lesion_mask, background_mask)
    if ref_contrast == 0:
        raise ValueError("ref has no lesion contrast: contrast recovery is undefined.")
    return _contrast(pred, lesion_mask, background_mask) / ref_contrast


def lesion_metrics(
    pred: torch.Tensor,
    ref: torch.Tensor,
    lesion_mask: torch.Tensor,
    background_mask: torch.Tensor,
    spacing_mm: Sequence[float],
) -> dict[str, float]:
    """Relative bias of SUVmax, SUVmean, SUVpeak and the contrast recovery of one lesion vs. ``ref``."""
    p, r = lesion_stats(pred, lesion_mask, spacing_mm), lesion_stats(ref, lesion_mask, spacing_mm)
    out = {f"suv_{k}_bias": relative_bias(p[k], r[k]) for k in ("max", "mean", "peak")}
    out["contrast_recovery"] = contrast_recovery(pred, ref, lesion_mask, background_mask)
    return out
