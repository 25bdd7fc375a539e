"""Benchmark suite ``data``: dataset generation speed and disk size per subject, per task.

``run(quick=False)`` builds one subject of each task with :func:`common.simulation.datasets.generate_dataset`
(one worker, one torch thread per subject, as ``make_dataset`` does) at the task's default
settings (``quick``: small volumes), and reports subjects per minute, seconds per subject and
the disk size of the subject's folder. The baseline is the budget of a 100-subject dataset in 15
minutes (6.7 subjects/min); ``ratio`` = measured / budget, so > 1 meets it with one worker (the
machine's 2 cores run 2 workers). The machine is shared, so the load average is recorded.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

BUDGET_SUBJECTS_PER_MIN = 100 / 15.0
TASKS = ("pet_nac_to_pct", "pet_lowdose_denoising", "spect_projection_completion", "dose_rate_prediction")
#: Small settings for ``quick`` (10 mm PET voxels as the PET tests; 8 mm SPECT voxels, 60 views).
QUICK_PARAMS = {
    "pet_nac_to_pct": {"shape": [40, 40, 44], "spacing_mm": [10.0, 10.0, 10.0], "n_angles": 48, "n_subsets": 8, "psf_fwhm_mm": 8.0},
    "pet_lowdose_denoising": {"shape": [40, 40, 44], "spacing_mm": [10.0, 10.0, 10.0], "n_angles": 48, "n_subsets": 8, "psf_fwhm_mm": 8.0},
    "spect_projection_completion": {"shape": [64, 64, 48], "spacing_mm": [8.0, 8.0, 8.0], "n_views": 60},
    "dose_rate_prediction": {"shape": [40, 32, 32], "spacing_mm": [10.0, 10.0, 10.0], "n_photons": 20000, "n_electrons": 200000},
}


def _size_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _one(task: str, quick: bool) -> dict:
    from common.simulation.datasets import SUBJECTS_DIR, generate_dataset

    with tempfile.TemporaryDirectory(prefix=f"bench-{task}-") as tmp:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        generate_dataset(task, tmp, n=1, seed=0, workers=1, progress=False, params=QUICK_PARAMS[task] if quick else None)
        seconds = time.perf_counter() - t0
        size = _size_bytes(Path(tmp) / SUBJECTS_DIR)
    per_min = 60.0 / seconds
    return {
        "seconds_per_subject": round(seconds, 2),
        "subjects_per_min": round(per_min, 3),
        "ratio_to_budget": round(per_min / BUDGET_SUBJECTS_PER_MIN, 3),
        "mb_per_subject": round(size / 2**20, 2),
        "load_avg_1min": round(load, 2),
    }


def run(quick: bool = False, tasks: tuple[str, ...] = TASKS) -> dict:
    """Time one subject of each task; return ``{task: {...}, "budget_subjects_per_min": 6.67}``."""
    import monai.networks.layers.simplelayers  # noqa: F401  (imported lazily by the builders)

    from common.simulation.datasets import get_task

    for task in tasks:  # imports (torch, monai, xraydb, ICRP-107 tables) are not part of a subject's time
        get_task(task)
    results: dict = {task: _one(task, bool(quick)) for task in tasks}
    print(f"{'task':32s} {'s/subject':>10s} {'subj/min':>9s} {'x budget':>9s} {'MB/subj':>8s} {'load':>5s}")
    for task in tasks:
        r = results[task]
        print(
            f"{task:32s} {r['seconds_per_subject']:10.1f} {r['subjects_per_min']:9.2f} {r['ratio_to_budget']:9.2f} "
            f"{r['mb_per_subject']:8.1f} {r['load_avg_1min']:5.1f}"
        )
    print(f"budget: 100 subjects in 15 min = {BUDGET_SUBJECTS_PER_MIN:.2f} subjects/min (one worker, one thread)")
    results["budget_subjects_per_min"] = round(BUDGET_SUBJECTS_PER_MIN, 3)
    return results
