"""Split-count (noise2noise) pairs of the low-dose PET studies of ``pet_lowdose_denoising``.

The ``pet_lowdose_denoising`` dataset stores reconstructions only, not the thinned sinograms, so
the halves cannot be split from it afterwards. This module registers a companion task,
``pet_lowdose_split_counts``, whose subject ``(seed, index)`` is the same simulated acquisition
as subject ``(seed, index)`` of ``pet_lowdose_denoising`` (same phantom, same prompts, same
binomial thinning to each dose reduction factor, drawn in the same order from the same
generators), and which stores, per DRF ``d``, the two halves of the thinned prompts
(:func:`common.noise.split_counts`) each reconstructed with background and sensitivity x 1/2
(DESIGN 3). Each half is a DRF-``2d`` study; the two are independent given the activity, which
is what noise2noise training needs (Lehtinen et al., ICML 2018). No full-dose image is written.

Files per subject: ``drf<d>_half1``, ``drf<d>_half2`` (SUV) for each DRF, and ``labels``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from common import simulate
from common.data import SubjectData, TaskSpec, register_task
from common.noise import split_counts, thin

__all__ = ["SPLIT_COUNTS_TASK", "build_pet_lowdose_split_counts"]

SPLIT_COUNTS_TASK = "pet_lowdose_split_counts"


def build_pet_lowdose_split_counts(rng: np.random.Generator, params: Mapping[str, Any]) -> SubjectData:
    """One subject: split-count half reconstructions (SUV) of each thinned low-dose study.

    Draws from ``rng`` in the order of :func:`common.simulate.build_pet_lowdose_denoising`
    (acquisition, then the thinning generator), so the thinned prompts equal that builder's; the
    split uses a further generator drawn after them.
    """
    s = simulate.simulate_pet_subject(rng, params)
    d, it, sub = s.data, int(params["n_iters"]), int(params["n_subsets"])
    thin_gen = simulate.torch_generator(rng)
    split_gen = simulate.torch_generator(rng)
    affine = s.phantom.affine
    images: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for drf in params["dose_reduction_factors"]:
        fraction = 1.0 / float(drf)
        halves = split_counts(thin(d.prompts, fraction, generator=thin_gen), generator=split_gen)
        for i, half in enumerate(halves, start=1):
            # each half holds fraction / 2 of the counts: background and sensitivity x 1/2
            image = simulate.reconstruct_pet(s.ac_projector, half, d.background, d.count_scale, it, sub, 0.5 * fraction)
            images[f"drf{simulate.drf_name(drf)}_half{i}"] = (simulate.suv_image(s, image), affine)
    images["labels"] = (s.phantom.labels.astype(np.int16), affine)
    return SubjectData(images=images, attributes=s.attributes)


register_task(
    TaskSpec(
        SPLIT_COUNTS_TASK,
        build_pet_lowdose_split_counts,
        image_keys=(
            *(f"drf{simulate.drf_name(f)}_half{i}" for f in simulate.LOWDOSE_PARAMS["dose_reduction_factors"] for i in (1, 2)),
            "labels",
        ),
        params=simulate.LOWDOSE_PARAMS,
        version="2",  # as pet_lowdose_denoising 2
        description="split-count halves (noise2noise pairs) of the pet_lowdose_denoising low-dose studies, SUV",
    )
)
