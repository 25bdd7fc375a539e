"""Thin wrappers around MONAI networks for the image-generation bundles.

Used by ``pet_lowdose_denoising`` today; kept in ``common`` on purpose: the pad-to-what-the-strides-
need wrapper is what ``spect_projection_completion`` (issue 14, circular padding over views) and
``dose_rate_prediction`` build on, and DESIGN 3 names this module the home of network wrappers.

Both wrappers map a channel-first volume ``[B, C, X, Y, Z]`` to ``[B, out_channels, X, Y, Z]``
of the same spatial shape (any shape: inputs are padded internally to what the U-Net's strides
need and cropped back), so a bundle's network is a volume-to-volume operator whatever its inner
dimensionality, and ``verify`` can check its spatial shape with one 3D tensor.

- :class:`SliceStackUNet` (2.5D): each axial slice is predicted by a MONAI 2D ``UNet`` from
  ``slices`` adjacent slices (stacked as channels, replicate padding at the ends of the volume)
  plus any per-voxel conditioning channels taken at the centre slice only.
- :class:`VolumeUNet` (3D): a MONAI 3D ``UNet`` on the whole volume or a patch.
- :class:`CircularPadNet`: wraps either for an input that is periodic along one axis (SPECT
  projections over 360 degrees of views): MONAI's networks pad with zeros, so the first and last
  views would see a fake edge; the wrapper pads that axis circularly, by at least ``margin`` and up
  to a multiple of what the U-Net's strides need (120 views -> 128 with ``multiple`` 8), and crops.

Default ``norm=None``: instance (or small-batch) normalisation subtracts each feature map's mean,
which erases a constant conditioning channel (the dose level) and the absolute intensity scale
(SUV) that a quantitative output needs.

With ``residual=True`` the network learns a correction of input channel 0
(``pred = x[:, :1] + unet(x)``): a denoiser that starts as the identity keeps the image scale,
which matters for quantitative images (SUV), and trains faster than one that must rebuild it.

Both are TorchScript-scriptable (typed ``forward``, ints only in shape arithmetic).

:class:`SliceMarginLoss` trains the 2.5D network on slabs: it leaves out the ``slices // 2`` end
slices of each slab, whose neighbours are replicated padding during training but real slices when
the whole volume is processed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.nets import UNet
from monai.utils import convert_to_dst_type
from torch import nn

__all__ = ["CircularPadNet", "SliceMarginLoss", "SliceStackUNet", "VolumeUNet"]


def _pad_to_multiple(x: torch.Tensor, multiple: int, n_dims: int) -> tuple[torch.Tensor, list[int]]:
    """Zero-pad the last ``n_dims`` dims of ``x`` up to a multiple of ``multiple`` (at the end).

    Returns the padded tensor and the original sizes, for :func:`_crop`."""
    sizes: list[int] = []
    pad: list[int] = []
    for d in range(n_dims):
        n = x.shape[x.dim() - 1 - d]
        sizes.insert(0, n)
        pad += [0, (multiple - n % multiple) % multiple]
    if sum(pad) > 0:
        x = F.pad(x, pad)
    return x, sizes


def _crop(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Crop the last ``len(sizes)`` dims of ``x`` to ``sizes`` (undo :func:`_pad_to_multiple`)."""
    nd = len(sizes)
    for d in range(nd):
        x = x.narrow(x.dim() - nd + d, 0, sizes[d])
    return x


def _check_unet_args(channels: Sequence[int], strides: Sequence[int]) -> int:
    if len(channels) < 2 or len(strides) != len(channels) - 1:
        raise ValueError(f"channels needs >= 2 entries and strides one fewer, got {tuple(channels)}, {tuple(strides)}")
    if any(int(s) < 1 for s in strides):
        raise ValueError(f"strides must be >= 1, got {tuple(strides)}")
    multiple = 1
    for s in strides:
        multiple *= int(s)
    return multiple


def _unet(
    spatial_dims,
    in_channels,
    out_channels,
    channels,
    strides,
    num_res_units,
    norm,
    dropout,
) -> UNet:
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )


