"""Benchmark suite "physics": SPECT/PET projector speed and agreement with PyTomography.

``run(quick=False)`` times, with 2 torch threads, the SPECT projector of ``common.physics.projectors``
(attenuation + distance-dependent collimator blur) against PyTomography 3.4's SPECTSystemMatrix
on the same problem, with the same sigma(d), attenuation convention (half-voxel) and angles, and
reports the NRMSE ``||ours - pytomography|| / ||pytomography||`` of forward and adjoint outputs.
It also times the PET projector (2D sinograms) and OSEM 4x16, each
beside the path before issue 18 in the same run (interleaved, median): the PSF as MONAI's conv3d
Gaussian (:class:`_PETBefore`) and OSEM's loop without the flush of subnormal values
(:func:`_osem_before`), for this suite's problem (5 mm PSF) and for the dataset tasks'
configuration (``pet_system``: attenuation in sinogram space, no projector PSF, background).
Timings are medians over repeats; the machine is shared, so the thread count and load average
are recorded with the numbers.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from common.physics.projectors import (
    FWHM_TO_SIGMA,
    CollimatorPSF,
    PETProjector,
    SPECTProjector,
    gaussian_filter_mm,
)
from common.physics.recon import _sensitivity, osem, subset_views


def _osem_before(projector, measured, n_iters, n_subsets, background=None):
    """OSEM's subset loop as it was before issue 18 (no flush of subnormal values), timed beside
    :func:`common.physics.recon.osem` in the same run."""
    f = torch.ones((*measured.shape[:-3], *projector.shape), device=measured.device, dtype=measured.dtype)
    tiny = torch.finfo(measured.dtype).tiny
    for _ in range(int(n_iters)):
        for views in subset_views(projector.n_views, int(n_subsets)):
            sens = _sensitivity(projector, views, measured)[0]
            expected = projector.forward(f, views)
            if background is not None:
                expected = expected + background[..., views, :, :]
            ratio = measured[..., views, :, :] / expected.clamp_min(tiny)
            ratio = torch.where(expected > 0, ratio, 0.0)
            f = torch.where(sens > 0, f * projector.adjoint(ratio, views) / sens.clamp_min(tiny), 0.0)
    return f


class _PETBefore:
    """The PET projector with its PSF as before issue 18 (MONAI conv3d Gaussian around the same
    sparse matrix), for the before/after ratios of one run."""

    def __init__(self, pet: PETProjector) -> None:
        self.plain = PETProjector(pet.shape, pet.spacing_mm, pet.n_views, pet.n_bins, mu_map=pet.mu_map)
        self.psf, self.shape, self.spacing_mm, self.n_views = pet.psf_fwhm_mm, pet.shape, pet.spacing_mm, pet.n_views

    def forward(self, x, views=None):
        return self.plain.forward(gaussian_filter_mm(x, self.psf, self.spacing_mm), views)

    def adjoint(self, y, views=None):
        return gaussian_filter_mm(self.plain.adjoint(y, views), self.psf, self.spacing_mm)


MU_WATER_140 = 0.1537  # 1/cm, water at 140.5 keV (REFERENCE.md section 1, xraydb 4.5.8)
MU_WATER_511 = 0.0960  # 1/cm, water at 511 keV (REFERENCE.md section 1)


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _phantom(n: int, nz: int, h: float, mu_water: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Torso-like ellipse with lungs, spine and hot spheres: (activity, mu in 1/cm)."""
    c = (torch.arange(n) - (n - 1) / 2) * h
    cz = (torch.arange(nz) - (nz - 1) / 2) * h
    x, y, z = torch.meshgrid(c, c, cz, indexing="ij")
    body = (x / 170) ** 2 + (y / 120) ** 2 < 1
    lungs = ((x.abs() - 70) / 50) ** 2 + (y / 60) ** 2 + (z / 140) ** 2 < 1
    spine = (x**2 + (y + 70) ** 2 < 18**2) & body
    mu = torch.where(body, mu_water, 0.0)
    mu = torch.where(lungs, 0.26 * mu_water, mu)
    mu = torch.where(spine, 1.85 * mu_water, mu)
    act = torch.where(body, 1.0, 0.0)
    act = torch.where(lungs, 0.2, act)
    for cx, cy, czz, r in ((-60, 30, 20, 25), (50, -20, -30, 15), (0, 60, 0, 10)):
        act = torch.where((x - cx) ** 2 + (y - cy) ** 2 + (z - czz) ** 2 < r**2, 8.0, act)
    return act, mu


