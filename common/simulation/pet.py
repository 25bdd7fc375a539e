"""PET acquisitions from phantoms: the simulation and reconstruction steps that the PET dataset
tasks of the bundles (``bundles/<name>/<name>/dataset.py``) share, and their parameter families.

PET model (2D sinograms per axial slice, :class:`common.physics.projectors.PETProjector`)::

    trues    = s * a * P(blur(C_scan))          a = exp(-line integral of ct_to_mu(CT, 511 keV))
    scatter  = smooth(trues), scaled to the subject's scatter fraction SF = S / (T + S)
    randoms  = flat, scaled to the subject's randoms fraction R / (T + S + R)
    prompts  = Poisson(trues + scatter + randoms)

``C_scan`` = phantom concentration (decay-corrected to injection) x decay_factor(uptake time,
F-18); ``blur`` = the scanner resolution (Gaussian, ``psf_fwhm_mm``), not modelled in the
reconstruction; ``smooth`` = Gaussian of the sinogram along the radial bins and the axial
direction (``scatter_fwhm_mm``), so scatter extends beyond the body as in measured data. The
count scale ``s`` (expected counts per Bq/mL per voxel-sum unit) is set per subject from the
expected trues so that 4 mm of axial extent holds ``trues_per_4mm_slice`` true counts and is
stored as ``count_scale``.

Parameter families (per subject, drawn from ``default_rng([seed, index])``; both families'
ranges are in the one table of :mod:`common.simulation`): ``training`` is what every training set
draws from (:data:`PET_PARAMS`); ``shifted`` (:data:`PET_SHIFTED`) lies beyond it and is for
held-out tests only, so a model is judged on studies made differently from its training data.

The field of view stays ``shape x spacing_mm`` (512 x 512 x 384 mm by default); a subject's grid
is that field at its drawn voxel size (``voxel_scale`` x ``spacing_mm``), which the bundles
resample to their training spacing with their own ``Spacingd``.

Reconstruction: OSEM (:func:`common.physics.recon.osem`, 3 iterations x 16 subsets, no post-filter) of
the prompts with the additive background, divided by ``s``: Bq/mL at scan time; divided by the
decay factor and multiplied by weight / injected activity: SUV (DESIGN 3). AC uses the true
CT's mu-map and background = expected scatter + randoms (the shared estimate of DESIGN 5.1).
NAC uses no attenuation and background = randoms only: model-based scatter estimation needs the
mu-map, so clinical NAC images are not scatter corrected, and their scatter haze outside the
body is part of what a NAC -> pCT network sees (``nac_scatter_correction`` changes it). A study
thinned to a fraction f of the counts is reconstructed with ``sensitivity_scale = f`` and the
full-dose background, i.e. sensitivity and background both times f (DESIGN 3).

Files per subject (``common.simulation.datasets`` layout):

- ``pet_nac_to_pct``: ``nac`` (SUV), ``ct`` (HU, int16), ``labels`` (int16), ``ac`` (SUV, true-CT AC),
  ``raw`` (.npz): ``prompts`` int32 [angles, bins, Z]; ``background`` float16 expected scatter +
  randoms (counts, the AC background); ``nac_background`` float16 (randoms only by default);
  ``count_scale``, ``decay_factor``, ``suv_factor`` (SUV per Bq/mL at injection), ``ct_air_below_hu``
  (the CTAC air rule of the simulated attenuation, NaN for none), ``n_iters``, ``n_subsets``,
  ``n_angles``, ``n_bins``, ``spacing_mm``, ``image_shape``, ``label_ids``, ``label_names``. To
  reconstruct again (:func:`reconstruct_pet_suv`):
  ``osem(PETProjector(image_shape, spacing_mm, n_angles, n_bins, mu_map=ct_to_mu(ct, 511, air_below_hu=...)),
  prompts, n_iters, n_subsets, background=background) / count_scale / decay_factor * suv_factor``.
- ``pet_lowdose_denoising``: ``full`` (SUV), ``drf4`` ``drf10`` ``drf20`` ``drf50`` ``drf100``
  (SUV, binomially thinned prompts), ``noise_free`` (SUV, the same OSEM of the expected data),
  ``labels``.

Datalist attributes: ``weight_kg``, ``injected_Bq``, ``uptake_time_s``, ``trues_per_4mm_slice``,
``psf_fwhm_mm``, ``spacing_mm``, ``phantom_variety``, ``scatter_fraction``, ``randoms_fraction``,
``total_trues``, ``count_scale``, ``units`` ("SUV"), ``phantom_seed``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from common.physics import CT_AIR_BELOW_HU, ct_to_mu, decay_factor, nuclide, suv
from common.physics.noise import poisson, thin
from common.physics.projectors import FWHM_TO_SIGMA, PETProjector, gaussian_filter_mm

__all__ = [
    "PET_ENERGY_KEV",
    "PETData",
    "AttenuatedPET",
    "pet_system",
    "PETSubject",
    "simulate_pet",
    "simulate_pet_subject",
    "reconstruct_pet",
    "reconstruct_pet_suv",
    "PET_PARAMS",
    "PET_SHIFTED",
    "PET_FAMILIES",
    "sample_log_param",
    "subject_grid",
    "drf_name",
    "sample_param",
    "smooth_sinogram",
    "suv_image",
    "torch_generator",
]

PET_ENERGY_KEV = 511.0
TRACER_NUCLIDE = {"FDG": "F-18"}

#: Defaults of the PET tasks, the ``training`` family (stored in each dataset's manifest).
#: A two-number list is a range sampled per subject (uniform; ``trues_per_4mm_slice`` log-uniform);
#: ``voxel_scale`` lists voxel sizes relative to ``spacing_mm``, one drawn per subject.
PET_PARAMS: dict[str, Any] = {
    "shape": [128, 128, 96],
    "spacing_mm": [4.0, 4.0, 4.0],
    "voxel_scale": [[1.0, 1.0, 1.0], [0.9125, 0.9125, 0.8175], [1.2, 1.2, 1.0]],
    "phantom_variety": "training",
    "tracer": "FDG",
    "n_lesions": [1, 8],
    "n_angles": 128,
    "psf_fwhm_mm": [4.0, 7.0],  # scanner resolution (simulated, not modelled in the reconstruction)
    "trues_per_4mm_slice": [4.0e5, 4.0e6],  # clinical whole-body FDG about 2e6 (DESIGN 5.1)
    "scatter_fraction": [0.25, 0.45],
    "randoms_fraction": [0.05, 0.25],
    "scatter_fwhm_mm": [200.0, 60.0],  # (radial, axial) width of the scatter kernel
    "n_iters": 3,  # 3 x 16 subsets: liver noise CoV about 10 % at the clinical count level
    "n_subsets": 16,
    "nac_scatter_correction": False,
    # attenuation through the CT-AC air rule, so that true-CT AC reproduces the simulated
    # attenuation and a pseudo-CT with clean air can (dataset versions 2)
    "ct_air_below_hu": CT_AIR_BELOW_HU,
}
#: The ``shifted`` family: overrides of :data:`PET_PARAMS` beyond its ranges (held-out tests only).
PET_SHIFTED: dict[str, Any] = {
    "voxel_scale": [[0.75, 0.75, 0.75], [1.375, 1.375, 1.25]],
    "phantom_variety": "shifted",
    "n_lesions": [4, 12],
    "psf_fwhm_mm": [7.0, 9.0],
    "trues_per_4mm_slice": [1.5e5, 4.0e5],
    "scatter_fraction": [0.45, 0.55],
    "randoms_fraction": [0.25, 0.35],
}
#: Families of the PET tasks (:attr:`common.simulation.datasets.TaskSpec.families`).
PET_FAMILIES: dict[str, dict[str, Any]] = {"shifted": PET_SHIFTED}


# ------------------------------------------------------------------------------------ projector
class AttenuatedPET:
    """A :class:`PETProjector`'s system matrix with attenuation factors ``att`` [angles, bins, Z]
    applied in sinogram space (or none), sharing the base projector's sparse matrix so that the
    NAC, AC and simulation operators of one subject cost one matrix build.

    ``forward(x [B?, X, Y, Z], views) = att[views] * base.forward(x, views)``; ``adjoint`` is its
    exact transpose. The base must have no mu-map and no PSF.
    """

    def __init__(self, base: PETProjector, att: torch.Tensor | None = None) -> None:
        if base.mu_map is not None or base.psf_fwhm_mm is not None:
            raise ValueError("AttenuatedPET: the base projector must have no mu_map and no psf_fwhm_mm")
        if att is not None and tuple(att.shape) != base.data_shape:
            raise ValueError(f"att shape {tuple(att.shape)} differs from the sinogram shape {base.data_shape}")
        self.base, self.att = base, att
        self._att_rows: dict = {}  # (views, device, dtype) -> att rows; OSEM asks for the same subsets each pass
        self.shape, self.spacing_mm = base.shape, base.spacing_mm
        self.n_views, self.n_bins, self.angles_deg = base.n_views, base.n_bins, base.angles_deg
        self.mu_map, self.psf_fwhm_mm = None, None

    @property
    def data_shape(self) -> tuple[int, int, int]:
        return self.base.data_shape

    def _att(self, views, like: torch.Tensor) -> torch.Tensor | None:
        if self.att is None:
            return None
        key = (None if views is None else tuple(int(v) for v in views), like.device, like.dtype)
        if key not in self._att_rows:
            att = self.att.to(device=like.device, dtype=like.dtype)
            self._att_rows[key] = att if views is None else att[torch.as_tensor(key[0], device=att.device).long()]
        return self._att_rows[key]

    def forward(self, image: torch.Tensor, views: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        y = self.base.forward(image, views)
        att = self._att(views, y)
        return y if att is None else y * att

    def adjoint(self, sinogram: torch.Tensor, views: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        att = self._att(views, sinogram)
        return self.base.adjoint(sinogram if att is None else sinogram * att, views)

    __call__ = forward


def pet_system(
    shape: Sequence[int], spacing_mm: Sequence[float], n_angles: int, mu_map: torch.Tensor | None = None
) -> tuple[AttenuatedPET, AttenuatedPET]:
    """(NAC, AC) projectors of one geometry sharing one system matrix; AC is None-free only
    when ``mu_map`` [X, Y, Z] (1/cm at 511 keV) is given (else both are NAC)."""
    base = PETProjector(tuple(int(s) for s in shape), tuple(float(s) for s in spacing_mm), int(n_angles))
    nac = AttenuatedPET(base)
    if mu_map is None:
        return nac, nac
    att = torch.exp(-base.line_integrals(mu_map.to(torch.float32)))
    return nac, AttenuatedPET(base, att)


# ----------------------------------------------------------------------------------- simulation
@dataclasses.dataclass
class PETData:
    """One PET acquisition; sinograms [angles, bins, Z] in counts.

    prompts: measured counts (integer-valued float). trues, scatter, randoms: expectations.
    count_scale: expected counts per (Bq/mL at scan) per voxel-sum unit of the projector.
    """

    prompts: torch.Tensor
    trues: torch.Tensor
    scatter: torch.Tensor
    randoms: torch.Tensor
    count_scale: float

    @property
    def background(self) -> torch.Tensor:
        """Additive expected scatter + randoms (what AC reconstructions model)."""
        return self.scatter + self.randoms

    @property
    def expected(self) -> torch.Tensor:
        return self.trues + self.scatter + self.randoms


def smooth_sinogram(sino: torch.Tensor, fwhm_px: Sequence[float]) -> torch.Tensor:
    """Gaussian of a sinogram [A, B, Z] with FWHM in samples per axis (0 = none), edges
    replicated, so end slices keep their share of scatter.

    MONAI's erf kernels (4 sigma) applied as one dense blur matrix per axis, the replicated
    edges folded into it: the same sums as ``separable_filtering(..., mode="replicate")`` in
    another order, 50-100x faster on CPU for scatter kernels of 40-170 taps (issue 18).
    """
    from monai.networks.layers.convutils import gaussian_1d

    if sino.ndim != len(fwhm_px):
        raise ValueError(f"fwhm_px needs one value per axis of the sinogram {tuple(sino.shape)}, got {tuple(fwhm_px)}")
    out = sino
    for axis, f in enumerate(fwhm_px):
        if f <= 0:
            continue
        k = gaussian_1d(torch.tensor(f * FWHM_TO_SIGMA), truncated=4.0, approx="erf", normalize=True).to(sino)
        n, half = sino.shape[axis], (k.numel() - 1) // 2
        src = (torch.arange(n, device=sino.device)[:, None] + torch.arange(-half, half + 1, device=sino.device)).clamp_(0, n - 1)
        blur = torch.zeros(n, n, device=sino.device, dtype=sino.dtype).scatter_add_(1, src, k.expand(n, -1))
        out = torch.movedim(torch.movedim(out, axis, -1) @ blur.T, -1, axis)
    return out.clamp_min(0.0).contiguous()


def simulate_pet(
    activity_Bq_per_mL: torch.Tensor,
    nac_projector: AttenuatedPET,
    ac_projector: AttenuatedPET,
    trues_per_4mm_slice: float = 2.0e6,
    scatter_fraction: float = 0.35,
    randoms_fraction: float = 0.15,
    scatter_fwhm_mm: Sequence[float] = (200.0, 60.0),
    psf_fwhm_mm: float | None = 5.0,
    generator: torch.Generator | None = None,
) -> PETData:
    """Simulate a 2D PET acquisition of an activity map (model in the module docstring).

    Args:
        activity_Bq_per_mL: [X, Y, Z] concentration at scan time (Bq/mL).
        nac_projector, ac_projector: from :func:`pet_system` (AC holds the attenuation).
        trues_per_4mm_slice: expected true counts per 4 mm of axial extent (sets the scale).
        scatter_fraction: S / (T + S), in [0, 1). randoms_fraction: R / (T + S + R), in [0, 1).
        scatter_fwhm_mm: (radial, axial) FWHM of the scatter kernel, mm.
        psf_fwhm_mm: scanner resolution applied to the activity before projection (None: off).
        generator: torch.Generator for the Poisson draw.
    """
    for name, v in (("scatter_fraction", scatter_fraction), ("randoms_fraction", randoms_fraction)):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {v}")
    if not (math.isfinite(trues_per_4mm_slice) and trues_per_4mm_slice > 0):
        raise ValueError(f"trues_per_4mm_slice must be > 0, got {trues_per_4mm_slice}")
    x = torch.as_tensor(activity_Bq_per_mL, dtype=torch.float32)
    spacing = ac_projector.spacing_mm
    if psf_fwhm_mm:
        x = gaussian_filter_mm(x, psf_fwhm_mm, spacing).clamp_min(0.0)
    unscaled = ac_projector.forward(x)
    total = float(unscaled.sum())
    if total <= 0:
        raise ValueError("activity projects to zero counts")
    n_4mm = x.shape[2] * spacing[2] / 4.0
    scale = trues_per_4mm_slice * n_4mm / total
    trues = unscaled * scale
    if scatter_fraction > 0:  # radial and axial spread, edges replicated (end slices keep their scatter)
        fwhm_px = (0.0, scatter_fwhm_mm[0] / spacing[0], scatter_fwhm_mm[1] / spacing[2])
        shape = smooth_sinogram(trues, fwhm_px)
        scatter = shape * (scatter_fraction / (1.0 - scatter_fraction) * float(trues.sum()) / float(shape.sum()))
    else:
        scatter = torch.zeros_like(trues)
    r_total = randoms_fraction / (1.0 - randoms_fraction) * float(trues.sum() + scatter.sum())
    randoms = torch.full_like(trues, r_total / trues.numel())
    prompts = poisson(trues + scatter + randoms, generator=generator)
    return PETData(prompts, trues, scatter, randoms, scale)


def reconstruct_pet(
    projector: AttenuatedPET | PETProjector,
    prompts: torch.Tensor,
    background: torch.Tensor | None,
    count_scale: float,
    n_iters: int = 3,
    n_subsets: int = 16,
    dose_fraction: float = 1.0,
) -> torch.Tensor:
    """OSEM image [X, Y, Z] in Bq/mL at scan time.

    Args:
        projector: NAC or AC projector of :func:`pet_system` (or a PETProjector).
        prompts: measured counts [angles, bins, Z], thinned to ``dose_fraction`` or not.
        background: expected additive counts of the full-dose study (scatter + randoms for AC).
        count_scale: expected counts per Bq/mL per voxel-sum unit (:attr:`PETData.count_scale`).
        dose_fraction: fraction of the counts kept by thinning; the model is
            ``dose_fraction * (projector(x) + background)`` (:func:`common.physics.recon.osem`).
    """
    from common.physics.recon import osem

    image = osem(projector, prompts, n_iters, n_subsets, background=background, sensitivity_scale=float(dose_fraction))
    return image / float(count_scale)


def reconstruct_pet_suv(
    raw: Mapping[str, np.ndarray], mu_map: torch.Tensor | None, dose_fraction: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Reconstruct a stored ``pet_nac_to_pct`` raw file (module docstring) in SUV with the given
    mu-map [X, Y, Z] (1/cm at 511 keV; None: NAC with its stored background), the prompts
    optionally thinned to ``dose_fraction`` of the counts."""
    shape = tuple(int(s) for s in raw["image_shape"])
    nac, ac = pet_system(shape, tuple(float(s) for s in raw["spacing_mm"]), int(raw["n_angles"]), mu_map)
    prompts = torch.from_numpy(raw["prompts"].astype(np.float32))
    if dose_fraction != 1.0:
        prompts = thin(prompts, dose_fraction, generator=generator)
    background = torch.from_numpy(raw["background" if mu_map is not None else "nac_background"].astype(np.float32))
    image = reconstruct_pet(
        ac if mu_map is not None else nac, prompts, background, float(raw["count_scale"]),
        int(raw["n_iters"]), int(raw["n_subsets"]), dose_fraction,
    )  # fmt: skip
    return image * float(raw["suv_factor"]) / float(raw["decay_factor"])


