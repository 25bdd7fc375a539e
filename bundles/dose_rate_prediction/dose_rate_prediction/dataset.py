"""The ``dose_rate_prediction`` dataset task: a torso phantom of :mod:`common.simulation.phantoms`
with Lu-177 PSMA-like uptake (kidneys, liver, spleen, salivary glands, bone marrow, tumours; lungs
and bone make the medium heterogeneous), its CT in HU, and the reference dose rate of that activity
in that body by the Monte Carlo of :mod:`common.dosimetry` (Woodcock photon tracking, Klein-Nishina
Compton, track-length estimator; beta and line electrons through the density-scaled electron
kernel), with its statistical standard error.

Files per subject (``subjects/<id>/``): ``activity.nii.gz`` (Bq/mL at the time of imaging: the
phantom's concentration decayed over the subject's uptake time), ``ct.nii.gz`` (int16 HU; the
Monte Carlo uses exactly these numbers), ``labels.nii.gz``, ``dose_mc.nii.gz`` (Gy/s) and
``dose_mc_std.nii.gz`` (Gy/s, standard error over ``n_batches`` batches). The datalist entry records
the Monte Carlo settings, its wall time and its mean relative uncertainty in body voxels above 10 %
of the maximum dose rate (``mc_relative_std``).

Grid: 80 x 64 x 64 voxels of 5 mm (400 x 320 x 320 mm: chest and abdomen; the widest bodies and the
arms are clipped at the lateral edges, photons leaving the volume escape). Monte Carlo: 5e5 photons
and 1.6e7 electron samples, about 25 s per subject on one CPU thread, about 1-1.5 % relative
uncertainty (the electron part is cheap, so it gets 32x the samples).

Serves this bundle only. Registered on import; ``python -m scripts make_dataset --task
dose_rate_prediction`` finds it by scanning the bundles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from common.dosimetry import monte_carlo_dose_rate
from common.physics import decay_factor, nuclide
from common.simulation.datasets import SubjectData, TaskSpec, register_task

__all__ = ["DOSE_PARAMS", "TASK", "build_dose_rate_prediction"]

#: Defaults of ``dose_rate_prediction`` (the training family).
DOSE_PARAMS: dict[str, Any] = {
    "shape": [80, 64, 64],
    "spacing_mm": [5.0, 5.0, 5.0],
    "n_lesions": [1, 8],
    "phantom_variety": "training",  # anatomy and uptake ranges of common.simulation.phantoms
    "tracer": "Lu177-agent",
    "nuclide": "Lu-177",
    "n_photons": 500_000,
    "n_electrons": 16_000_000,
    "n_batches": 10,
}


def build_dose_rate_prediction(rng: np.random.Generator, params: Mapping[str, Any]) -> SubjectData:
    """One ``dose_rate_prediction`` subject (files and model: module docstring)."""
    from common.simulation.phantoms import make_torso_phantom

    phantom_seed = [int(v) for v in rng.integers(0, 2**32, size=4)]
    ph = make_torso_phantom(
        phantom_seed,
        shape=tuple(params["shape"]),
        spacing_mm=tuple(params["spacing_mm"]),
        n_lesions=tuple(params["n_lesions"]),
        variety=params["phantom_variety"],
    )
    tracer, name = params["tracer"], params["nuclide"]
    spacing = tuple(float(s) for s in ph.spacing_mm)
    uptake = float(ph.uptake_time_s[tracer])
    decay = float(decay_factor(uptake, nuclide(name).half_life_s))
    activity = (ph.activity[tracer] * decay).astype(np.float32)  # Bq/mL at the time of imaging
    ct_hu = np.clip(np.round(ph.ct_hu), -1024, 3071).astype(np.int16)
    mc_seed = int(rng.integers(0, 2**31 - 1))
    result = monte_carlo_dose_rate(
        torch.from_numpy(activity), torch.from_numpy(ct_hu.astype(np.float32)), spacing, name,
        n_photons=int(params["n_photons"]), n_electrons=int(params["n_electrons"]), n_batches=int(params["n_batches"]),
        seed=mc_seed,
    )  # fmt: skip
    body = torch.from_numpy(ph.labels > 0)
    attributes = {
        "units": {"activity": "Bq/mL", "ct": "HU", "dose_mc": "Gy/s"},
        "nuclide": name,
        "tracer": tracer,
        "weight_kg": float(ph.weight_kg),
        "injected_Bq": float(ph.injected_activity_Bq[tracer]),
        "uptake_time_s": uptake,
        "decay_factor": decay,
        "activity_Bq": result.activity_Bq,
        "mc_seed": mc_seed,
        "mc_n_photons": result.n_photons,
        "mc_n_electrons": result.n_electrons,
        "mc_n_batches": result.n_batches,
        "mc_seconds": round(result.seconds, 2),
        "mc_relative_std": result.relative_std("total", mask=body),
        "mc_photon_relative_std": result.relative_std("photon", mask=body),
        "n_lesions": len(ph.lesions),
        "phantom_seed": phantom_seed,
    }
    affine = ph.affine
    return SubjectData(
        images={
            "activity": (activity, affine),
            "ct": (ct_hu, affine),
            "labels": (ph.labels.astype(np.int16), affine),
            "dose_mc": (result.dose_rate.numpy().astype(np.float32), affine),
            "dose_mc_std": (result.std.numpy().astype(np.float32), affine),
        },
        attributes=attributes,
    )


TASK = register_task(
    TaskSpec(
        "dose_rate_prediction",
        build_dose_rate_prediction,
        image_keys=("activity", "ct", "labels", "dose_mc", "dose_mc_std"),
        params=DOSE_PARAMS,
        version="1",
        # other body sizes and shapes, uptake ranges and lesion sizes (common.simulation table)
        families={"shifted": {"phantom_variety": "shifted"}},
        description="Lu-177 torso phantoms: activity (Bq/mL), CT (HU), labels and the Monte Carlo dose rate (Gy/s) with its uncertainty",
    )
)
