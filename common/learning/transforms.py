"""MONAI transforms shared by the bundles: an array transform and its dictionary twin.

Input checks (DESIGN section 7) live here so that every bundle refuses the same bad input
with the same message, naming the file it came from:

- NaN/Inf, an empty (all-zero) volume, wrong number of spatial dimensions or channels;
- wrong units: each magnitude check is a named rule with its threshold
  (``HU_RULE``: more than 5% of the non-zero voxels below -500 means a CT in HU);
- negative values: real reconstructions hold small negatives. Refuse only clearly wrong
  input (below -5% of the 99.9th percentile, or negative in more than 1% of the body
  voxels), clip the rest to 0 with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

__all__ = [
    "HU_RULE",
    "NEGATIVE_RULE",
    "CheckEmission",
    "CheckEmissiond",
    "CheckCT",
    "CheckCTd",
    "source_name",
]


@dataclass(frozen=True)
class MagnitudeRule:
    """A named check by magnitude, so error messages can cite it."""

    name: str
    threshold: float
    fraction: float

    def __str__(self) -> str:
        return f"{self.name} (threshold {self.threshold:g}, fraction {self.fraction:g})"


# More than 5% of the non-zero voxels below -500 means the image is a CT in HU.
HU_RULE = MagnitudeRule("hu_like", threshold=-500.0, fraction=0.05)
# Negatives deeper than 5% of the 99.9th percentile, or in more than 1% of the body voxels,
# are not reconstruction noise.
NEGATIVE_RULE = MagnitudeRule("negative_values", threshold=-0.05, fraction=0.01)


def source_name(img) -> str:
    """The file an image came from (MONAI metadata), or a placeholder for in-memory data."""
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj") or meta.get("saved_to")
    return str(name) if name else "<in-memory image>"


def _check_common(img: torch.Tensor, what: str, channels: int | None, spatial_dims: int) -> np.ndarray:
    src = source_name(img)
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.ndim != spatial_dims + 1:
        raise ValueError(
            f"{src}: {what} must be channel-first with {spatial_dims} spatial dimensions, "
            f"got shape {tuple(arr.shape)}"
        )
    if channels is not None and arr.shape[0] != channels:
        raise ValueError(f"{src}: {what} must have {channels} channel(s), got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{src}: {what} holds {int((~np.isfinite(arr)).sum())} NaN/Inf voxels")
    if not np.any(arr):
        raise ValueError(f"{src}: {what} is empty (all voxels are zero)")
    return arr


class CheckEmission(Transform):
    """Validate a PET/SPECT emission image (activity, counts or SUV) before a network sees it.

    Args:
        channels: expected channel count (``None``: any).
        spatial_dims: expected number of spatial dimensions.
        name: what the image is, for messages (e.g. ``"NAC PET"``).

    Input: ``[C, X, Y, Z]`` tensor (MONAI channel-first). Returns the image with small
    negatives clipped to 0; raises ``ValueError`` naming the source file otherwise.
    """

    def __init__(self, channels: int | None = 1, spatial_dims: int = 3, name: str = "emission image") -> None:
        self.channels, self.spatial_dims, self.name = channels, spatial_dims, name

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        arr = _check_common(img, self.name, self.channels, self.spatial_dims)
        src = source_name(img)
        nonzero = arr[arr != 0]
        hu_fraction = float((nonzero < HU_RULE.threshold).mean())
        if hu_fraction > HU_RULE.fraction:
            raise ValueError(
                f"{src}: {self.name} looks like a CT in HU: {hu_fraction:.1%} of non-zero voxels are below "
                f"{HU_RULE.threshold:g} (rule {HU_RULE})"
            )
        negative = arr < 0
        if negative.any():
            p999 = float(np.percentile(arr, 99.9))
            body = arr > 0.05 * p999  # voxels clearly inside the emission distribution
            worst = float(arr.min())
            neg_fraction = float(negative.sum()) / max(int(body.sum()) + int(negative.sum()), 1)
            if worst < NEGATIVE_RULE.threshold * p999 or neg_fraction > NEGATIVE_RULE.fraction:
                raise ValueError(
                    f"{src}: {self.name} has clearly wrong negative values (min {worst:.4g}, "
                    f"99.9th percentile {p999:.4g}, {neg_fraction:.2%} of body voxels negative; rule {NEGATIVE_RULE})"
                )
            warnings.warn(f"{src}: clipping {int(negative.sum())} small negative voxels of {self.name} to 0")
            img = torch.clamp(torch.as_tensor(img), min=0) if not isinstance(img, MetaTensor) else img.clamp(min=0)
        return img


class CheckCT(Transform):
    """Validate a CT volume in HU: finite, channel-first, and plausibly HU (air near -1000).

    A CT in HU has air at about -1000; an image whose minimum is above ``HU_RULE.threshold``
    everywhere (no air, no lung) is not a CT in HU (e.g. a PET or a mu-map in 1/cm).
    """

    def __init__(self, channels: int | None = 1, spatial_dims: int = 3, name: str = "CT") -> None:
        self.channels, self.spatial_dims, self.name = channels, spatial_dims, name

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        arr = _check_common(img, self.name, self.channels, self.spatial_dims)
        if float(arr.min()) > HU_RULE.threshold:
            raise ValueError(
                f"{source_name(img)}: {self.name} does not look like HU: minimum {float(arr.min()):.4g} is above "
                f"{HU_RULE.threshold:g}, so it holds no air (rule {HU_RULE})"
            )
        return img


class CheckDict(MapTransform):
    array_transform: type[Transform]

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = self.array_transform(**kwargs)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key])
        return d


class CheckEmissiond(CheckDict):
    """Dictionary twin of :class:`CheckEmission`."""

    array_transform = CheckEmission


class CheckCTd(CheckDict):
    """Dictionary twin of :class:`CheckCT`."""

    array_transform = CheckCT
