"""Training loss of the low-dose PET denoising bundle."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WeightedMSELoss"]


class WeightedMSELoss(nn.Module):
    """Mean squared error, voxel-weighted when the target carries a weight channel.

    ``target`` is ``[B, C, ...]`` (plain MSE) or ``[B, C + 1, ...]`` whose last channel is a
    per-voxel weight (:class:`pet_lowdose_denoising.transforms.LesionWeightd`): the loss is then
    ``mean(w * (pred - target)^2)``. The weights come from the anatomy (the label map), not from the
    noisy images, so they do not favour voxels by their noise. They are not free of bias either: the
    network does not see the label map, and where a lesion cannot be told from noise in its input
    the minimiser is E[w y | x] / E[w | x], pulled toward lesion values (false hot spots at a
    high weight). The weight is a trade of background smoothness for lesion contrast, measured by
    the evaluation (lesion SUV bias and PSNR in the body).

    Shapes: ``pred`` ``[B, C, ...]``; ``target`` ``[B, C, ...]`` or ``[B, C + 1, ...]``.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = pred.shape[1]
        if target.shape[1] == c:
            return (pred - target).square().mean()
        if target.shape[1] != c + 1 or target.shape[2:] != pred.shape[2:]:
            raise ValueError(f"WeightedMSELoss: target {tuple(target.shape)} must be pred {tuple(pred.shape)} with or without one weight channel")
        return (target[:, c:] * (pred - target[:, :c]).square()).mean()