def _pytomography_spect(mu: torch.Tensor, psf: CollimatorPSF, proj: SPECTProjector):
    from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta, SPECTPSFMeta
    from pytomography.projectors.SPECT import SPECTSystemMatrix
    from pytomography.transforms.SPECT import (
        SPECTAttenuationTransform,
        SPECTPSFTransform,
    )

    h_cm = proj.spacing_mm[0] / 10
    object_meta = SPECTObjectMeta(dr=[s / 10 for s in proj.spacing_mm], shape=list(proj.shape))
    proj_meta = SPECTProjMeta(
        projection_shape=(proj.n_u, proj.shape[2]),
        dr=[h_cm, proj.spacing_mm[2] / 10],
        angles=proj.angles_deg,
        radii=proj.radius_mm / 10,
    )
    # Same sigma(d) as CollimatorPSF, in cm.
    psf_meta = SPECTPSFMeta(
        [psf.slope * FWHM_TO_SIGMA, psf.intercept_mm / 10 * FWHM_TO_SIGMA, psf.intrinsic_fwhm_mm / 10 * FWHM_TO_SIGMA],
        sigma_fit=lambda r, a, b, c: np.sqrt((a * r + b) ** 2 + c**2),
    )
    return SPECTSystemMatrix(
        [SPECTAttenuationTransform(attenuation_map=mu), SPECTPSFTransform(psf_meta)], [], object_meta, proj_meta
    )


def _load() -> float:
    return os.getloadavg()[0]


#: PyTomography's medium-energy PSF convention of issue 18 (the Lu-177 case): sigma = 0.03235 d + 0.1246 cm,
#: FWHM about 10.5 mm at 10 cm, written as a CollimatorPSF (FWHM slope and intercept, no intrinsic term).
ME_PSF = CollimatorPSF(slope=0.03235 / FWHM_TO_SIGMA, intercept_mm=1.246 / FWHM_TO_SIGMA)


def spect_psfs() -> dict[str, tuple[str, CollimatorPSF]]:
    """The suite's SPECT cases: name -> (description, PSF)."""
    return {
        "lehr": ("SY-LEHR 140.5 keV + 3.8 mm intrinsic", CollimatorPSF.from_collimator("SY-LEHR", 140.5, intrinsic_fwhm_140keV_mm=3.8)),
        "me": ("medium energy, sigma = 0.03235 d + 0.1246 cm (PyTomography's convention)", ME_PSF),
    }


def _spect_case(act, mu, psf: CollimatorPSF, label: str, h: float, n_views: int, reps: int, pytomography: bool, osem_iters: int) -> dict:
    """Our SPECT projector and OSEM against PyTomography's SPECTSystemMatrix on one problem. OSEM
    runs ``osem_iters`` iterations of 8 subsets in both codes, each including its one-time
    sensitivity (normalisation) images, as a user's reconstruction does."""
    n = act.shape[0]
    proj = SPECTProjector(tuple(act.shape), (h, h, h), n_views, radius_mm=300.0, mu_map=mu, psf=psf)
    t0 = time.perf_counter()
    ours_fwd = proj.forward(act)  # builds the operators
    t_build = time.perf_counter() - t0
    t_fwd, ours_fwd = _timed(lambda: proj.forward(act), reps)
    t_adj, ours_adj = _timed(lambda: proj.adjoint(ours_fwd), reps)
    counts = ours_fwd * (2e6 / float(ours_fwd.sum()) * n_views / 120)
    t_osem, ours_rec = _timed(lambda: osem(proj, counts, osem_iters, 8), 1)
    out = {
        "problem": f"{n}^3 x {h:g} mm, {n_views} views 360 deg, radius 300 mm, {label}, attenuation",
        "psf_nodes": proj.n_nodes,
        "osem": f"{osem_iters}x8",
        "ours_build_s": t_build,
        "ours_forward_s": t_fwd,
        "ours_adjoint_s": t_adj,
        "ours_osem_s": t_osem,
    }
    if not pytomography:
        return out
    import pytomography as pyt
    from pytomography.algorithms import OSEM
    from pytomography.likelihoods import PoissonLogLikelihood

    system = _pytomography_spect(mu, psf, proj)
    # one untimed call each first, as ours' build call: lazy set-up is not what is compared
    ref_fwd = system.forward(act.to(pyt.device))
    system.backward(ref_fwd)
    t_pf, ref_fwd = _timed(lambda: system.forward(act.to(pyt.device)), 1)
    t_pa, ref_adj = _timed(lambda: system.backward(ref_fwd), 1)
    t_po, ref_rec = _timed(lambda: OSEM(PoissonLogLikelihood(system, counts))(n_iters=osem_iters, n_subsets=8), 1)
    rel = lambda a, b: float((a.cpu() - b.cpu()).norm() / b.cpu().norm())
    out.update(
        pytomography_forward_s=t_pf,
        pytomography_adjoint_s=t_pa,
        pytomography_osem_s=t_po,
        speedup_forward=t_pf / t_fwd,
        speedup_adjoint=t_pa / t_adj,
        speedup_osem=t_po / t_osem,
        nrmse_forward=rel(ours_fwd, ref_fwd),
        nrmse_adjoint=rel(proj.adjoint(ref_fwd), ref_adj),
        nrmse_osem_image=rel(ours_rec, ref_rec),
    )
    return out