class SliceStackUNet(nn.Module):
    """2.5D U-Net: predicts each axial slice from its ``slices`` neighbours (MONAI 2D ``UNet``).

    Args:
        in_channels: channels of the input volume ``C``.
        out_channels: output channels (1 for a denoised image).
        slices: odd number of adjacent slices stacked as channels (e.g. 5 = +-2 slices, +-8 mm at
            4 mm spacing), for the first ``stacked_channels`` input channels.
        stacked_channels: how many leading input channels get the slice context; the remaining
            ``C - stacked_channels`` channels (e.g. a constant dose-level map) enter at the centre
            slice only.
        channels, strides, num_res_units, norm, dropout: passed to ``monai.networks.nets.UNet``.
        residual: add input channel 0 to the output (requires ``out_channels == 1``).
        slice_batch: at evaluation time (``not self.training``) run at most this many slices per
            2D forward, bounding memory for long volumes; training runs all slices at once.

    Shapes: ``forward(x [B, C, X, Y, Z]) -> [B, out_channels, X, Y, Z]``.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        slices: int = 5,
        stacked_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 1,
        norm: str | None = None,
        dropout: float = 0.0,
        residual: bool = True,
        slice_batch: int = 32,
    ) -> None:
        super().__init__()
        if slices < 1 or slices % 2 == 0:
            raise ValueError(f"slices must be a positive odd number, got {slices}")
        if not 1 <= stacked_channels <= in_channels:
            raise ValueError(f"stacked_channels must be in 1..in_channels={in_channels}, got {stacked_channels}")
        if residual and out_channels != 1:
            raise ValueError(f"residual=True needs out_channels == 1, got {out_channels}")
        if slice_batch < 1:
            raise ValueError(f"slice_batch must be >= 1, got {slice_batch}")
        self.multiple = _check_unet_args(channels, strides)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.slices = int(slices)
        self.stacked_channels = int(stacked_channels)
        self.residual = bool(residual)
        self.slice_batch = int(slice_batch)
        in_2d = self.stacked_channels * self.slices + (self.in_channels - self.stacked_channels)
        self.unet = _unet(2, in_2d, out_channels, channels, strides, num_res_units, norm, dropout)

    def _slice_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, X, Y, Z] -> [B * Z, C_2d, X, Y]: neighbours of each slice as channels."""
        b, c, nx, ny, nz = x.shape
        h = self.slices // 2
        stacked = x[:, : self.stacked_channels]
        if h > 0:
            # replicate: the end slices see copies of themselves, not zeros (no fake edge)
            stacked = F.pad(stacked, [h, h, 0, 0, 0, 0], mode="replicate")
        stacked = stacked.unfold(4, self.slices, 1)  # [B, Cs, X, Y, Z, K]
        stacked = stacked.permute(0, 4, 1, 5, 2, 3).reshape(b * nz, self.stacked_channels * self.slices, nx, ny)
        if c > self.stacked_channels:
            centre = x[:, self.stacked_channels :].permute(0, 4, 1, 2, 3).reshape(b * nz, c - self.stacked_channels, nx, ny)
            stacked = torch.cat([stacked, centre], dim=1)
        return stacked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and isinstance(x, MetaTensor):
            # batched metadata breaks the slice reshaping and chunking: run on the plain tensor,
            # then give the output the input's metadata (what Invertd and SaveImaged need)
            return convert_to_dst_type(self._forward(x.as_tensor()), x)[0]
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input [B, {self.in_channels}, X, Y, Z], got {list(x.shape)}")
        b, nz = x.shape[0], x.shape[4]
        xp, sizes = _pad_to_multiple(x.permute(0, 1, 4, 2, 3), self.multiple, 2)  # pad X, Y
        xp = xp.permute(0, 1, 3, 4, 2)  # back to [B, C, X', Y', Z]
        inputs = self._slice_inputs(xp)
        if self.training or inputs.shape[0] <= self.slice_batch:
            out = self.unet(inputs)
        else:
            parts: list[torch.Tensor] = []
            for start in range(0, inputs.shape[0], self.slice_batch):
                parts.append(self.unet(inputs[start : start + self.slice_batch]))
            out = torch.cat(parts, dim=0)
        out = _crop(out, sizes)  # [B * Z, O, X, Y]
        out = out.reshape(b, nz, self.out_channels, sizes[0], sizes[1]).permute(0, 2, 3, 4, 1)
        if self.residual:
            out = out + x[:, :1]
        return out


