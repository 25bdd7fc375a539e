"""Counting noise: Poisson sampling, binomial thinning (reduced dose) and split-count pairs.

All functions take torch tensors on any device and an optional ``torch.Generator`` on the same
device; none touches the global RNG when a generator is given.
"""

from __future__ import annotations

import math

import numpy as np
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
    independent Poisson images of half the dose. The first half of a bin holding n counts is the
    number of ones among n random bits (a bit stream of NumPy's PCG64, seeded from ``generator``):
    exactly Binomial(n, 1/2), with integer arithmetic only, so one seed gives the same halves on
    every machine. ``torch.binomial`` samples large counts with BTRS, whose ``log``/``lgamma``
    differ in the last bits between machines' math libraries, and moved the halves of one test
    subject by 5e-5 between two CI machines (DESIGN 9 asks for 1e-6).

    Returns:
        (first, second), each like :func:`thin` (counts, 0.5) and ``first + second == counts``.
    """
    x = _check_counts(counts)
    device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    rng = np.random.default_rng(seed)
    n = x.detach().cpu().numpy().astype(np.int64).ravel()
    first = np.zeros_like(n)
    nz = np.flatnonzero(n)
    ends = np.cumsum(n[nz])
    start, chunk_bits = 0, 1 << 27  # 128 Mbit (16 MB of random bytes) per pass bounds the memory
    while start < nz.size:
        done = int(ends[start - 1]) if start else 0
        stop = max(int(np.searchsorted(ends, done + chunk_bits, side="right")), start + 1)
        k = n[nz[start:stop]]
        total = int(ends[stop - 1]) - done
        bits = np.unpackbits(np.frombuffer(rng.bytes((total + 7) // 8), dtype=np.uint8), count=total)
        offsets = ends[start:stop] - k - done  # where each bin's bits begin in this pass
        first[nz[start:stop]] = np.add.reduceat(bits, offsets, dtype=np.int64)
        start = stop
    head = torch.from_numpy(first.reshape(tuple(x.shape))).to(device=x.device, dtype=x.dtype)
    return head, x - head
