"""The ``pet_nac_to_pct`` dataset task: FDG torso PET simulated by :mod:`common.simulation.pet`,
written as NAC OSEM (SUV), CT (HU), labels, true-CT AC OSEM (SUV) and the raw sinograms that the
attenuation-correction task metric (:mod:`pet_nac_to_pct.evaluation`) reconstructs again.

Serves this bundle only. Registered on import; ``python -m scripts make_dataset --task
pet_nac_to_pct`` finds it by scanning the bundles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from common.simulation.datasets import SubjectData, TaskSpec, register_task
from common.simulation.pet import (
    PET_FAMILIES,
    PET_PARAMS,
    reconstruct_pet,
    simulate_pet_subject,
    suv_image,
)

__all__ = ["TASK", "build_pet_nac_to_pct"]


def build_pet_nac_to_pct(rng: np.random.Generator, params: Mapping[str, Any]) -> SubjectData:
    """One ``pet_nac_to_pct`` subject (files and model: module docstring)."""
    s = simulate_pet_subject(rng, params)
    d, it, sub = s.data, int(params["n_iters"]), int(params["n_subsets"])
    # Backgrounds are stored as float16 (half the disk); reconstruct with the stored values.
    background = d.background.half()
    nac_background = background if params["nac_scatter_correction"] else d.randoms.half()
    nac = reconstruct_pet(s.nac_projector, d.prompts, nac_background.float(), d.count_scale, it, sub)
    ac = reconstruct_pet(s.ac_projector, d.prompts, background.float(), d.count_scale, it, sub)
    ph, affine = s.phantom, s.phantom.affine
    ids = sorted(ph.label_names)
    raw = {
        "prompts": d.prompts.numpy().astype(np.int32),
        "background": background.numpy(),
        "nac_background": nac_background.numpy(),
        "count_scale": np.float64(d.count_scale),
        "decay_factor": np.float64(s.decay),
        "suv_factor": np.float64(s.suv_factor),
        "ct_air_below_hu": np.float64(np.nan if params["ct_air_below_hu"] is None else params["ct_air_below_hu"]),
        "n_iters": np.int64(it),
        "n_subsets": np.int64(sub),
        "n_angles": np.int64(s.ac_projector.n_views),
        "n_bins": np.int64(s.ac_projector.n_bins),
        "spacing_mm": np.asarray(ph.spacing_mm, dtype=np.float64),
        "image_shape": np.asarray(ph.labels.shape, dtype=np.int64),
        "label_ids": np.asarray(ids, dtype=np.int64),
        "label_names": np.asarray([ph.label_names[i] for i in ids]),
    }
    return SubjectData(
        images={
            "nac": (suv_image(s, nac), affine),
            "ct": (s.ct_hu, affine),
            "labels": (ph.labels.astype(np.int16), affine),
            "ac": (suv_image(s, ac), affine),
        },
        arrays={"raw": raw},
        attributes=s.attributes,
    )


TASK = register_task(
    TaskSpec(
        "pet_nac_to_pct",
        build_pet_nac_to_pct,
        image_keys=("nac", "ct", "labels", "ac"),
        array_keys=("raw",),
        params=PET_PARAMS,
        version="3",  # 3: phantom and acquisition variety, shifted family (issue 19)
        families=PET_FAMILIES,
        description="FDG torso PET: NAC OSEM (SUV) -> CT (HU); true-CT AC OSEM and raw sinograms for the AC task metric",
    )
)