def run(quick: bool = False, pytomography: bool = True, spect: bool = True, osem_iters: int = 1) -> dict:
    """Run the suite; ``quick`` uses 64^3 (8 mm) and 60 views. Returns a JSON-able dict.

    SPECT OSEM is timed for ``osem_iters`` iterations of 8 subsets in both codes, set-up included
    (default 1: PyTomography's 4x8 alone takes about 4.5 min at full size on 2 quiet cores per PSF,
    beyond the suite's 8-minute budget; the 4x8 ratio lies between the 1x8 ratio and the ratio of the
    per-iteration costs).
    """
    torch.set_num_threads(2)
    n, h, n_views = (64, 8.0, 60) if quick else (128, 4.0, 120)
    reps = 2 if quick else 3
    result: dict = {"quick": quick, "threads": 2, "load_avg_1min_start": _load()}

    # ---------------------------------------------------------------- SPECT
    if spect:
        act, mu = _phantom(n, n, h, MU_WATER_140)
        result["spect"] = {
            name: _spect_case(act, mu, psf, label, h, n_views, reps, pytomography, int(osem_iters))
            for name, (label, psf) in spect_psfs().items()
        }

    # ------------------------------------------------------------------ PET
    nz = 48 if quick else 96
    act_p, mu_p = _phantom(128, nz, 4.0, MU_WATER_511)
    pet = PETProjector((128, 128, nz), (4.0, 4.0, 4.0), 128, mu_map=mu_p, psf_fwhm_mm=5.0)
    t0 = time.perf_counter()
    sino = pet.forward(act_p)
    t_build = time.perf_counter() - t0
    t_fwd, sino = _timed(lambda: pet.forward(act_p), reps)
    t_adj, _ = _timed(lambda: pet.adjoint(sino), reps)
    meas = sino * (2e6 / float(sino[:, :, 0].sum() + 1e-12))
    # Before/after in one run, interleaved, median of `reps`: this suite's problem (5 mm PSF in the
    # projector) and the dataset tasks' configuration (attenuation in sinogram space, no projector PSF,
    # scatter + randoms background, common.simulation.pet.pet_system).
    from common.simulation.pet import pet_system

    _, ac = pet_system((128, 128, nz), (4.0, 4.0, 4.0), 128, mu_p)
    pet_before = _PETBefore(pet)
    t_fwd0, _ = _timed(lambda: pet_before.forward(act_p), reps)
    t_adj0, _ = _timed(lambda: pet_before.adjoint(sino), reps)
    bg = 0.3 * meas.mean() * torch.ones_like(meas)
    times: dict[str, list[float]] = {k: [] for k in ("psf_before", "psf_after", "task_before", "task_after")}
    for _ in range(reps):
        for key, fn in (
            ("psf_before", lambda: _osem_before(pet_before, meas, 4, 16)),
            ("psf_after", lambda: osem(pet, meas, 4, 16)),
            ("task_before", lambda: _osem_before(ac, meas, 4, 16, background=bg)),
            ("task_after", lambda: osem(ac, meas, 4, 16, background=bg)),
        ):
            times[key].append(_timed(fn, 1)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    same = float((osem(ac, meas, 4, 16, background=bg) - _osem_before(ac, meas, 4, 16, background=bg)).abs().max())
    result["pet"] = {
        "problem": f"{nz} slices 128x128 x 4 mm, 128 angles x {pet.n_bins} bins, attenuation, 5 mm PSF",
        "build_s": t_build,
        "forward_s": t_fwd,
        "forward_before_s": t_fwd0,
        "adjoint_s": t_adj,
        "adjoint_before_s": t_adj0,
        "osem_4x16_s": med["psf_after"],
        "osem_4x16_before_s": med["psf_before"],
        "task_osem_4x16_s": med["task_after"],
        "task_osem_4x16_before_s": med["task_before"],
        "task_osem_max_abs_difference": same,
    }
    result["load_avg_1min_end"] = _load()
    _print_table(result)
    return result


def main() -> None:
    """``python -m scripts.bench_physics [--full]``: print the table, write JSON to stdout's end."""
    import json
    import sys

    print(json.dumps(run(quick="--full" not in sys.argv), indent=1))


def _print_spect(s: dict) -> None:
    print(f"SPECT {s['problem']} ({s['psf_nodes']} blur nodes)")
    print(f"{'':10s}{'ours s':>10s}{'PyTomography s':>16s}{'speed-up':>10s}{'NRMSE':>10s}   target >= 10x, NRMSE <= 0.01")
    for key, nrm_key, label in (("forward", "forward", "forward"), ("adjoint", "adjoint", "adjoint"), ("osem", "osem_image", f"OSEM {s['osem']}")):
        ours = s[f"ours_{key}_s"]
        ref = s.get(f"pytomography_{key}_s", math.nan)
        nrm = s.get(f"nrmse_{nrm_key}", math.nan)
        verdict = "" if math.isnan(ref) else "met" if ref / ours >= 10 and nrm <= 0.01 else "NOT met"
        print(f"{label:10s}{ours:10.2f}{ref:16.2f}{ref / ours:10.1f}{nrm:10.4f}   {verdict}")
    print(f"(operator build {s['ours_build_s']:.2f} s, once per geometry and mu map)")


def _print_table(r: dict) -> None:
    p = r["pet"]
    for s in (r.get("spect") or {}).values():
        _print_spect(s)
    print(f"PET {p['problem']}: build {p['build_s']:.2f} s, forward {p['forward_s']:.3f} s, adjoint {p['adjoint_s']:.3f} s")
    print(f"{'PET, before/after in one run':34s}{'before s':>10s}{'after s':>10s}{'speed-up':>10s}")
    for key, label in (
        ("forward", "forward (5 mm PSF)"),
        ("adjoint", "adjoint (5 mm PSF)"),
        ("osem_4x16", "OSEM 4x16, 5 mm PSF (this suite)"),
        ("task_osem_4x16", "OSEM 4x16, dataset-task config"),
    ):
        b, a = p[f"{key}_before_s"], p[f"{key}_s"]
        print(f"{label:34s}{b:10.3f}{a:10.3f}{b / a:10.1f}")
    print(f"dataset-task OSEM: max |after - before| = {p['task_osem_max_abs_difference']:.3g} (subnormals flushed)")
    verdict = lambda v, t: f"{v:.3f} s (target <= {t:g} s: {'met' if v <= t else 'NOT met'})"  # noqa: E731
    print(f"issue 18 targets: forward {verdict(p['forward_s'], 0.1)}, adjoint {verdict(p['adjoint_s'], 0.1)}, "
          f"OSEM 4x16 {verdict(p['osem_4x16_s'], 0.5)}")  # fmt: skip
    print(f"torch threads {r['threads']}, load average (1 min) {r['load_avg_1min_start']:.2f} -> {r['load_avg_1min_end']:.2f}")


if __name__ == "__main__":
    main()
