"""SPECT acquisitions from phantoms: projections at all views and at sparse subsets, Poisson
counts, attenuation-corrected OSEM in Bq/mL, the linear view-interpolation baseline. The
``spect_projection_completion`` dataset task that uses them lives with its bundle
(``bundles/spect_projection_completion/spect_projection_completion/dataset.py``).

Acquisition model (parallel-hole camera, :class:`common.physics.projectors.SPECTProjector`)::

    primary  = k * P_att,psf(C_scan)            P: attenuation (hu_to_mu(CT, E)) and depth-dependent
                                                collimator blur (CollimatorPSF.from_collimator)
    scatter  = SPR * smooth(primary) * sum(primary) / sum(smooth(primary))
    counts   = Poisson(primary + scatter)
    k        = voxel volume [mL] * S [counts / (s Bq)] * t_view [s]     (count_scale)

``C_scan`` = phantom concentration (decay-corrected to injection) x decay_factor(uptake time). The
count level is physical, not tuned (DESIGN 5.1): ``S`` is the system sensitivity of one head in
the photopeak window, derived from the collimator geometry with Anger's formula
(:func:`collimator_sensitivity`)::

    S = g * Y * eps * 1e6  [cps/MBq],   g = K^2 (D / L_eff)^2 (D / (D + t))^2,   L_eff = L - 2 / mu_Pb(E)

with K = 0.26 (hexagonal holes in a hexagonal array; Cherry, Sorenson & Phelps, Physics in
Nuclear Medicine, 4th ed., ch. 14), D, L, t (hole diameter, length, septa) from SIMIND's
``collim.col`` as shipped in PyTomography 3.4 (:data:`COLLIMATOR_SEPTA_MM`), Y the yield of the
lines in the energy window (ICRP-107, :func:`common.physics.nuclide`), eps the probability that a
photon interacts in a 9.5 mm NaI(Tl) crystal (xraydb; an upper bound on the photopeak
efficiency, Compton escape ignored). Siemens SY-LEHR at 140.5 keV (D 1.11, L 24.05, t 0.16 mm):
g = 1.17e-4, Y = 0.8908, eps = 0.917, **S = 95.7 cps/MBq per head**. Cross-check: an LEHR
specification quoted as "> 250 cpm/uCi" (113 cps/MBq; hps.org Ask the Experts, question 1381)
and the ~90 cps/MBq usually given for LEHR heads bracket it (no vendor datasheet was read); the
derivation is used so every collimator and energy follows one rule. SY-ME at 208.4 keV (Lu-177,
Y = 0.11): S = 14.6 cps/MBq.
``sensitivity_cps_per_MBq`` overrides the derivation with a measured value.

Default acquisition (``SPECT_PARAMS`` of the task): each subject is a Tc-99m bone-agent or a Lu-177
PSMA-like study (drawn), 120 views over 360 degrees, 2 heads (each view is one stop of one head,
60 stops per head), circular orbit of radius 270 mm, intrinsic resolution 3.8 mm FWHM at 140 keV
(SIMIND's Symbia input), 20 % window. Tc-99m: 140.5 keV, SY-LEHR, 8-20 s per view; decay during
the scan is neglected (2.8 % in 15 min).
Grid: 104 x 104 x 80 voxels of 4.8 mm (499 x 499 x 384 mm; 4.8 mm is the usual voxel of a
128 matrix on a 614 mm SPECT detector), detector bins of the same size. One subject takes about
15-23 s on one thread (measured with the machine shared, load 3-5); the PET grid (128 x 128 x 96 of
4 mm) took 65-71 s, mostly the 120-view OSEM with attenuation and PSF.

Lu-177: 208.4 keV, SY-ME, 6-25 s per view (:data:`SPECT_ACQUISITIONS`). A low-energy collimator at
208 keV is refused: its septa (0.16 mm) are thinner than the 5 %-penetration criterion
``t >= 6 D / mu / (L - 3 / mu)`` (Cherry et al. ch. 14) asks (0.31 mm), NOTES.md.

Scatter (optional, ``scatter_to_primary`` = 0 turns it off): a triple-energy-window-like
estimate, i.e. the primary projections blurred by a Gaussian of ``scatter_fwhm_mm`` (u, v) and
scaled to a scatter-to-primary ratio SPR in the photopeak window (about 0.3 at 140 keV in the
body); it is the additive background of the reconstruction (a perfect TEW estimate).

Reconstruction (:func:`reconstruct_spect`): OSEM with attenuation (the same mu-map) and the
collimator PSF modelled, background = expected scatter, divided by ``k``: Bq/mL at scan time;
the task divides by the decay factor, so its images are Bq/mL decay-corrected to injection time
(DESIGN 3), like the activity ground truth. A sparse-view study is the views ``0, f, 2f, ...``
(``f`` = ``sparse_factor``, dividing ``n_views``) of the same counts, reconstructed with the
same iterations and subsets through :class:`ViewSubset`, which reuses the full projector.

Files per subject of ``spect_projection_completion`` (``common.simulation.datasets`` layout):

- images (NIfTI, [X, Y, Z], the phantom's affine): ``activity`` (true concentration, Bq/mL at
  injection time), ``ct`` (HU, int16; the mu-map is ``hu_to_mu(ct, energy_keV)``), ``labels``
  (int16), ``osem_full`` (AC OSEM of all views, Bq/mL), ``osem_sparse`` (AC OSEM of the sparse
  views, Bq/mL).
- ``raw`` (.npz): ``projections`` int32 [views, u, v] counts of all views (u transaxial with
  ``n_u`` = Y bins of ``spacing_mm[0]``, v = Z; angles ``angles_deg``, convention of
  :mod:`common.physics.projectors`); ``scatter`` float16 [views, u, v] expected scatter counts (the AC
  background); ``sparse_views`` int64 indices of the sparse subset; ``sparse_factor``;
  ``angles_deg``; ``radius_mm``; ``count_scale`` (counts per Bq/mL at scan per voxel-sum unit);
  ``decay_factor``; ``energy_keV``; ``collimator``; ``psf`` (slope, intercept mm, intrinsic mm);
  ``n_iters``; ``n_subsets``; ``spacing_mm``; ``image_shape``. To reconstruct again:
  :func:`reconstruct_spect_raw`.

Datalist attributes: tracer, nuclide, units, weight_kg, injected_Bq, uptake_time_s,
decay_factor, energy_keV, photon_yield, collimator, sensitivity_cps_per_MBq,
sensitivity_source, n_views, n_heads, time_per_view_s, acquisition_time_s, radius_mm,
sparse_factor, n_sparse_views, scatter_to_primary, count_scale, total_counts,
mean_counts_per_view, phantom_seed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from common.physics import hu_to_mu, nuclide
from common.physics.noise import poisson
from common.physics.projectors import COLLIMATORS, CollimatorPSF, SPECTProjector
from common.simulation.pet import sample_log_param, smooth_sinogram

__all__ = [
    "COLLIMATOR_SEPTA_MM",
    "SPECT_ACQUISITIONS",
    "SPECT_TRACERS",
    "SPECTData",
    "ViewSubset",
    "check_orbit",
    "check_septal_penetration",
    "collimator_sensitivity",
    "interpolate_views",
    "photon_yield",
    "reconstruct_spect",
    "reconstruct_spect_raw",
    "sample_acquisition",
    "simulate_spect",
    "sparse_views",
    "spect_count_scale",
    "spect_projector",
]

#: Septal thickness (mm) of the collimators of :data:`common.physics.projectors.COLLIMATORS`, SIMIND
#: ``collim.col`` as shipped in PyTomography 3.4 (``data/collim.col``; all hexagonal holes).
COLLIMATOR_SEPTA_MM: dict[str, float] = {
    "SY-LEHR": 0.16,
    "SY-ME": 1.14,
    "GI-LEHR": 0.20,
    "GI-MEGP": 1.05,
}
#: Anger's hole-shape constant for hexagonal holes in a hexagonal array (Cherry et al., ch. 14).
ANGER_K_HEXAGONAL = 0.26
#: Default NaI(Tl) crystal thickness (3/8 inch), mm.
CRYSTAL_MM = 9.525
#: Tracers of :mod:`common.simulation.phantoms` imaged with SPECT, and their radionuclides.
SPECT_TRACERS: dict[str, str] = {"Tc99m-agent": "Tc-99m", "Lu177-agent": "Lu-177"}

#: Standard acquisition of each SPECT tracer: photopeak (keV), collimator, and the time per view
#: (s; a [low, high] range is drawn log-uniformly per subject, so count levels span a decade).
#: Tc-99m bone agent: LEHR, 8-20 s per view (120 views, 2 heads: 8-20 min). Lu-177 PSMA-like agent
#: at 20-28 h: 208 keV window, medium-energy collimator, 6-25 s per view. With the phantoms'
#: bodies (20-150 kg) the measured totals are 1-17 M counts per study for either (docs of
#: bundles/spect_projection_completion), around the clinical 1-3 M (Lu-177) and 5-10 M (Tc-99m).
SPECT_ACQUISITIONS: dict[str, dict[str, Any]] = {
    "Tc99m-agent": {
        "energy_keV": 140.5,
        "collimator": "SY-LEHR",
        "time_per_view_s": [8.0, 20.0],
    },
    "Lu177-agent": {
        "energy_keV": 208.4,
        "collimator": "SY-ME",
        "time_per_view_s": [6.0, 25.0],
    },
}


# ------------------------------------------------------------------------------ count level
def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


def _collimator_geometry(collimator: str) -> tuple[float, float, float]:
    """(hole diameter, hole length, septal thickness) in mm."""
    if collimator not in COLLIMATORS or collimator not in COLLIMATOR_SEPTA_MM:
        raise ValueError(f"collimator {collimator!r} unknown; known: {sorted(COLLIMATOR_SEPTA_MM)}")
    d, length = COLLIMATORS[collimator]
    return float(d), float(length), COLLIMATOR_SEPTA_MM[collimator]


def _mu_lead_per_mm(energy_keV: float) -> float:
    import xraydb

    return float(xraydb.material_mu("Pb", energy_keV * 1e3, density=11.35)) / 10.0


def photon_yield(nuclide_name: str, energy_keV: float, window_fraction: float = 0.20) -> float:
    """Photons per decay of ``nuclide_name`` (ICRP-107) with energies in the window
    ``energy_keV * (1 +- window_fraction / 2)``; ValueError if no line falls in it."""
    energy_keV = _check_positive("energy_keV", energy_keV)
    window_fraction = _check_positive("window_fraction", window_fraction)
    lo, hi = (
        energy_keV * (1 - window_fraction / 2),
        energy_keV * (1 + window_fraction / 2),
    )
    y = sum(w for e, w in nuclide(nuclide_name).photon_lines if lo <= e <= hi)
    if y <= 0:
        raise ValueError(f"{nuclide_name} has no photon line in the window {lo:.1f}-{hi:.1f} keV (energy_keV={energy_keV})")
    return float(y)


def check_septal_penetration(collimator: str, energy_keV: float) -> None:
    """ValueError if the septa are thinner than ``6 D / mu / (L - 3 / mu)`` at ``energy_keV``
    (about 5 % septal penetration; Cherry et al. ch. 14), e.g. a low-energy collimator at 208 keV."""
    d, length, t = _collimator_geometry(collimator)
    mu = _mu_lead_per_mm(_check_positive("energy_keV", energy_keV))
    needed = 6.0 * d / mu / (length - 3.0 / mu) if length > 3.0 / mu else math.inf
    if t < needed:
        raise ValueError(
            f"collimator {collimator!r} (septa {t} mm) is not usable at {energy_keV} keV: 5 % septal penetration "
            f"needs septa >= {needed:.2f} mm; use a medium-energy collimator (e.g. 'SY-ME')"
        )


def collimator_sensitivity(
    collimator: str,
    energy_keV: float,
    photon_yield_per_decay: float,
    crystal_mm: float = CRYSTAL_MM,
) -> float:
    """System sensitivity of one head in cps/MBq from the collimator geometry (Anger's formula,
    module docstring): ``1e6 * K^2 (D/L_eff)^2 (D/(D+t))^2 * yield * (1 - exp(-mu_NaI(E) crystal))``."""
    import xraydb

    d, length, t = _collimator_geometry(collimator)
    energy_keV = _check_positive("energy_keV", energy_keV)
    photon_yield_per_decay = _check_positive("photon_yield_per_decay", photon_yield_per_decay)
    crystal_mm = _check_positive("crystal_mm", crystal_mm)
    l_eff = length - 2.0 / _mu_lead_per_mm(energy_keV)
    if l_eff <= 0:
        raise ValueError(f"collimator {collimator!r} is transparent at {energy_keV} keV (L_eff = {l_eff:.2f} mm)")
    g = ANGER_K_HEXAGONAL**2 * (d / l_eff) ** 2 * (d / (d + t)) ** 2
    eps = 1.0 - math.exp(-float(xraydb.material_mu("NaI", energy_keV * 1e3, density=3.67)) * crystal_mm / 10.0)
    return 1e6 * g * photon_yield_per_decay * eps


def spect_count_scale(spacing_mm: Sequence[float], sensitivity_cps_per_MBq: float, time_per_view_s: float) -> float:
    """Expected counts per (Bq/mL at scan time) per voxel-sum unit of :class:`SPECTProjector`:
    voxel volume [mL] x sensitivity [counts/(s Bq)] x time per view [s]."""
    if len(spacing_mm) != 3:
        raise ValueError(f"spacing_mm must have 3 values, got {spacing_mm!r}")
    voxel_mL = math.prod(_check_positive("spacing_mm", s) for s in spacing_mm) / 1000.0
    sens = _check_positive("sensitivity_cps_per_MBq", sensitivity_cps_per_MBq) * 1e-6
    return voxel_mL * sens * _check_positive("time_per_view_s", time_per_view_s)


# --------------------------------------------------------------------------------- geometry
def sparse_views(n_views: int, sparse_factor: int) -> list[int]:
    """Views ``0, f, 2f, ...`` of ``n_views``; ``f`` must be an integer >= 2 dividing ``n_views``
    (so the sparse views are equally spaced over the arc)."""
    if isinstance(sparse_factor, bool) or int(sparse_factor) != sparse_factor or sparse_factor < 2:
        raise ValueError(f"sparse_factor must be an integer >= 2, got {sparse_factor!r}")
    if int(n_views) != n_views or n_views < 1:
        raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
    if n_views % int(sparse_factor):
        raise ValueError(f"sparse_factor {sparse_factor} does not divide n_views {n_views}")
    return list(range(0, int(n_views), int(sparse_factor)))


def interpolate_views(sparse: torch.Tensor, sparse_factor: int, dim: int = 0) -> torch.Tensor:
    """The linear-interpolation baseline of sparse-view completion: the views ``0, f, 2f, ...`` of
    a 360-degree set (``sparse`` holds ``n`` of them along ``dim``) -> all ``n * f`` views, each
    missing view interpolated linearly in angle between its two acquired neighbours, wrapping
    from the last view to the first (the set is periodic). Acquired views are kept exactly."""
    f = int(sparse_factor)
    if isinstance(sparse_factor, bool) or f != sparse_factor or f < 1:
        raise ValueError(f"sparse_factor must be a positive integer, got {sparse_factor!r}")
    x = torch.movedim(torch.as_tensor(sparse), dim, 0)
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 acquired views to interpolate, got {x.shape[0]}")
    w = (
        torch.arange(
            f,
            dtype=x.dtype if x.is_floating_point() else torch.float32,
            device=x.device,
        )
        / f
    )
    w = w.view(1, f, *([1] * (x.dim() - 1)))
    a, b = x.unsqueeze(1), torch.roll(x, -1, dims=0).unsqueeze(1)
    full = (1 - w) * a + w * b  # [n, f, ...]: view i * f + r
    return torch.movedim(full.reshape(x.shape[0] * f, *x.shape[1:]), 0, dim)


class ViewSubset:
    """The views ``views`` of a projector as a projector of their own (for OSEM of a sparse-view
    study), sharing the parent's matrices and attenuation cache instead of building new ones.

    ``forward(x, views=None) -> [B?, len(self.views) or len(views), u, v]``; ``adjoint`` is its
    exact transpose (the parent's, on the selected views).
    """

    def __init__(self, projector: SPECTProjector, views: Sequence[int]) -> None:
        idx = [int(v) for v in views]
        if not idx or min(idx) < 0 or max(idx) >= projector.n_views:
            raise ValueError(f"views must be non-empty indices in [0, {projector.n_views}), got {idx[:8]}")
        self.parent, self.views = projector, idx
        self.shape, self.spacing_mm, self.n_views = (
            projector.shape,
            projector.spacing_mm,
            len(idx),
        )
        self.angles_deg = np.asarray(projector.angles_deg)[idx]

    def _select(self, views: Sequence[int] | torch.Tensor | None) -> list[int]:
        if views is None:
            return self.views
        sub = views.tolist() if isinstance(views, torch.Tensor) else views
        if any(int(v) < 0 or int(v) >= self.n_views for v in sub):
            raise ValueError(f"views must be indices in [0, {self.n_views})")
        return [self.views[int(v)] for v in sub]

    def forward(self, x: torch.Tensor, views: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        return self.parent.forward(x, self._select(views))

    def adjoint(self, y: torch.Tensor, views: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        return self.parent.adjoint(y, self._select(views))

    __call__ = forward


def spect_projector(
    shape: Sequence[int],
    spacing_mm: Sequence[float],
    n_views: int,
    radius_mm: float,
    mu_map: torch.Tensor | None,
    collimator: str | None = "SY-LEHR",
    energy_keV: float = 140.5,
    intrinsic_fwhm_140keV_mm: float = 3.8,
) -> SPECTProjector:
    """A 360-degree parallel-hole :class:`SPECTProjector` with attenuation (``mu_map`` [X, Y, Z]
    in 1/cm at ``energy_keV``, or None) and the collimator's distance-dependent PSF (None: no
    blur). Refuses a collimator whose septa the photons penetrate (:func:`check_septal_penetration`)."""
    psf = None
    if collimator is not None:
        check_septal_penetration(collimator, energy_keV)
        psf = CollimatorPSF.from_collimator(collimator, energy_keV, intrinsic_fwhm_140keV_mm)
    return SPECTProjector(
        shape,
        spacing_mm,
        n_views,
        360.0,
        _check_positive("radius_mm", radius_mm),
        mu_map,
        psf,
    )


# ------------------------------------------------------------------------------- simulation
@dataclasses.dataclass
class SPECTData:
    """One SPECT acquisition; projections [views, u, v] in counts.

    counts: measured (integer-valued float). primary, scatter: expectations.
    count_scale: expected counts per (Bq/mL at scan) per voxel-sum unit (:func:`spect_count_scale`).
    """

    counts: torch.Tensor
    primary: torch.Tensor
    scatter: torch.Tensor
    count_scale: float

    @property
    def expected(self) -> torch.Tensor:
        return self.primary + self.scatter


def simulate_spect(
    activity_Bq_per_mL: torch.Tensor,
    projector: SPECTProjector,
    count_scale: float,
    scatter_to_primary: float = 0.30,
    scatter_fwhm_mm: Sequence[float] = (60.0, 60.0),
    generator: torch.Generator | None = None,
) -> SPECTData:
    """Simulate a SPECT acquisition of an activity map (model in the module docstring).

    Args:
        activity_Bq_per_mL: [X, Y, Z] concentration at scan time (Bq/mL), >= 0.
        projector: from :func:`spect_projector` (attenuation and PSF of the simulation).
        count_scale: :func:`spect_count_scale` of the acquisition.
        scatter_to_primary: scatter / primary counts in the photopeak window, in [0, 1).
        scatter_fwhm_mm: (u, v) FWHM of the scatter kernel, mm.
        generator: torch.Generator for the Poisson draw.
    """
    count_scale = _check_positive("count_scale", count_scale)
    if not (isinstance(scatter_to_primary, (int, float)) and 0.0 <= scatter_to_primary < 1.0):
        raise ValueError(f"scatter_to_primary must be in [0, 1), got {scatter_to_primary!r}")
    x = torch.as_tensor(activity_Bq_per_mL, dtype=torch.float32)
    primary = projector.forward(x) * count_scale
    total = float(primary.sum())
    if total <= 0:
        raise ValueError("activity projects to zero counts")
    if scatter_to_primary > 0:
        h, hz = projector.spacing_mm[0], projector.spacing_mm[2]
        shape = smooth_sinogram(primary, (0.0, scatter_fwhm_mm[0] / h, scatter_fwhm_mm[1] / hz))
        scatter = shape * (scatter_to_primary * total / float(shape.sum()))
    else:
        scatter = torch.zeros_like(primary)
    return SPECTData(poisson(primary + scatter, generator=generator), primary, scatter, count_scale)


def reconstruct_spect(
    projector: SPECTProjector | ViewSubset,
    counts: torch.Tensor,
    background: torch.Tensor | None,
    count_scale: float,
    n_iters: int = 5,
    n_subsets: int = 8,
) -> torch.Tensor:
    """OSEM image [X, Y, Z] in Bq/mL at scan time of ``counts`` [views, u, v] (the projector's
    views; a :class:`ViewSubset` for a sparse study, ``counts`` and ``background`` then holding
    its views only). ``n_subsets`` is capped at the number of views."""
    from common.physics.recon import osem

    image = osem(
        projector,
        counts,
        n_iters,
        min(int(n_subsets), projector.n_views),
        background=background,
    )
    return image / _check_positive("count_scale", count_scale)


def reconstruct_spect_raw(
    raw: Mapping[str, np.ndarray],
    ct_hu: np.ndarray | torch.Tensor,
    sparse: bool = False,
) -> torch.Tensor:
    """Reconstruct a stored ``spect_projection_completion`` raw file (module docstring) in Bq/mL
    decay-corrected to injection, with the mu-map of ``ct_hu`` [X, Y, Z]; all views, or the
    sparse subset (``sparse=True``)."""
    energy = float(raw["energy_keV"])
    slope, intercept, intrinsic = (float(v) for v in raw["psf"])
    mu = hu_to_mu(torch.as_tensor(np.asarray(ct_hu)), energy)
    full = SPECTProjector(
        tuple(int(s) for s in raw["image_shape"]), tuple(float(s) for s in raw["spacing_mm"]), len(raw["angles_deg"]),
        360.0, raw["radius_mm"], mu, CollimatorPSF(slope, intercept, intrinsic),
    )  # fmt: skip
    counts = torch.from_numpy(raw["projections"].astype(np.float32))
    scatter = torch.from_numpy(raw["scatter"].astype(np.float32))
    projector: SPECTProjector | ViewSubset = full
    if sparse:
        idx = [int(v) for v in raw["sparse_views"]]
        projector, counts, scatter = ViewSubset(full, idx), counts[idx], scatter[idx]
    image = reconstruct_spect(
        projector,
        counts,
        scatter,
        float(raw["count_scale"]),
        int(raw["n_iters"]),
        int(raw["n_subsets"]),
    )
    return image / float(raw["decay_factor"])


# ------------------------------------------------------------------------------ acquisition
def check_orbit(activity: np.ndarray, spacing_mm: Sequence[float], radius_mm: float) -> None:
    """The camera must clear the body: no activity outside the orbit's circle."""
    X, Y = activity.shape[:2]
    x = (np.arange(X) - (X - 1) / 2) * spacing_mm[0]
    y = (np.arange(Y) - (Y - 1) / 2) * spacing_mm[1]
    outside = np.hypot(x[:, None], y[None, :]) > radius_mm
    if (activity[outside] > 0).any():
        raise ValueError(f"radius_mm {radius_mm} is inside the body: activity lies outside the camera orbit")


