"""Input checks of ``pet_nac_to_pct``: warn about (or refuse, on request) an attenuation-corrected
PET given where a NAC PET is expected (named rule :data:`NAC_RULE`, :func:`tail_ratio`). Serves this bundle only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Transform

from common.learning.transforms import CheckDict, source_name
from pet_nac_to_pct.baseline import _check_volume, body_mask

__all__ = ["NAC_RULE", "TailRule", "tail_ratio", "CheckNAC", "CheckNACd"]


# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TailRule:
    """A named, scale-free magnitude rule telling a NAC PET from an attenuation-corrected one.

    Attenuation compresses the upper tail of a NAC image's uptake distribution (hot organs lie
    deep and lose the most counts) and stretches its lower tail (the body's core is dark), so
    ``(p95 / p50) / (p50 / p10)`` of the body voxels is lower for NAC than for AC images.
    """

    name: str
    threshold: float
    percentiles: tuple[float, float, float] = (10.0, 50.0, 95.0)

    def __str__(self) -> str:
        lo, mid, hi = (f"{p:g}" for p in self.percentiles)
        return f"{self.name} ((p{hi}/p{mid}) / (p{mid}/p{lo}) of body voxels must be < {self.threshold:g} for NAC)"


# Measured on dataset version 2 (28 training subjects, 4 mm): NAC 0.64-1.32, true-CT AC 1.65-3.89,
# the threshold between. On version 3 (body sizes 20-150 kg, arms, count levels 4e5-4e6; 40
# subjects) NAC 0.54-1.47 but AC 1.22-9.2 (6 of 40 AC below 1.5), and on the shifted family
# (15-20 kg and 150-190 kg) the two overlap completely (NAC 0.49-4.59, AC 0.17-7.0; obese bodies
# invert the ratio). So the rule only warns by default (``refuse=True`` restores the refusal).
NAC_RULE = TailRule("nac_tail_ratio", threshold=1.5)


def tail_ratio(image: torch.Tensor, spacing_mm: Sequence[float], rule: TailRule = NAC_RULE) -> float:
    """``(p_hi / p_mid) / (p_mid / p_lo)`` of the voxels inside :func:`body_mask` (see :class:`TailRule`)."""
    x = _check_volume(image, "image")
    body = body_mask(x, spacing_mm).cpu().numpy()
    v = x.detach().cpu().double().numpy()[body]
    lo, mid, hi = np.percentile(v, rule.percentiles)
    if lo <= 0 or mid <= 0:
        raise ValueError("image: body voxels are not positive enough to compute the NAC tail ratio.")
    return float((hi / mid) / (mid / lo))


class CheckNAC(Transform):
    """Warn about (or, with ``refuse=True``, refuse) a PET that looks attenuation-corrected where a
    NAC PET is expected (rule :data:`NAC_RULE`, which cannot separate the two for very small or
    very large bodies: see its comment).

    Run after :class:`common.learning.transforms.CheckEmission` (which handles NaN, empty, channels, HU).
    Input ``[C, X, Y, Z]`` with spacing from the MetaTensor's affine (or ``spacing_mm``); returned
    unchanged.
    """

    def __init__(
        self, spacing_mm: Sequence[float] | None = None, rule: TailRule = NAC_RULE, name: str = "NAC PET", refuse: bool = False
    ):
        self.spacing_mm, self.rule, self.name, self.refuse = spacing_mm, rule, name, refuse

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        src = source_name(img)
        if img.ndim != 4:
            raise ValueError(f"{src}: {self.name} must be [C, X, Y, Z], got shape {tuple(img.shape)}")
        spacing = self.spacing_mm
        if spacing is None:
            affine = getattr(img, "affine", None)
            spacing = (1.0, 1.0, 1.0) if affine is None else np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
        for c in range(img.shape[0]):
            ratio = tail_ratio(torch.as_tensor(img[c]).float(), spacing, self.rule)
            if ratio >= self.rule.threshold:
                message = (
                    f"{src}: {self.name} looks attenuation-corrected: tail ratio {ratio:.3g} "
                    f"(rule {self.rule}); give the non-attenuation-corrected reconstruction"
                )
                if self.refuse:
                    raise ValueError(message)
                warnings.warn(message + " (if it is NAC, ignore this: the rule is unreliable for very small or large bodies)")
        return img


class CheckNACd(CheckDict):
    """Dictionary twin of :class:`CheckNAC`."""

    array_transform = CheckNAC
