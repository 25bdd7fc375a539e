"""The view-completion network of ``spect_projection_completion``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.learning.networks import CircularPadNet, VolumeUNet

__all__ = ["ViewCompletionNet"]


class ViewCompletionNet(nn.Module):
    """Missing views from acquired ones: a residual 3D U-Net over ``(u, v, views)``, the view axis
    padded circularly (:class:`common.learning.networks.CircularPadNet`: the set is periodic over
    360 degrees), and the acquired views passed through unchanged (data consistency: the network
    only fills in what was not measured, and the loss sees only those views).

    Input ``[B, 2, U, V, N]``: channel 0 the linearly interpolated full set divided by the study's
    scale, channel 1 the mask of acquired views (:class:`..transforms.SparseViewsd`).
    Output ``[B, 1, U, V, N]`` on the same scale.

    Args:
        channels, strides, num_res_units, dropout: of the MONAI ``UNet`` (no normalisation
            layers: the output is quantitative).
        margin: views of wrapped context at each end of the view axis.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 1,
        dropout: float = 0.0,
        margin: int = 4,
    ) -> None:
        super().__init__()
        unet = VolumeUNet(
            2,
            1,
            channels,
            strides,
            num_res_units,
            norm=None,
            dropout=dropout,
            residual=True,
        )
        self.net = CircularPadNet(unet, dim=2, margin=margin, multiple=unet.multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 2:
            raise ValueError(f"expected input [B, 2, U, V, N] (interpolated views, mask), got {list(x.shape)}")
        mask = x[:, 1:2]
        return mask * x[:, :1] + (1.0 - mask) * self.net(x)
