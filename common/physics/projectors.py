"""SPECT and PET projectors (system matrices) with exact adjoints.

Both projectors take images ``[B?, X, Y, Z]`` (Z axial) on any device and return data with
the view axis third from the end, so one OSEM (``common.physics.recon``) serves both:

- :class:`SPECTProjector`: parallel-hole rotate-and-sum, ``forward(activity) -> [B?, views, u, v]``
  (u transaxial, v = Z), with attenuation (:class:`SPECTAttenuation`) and distance-dependent
  collimator blur (:class:`CollimatorPSF`) as separate pieces, in PyTomography's conventions.
- :class:`PETProjector`: 2D parallel-ray line integrals per axial slice over 180 degrees,
  ``forward(image) -> sinogram [B?, angles, bins, Z]``, attenuation factors exp(-int mu dl) as a
  diagonal in sinogram space, optional image-space Gaussian resolution.

Projection scale (both): plain voxel sums. Each voxel deposits exactly its value into every view
(bilinear footprints are normalised per view), so without attenuation, blur losses at the axial
edges or detector truncation, every view's total equals the image total. With an image of expected
emitted counts per voxel (activity [Bq/mL] x voxel volume [mL] x time per view [s] x counts per
decay), projections are expected detected counts; the caller applies that scale.

Geometry is in mm from ``spacing_mm``; mu maps are in 1/cm and path lengths are converted from mm
to cm once, here. Angle convention (PyTomography 3.4's, checked numerically): at gantry angle
``theta`` the detector lies in the direction ``n = (-sin theta, -cos theta)`` of the array axes
(x, y) seen from the image centre, and ``u`` increases along ``t = (cos theta, -sin theta)``; so
theta = 0 puts the camera at -y with u along +x, theta = 90 at -x with u along -y.
The PET projector uses the same ``n``, ``t`` for its angles in [0, 180).

Operators are built lazily on the device and dtype of the first input (sparse CSR matrices,
transposes stored, int32 indices) and rebuilt if another device/dtype arrives.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "COLLIMATORS",
    "FWHM_TO_SIGMA",
    "CollimatorPSF",
    "PETProjector",
    "SPECTAttenuation",
    "SPECTProjector",
    "gaussian_filter_mm",
]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

# Parallel-hole collimators: (hole diameter mm, hole length mm), SIMIND collim.col as shipped in
# PyTomography 3.4 (data/collim.col).
COLLIMATORS: dict[str, tuple[float, float]] = {
    "SY-LEHR": (1.11, 24.05),
    "SY-ME": (2.94, 40.64),
    "GI-LEHR": (1.50, 35.00),
    "GI-MEGP": (3.00, 58.00),
}


# ----------------------------------------------------------------------------------- validation
def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be three positive integers (X, Y, Z), got {shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    if len(spacing_mm) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing_mm):
        raise ValueError(f"spacing_mm must be three positive finite values, got {spacing_mm!r}")
    return tuple(float(s) for s in spacing_mm)  # type: ignore[return-value]


def _check_batch(x: torch.Tensor, shape: tuple[int, int, int], name: str, nonnegative: bool = False) -> tuple[torch.Tensor, bool]:
    """Validate a tensor [B?, *shape] (finite; >= 0 if ``nonnegative``); return it as [B, *shape]
    and whether a batch dim was given."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4) or tuple(x.shape[-3:]) != shape:
        raise ValueError(f"{name} must have shape [B?, {shape[0]}, {shape[1]}, {shape[2]}], got {tuple(x.shape)}")
    # One reduction, no mask allocated (this runs at every OSEM subset step; `(x < 0).any()` costs
    # 6x more): NaN propagates into both extremes and +-Inf shows in one of them.
    lo, hi = torch.aminmax(x)
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or Inf")
    if nonnegative and lo < 0:
        raise ValueError(f"{name} has negative values")
    return (x if x.ndim == 4 else x[None]), x.ndim == 4


def _check_mu(mu_map: torch.Tensor | None, shape: tuple[int, int, int]) -> torch.Tensor | None:
    if mu_map is None:
        return None
    if not isinstance(mu_map, torch.Tensor) or not mu_map.is_floating_point():
        raise ValueError(f"mu_map must be a floating-point torch.Tensor in 1/cm, got {type(mu_map).__name__}")
    if tuple(mu_map.shape) != shape:
        raise ValueError(f"mu_map shape {tuple(mu_map.shape)} differs from the image shape {shape}")
    if not torch.isfinite(mu_map).all():
        raise ValueError("mu_map contains NaN or Inf")
    if (mu_map < 0).any():
        raise ValueError("mu_map has negative attenuation coefficients (expected 1/cm >= 0)")
    if mu_map.max() > 5.0:
        # Bone at 140 keV is ~0.3 /cm; values in the hundreds are HU or 1/m.
        raise ValueError(f"mu_map max {float(mu_map.max()):.3g} is not plausible in 1/cm (HU or 1/m given?)")
    return mu_map.detach()


def _views_index(views: Sequence[int] | torch.Tensor | None, n_views: int) -> list[int]:
    if views is None:
        return list(range(n_views))
    idx = [int(v) for v in (views.tolist() if isinstance(views, torch.Tensor) else views)]
    if not idx or min(idx) < 0 or max(idx) >= n_views:
        raise ValueError(f"views must be non-empty indices in [0, {n_views}), got {idx[:8]}...")
    return idx


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta" on first use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow.to(torch.int32), col.to(torch.int32), val, size)


