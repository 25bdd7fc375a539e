"""Counting noise: Poisson sampling, binomial thinning (reduced dose) and split-count pairs.

All functions take torch tensors on any device and an optional ``torch.Generator`` on the same
device; none touches the global RNG when a generator is given.
"""

from __future__ import annotations

import math

import torch

__all__ = ["poisson", "thin", "split_counts"]


def _as_float(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    x = x if x.is_floating_point() else x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf.")
    if (x < 0).any():
        raise ValueError(f"{name} contains negative values (min {x.min().item():g}).")
    return x


def _check_counts(counts: torch.Tensor) -> torch.Tensor:
    x = _as_float(counts, "counts")
    if (x != x.round()).any():
        raise ValueError("counts must be integer-valued (thinning applies to measured counts, not expectations).")
    return x


def poisson(expected: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson sample of expected counts.

    Args:
        expected: non-negative expected counts, any shape.
        generator: torch.Generator on ``expected``'s device, for reproducible draws.

    Returns:
        integer-valued counts, floating dtype of ``expected`` (float32 for integer input), same device.
    """
    return torch.poisson(_as_float(expected, "expected"), generator=generator)


def thin(counts: torch.Tensor, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binomial thinning: keep each count independently with probability ``fraction``.

    Thinning Poisson(lambda) counts gives Poisson(fraction x lambda) counts, the statistics of a
    study acquired with ``fraction`` of the dose or time (dose reduction factor 1 / fraction).

    Args:
        counts: non-negative integer-valued counts, any shape (e.g. a sinogram or projections).
        fraction: kept fraction in (0, 1].
        generator: torch.Generator on ``counts``' device.

    Returns:
        thinned counts, same shape, device and floating dtype as ``counts`` (float32 for integer input).
    """
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 < fraction <= 1):
        raise ValueError(f"fraction={fraction!r} must be a number in (0, 1].")
    x = _check_counts(counts)
    if fraction == 1:
        return x.clone()
    return torch.binomial(x, torch.full_like(x, float(fraction)), generator=generator)


def split_counts(
    counts: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split integer counts into two halves that sum to the input (noise2noise pairs).

    Each count goes to either half with probability 1/2, so for Poisson input the halves are
    independent Poisson images of half the dose.

    Returns:
        (first, second), each like :func:`thin` (counts, 0.5) and ``first + second == counts``.
    """
    x = _check_counts(counts)
    first = torch.binomial(x, torch.full_like(x, 0.5), generator=generator)
    return first, x - first