def sample_acquisition(rng: np.random.Generator, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validated acquisition of one subject (tracer drawn, line, collimator, sensitivity, time)."""
    tracers = params["tracer"]
    tracer = tracers if isinstance(tracers, str) else str(rng.choice(list(tracers)))
    if tracer not in SPECT_TRACERS:
        raise ValueError(f"tracer {tracer!r} unknown for SPECT; known: {sorted(SPECT_TRACERS)}")
    standard = {key: (v if params.get(key) is None else params[key]) for key, v in SPECT_ACQUISITIONS[tracer].items()}
    energy = _check_positive("energy_keV", standard["energy_keV"])
    n_views = int(params["n_views"])
    views = sparse_views(n_views, params["sparse_factor"])
    n_heads = int(params["n_heads"])
    if n_heads < 1 or n_views % n_heads:
        raise ValueError(f"n_heads must be >= 1 and divide n_views {n_views}, got {params['n_heads']!r}")
    t_view = _check_positive("time_per_view_s", sample_log_param(rng, standard["time_per_view_s"]))
    t_view *= _check_positive("time_per_view_factor", params.get("time_per_view_factor", 1.0))
    collimator = standard["collimator"]
    check_septal_penetration(collimator, energy)
    y = photon_yield(SPECT_TRACERS[tracer], energy, params["window_fraction"])
    if params["sensitivity_cps_per_MBq"] is None:
        sens = collimator_sensitivity(collimator, energy, y, params["crystal_mm"])
        source = f"Anger's formula, {collimator} (K 0.26, SIMIND geometry), yield {y:.4g}, {params['crystal_mm']} mm NaI"
    else:
        sens, source = (
            _check_positive("sensitivity_cps_per_MBq", params["sensitivity_cps_per_MBq"]),
            "given",
        )
    return {
        "tracer": tracer, "nuclide": SPECT_TRACERS[tracer], "energy_keV": energy, "photon_yield": y,
        "collimator": collimator, "sensitivity_cps_per_MBq": sens, "sensitivity_source": source,
        "n_views": n_views, "n_heads": n_heads, "time_per_view_s": t_view,
        "acquisition_time_s": t_view * n_views / n_heads, "radius_mm": _check_positive("radius_mm", params["radius_mm"]),
        "sparse_views": views,
    }  # fmt: skip