def _transpose_csr(m: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = m.t().to_sparse_csr()
    return _csr(t.crow_indices(), t.col_indices(), t.values(), tuple(t.shape))


def _bilinear(fx: torch.Tensor, fy: torch.Tensor, nx: int, ny: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear weights of points at fractional indices (fx, fy) on an [nx, ny] grid.

    Returns (point index, voxel index x*ny+y, weight) for the in-grid neighbours with weight > 0,
    ordered by point index (zero padding outside the grid, as grid_sample/kornia).
    """
    x0, y0 = torch.floor(fx), torch.floor(fy)
    wx, wy = fx - x0, fy - y0
    x0, y0 = x0.long(), y0.long()
    pts, cols, vals = [], [], []
    for dx, dy in ((0, 0), (0, 1), (1, 0), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        w = (wx if dx else 1 - wx) * (wy if dy else 1 - wy)
        pts.append(torch.arange(fx.numel(), device=fx.device))
        cols.append(xi * ny + yi)
        vals.append(torch.where((xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny) & (w > 0), w, torch.zeros_like(w)))
    p, c, v = torch.stack(pts, 1).flatten(), torch.stack(cols, 1).flatten(), torch.stack(vals, 1).flatten()
    keep = v > 0
    return p[keep], c[keep], v[keep]


def _line_samples(
    theta_deg: float, s_mm: torch.Tensor, u_mm: torch.Tensor, nx: int, ny: int, h: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear samples of an [nx, ny] grid (pixel h mm) at depth s and offset u along rays at theta.

    Returns (sample index s_i * len(u) + u_k, pixel index, weight, per-pixel weight sum [nx*ny]);
    dividing a weight by its pixel's sum makes every pixel deposit exactly its value.
    """
    n0, n1, t0, t1 = _unit_vectors(theta_deg)
    px = s_mm[:, None] * n0 + u_mm[None, :] * t0
    py = s_mm[:, None] * n1 + u_mm[None, :] * t1
    pt, col, w = _bilinear((px / h + (nx - 1) / 2).flatten(), (py / h + (ny - 1) / 2).flatten(), nx, ny)
    colsum = torch.zeros(nx * ny, device=w.device, dtype=w.dtype).index_add_(0, col, w)
    return pt, col, w, colsum


def _unit_vectors(theta_deg: float) -> tuple[float, float, float, float]:
    """Detector normal n and u axis t at gantry angle theta (PyTomography convention)."""
    th = math.radians(theta_deg)
    return -math.sin(th), -math.cos(th), math.cos(th), -math.sin(th)


def gaussian_filter_mm(
    image: torch.Tensor, fwhm_mm: float | Sequence[float], spacing_mm: Sequence[float], mode: str = "zeros"
) -> torch.Tensor:
    """Gaussian filter of ``image [..., X, Y, Z]`` with FWHM in mm (MONAI erf kernels, 4 sigma).

    ``mode`` is the padding of :func:`monai.networks.layers.separable_filtering`. With the
    default zero padding the kernel is symmetric and the filter its own adjoint (projectors);
    ``"replicate"`` keeps the level at a volume's border (image post-filters).
    """
    from monai.networks.layers.convutils import gaussian_1d
    from monai.networks.layers.simplelayers import separable_filtering

    fwhm = [float(fwhm_mm)] * 3 if np.isscalar(fwhm_mm) else [float(f) for f in fwhm_mm]  # type: ignore[arg-type]
    if len(fwhm) != 3 or any(not math.isfinite(f) or f < 0 for f in fwhm):
        raise ValueError(f"fwhm_mm must be >= 0 (scalar or 3 values), got {fwhm_mm!r}")
    if all(f == 0 for f in fwhm):
        return image
    kernels = [
        gaussian_1d(torch.tensor(f * FWHM_TO_SIGMA / s), truncated=4.0, approx="erf", normalize=True).to(image)
        if f > 0
        else torch.ones(1).to(image)
        for f, s in zip(fwhm, spacing_mm)
    ]
    x = image.reshape(-1, 1, *image.shape[-3:])
    return separable_filtering(x, kernels, mode=mode).reshape(image.shape)


def _blur_shifted(image: torch.Tensor, fwhm_mm: float | Sequence[float], spacing_mm: Sequence[float]) -> torch.Tensor:
    """:func:`gaussian_filter_mm` (zero padding, same kernels) of ``image [B, X, Y, Z]`` by shifted adds.

    Equal to it within float rounding and its own adjoint; 5-10x faster on CPU than MONAI's
    single-channel conv3d for the few-tap kernels of a scanner PSF (PET projector, issue 18).
    """
    from monai.networks.layers.convutils import gaussian_1d

    fwhm = [float(fwhm_mm)] * 3 if np.isscalar(fwhm_mm) else [float(f) for f in fwhm_mm]  # type: ignore[arg-type]
    out = image
    for dim, (f, sp) in enumerate(zip(fwhm, spacing_mm), start=image.ndim - 3):
        if f <= 0:
            continue
        k = gaussian_1d(torch.tensor(f * FWHM_TO_SIGMA / sp), truncated=4.0, approx="erf", normalize=True).tolist()
        half, n = (len(k) - 1) // 2, out.shape[dim]
        acc = out * k[half]
        for j, w in enumerate(k):
            d = j - half  # acc[i] += w * out[i + d]
            if d == 0 or abs(d) >= n:
                continue
            lo, hi = max(0, -d), n - max(0, d)
            acc.narrow(dim, lo, hi - lo).add_(out.narrow(dim, lo + d, hi - lo), alpha=w)
        out = acc
    return out


# ------------------------------------------------------------------------------- physics pieces
@dataclass(frozen=True)
class CollimatorPSF:
    """Distance-dependent Gaussian collimator-detector response of a parallel-hole camera.

    ``FWHM(d) = sqrt((slope * d + intercept_mm)^2 + intrinsic_fwhm_mm^2)`` with ``d`` (mm) the
    distance from the detector face, as PyTomography's ``get_psfmeta_from_scanner_params``.

    Args:
        slope: FWHM growth per mm of distance (D / L_eff).
        intercept_mm: FWHM at the collimator face (hole diameter D).
        intrinsic_fwhm_mm: intrinsic camera resolution at the photon energy, added in quadrature.
    """

    slope: float
    intercept_mm: float
    intrinsic_fwhm_mm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("slope", "intercept_mm", "intrinsic_fwhm_mm"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"CollimatorPSF.{name} must be finite and >= 0, got {v}")

    @classmethod
    def from_collimator(
        cls,
        collimator: str | tuple[float, float],
        energy_keV: float,
        intrinsic_fwhm_140keV_mm: float = 0.0,
        mu_lead_per_cm: float | None = None,
    ) -> CollimatorPSF:
        """Geometric PSF from hole diameter D and length L: FWHM_coll(d) = D (d + L_eff) / L_eff.

        ``L_eff = L - 2 / mu_Pb`` (septal penetration shortens the holes); mu of lead at
        ``energy_keV`` from xraydb (density 11.35 g/cm3) unless given. Intrinsic resolution is
        scaled from 140 keV as E^-1/2.

        Args:
            collimator: a key of :data:`COLLIMATORS` or (hole diameter mm, hole length mm).
        """
        if isinstance(collimator, str):
            if collimator not in COLLIMATORS:
                raise ValueError(f"collimator {collimator!r} unknown; known: {sorted(COLLIMATORS)}")
            diameter, length = COLLIMATORS[collimator]
        else:
            diameter, length = (float(v) for v in collimator)
        if not (diameter > 0 and length > 0):
            raise ValueError(f"collimator hole diameter and length must be > 0 mm, got {collimator!r}")
        if not (math.isfinite(energy_keV) and energy_keV > 0):
            raise ValueError(f"energy_keV must be > 0, got {energy_keV}")
        if mu_lead_per_cm is None:
            import xraydb

            mu_lead_per_cm = float(xraydb.material_mu("Pb", energy_keV * 1e3, density=11.35))
        l_eff = length - 20.0 / mu_lead_per_cm  # 2/mu in cm -> mm
        if l_eff <= 0:
            raise ValueError(
                f"collimator {collimator!r} is transparent at {energy_keV} keV (L_eff = {l_eff:.2f} mm); "
                "use a medium/high-energy collimator"
            )
        intrinsic = intrinsic_fwhm_140keV_mm * math.sqrt(140.0 / energy_keV)
        return cls(diameter / l_eff, diameter, intrinsic)

    def fwhm_mm(self, distance_mm: np.ndarray | float) -> np.ndarray:
        d = np.clip(np.asarray(distance_mm, dtype=np.float64), 0.0, None)
        return np.sqrt((self.slope * d + self.intercept_mm) ** 2 + self.intrinsic_fwhm_mm**2)

    def sigma_mm(self, distance_mm: np.ndarray | float) -> np.ndarray:
        return self.fwhm_mm(distance_mm) * FWHM_TO_SIGMA


class SPECTAttenuation:
    """Probability that a photon from each depth plane reaches the detector.

    Planes are ordered from the detector inwards (index 0 nearest). PyTomography's convention:
    a voxel's own path counts half, ``exp(-(cumsum(mu dx) - mu dx / 2))``.

    Args:
        mu_map: [X, Y, Z] linear attenuation coefficients (1/cm) at the photopeak energy.
    """

    def __init__(self, mu_map: torch.Tensor, shape: tuple[int, int, int] | None = None) -> None:
        self.mu_map = _check_mu(mu_map, tuple(mu_map.shape) if shape is None else shape)

    @staticmethod
    def detection_probability(mu_planes: torch.Tensor, step_cm: float, dim: int = 0) -> torch.Tensor:
        """``exp(-(cumsum(mu dx) - mu dx / 2))`` along ``dim``; overwrites ``mu_planes`` (a temporary).

        Computed in place as ``exp(-(S[p] + S[p-1]))`` with ``S`` the running sum of ``mu dx / 2``,
        plane by plane: torch's ``cumsum`` over a leading dimension is 3x slower than that loop
        on CPU, and a second buffer costs as much again in first-touch page faults (issue 18
        profile); every SPECT view needs this once per geometry.
        """
        s = mu_planes.mul_(step_cm / 2).movedim(dim, 0)
        for p in range(1, s.shape[0]):
            s[p].add_(s[p - 1])
        for p in range(s.shape[0] - 1, 0, -1):
            s[p].add_(s[p - 1])
        return s.neg_().exp_().movedim(0, dim)


# ---------------------------------------------------------------------------------------- SPECT
def _gauss_kernels(var_px: np.ndarray, half: int) -> np.ndarray:
    """Sampled, normalised Gaussians with variances var_px (pixel^2) on offsets -half..half."""
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2 * np.asarray(var_px, dtype=np.float64)[..., None] + 1e-11))
    k /= k.sum(-1, keepdims=True)
    # Taps below 1e-20 of the kernel's mass change no float32 result, but in float32 they are
    # subnormal numbers (< 1.2e-38) or make them, and every multiply-add on a subnormal costs
    # ~15x: the SPECT axial blur took 14.7 ms per view instead of 1.0 (issue 18 profile).
    k[k < 1e-20] = 0.0
    return k


