"""Training losses that score an image by what it is used for.

- :class:`AttenuationLoss`: a pseudo-CT for PET attenuation correction (AC). Beside a voxel-wise
  HU term it compares line integrals of the 511 keV attenuation map, the quantity PET AC depends
  on: the attenuation factor of a line of response is exp(-integral of mu), so an error d of the
  line integral scales the corrected counts on that line by exp(d), about 1 + d (DESIGN 5.1,
  "a projection-domain loss").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from common.physics import ct_to_mu

__all__ = ["AttenuationLoss"]


class AttenuationLoss(torch.nn.Module):
    """Voxel smooth-L1 on the scaled CT plus L1 of transaxial line integrals of mu at 511 keV.

    Inputs are scaled CT numbers ``s = (HU + 1000) / hu_scale`` of shape (B, 1, X, Y, Z) (Z axial);
    they go to mu through :func:`common.physics.ct_to_mu` (clipping, the CTAC air rule, Carney
    bilinear), so the line term sees the same mu as the task metric.

    ``loss = mean(w * smooth_l1(pred, target)) / mean(w) + line_weight * mean(|L_pred - L_target|)``

    with ``w = bone_weight`` where the target CT is above ``bone_hu`` (bone is a few percent of
    the body but holds the largest attenuation error of a CT-less mu-map) and 1 elsewhere, and
    ``L`` the line integrals (dimensionless, sum of mu x voxel length in cm) along X and along Y of
    the patch: the rows and columns of each axial slice, the 0 and 90 degree PET views. A line
    error of 0.01 is about a 1 % SUV error on that line.

    Args:
        hu_scale: HU per unit of the scaled CT (1000 for ``(HU + 1000) / 1000``).
        spacing_mm: voxel size (sx, sy, sz) in mm of the patches.
        bone_hu: CT number above which a target voxel is bone.
        bone_weight: weight of bone voxels in the voxel term (>= 1).
        line_weight: weight of the line-integral term (>= 0; 0 gives the voxel term alone).
        beta: smooth-L1 transition in scaled units (0.05 = 50 HU at ``hu_scale`` 1000).
    """

    def __init__(
        self,
        hu_scale: float = 1000.0,
        spacing_mm: Sequence[float] = (4.0, 4.0, 4.0),
        bone_hu: float = 200.0,
        bone_weight: float = 3.0,
        line_weight: float = 1.0,
        beta: float = 0.05,
    ) -> None:
        super().__init__()
        if hu_scale <= 0 or beta <= 0:
            raise ValueError(f"hu_scale and beta must be > 0, got {hu_scale} and {beta}.")
        if bone_weight < 1 or line_weight < 0:
            raise ValueError(f"bone_weight must be >= 1 and line_weight >= 0, got {bone_weight} and {line_weight}.")
        spacing = [float(v) for v in spacing_mm]
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing_mm must be 3 positive values in mm, got {spacing_mm}.")
        self.hu_scale, self.bone_hu, self.bone_weight = float(hu_scale), float(bone_hu), float(bone_weight)
        self.line_weight, self.beta = float(line_weight), float(beta)
        self.spacing_cm = (spacing[0] / 10.0, spacing[1] / 10.0)

    def _hu(self, scaled: torch.Tensor) -> torch.Tensor:
        return scaled * self.hu_scale - 1000.0

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim != 5:
            raise ValueError(f"pred and target must share one (B, C, X, Y, Z) shape, got {tuple(pred.shape)} and {tuple(target.shape)}.")
        target = target.to(pred.dtype)
        weight = torch.where(self._hu(target) > self.bone_hu, self.bone_weight, 1.0)
        voxel = torch.nn.functional.smooth_l1_loss(pred, target, reduction="none", beta=self.beta)
        loss = (weight * voxel).sum() / weight.sum()
        if self.line_weight > 0:
            diff = ct_to_mu(self._hu(pred)) - ct_to_mu(self._hu(target))
            lines = [diff.sum(dim=2) * self.spacing_cm[0], diff.sum(dim=3) * self.spacing_cm[1]]
            loss = loss + self.line_weight * sum(line.abs().mean() for line in lines) / len(lines)
        return loss
