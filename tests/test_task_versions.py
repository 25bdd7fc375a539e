"""A change of what a dataset task simulates must come with a new task version (TaskSpec.version),
so that a stored dataset is never taken for what the code makes now (DESIGN 9: the same seed and
index give the same data). Each task's tiny subject is fingerprinted per version; when a
fingerprint changes, bump the task's version and record the new fingerprint here."""

from __future__ import annotations

import numpy as np
import pytest

from common.simulation.datasets import TASKS, bundle_task_modules, import_bundle_tasks

assert not import_bundle_tasks()  # registers the tasks of every bundle (bundles/<name>/<name>/dataset.py)

SMALL_PET = {"shape": [24, 24, 16], "spacing_mm": [16.0, 16.0, 16.0], "n_angles": 24, "n_subsets": 4}
SMALL = {
    "pet_nac_to_pct": SMALL_PET,
    "pet_lowdose_denoising": {**SMALL_PET, "dose_reduction_factors": [4]},
    "pet_lowdose_split_counts": {**SMALL_PET, "dose_reduction_factors": [4]},
    "spect_projection_completion": {"shape": [32, 32, 28], "spacing_mm": [16.0, 16.0, 16.0], "n_views": 24, "n_iters": 2, "n_subsets": 4},
    "dose_rate_prediction": {"shape": [24, 20, 20], "spacing_mm": [16.0, 16.0, 16.0], "n_photons": 2000, "n_electrons": 20000, "n_batches": 2},
}
# (task, version) -> image key -> (sum, sum of squares) of the tiny subject of default_rng([0, 0])
FINGERPRINTS: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("dose_rate_prediction", "1"): {
        "activity": (168129231.890625, 59172483941273.49),
        "ct": (-6822901.0, 7382538859.0),
        "dose_mc": (0.005407785776111064, 6.867283885695142e-08),
        "dose_mc_std": (0.0012404489763271336, 3.3258167022922865e-08),
        "labels": (14543.0, 136693.0),
    },
    ("pet_lowdose_denoising", "2"): {
        "drf4": (3882.457217152609, 9404.97158554269),
        "full": (3883.7283490641275, 9432.455255014273),
        "labels": (16231.0, 160047.0),
        "noise_free": (3883.6586671928235, 9427.534584249512),
    },
    ("pet_lowdose_split_counts", "2"): {
        "drf4_half1": (3883.388725905039, 9388.789454823389),
        "drf4_half2": (3881.54471017966, 9424.41000907599),
        "labels": (16231.0, 160047.0),
    },
    ("pet_nac_to_pct", "2"): {
        "ac": (3883.7154989055416, 9432.476557918704),
        "ct": (-6098237.0, 6506357217.0),
        "labels": (16231.0, 160047.0),
        "nac": (978.8549554888159, 218.4939237628783),
    },
    ("spect_projection_completion", "1"): {
        "activity": (63189848.51263428, 9211795648498.115),
        "ct": (-23074103.0, 24024630761.0),
        "labels": (26520.0, 231734.0),
        "osem_full": (60800890.843368806, 6583884980838.182),
        "osem_sparse": (62248962.358259544, 7065667869145.515),
    },
    ("pet_lowdose_denoising", "3"): {
        "drf4": (3120.360620585445, 6150.007018402837),
        "full": (3119.508114762226, 6144.844833775667),
        "labels": (11879.0, 115695.0),
        "noise_free": (3119.7680217117013, 6146.233062991931),
    },
    ("pet_lowdose_denoising", "4"): {  # version 3's images unchanged, plus the complementary counts
        "drf4": (3120.360620585445, 6150.007018402837),
        "drf4_comp": (3119.224894201121, 6143.3469518320435),
        "full": (3119.508114762226, 6144.844833775667),
        "labels": (11879.0, 115695.0),
        "noise_free": (3119.7680217117013, 6146.233062991931),
    },
    ("pet_lowdose_split_counts", "3"): {
        "drf4_half1": (3121.4640336776065, 6160.497914764739),
        "drf4_half2": (3119.264892388179, 6140.846465437334),
        "labels": (11879.0, 115695.0),
    },
    ("pet_lowdose_split_counts", "4"): {
        "drf4_half1": (3120.20376904335, 6152.574942634417),
        "drf4_half2": (3120.522792682852, 6148.626350672308),
        "labels": (11879.0, 115695.0),
    },
    ("pet_nac_to_pct", "3"): {
        "ac": (3119.484536740463, 6144.73224626004),
        "ct": (-7018080.0, 7421176214.0),
        "labels": (11879.0, 115695.0),
        "nac": (890.2585665788502, 240.28256497208253),
    },
    ("spect_projection_completion", "2"): {
        "activity": (57134798.643585205, 16969296160736.39),
        "ct": (-24617641.0, 25476205599.0),
        "labels": (19427.0, 175367.0),
        "osem_full": (55530792.55266063, 12343554529739.295),
        "osem_sparse": (56459846.16314019, 12879765551331.775),
    },
    ("spect_projection_completion", "3"): {
        "activity": (128479929.13238525, 21951113909356.0),
        "ct": (-17325188.0, 18007597544.0),
        "labels": (43047.0, 353869.0),
        "osem_full": (123501526.4511838, 8525033317154.7295),
        "osem_sparse": (124233897.75168502, 6480206784628.004),
    },
}


def fingerprint(task: str) -> dict[str, tuple[float, float]]:
    spec = TASKS[task]
    subject = spec.builder(np.random.default_rng([0, 0]), {**spec.params, **SMALL[task]})
    out = {}
    for key, (array, _) in sorted(subject.images.items()):
        a = np.asarray(array, dtype=np.float64)
        out[key] = (float(a.sum()), float((a * a).sum()))
    return out


@pytest.mark.parametrize("task", sorted(SMALL))
def test_task_output_matches_the_fingerprint_of_its_version(task):
    spec = TASKS[task]
    recorded = FINGERPRINTS.get((task, spec.version))
    now = fingerprint(task)
    assert recorded is not None, f"no fingerprint recorded for {task} version {spec.version}: add {now!r}"
    assert recorded.keys() == now.keys()
    for key, (s, s2) in recorded.items():
        # float results agree to 1e-6 relative across machines (DESIGN 9); other noise draws or
        # physics move these sums by far more
        assert np.allclose(now[key], (s, s2), rtol=1e-5), (
            f"{task} version {spec.version}: {key} changed ({now[key]} vs {(s, s2)}); bump the task's version and record the new fingerprint"
        )


def test_every_task_of_common_and_of_the_bundles_is_fingerprinted():
    # other test modules register toy tasks of their own in the same process
    bundle_modules = {module for _, module in bundle_task_modules()}
    project = sorted(
        name for name, spec in TASKS.items() if spec.builder.__module__.startswith("common.") or spec.builder.__module__ in bundle_modules
    )
    assert project == sorted(SMALL)
