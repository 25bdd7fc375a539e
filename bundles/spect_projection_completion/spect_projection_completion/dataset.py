"""The ``spect_projection_completion`` dataset task: torso SPECT (Tc-99m bone agent or Lu-177
PSMA-like agent, drawn per subject) simulated by :mod:`common.simulation.spect`, written as all-view
projections (counts) with their sparse subset, the AC OSEM of both (Bq/mL), the true activity, CT
and labels. Files, acquisition model and count levels: :mod:`common.simulation.spect`.

Serves this bundle only. Registered on import; ``python -m scripts make_dataset --task
spect_projection_completion`` finds it by scanning the bundles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from common.physics import decay_factor, hu_to_mu, nuclide
from common.simulation.datasets import SubjectData, TaskSpec, register_task
from common.simulation.pet import sample_param, torch_generator
from common.simulation.spect import (
    CRYSTAL_MM,
    ViewSubset,
    check_orbit,
    reconstruct_spect,
    sample_acquisition,
    simulate_spect,
    spect_count_scale,
    spect_projector,
)

__all__ = [
    "LU177_PARAMS",
    "SPECT_PARAMS",
    "TASK",
    "TC99M_PARAMS",
    "build_spect_projection_completion",
]

#: Defaults of ``spect_projection_completion``. Ranges ``[low, high]`` are sampled per subject;
#: ``tracer`` may be a list (one drawn per subject); ``energy_keV``, ``collimator`` and
#: ``time_per_view_s`` left None take the tracer's :data:`SPECT_ACQUISITIONS` entry, and
#: ``time_per_view_factor`` scales the time per view (the shifted family's lower count level).
SPECT_PARAMS: dict[str, Any] = {
    "shape": [104, 104, 80],  # 499 x 499 x 384 mm (module docstring: speed)
    "spacing_mm": [4.8, 4.8, 4.8],
    "n_lesions": [1, 8],
    "phantom_variety": "training",  # anatomy and uptake ranges of common.simulation.phantoms
    "tracer": ["Tc99m-agent", "Lu177-agent"],
    "energy_keV": None,
    "window_fraction": 0.20,  # full width of the photopeak window / energy
    "collimator": None,
    "intrinsic_fwhm_140keV_mm": 3.8,  # SIMIND Symbia input: intrinsic resolution 0.38 cm
    "crystal_mm": CRYSTAL_MM,
    "sensitivity_cps_per_MBq": None,  # None: Anger's formula (collimator_sensitivity)
    "n_views": 120,
    "n_heads": 2,
    "time_per_view_s": None,
    "time_per_view_factor": 1.0,
    "radius_mm": 270.0,
    "scatter_to_primary": 0.30,
    "scatter_fwhm_mm": [60.0, 60.0],  # (u, v) width of the scatter kernel
    "sparse_factor": 4,
    "n_iters": 5,
    "n_subsets": 8,
}
#: Overrides for a Tc-99m-only or Lu-177-only dataset.
TC99M_PARAMS: dict[str, Any] = {"tracer": "Tc99m-agent"}
LU177_PARAMS: dict[str, Any] = {"tracer": "Lu177-agent"}


def build_spect_projection_completion(rng: np.random.Generator, params: Mapping[str, Any]) -> SubjectData:
    """One ``spect_projection_completion`` subject (files and model: module docstring)."""
    from common.simulation.phantoms import make_torso_phantom

    acq = sample_acquisition(rng, params)
    phantom_seed = [int(v) for v in rng.integers(0, 2**32, size=4)]
    ph = make_torso_phantom(
        phantom_seed,
        shape=tuple(params["shape"]),
        spacing_mm=tuple(params["spacing_mm"]),
        n_lesions=tuple(params["n_lesions"]),
        variety=params["phantom_variety"],
    )
    tracer, spacing = acq["tracer"], tuple(float(s) for s in ph.spacing_mm)
    check_orbit(ph.activity[tracer], spacing, acq["radius_mm"])
    injected, uptake = ph.injected_activity_Bq[tracer], ph.uptake_time_s[tracer]
    decay = float(decay_factor(uptake, nuclide(acq["nuclide"]).half_life_s))
    # CT stored as int16 HU; the simulation uses exactly the stored numbers (true-CT AC reproduces it).
    ct_hu = np.clip(np.round(ph.ct_hu), -1024, 3071).astype(np.int16)
    mu = hu_to_mu(torch.from_numpy(ct_hu), acq["energy_keV"])
    projector = spect_projector(
        ph.labels.shape, spacing, acq["n_views"], acq["radius_mm"], mu, acq["collimator"], acq["energy_keV"],
        float(params["intrinsic_fwhm_140keV_mm"]),
    )  # fmt: skip
    k = spect_count_scale(spacing, acq["sensitivity_cps_per_MBq"], acq["time_per_view_s"])
    spr = sample_param(rng, params["scatter_to_primary"])
    data = simulate_spect(
        torch.from_numpy(ph.activity[tracer]) * decay,
        projector,
        k,
        spr,
        tuple(params["scatter_fwhm_mm"]),
        torch_generator(rng),
    )
    it, sub = int(params["n_iters"]), int(params["n_subsets"])
    scatter = data.scatter.half()  # half the disk; reconstruct with the stored values
    background = scatter.float() if spr > 0 else None
    full = reconstruct_spect(projector, data.counts, background, k, it, sub) / decay
    idx = acq["sparse_views"]
    sparse = reconstruct_spect(
        ViewSubset(projector, idx), data.counts[idx], None if background is None else background[idx], k, it, sub
    ) / decay  # fmt: skip
    psf = projector.psf
    raw = {
        "projections": data.counts.numpy().astype(np.int32),
        "scatter": scatter.numpy(),
        "sparse_views": np.asarray(idx, dtype=np.int64),
        "sparse_factor": np.int64(params["sparse_factor"]),
        "angles_deg": np.asarray(projector.angles_deg, dtype=np.float64),
        "radius_mm": np.float64(acq["radius_mm"]),
        "count_scale": np.float64(k),
        "decay_factor": np.float64(decay),
        "energy_keV": np.float64(acq["energy_keV"]),
        "collimator": np.asarray(acq["collimator"]),
        "psf": np.asarray([psf.slope, psf.intercept_mm, psf.intrinsic_fwhm_mm], dtype=np.float64),
        "n_iters": np.int64(it),
        "n_subsets": np.int64(sub),
        "spacing_mm": np.asarray(spacing, dtype=np.float64),
        "image_shape": np.asarray(ph.labels.shape, dtype=np.int64),
    }
    total = float(data.counts.sum())
    attributes = {
        **{key: v for key, v in acq.items() if key != "sparse_views"},
        "units": "Bq/mL (decay-corrected to injection)",
        "weight_kg": float(ph.weight_kg),
        "injected_Bq": float(injected),
        "uptake_time_s": float(uptake),
        "decay_factor": decay,
        "sparse_factor": int(params["sparse_factor"]),
        "n_sparse_views": len(idx),
        "scatter_to_primary": spr,
        "count_scale": k,
        "total_counts": total,
        "mean_counts_per_view": total / acq["n_views"],
        "phantom_seed": phantom_seed,
    }
    affine = ph.affine
    return SubjectData(
        images={
            "activity": (ph.activity[tracer].astype(np.float32), affine),
            "ct": (ct_hu, affine),
            "labels": (ph.labels.astype(np.int16), affine),
            "osem_full": (full.numpy().astype(np.float32), affine),
            "osem_sparse": (sparse.numpy().astype(np.float32), affine),
        },
        arrays={"raw": raw},
        attributes=attributes,
    )


TASK = register_task(
    TaskSpec(
        "spect_projection_completion",
        build_spect_projection_completion,
        image_keys=("activity", "ct", "labels", "osem_full", "osem_sparse"),
        array_keys=("raw",),
        params=SPECT_PARAMS,
        version="3",  # 2: phantom variety (issue 19); 3: Tc-99m and Lu-177 mixed, time per view drawn (issue 14)
        # shifted bodies reach 550 mm wide: a wider orbit keeps them inside it; 5x fewer counts
        families={
            "shifted": {
                "phantom_variety": "shifted",
                "radius_mm": 320.0,
                "time_per_view_factor": 0.2,
            }
        },
        description="Tc-99m and Lu-177 torso SPECT: all-view and sparse-view projections (counts), AC OSEM of both (Bq/mL), truth, CT",
    )
)