# ------------------------------------------------------------------------------------- builders
def sample_param(rng: np.random.Generator, value: Any) -> float:
    """A float param, or a value drawn uniformly from a [low, high] range."""
    if isinstance(value, (list, tuple)):
        lo, hi = (float(v) for v in value)
        return float(rng.uniform(lo, hi))
    return float(value)


def sample_log_param(rng: np.random.Generator, value: Any) -> float:
    """A positive float param, or a value drawn log-uniformly from a [low, high] range (a count
    level: each factor of 2 is as likely as any other)."""
    if isinstance(value, (list, tuple)):
        lo, hi = (float(v) for v in value)
        if not 0 < lo <= hi:
            raise ValueError(f"a log-uniform range needs 0 < low <= high, got {value!r}")
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(value)


def subject_grid(rng: np.random.Generator, params: Mapping[str, Any]) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """(shape, spacing_mm) of one subject: the field of view ``shape x spacing_mm`` at a voxel size
    drawn from ``voxel_scale`` (a list of [sx, sy, sz] factors of ``spacing_mm``; None: as given)."""
    shape, spacing = [int(v) for v in params["shape"]], [float(v) for v in params["spacing_mm"]]
    choices = params.get("voxel_scale")
    if not choices:
        return tuple(shape), tuple(spacing)
    scale = [float(v) for v in choices[int(rng.integers(len(choices)))]]
    voxel = tuple(s * f for s, f in zip(spacing, scale))
    return tuple(max(1, round(n * s / v)) for n, s, v in zip(shape, spacing, voxel)), voxel


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))