class VolumeUNet(nn.Module):
    """3D U-Net (MONAI ``UNet``) on a volume of any shape, optionally residual on channel 0.

    Args:
        in_channels, out_channels, channels, strides, num_res_units, norm, dropout: as
            ``monai.networks.nets.UNet`` with ``spatial_dims=3``.
        residual: add input channel 0 to the output (requires ``out_channels == 1``).

    Shapes: ``forward(x [B, C, X, Y, Z]) -> [B, out_channels, X, Y, Z]``.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 1,
        norm: str | None = None,
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if residual and out_channels != 1:
            raise ValueError(f"residual=True needs out_channels == 1, got {out_channels}")
        self.multiple = _check_unet_args(channels, strides)
        self.in_channels = int(in_channels)
        self.residual = bool(residual)
        self.unet = _unet(
            3,
            in_channels,
            out_channels,
            channels,
            strides,
            num_res_units,
            norm,
            dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input [B, {self.in_channels}, X, Y, Z], got {list(x.shape)}")
        xp, sizes = _pad_to_multiple(x, self.multiple, 3)
        out = _crop(self.unet(xp), sizes)
        if self.residual:
            out = out + x[:, :1]
        return out


class CircularPadNet(nn.Module):
    """Run ``net`` on an input padded circularly along the periodic spatial axis ``dim``, then crop.

    Args:
        net: a module mapping ``[B, C, X, Y, Z]`` to ``[B, O, X, Y, Z]`` (e.g. :class:`VolumeUNet`,
            which pads the other axes itself).
        dim: the periodic spatial axis (0, 1 or 2 for X, Y, Z), e.g. the view axis of projections.
        margin: views of wrapped context added at least at each end (the network's receptive field
            beyond the first and last view).
        multiple: the padded length is a multiple of this (the product of the U-Net's strides).

    Shapes: ``forward(x [B, C, X, Y, Z]) -> [B, O, X, Y, Z]``; the padding wraps around, so it needs
    ``margin + multiple <= n`` along ``dim`` (one period of context at most).
    """

    def __init__(self, net: nn.Module, dim: int = 2, margin: int = 4, multiple: int = 8) -> None:
        super().__init__()
        if dim not in (0, 1, 2):
            raise ValueError(f"dim must be a spatial axis 0, 1 or 2, got {dim}")
        if margin < 0 or multiple < 1:
            raise ValueError(f"margin must be >= 0 and multiple >= 1, got {margin}, {multiple}")
        self.net, self.dim, self.margin, self.multiple = (
            net,
            int(dim),
            int(margin),
            int(multiple),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected input [B, C, X, Y, Z], got {list(x.shape)}")
        axis = 2 + self.dim
        n = x.shape[axis]
        total = n + 2 * self.margin
        total += (self.multiple - total % self.multiple) % self.multiple
        left = (total - n) // 2
        right = total - n - left
        if max(left, right) > n:
            raise ValueError(f"{n} samples along the periodic axis are fewer than the padding {max(left, right)}")
        xp = torch.cat([x.narrow(axis, n - left, left), x, x.narrow(axis, 0, right)], dim=axis)
        return self.net(xp).narrow(axis, left, n)


class SliceMarginLoss(nn.Module):
    """``loss(pred, target)`` over all but ``margin`` slices at each end of the last (Z) axis.

    Args:
        loss: an elementwise-reducing loss such as ``torch.nn.MSELoss()``.
        margin: slices dropped at each end (``slices // 2`` of a :class:`SliceStackUNet`; 0 keeps all).

    Shapes: ``pred``, ``target`` ``[B, C, X, Y, Z]`` with ``Z > 2 * margin``.
    """

    def __init__(self, loss: nn.Module, margin: int = 0) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.loss, self.margin = loss, int(margin)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.margin == 0:
            return self.loss(pred, target)
        nz = pred.shape[-1]
        if nz <= 2 * self.margin:
            raise ValueError(f"slab of {nz} slices leaves nothing after dropping {self.margin} at each end")
        keep = nz - 2 * self.margin
        return self.loss(pred.narrow(-1, self.margin, keep), target.narrow(-1, self.margin, keep))
