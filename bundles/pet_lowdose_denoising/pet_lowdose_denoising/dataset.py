"""The dataset tasks of ``pet_lowdose_denoising``: FDG torso PET simulated by
:mod:`common.simulation.pet`, binomially thinned to each dose reduction factor (DRF 4-100, UDPET,
REFERENCE.md 5(a); keys ``drf4`` ... ``drf100``) and reconstructed with true-CT AC, the
complementary counts of each thinning (``drf4_comp`` ...: the full-dose prompts minus the thinned
ones, reconstructed with background and sensitivity x (1 - 1/DRF): a full-dose-like image whose
noise is independent of the low-dose study's, the supervised target since version 4), plus the
full-dose and noise-free references; and ``pet_lowdose_split_counts``, the split-count
(noise2noise) halves of the same thinned studies.

``pet_lowdose_split_counts`` subject ``(seed, index)`` is the same simulated acquisition as
subject ``(seed, index)`` of ``pet_lowdose_denoising`` (same phantom, same prompts, same
thinning, drawn in the same order from the same generators); per DRF ``d`` it stores the two
halves of the thinned prompts (:func:`common.physics.noise.split_counts`), each reconstructed
with background and sensitivity x 1/2 (DESIGN 3). Each half is a DRF-``2d`` study; the two are
independent given the activity, which is what noise2noise needs (Lehtinen et al., ICML 2018).

Serves this bundle only. Registered on import; ``python -m scripts make_dataset --task ...``
finds them by scanning the bundles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from common.physics.noise import split_counts, thin
from common.simulation.datasets import SubjectData, TaskSpec, register_task
from common.simulation.pet import (
    PET_FAMILIES,
    PET_PARAMS,
    drf_name,
    reconstruct_pet,
    simulate_pet_subject,
    suv_image,
    torch_generator,
)

__all__ = ["LOWDOSE_PARAMS", "SPLIT_COUNTS_TASK", "TASK", "SPLIT_COUNTS", "build_pet_lowdose_denoising", "build_pet_lowdose_split_counts"]

#: Dose reduction factors 4-100 (UDPET, REFERENCE.md 5(a)); they name the keys ``drf4`` ... ``drf100``.
LOWDOSE_PARAMS: dict[str, Any] = {**PET_PARAMS, "dose_reduction_factors": [4, 10, 20, 50, 100]}
SPLIT_COUNTS_TASK = "pet_lowdose_split_counts"


def build_pet_lowdose_denoising(rng: np.random.Generator, params: Mapping[str, Any]) -> SubjectData:
    """One ``pet_lowdose_denoising`` subject: AC OSEM (true CT) in SUV of the full-dose prompts,
    of each binomially thinned study (dose reduction factors), and of the expected data."""
    s = simulate_pet_subject(rng, params)
    d, it, sub = s.data, int(params["n_iters"]), int(params["n_subsets"])
    affine = s.phantom.affine

    def recon(prompts: torch.Tensor, fraction: float = 1.0) -> np.ndarray:
        return suv_image(s, reconstruct_pet(s.ac_projector, prompts, d.background, d.count_scale, it, sub, fraction))

    images = {"full": (recon(d.prompts), affine)}
    gen = torch_generator(rng)
    for drf in params["dose_reduction_factors"]:
        if not float(drf) > 1.0:  # at DRF 1 the complementary counts are empty
            raise ValueError(f"dose_reduction_factors must be > 1, got {drf}")
        fraction = 1.0 / float(drf)  # binomial thinning of the same counts (DESIGN 3)
        thinned = thin(d.prompts, fraction, generator=gen)
        images[f"drf{drf_name(drf)}"] = (recon(thinned, fraction), affine)
        # the complementary counts: given the activity, a Poisson variable thinned with probability
        # f and its remainder are independent Poisson variables, so this full-dose-like image
        # (1 - f of the counts) has noise independent of the low-dose study's (version 4, issue 13)
        images[f"drf{drf_name(drf)}_comp"] = (recon(d.prompts - thinned, 1.0 - fraction), affine)
    images["noise_free"] = (recon(d.expected), affine)
    images["labels"] = (s.phantom.labels.astype(np.int16), affine)
    return SubjectData(images=images, attributes=s.attributes)


def _lowdose_keys(params: Mapping[str, Any]) -> tuple[str, ...]:
    drfs = [drf_name(f) for f in params["dose_reduction_factors"]]
    return ("full", *(f"drf{d}" for d in drfs), *(f"drf{d}_comp" for d in drfs), "noise_free", "labels")


def build_pet_lowdose_split_counts(rng: np.random.Generator, params: Mapping[str, Any]) -> SubjectData:
    """One subject: split-count half reconstructions (SUV) of each thinned low-dose study.

    Draws from ``rng`` in the order of :func:`build_pet_lowdose_denoising` (acquisition, then the
    thinning generator), so the thinned prompts equal that builder's; the split uses a further
    generator drawn after them.
    """
    s = simulate_pet_subject(rng, params)
    d, it, sub = s.data, int(params["n_iters"]), int(params["n_subsets"])
    thin_gen = torch_generator(rng)
    split_gen = torch_generator(rng)
    affine = s.phantom.affine
    images: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for drf in params["dose_reduction_factors"]:
        fraction = 1.0 / float(drf)
        halves = split_counts(thin(d.prompts, fraction, generator=thin_gen), generator=split_gen)
        for i, half in enumerate(halves, start=1):
            # each half holds fraction / 2 of the counts: background and sensitivity x 1/2
            image = reconstruct_pet(s.ac_projector, half, d.background, d.count_scale, it, sub, 0.5 * fraction)
            images[f"drf{drf_name(drf)}_half{i}"] = (suv_image(s, image), affine)
    images["labels"] = (s.phantom.labels.astype(np.int16), affine)
    return SubjectData(images=images, attributes=s.attributes)


def _split_count_keys(params: Mapping[str, Any]) -> tuple[str, ...]:
    return (*(f"drf{drf_name(f)}_half{i}" for f in params["dose_reduction_factors"] for i in (1, 2)), "labels")


TASK = register_task(
    TaskSpec(
        "pet_lowdose_denoising",
        build_pet_lowdose_denoising,
        image_keys=_lowdose_keys,
        params=LOWDOSE_PARAMS,
        # 2: CT-AC air rule; the random draws had also been reordered since the first datasets
        # 3: phantom and acquisition variety, shifted family (issue 19); 4: the complementary-count
        # images drf<d>_comp (issue 13), every other image as in version 3
        version="4",
        families=PET_FAMILIES,
        description="FDG torso PET: thinned low-dose AC OSEM (SUV, DRF 4-100) -> full dose; noise-free reference",
    )
)
SPLIT_COUNTS = register_task(
    TaskSpec(
        SPLIT_COUNTS_TASK,
        build_pet_lowdose_split_counts,
        image_keys=_split_count_keys,
        params=LOWDOSE_PARAMS,
        # 3: as pet_lowdose_denoising 3; 4: the halves drawn from counted random bits, the same on
        # every machine (common.physics.noise.split_counts; torch.binomial's were not)
        version="4",
        families=PET_FAMILIES,
        description="split-count halves (noise2noise pairs) of the pet_lowdose_denoising low-dose studies, SUV",
    )
)