def _psf_nodes(var_mm2: np.ndarray, h: float, hz: float, half_u: int, half_z: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Depth grouping of a depth-dependent blur: node variances and interpolation weights.

    Each plane's kernel k(v) is replaced by (1 - t) k(v_a) + t k(v_b), t linear in variance (so the
    kernel's mass and variance are exact), with nodes chosen greedily on a fine variance grid so
    the L1 error of the 2D kernel stays below ``tol``. ``tol = 0`` gives one node per distinct plane.

    Returns (node variances [J] in mm^2, weights [*var_mm2.shape[:-1], J, planes]).
    """
    flat = np.unique(var_mm2)
    if tol <= 0 or flat.size == 1:
        nodes = flat
    else:
        s = np.linspace(math.sqrt(flat[0]), math.sqrt(flat[-1]), 257)
        grid = s**2
        ku, kz = _gauss_kernels(grid / h**2, half_u), _gauss_kernels(grid / hz**2, half_z)

        def err(a: int, b: int) -> float:
            m = np.arange(a + 1, b)
            t = ((grid[m] - grid[a]) / (grid[b] - grid[a]))[:, None, None]
            k2 = lambda i: ku[i][:, :, None] * kz[i][:, None, :]  # noqa: E731
            approx = (1 - t) * k2(np.array([a]))[0] + t * k2(np.array([b]))[0]
            return float(np.abs(approx - k2(m)).sum((1, 2)).max()) if m.size else 0.0

        idx, a = [0], 0
        while a < grid.size - 1:
            b = a + 1
            while b + 1 < grid.size and err(a, b + 1) <= tol:
                b += 1
            idx.append(b)
            a = b
        nodes = grid[idx]
    # Hat-function weights in variance between neighbouring nodes.
    j = np.clip(np.searchsorted(nodes, var_mm2, side="right") - 1, 0, max(nodes.size - 2, 0))
    weights = np.zeros(var_mm2.shape[:-1] + (nodes.size, var_mm2.shape[-1]))
    if nodes.size == 1:
        weights[..., 0, :] = 1.0
        return nodes, weights
    t = np.clip((var_mm2 - nodes[j]) / (nodes[j + 1] - nodes[j]), 0.0, 1.0)
    lead = np.indices(var_mm2.shape)
    np.add.at(weights, (*lead[:-1], j, lead[-1]), 1 - t)
    np.add.at(weights, (*lead[:-1], j + 1, lead[-1]), t)
    return nodes, weights


def _toeplitz(kernels: np.ndarray, n_out: int, n_in: int, offset: int) -> np.ndarray:
    """Blur matrices [J, n_out, n_in]: out[m] = sum_k kernel[k - m - offset + half] in[k]."""
    half = (kernels.shape[-1] - 1) // 2
    diff = np.arange(n_in)[None, :] - np.arange(n_out)[:, None] - offset + half
    valid = (diff >= 0) & (diff <= 2 * half)
    return np.where(valid[None], kernels[:, np.clip(diff, 0, 2 * half)], 0.0)


class _LazyOperators:
    """Operators built on the first input's device and dtype, rebuilt when another arrives."""

    _ops: dict | None = None

    def _build(self, device: torch.device, dtype: torch.dtype) -> dict:
        raise NotImplementedError

    def _get_ops(self, device: torch.device, dtype: torch.dtype) -> dict:
        if self._ops is None or self._ops["key"] != (device, dtype):
            self._ops = None  # free the old copy first
            self._ops = self._build(device, dtype)
        return self._ops


class SPECTProjector(_LazyOperators):
    """Parallel-hole SPECT system matrix: rotate, attenuate, blur by depth, sum (PyTomography-like).

    ``forward(activity [B?, X, Y, Z]) -> projections [B?, n_views, n_u, Z]`` and its exact
    transpose ``adjoint``; ``views=`` selects a subset of views (OSEM). Scale: plain voxel sums
    (see module docstring): without attenuation, every view's total equals the object's total
    (minus what blur pushes past the axial edges or the detector edge).

    Per view, a sparse bilinear matrix (columns normalised so each voxel deposits exactly its
    value) samples the object on planes parallel to the detector (in-plane step = voxel size).
    Attenuation multiplies each plane (:class:`SPECTAttenuation`); the collimator blur
    (:class:`CollimatorPSF`) of each plane is a Gaussian in (u, v) with sigma(d), d = distance from
    the detector clipped at 0 (as PyTomography). Planes are grouped into a few blur nodes (linear
    interpolation in variance, kernel L1 error <= ``psf_tolerance``) so the blur costs J << planes
    2D convolutions per view; ``psf_tolerance=0`` blurs each plane with its own kernel.

    Args:
        shape: image shape (X, Y, Z); Z axial.
        spacing_mm: voxel size (sx, sy, sz) in mm; sx == sy (the detector pixel is sx by sz).
        n_views: number of views, at ``start_deg + k * arc_deg / n_views`` (degrees, see module
            docstring for the direction convention).
        arc_deg: 360 (body) or 180 (cardiac).
        radius_mm: distance from the image centre to the detector face; scalar or one per view.
            Default: half the in-plane diagonal of the image (the smallest orbit that clears it).
        mu_map: [X, Y, Z] attenuation coefficients in 1/cm at the photopeak, or None.
        psf: collimator response, or None for no blur.
        n_u: detector bins along u (default Y), centred on the image centre.
        start_deg: first gantry angle.
        psf_tolerance: L1 error allowed per plane kernel by the depth grouping.
        min_sigmas: kernels are truncated at ``min_sigmas`` times the largest sigma (PyTomography: 3).
        cache_mb: memory for caching per-view attenuation factors, in MB. The views computed first
            are kept until the budget is full and never evicted: projections and OSEM subsets sweep
            the views in cycles, where a least-recently-used cache smaller than all views never hits
            (issue 18). All views take 4 * planes * (n_u + 2 half_u) * Z * n_views bytes: 1.7 GB
            for 128^3 x 120 views with a medium-energy PSF, which the default holds; a view
            computed again costs about 15 ms (128^3, one thread).
    """

    def __init__(
        self,
        shape: Sequence[int],
        spacing_mm: Sequence[float],
        n_views: int,
        arc_deg: float = 360.0,
        radius_mm: float | Sequence[float] | None = None,
        mu_map: torch.Tensor | None = None,
        psf: CollimatorPSF | None = None,
        *,
        n_u: int | None = None,
        start_deg: float = 0.0,
        psf_tolerance: float = 1e-2,
        min_sigmas: float = 3.0,
        cache_mb: float = 2048.0,
    ) -> None:
        self.shape = _check_shape(shape)
        self.spacing_mm = _check_spacing(spacing_mm)
        if not math.isclose(self.spacing_mm[0], self.spacing_mm[1], rel_tol=1e-6):
            raise ValueError(f"spacing_mm must be isotropic in-plane (sx == sy), got {spacing_mm!r}")
        if int(n_views) != n_views or n_views < 1:
            raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
        if not (0 < arc_deg <= 360):
            raise ValueError(f"arc_deg must be in (0, 360], got {arc_deg}")
        if psf is not None and not isinstance(psf, CollimatorPSF):
            raise ValueError(f"psf must be a CollimatorPSF or None, got {type(psf).__name__}")
        if not (psf_tolerance >= 0 and min_sigmas > 0):
            raise ValueError("psf_tolerance must be >= 0 and min_sigmas > 0")
        self.n_views = int(n_views)
        X, Y, Z = self.shape
        h = self.spacing_mm[0]
        self.n_u = Y if n_u is None else int(n_u)
        if self.n_u < 1:
            raise ValueError(f"n_u must be >= 1, got {n_u}")
        self.angles_deg = start_deg + np.arange(self.n_views) * arc_deg / self.n_views
        half_diag = 0.5 * h * math.hypot(X, Y)
        radii = np.broadcast_to(np.asarray(half_diag if radius_mm is None else radius_mm, dtype=np.float64), (self.n_views,))
        if radii.shape != (self.n_views,) or not np.all(np.isfinite(radii) & (radii > 0)):
            raise ValueError(f"radius_mm must be > 0, scalar or one per view ({self.n_views}), got {radius_mm!r}")
        self.radius_mm = radii.copy()
        self.attenuation = None if mu_map is None else SPECTAttenuation(mu_map, self.shape)
        self.psf = psf

        # Depth planes (nearest the detector first) covering the image's circumscribed circle,
        # PyTomography's padding: L + 2 ceil((sqrt 2 - 1) L / 2).
        L = max(X, Y)
        self._n_planes = L + 2 * math.ceil((math.sqrt(2) - 1) * L / 2)
        self._depth_mm = ((self._n_planes - 1) / 2 - np.arange(self._n_planes)) * h
        uniq_r, self._radius_index = np.unique(self.radius_mm, return_inverse=True)
        if psf is None:
            self._half_u = self._half_z = 0
            self._node_var = np.zeros(1)
            self._weights = np.ones((uniq_r.size, 1, self._n_planes))
        else:
            sig = psf.sigma_mm(uniq_r[:, None] - self._depth_mm[None, :])
            self._half_u = int(math.ceil(min_sigmas * sig.max() / h))
            self._half_z = int(math.ceil(min_sigmas * sig.max() / self.spacing_mm[2]))
            self._node_var, self._weights = _psf_nodes(sig**2, h, self.spacing_mm[2], self._half_u, self._half_z, psf_tolerance)
        self._n_up = self.n_u + 2 * self._half_u
        self._cache_bytes = int(cache_mb * 2**20)
        self._ops: dict | None = None

    @property
    def n_nodes(self) -> int:
        """Number of blur nodes (depth groups) per view."""
        return int(self._node_var.size)

    @property
    def data_shape(self) -> tuple[int, int, int]:
        return (self.n_views, self.n_u, self.shape[2])

    # -------------------------------------------------------------------------------- build
    def _build(self, device: torch.device, dtype: torch.dtype) -> dict:
        X, Y, Z = self.shape
        h, hz = self.spacing_mm[0], self.spacing_mm[2]
        P, Up, half_u = self._n_planes, self._n_up, self._half_u
        # u grid: detector bins extended by the kernel half-width; the column sums for the
        # normalisation use the whole circle so truncation at the detector edge stays physical.
        ext = max(half_u, math.ceil(0.5 * (P - self.n_u)) + 1)
        u_mm = (torch.arange(-ext, self.n_u + ext, device=device, dtype=torch.float64) - (self.n_u - 1) / 2) * h
        s_mm = torch.as_tensor(self._depth_mm, device=device, dtype=torch.float64)
        n_ext = u_mm.numel()
        band = (torch.arange(n_ext, device=device) >= ext - half_u) & (
            torch.arange(n_ext, device=device) < ext + self.n_u + half_u
        )
        mats, mats_t, mats_sum = [], [], []
        for theta in self.angles_deg:
            pt, col, w, cs = _line_samples(float(theta), s_mm, u_mm, X, Y, h)
            plane, k = pt // n_ext, pt % n_ext
            keep = band[k]
            row = plane[keep] * Up + (k[keep] - (ext - half_u))
            col, w = col[keep], w[keep]
            crow = torch.zeros(P * Up + 1, device=device, dtype=torch.int64)
            crow[1:] = torch.cumsum(torch.bincount(row, minlength=P * Up), 0)
            m = _csr(crow, col, (w / cs[col]).to(dtype), (P * Up, X * Y))
            mats.append(m)
            mats_t.append(_transpose_csr(m))
            if self.attenuation is not None:  # the same samples without the normalisation, for mu;
                # it shares m's (int32) index tensors instead of a second copy of them
                mats_sum.append(_csr(m.crow_indices(), m.col_indices(), w.to(dtype), (P * Up, X * Y)))
        ops = {
            "key": (device, dtype),
            "M": mats,
            "MT": mats_t,
            "M_sum": mats_sum,
            "att": {},
            "att_bytes": 0,
        }
        if self.attenuation is not None:
            ops["mu"] = self.attenuation.mu_map.to(device=device, dtype=dtype).reshape(X * Y, Z)
        if self.psf is not None:
            ops["C"] = torch.as_tensor(self._weights, device=device, dtype=dtype)  # [R, J, P]
            ku = _gauss_kernels(self._node_var / h**2, half_u)
            kz = _gauss_kernels(self._node_var / hz**2, self._half_z)
            gu = _toeplitz(ku, self.n_u, Up, half_u)  # [J, n_u, Up]
            ops["Gu"] = torch.as_tensor(np.concatenate(list(gu), axis=1), device=device, dtype=dtype)  # [n_u, J*Up]
            ops["GzT"] = torch.as_tensor(_toeplitz(kz, Z, Z, 0).transpose(0, 2, 1).copy(), device=device, dtype=dtype)
            # the adjoint's axial blur as its own contiguous matrix: a transposed view in the batched
            # matmul was 10x slower than the forward's (issue 18 profile)
            ops["Gz"] = ops["GzT"].transpose(1, 2).contiguous()
        return ops

    def _att(self, ops: dict, v: int) -> torch.Tensor | None:
        """Detection probability of view v on the rotated grid, [P, Up, 1, Z] (cached while the
        budget ``cache_mb`` lasts; see the class docstring)."""
        if self.attenuation is None:
            return None
        cache: dict = ops["att"]
        if v in cache:
            return cache[v]
        mu_rot = ops["M_sum"][v] @ ops["mu"]  # un-normalised interpolation
        att = SPECTAttenuation.detection_probability(
            mu_rot.view(self._n_planes, self._n_up, 1, -1), self.spacing_mm[0] / 10.0, dim=0
        )
        nbytes = att.numel() * att.element_size()
        if ops["att_bytes"] + nbytes <= self._cache_bytes:
            cache[v] = att
            ops["att_bytes"] += nbytes
        return att

    # ------------------------------------------------------------------------------ operators
    def forward(self, activity: torch.Tensor, views: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Project ``activity [B?, X, Y, Z]`` (>= 0) to ``[B?, len(views), n_u, Z]``."""
        x, batched = _check_batch(activity, self.shape, "activity", nonnegative=True)
        idx = _views_index(views, self.n_views)
        ops = self._get_ops(x.device, x.dtype)
        B, (X, Y, Z) = x.shape[0], self.shape
        P, Up, J = self._n_planes, self._n_up, self.n_nodes
        cols = x.permute(1, 2, 0, 3).reshape(X * Y, B * Z)
        out = x.new_empty(len(idx), self.n_u, B * Z)
        for i, v in enumerate(idx):
            r = (ops["M"][v] @ cols).view(P, Up, B, Z)
            att = self._att(ops, v)
            if att is not None:
                r.mul_(att)
            if self.psf is None:
                out[i] = r.sum(0).view(Up, B * Z)
                continue
            y = (ops["C"][self._radius_index[v]] @ r.view(P, -1)).view(J, Up * B, Z)  # depth groups
            y = torch.matmul(y, ops["GzT"])  # axial blur per group
            torch.mm(ops["Gu"], y.view(J * Up, B * Z), out=out[i])  # transaxial blur + sum over groups
        out = out.view(len(idx), self.n_u, B, Z).permute(2, 0, 1, 3)
        return out if batched else out[0]

    def adjoint(self, projections: torch.Tensor, views: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Exact transpose of :meth:`forward`: ``[B?, len(views), n_u, Z] -> [B?, X, Y, Z]``."""
        idx = _views_index(views, self.n_views)
        y, batched = _check_batch(projections, (len(idx), self.n_u, self.shape[2]), "projections")
        ops = self._get_ops(y.device, y.dtype)
        B, (X, Y, Z) = y.shape[0], self.shape
        P, Up, J = self._n_planes, self._n_up, self.n_nodes
        acc = y.new_zeros(X * Y, B * Z)
        data = y.permute(1, 2, 0, 3).reshape(len(idx), self.n_u, B * Z)
        for i, v in enumerate(idx):
            if self.psf is None:
                r = data[i].view(1, Up, B, Z).expand(P, Up, B, Z)
            else:
                g = (ops["Gu"].t() @ data[i]).view(J, Up * B, Z)
                g = torch.matmul(g, ops["Gz"])
                r = (ops["C"][self._radius_index[v]].t() @ g.view(J, -1)).view(P, Up, B, Z)
            att = self._att(ops, v)
            if att is not None:
                r = r * att if self.psf is None else r.mul_(att)  # without blur, r is a broadcast view
            acc.addmm_(ops["MT"][v], r.reshape(P * Up, B * Z))  # 2x faster than acc += MT @ r
        out = acc.view(X, Y, B, Z).permute(2, 0, 1, 3)
        return out if batched else out[0]

    __call__ = forward


# ------------------------------------------------------------------------------------------ PET
@functools.lru_cache(maxsize=4)
def _pet_geometry(
    shape: tuple[int, int, int], h: float, n_views: int, nb: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, dict]:
    """PET parallel-ray system matrix [n_views * nb, X * Y] of one geometry and an empty subset cache."""
    X, Y, _ = shape
    angles_deg = np.arange(n_views) * 180.0 / n_views
    n_s = int(math.ceil(math.hypot(X, Y))) + 2
    s_mm = (torch.arange(n_s, device=device, dtype=torch.float64) - (n_s - 1) / 2) * h
    ext = max(0, (n_s - nb) // 2 + 1)  # column sums over the whole circle (see SPECT)
    u_mm = (torch.arange(-ext, nb + ext, device=device, dtype=torch.float64) - (nb - 1) / 2) * h
    n_ext = u_mm.numel()
    counts, cols, vals = [], [], []
    for theta in angles_deg:
        pt, col, w, cs = _line_samples(float(theta), s_mm, u_mm, X, Y, h)
        k = pt % n_ext - ext
        keep = (k >= 0) & (k < nb)
        # Sum the samples of one (bin, pixel) pair along the line: unique keys, sorted by bin.
        key, inv = torch.unique(k[keep] * (X * Y) + col[keep], return_inverse=True)
        vals.append(torch.zeros(key.numel(), device=device, dtype=torch.float64).index_add_(0, inv, (w / cs[col])[keep]))
        cols.append(key % (X * Y))
        counts.append(torch.bincount(key // (X * Y), minlength=nb))
    crow = torch.zeros(n_views * nb + 1, device=device, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.cat(counts), 0)
    A = _csr(crow, torch.cat(cols), torch.cat(vals).to(dtype), (n_views * nb, X * Y))
    return A, {}


class PETProjector(_LazyOperators):
    """2D parallel-ray PET projector per axial slice, with attenuation and image-space resolution.

    ``forward(image [B?, X, Y, Z]) -> sinogram [B?, n_angles, n_bins, Z]`` =
    ``a * (A @ blur(image))`` with A a sparse matrix of bilinear line sums (step = pixel size,
    columns normalised so each pixel deposits exactly its value in every angle), ``a =
    exp(-line integral of mu)`` the attenuation factor per line of response, ``blur`` a Gaussian
    of FWHM ``psf_fwhm_mm``. ``adjoint`` is the exact transpose. Scale: plain voxel sums (every
    angle's total equals the slice total without attenuation and truncation).

    Args:
        shape: (X, Y, Z); spacing_mm: (sx, sy, sz) with sx == sy (bin width = sx).
        n_angles: angles at k * 180 / n_angles degrees (convention in the module docstring).
        n_bins: radial bins centred on the image centre; default covers the image diagonal.
        mu_map: [X, Y, Z] in 1/cm at 511 keV, or None.
        psf_fwhm_mm: scalar or (in-plane, in-plane, axial) Gaussian FWHM in mm, or None.
    """

    def __init__(
        self,
        shape: Sequence[int],
        spacing_mm: Sequence[float],
        n_angles: int,
        n_bins: int | None = None,
        mu_map: torch.Tensor | None = None,
        psf_fwhm_mm: float | Sequence[float] | None = None,
    ) -> None:
        self.shape = _check_shape(shape)
        self.spacing_mm = _check_spacing(spacing_mm)
        if not math.isclose(self.spacing_mm[0], self.spacing_mm[1], rel_tol=1e-6):
            raise ValueError(f"spacing_mm must be isotropic in-plane (sx == sy), got {spacing_mm!r}")
        if int(n_angles) != n_angles or n_angles < 1:
            raise ValueError(f"n_angles must be a positive integer, got {n_angles!r}")
        X, Y, _ = self.shape
        self.n_views = int(n_angles)
        self.n_bins = int(n_bins) if n_bins is not None else int(math.ceil(math.hypot(X, Y))) + 1
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.angles_deg = np.arange(self.n_views) * 180.0 / self.n_views
        self.mu_map = _check_mu(mu_map, self.shape)
        self.psf_fwhm_mm = psf_fwhm_mm
        self._psf_xy = self._psf_z = None
        if psf_fwhm_mm is not None:
            gaussian_filter_mm(torch.zeros(1, 1, 1), psf_fwhm_mm, self.spacing_mm)  # validates
            fx, fy, fz = [float(psf_fwhm_mm)] * 3 if np.isscalar(psf_fwhm_mm) else [float(f) for f in psf_fwhm_mm]  # type: ignore[arg-type]
            # The axial blur commutes with the slice-wise projection and the attenuation factors come
            # after both, so it runs on the (subset) sinogram, 16x smaller than the image in OSEM 4x16.
            self._psf_xy = (fx, fy, 0.0) if fx or fy else None
            self._psf_z = (0.0, 0.0, fz) if fz else None
        self._ops: dict | None = None

    @property
    def data_shape(self) -> tuple[int, int, int]:
        return (self.n_views, self.n_bins, self.shape[2])

    def _blur_sinogram(self, sino: torch.Tensor) -> torch.Tensor:
        """Axial part of the PSF on a sinogram [..., Z] (identity without one)."""
        return sino if self._psf_z is None else _blur_shifted(sino, self._psf_z, (1.0, 1.0, self.spacing_mm[2]))

    def _build(self, device: torch.device, dtype: torch.dtype) -> dict:
        X, Y, Z = self.shape
        h = self.spacing_mm[0]
        # The geometry matrix depends only on the geometry: shared by every projector of it
        # (e.g. the three mu-maps of one evaluation), so it is built once per process.
        A, subsets = _pet_geometry(self.shape, h, self.n_views, self.n_bins, device, dtype)
        ops = {"key": (device, dtype), "A": A, "subsets": subsets, "att_rows": {}}
        ops["att"] = None
        if self.mu_map is not None:
            mu = self.mu_map.to(device=device, dtype=dtype).reshape(X * Y, Z)
            ops["att"] = torch.exp(-(A @ mu) * (h / 10.0)).view(self.n_views, self.n_bins, Z)  # mm -> cm
        return ops

    def _matrices(self, ops: dict, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Row block of A for the angles idx and its transpose (cached per subset)."""
        key = tuple(idx)
        if key not in ops["subsets"]:
            A, nb = ops["A"], self.n_bins
            if key == tuple(range(self.n_views)):
                sub = A
            else:
                crow = A.crow_indices().long()
                first = torch.tensor(idx, device=crow.device) * nb
                starts, ends = crow[first], crow[first + nb]
                pos = torch.cat([torch.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist())]).to(crow.device)
                blocks = torch.cat([crow[a * nb : (a + 1) * nb + 1].diff() for a in idx])
                new_crow = torch.zeros(len(idx) * nb + 1, dtype=torch.long, device=crow.device)
                new_crow[1:] = blocks.cumsum(0)
                sub = _csr(new_crow, A.col_indices()[pos], A.values()[pos], (len(idx) * nb, A.shape[1]))
            ops["subsets"][key] = (sub, _transpose_csr(sub))
        return ops["subsets"][key]

    def _att_rows(self, ops: dict, idx: list[int]) -> torch.Tensor | None:
        """Attenuation factors of the angles idx as [len(idx), n_bins, 1, Z] (cached per subset)."""
        if ops["att"] is None:
            return None
        key = tuple(idx)
        if key not in ops["att_rows"]:
            ops["att_rows"][key] = ops["att"][idx].unsqueeze(2)
        return ops["att_rows"][key]

    def line_integrals(self, mu_map: torch.Tensor) -> torch.Tensor:
        """Line integrals of ``mu_map [B?, X, Y, Z]`` (1/cm) over all lines of response (dimensionless)."""
        x, batched = _check_batch(mu_map, self.shape, "mu_map")
        ops = self._get_ops(x.device, x.dtype)
        B, (X, Y, Z) = x.shape[0], self.shape
        out = (ops["A"] @ x.permute(1, 2, 0, 3).reshape(X * Y, B * Z)) * (self.spacing_mm[0] / 10.0)
        out = out.view(self.n_views, self.n_bins, B, Z).permute(2, 0, 1, 3)
        return out if batched else out[0]

    def forward(self, image: torch.Tensor, views: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Project ``image [B?, X, Y, Z]`` (>= 0) to ``[B?, len(views), n_bins, Z]``."""
        x, batched = _check_batch(image, self.shape, "image", nonnegative=True)
        idx = _views_index(views, self.n_views)
        ops = self._get_ops(x.device, x.dtype)
        if self._psf_xy is not None:
            x = _blur_shifted(x, self._psf_xy, self.spacing_mm)
        B, (X, Y, Z) = x.shape[0], self.shape
        A, _ = self._matrices(ops, idx)
        sino = self._blur_sinogram((A @ x.permute(1, 2, 0, 3).reshape(X * Y, B * Z)).view(len(idx), self.n_bins, B, Z))
        att = self._att_rows(ops, idx)
        if att is not None:
            sino = sino * att
        sino = sino.permute(2, 0, 1, 3)
        return sino if batched else sino[0]

    def adjoint(self, sinogram: torch.Tensor, views: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Exact transpose of :meth:`forward`: ``[B?, len(views), n_bins, Z] -> [B?, X, Y, Z]``."""
        idx = _views_index(views, self.n_views)
        y, batched = _check_batch(sinogram, (len(idx), self.n_bins, self.shape[2]), "sinogram")
        ops = self._get_ops(y.device, y.dtype)
        B, (X, Y, Z) = y.shape[0], self.shape
        y = y.permute(1, 2, 0, 3)  # [A, nb, B, Z]
        att = self._att_rows(ops, idx)
        if att is not None:
            y = y * att
        y = self._blur_sinogram(y)
        _, AT = self._matrices(ops, idx)
        img = (AT @ y.reshape(len(idx) * self.n_bins, B * Z)).view(X, Y, B, Z).permute(2, 0, 1, 3)
        if self._psf_xy is not None:
            img = _blur_shifted(img, self._psf_xy, self.spacing_mm)
        return img if batched else img[0]

    __call__ = forward
