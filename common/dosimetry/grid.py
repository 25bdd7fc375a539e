"""Uniform grids in log(energy) with linear interpolation of tabulated values, the lookup every
energy-dependent table of :mod:`common.dosimetry` uses (photon cross sections, electron ranges).

Interpolation is linear in the tabulated values between two nodes, so it is monotone in each node
value: a table of node-wise maxima interpolates to an upper bound of every table it bounds, the
property Woodcock tracking needs of its majorant.
"""

from __future__ import annotations

import math

import torch

__all__ = ["LogGrid"]


class LogGrid:
    """Energies ``e0 * r**i`` for i = 0..n-1, uniform in log(E).

    Args:
        e_min: first node (keV, or any positive unit).
        e_max: last node, > ``e_min``.
        n: number of nodes, >= 2.
    """

    def __init__(self, e_min: float, e_max: float, n: int):
        if not (0 < e_min < e_max) or n < 2:
            raise ValueError(f"LogGrid needs 0 < e_min < e_max and n >= 2, got {e_min}, {e_max}, {n}.")
        self.e_min, self.e_max, self.n = float(e_min), float(e_max), int(n)
        self._log0 = math.log(self.e_min)
        self._step = (math.log(self.e_max) - self._log0) / (self.n - 1)

    def nodes(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """[n] node energies."""
        return torch.exp(self._log0 + self._step * torch.arange(self.n, dtype=dtype, device=device))

    def locate(self, energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower node index [N] (long) and fraction [N] in [0, 1] of ``energy`` (clamped to the grid)."""
        x = ((torch.log(energy) - self._log0) / self._step).clamp(0.0, self.n - 1.000001)
        i = x.floor()
        return i.long(), x - i

    @staticmethod
    def interp(table: torch.Tensor, index: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
        """Linear interpolation of ``table`` [n, *rest] at located points -> [N, *rest]."""
        lo, hi = table[index], table[index + 1]
        t = frac.reshape(frac.shape + (1,) * (table.dim() - 1)).to(table.dtype)
        return lo + t * (hi - lo)

    def __call__(self, table: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """``table`` [n, *rest] interpolated at ``energy`` [N] -> [N, *rest]."""
        return self.interp(table, *self.locate(energy))