@dataclasses.dataclass
class PETSubject:
    phantom: Any
    ct_hu: np.ndarray
    mu: torch.Tensor
    nac_projector: AttenuatedPET
    ac_projector: AttenuatedPET
    data: PETData
    decay: float
    suv_factor: float
    attributes: dict[str, Any]


def simulate_pet_subject(rng: np.random.Generator, params: Mapping[str, Any]) -> PETSubject:
    from common.simulation.phantoms import make_torso_phantom

    phantom_seed = [int(v) for v in rng.integers(0, 2**32, size=4)]
    shape, spacing = subject_grid(rng, params)
    phantom = make_torso_phantom(
        phantom_seed, shape=shape, spacing_mm=spacing, n_lesions=tuple(params["n_lesions"]), variety=params["phantom_variety"]
    )
    tracer = params["tracer"]
    weight, injected, uptake = phantom.weight_kg, phantom.injected_activity_Bq[tracer], phantom.uptake_time_s[tracer]
    decay = float(decay_factor(uptake, nuclide(TRACER_NUCLIDE[tracer]).half_life_s))
    # CT stored as int16 HU (as scanners do); the simulation uses exactly the stored numbers, so
    # true-CT AC from the file reproduces the simulated attenuation.
    ct_hu = np.clip(np.round(phantom.ct_hu), -1024, 3071).astype(np.int16)
    # the CT-AC conversion the evaluation uses too
    mu = ct_to_mu(torch.from_numpy(ct_hu), PET_ENERGY_KEV, air_below_hu=params["ct_air_below_hu"])
    nac_p, ac_p = pet_system(phantom.labels.shape, phantom.spacing_mm, params["n_angles"], mu)
    sf, rf = sample_param(rng, params["scatter_fraction"]), sample_param(rng, params["randoms_fraction"])
    trues = sample_log_param(rng, params["trues_per_4mm_slice"])
    psf = sample_param(rng, params["psf_fwhm_mm"]) if params["psf_fwhm_mm"] is not None else None
    data = simulate_pet(
        torch.from_numpy(phantom.activity[tracer]) * decay,
        nac_p,
        ac_p,
        trues_per_4mm_slice=trues,
        scatter_fraction=sf,
        randoms_fraction=rf,
        scatter_fwhm_mm=tuple(params["scatter_fwhm_mm"]),
        psf_fwhm_mm=psf,
        generator=torch_generator(rng),
    )
    attributes = {
        "weight_kg": float(weight),
        "injected_Bq": float(injected),
        "uptake_time_s": float(uptake),
        "tracer": tracer,
        "units": "SUV",
        "trues_per_4mm_slice": trues,
        "psf_fwhm_mm": psf,
        "spacing_mm": [float(v) for v in phantom.spacing_mm],
        "phantom_variety": params["phantom_variety"],
        "total_trues": float(data.trues.sum()),
        "scatter_fraction": sf,
        "randoms_fraction": rf,
        "count_scale": data.count_scale,
        "phantom_seed": phantom_seed,
    }
    return PETSubject(phantom, ct_hu, mu, nac_p, ac_p, data, decay, float(suv(1.0, weight, injected)), attributes)


def suv_image(s: PETSubject, bq_per_mL_at_scan: torch.Tensor) -> np.ndarray:
    return (bq_per_mL_at_scan / s.decay * s.suv_factor).numpy().astype(np.float32)


def drf_name(drf: Any) -> str:
    """The key suffix of a dose reduction factor: ``4`` -> ``"4"``, ``2.5`` -> ``"2.5"``."""
    return str(int(drf)) if float(drf).is_integer() else f"{float(drf):g}"
