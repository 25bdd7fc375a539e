"""The dose-rate network: a MONAI 3D U-Net that corrects the density-scaled voxel S-value dose rate.

Input ``[B, 3, X, Y, Z]`` (channels of :class:`.transforms.DoseInputsd`: activity / s_A, density
g/cm3, density-scaled VSV / s_D); the U-Net gives two maps ``r0, r1`` and the output is

    pred = vsv + body x (vsv x r0 + r1),   body = density >= BODY_MIN_DENSITY,

in units of ``s_D``: a relative correction of the VSV (lung, bone, interfaces) and an additive one
(photon dose beyond the kernel, electron transport across density changes). Outside the body the
VSV passes through unchanged. Nothing in it depends on the activity's magnitude, so the dose rate
``s_D x pred`` is linear in activity (:mod:`.transforms`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet

from dose_rate_prediction.transforms import BODY_MIN_DENSITY

__all__ = ["DoseLoss", "DoseRateNet"]


class DoseRateNet(torch.nn.Module):
    """Residual correction of the density-scaled VSV (module docstring).

    Args:
        channels, strides, num_res_units, norm: of MONAI's ``UNet`` (3D, 3 inputs, 2 outputs); the
            spatial size must divide by the product of the strides (inference pads to it).
        body_min_density: g/cm3 below which the VSV passes through.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 1,
        norm: str | tuple = "instance",
        body_min_density: float = BODY_MIN_DENSITY,
    ):
        super().__init__()
        self.unet = UNet(3, 3, 2, channels=tuple(channels), strides=tuple(strides), num_res_units=num_res_units, norm=norm)
        # zero-initialised gains (as ReZero): an untrained network returns the density-scaled VSV
        # exactly, so training starts from the best baseline and moves away only where that helps
        self.gain = torch.nn.Parameter(torch.zeros(2))
        self.body_min_density = float(body_min_density)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vsv = x[:, 2:3]
        body = (x[:, 1:2] >= self.body_min_density).to(x.dtype)
        # log-compressed activity and VSV: the U-Net sees structure over four decades of uptake
        features = torch.cat([torch.log1p(x[:, 0:1].clamp_min(0)), x[:, 1:2], torch.log1p(vsv.clamp_min(0))], dim=1)
        r = self.unet(features) * self.gain.view(1, 2, 1, 1, 1)
        return vsv + body * (vsv * r[:, 0:1] + r[:, 1:2])


class DoseLoss(torch.nn.Module):
    """Squared error weighted by ``1 / (|label| + delta)``, in units of ``s_D``: between the plain MSE
    (ruled by the hottest voxels: kidneys, tumours) and a squared relative error (ruled by the
    coldest, noisiest ones), so lung, bone and soft tissue count too. Voxels outside the body hold
    the VSV in both prediction and label (:mod:`.transforms`) and add nothing."""

    def __init__(self, delta: float = 1.0):
        super().__init__()
        self.delta = float(delta)

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return ((pred - label).square() / (label.abs() + self.delta)).mean()
