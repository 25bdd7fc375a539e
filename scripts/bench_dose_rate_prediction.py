"""Benchmark suite ``dose_rate_prediction``: what a dose-rate map costs by Monte Carlo and by the
bundle's network, on one held-out torso phantom of the bundle's dataset task (80 x 64 x 64 voxels
of 5 mm, Lu-177 PSMA-like uptake), in one run (issue 15):

- the Monte Carlo's photon transport (``common.dosimetry.monte_carlo_dose_rate``, Woodcock
  tracking, track-length estimator) at ``N`` and ``4 N`` histories (electrons set to a token count,
  so the time is the photons'); its mean relative standard error of the photon-transported dose
  rate in body voxels above 10 % of that part's maximum falls as ``1 / sqrt(N)``, which gives the
  histories and the time to reach 2 %;
- the Monte Carlo at the dataset's settings (photons and electron samples of ``DOSE_PARAMS``);
- the network's inference (density-scaled VSV input + U-Net + scaling to Gy/s, shipped weights),
  median of 3 after a warm-up, and the density-scaled VSV alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from scripts.benchmark import median_seconds

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "dose_rate_prediction"
TARGET_REL_STD = 0.02
THREADS = 2


def run(quick: bool = False) -> dict:
    from dose_rate_prediction.dataset import DOSE_PARAMS
    from dose_rate_prediction.evaluation import load_weights, predict
    from dose_rate_prediction.networks import DoseRateNet
    from dose_rate_prediction.transforms import BODY_MIN_DENSITY, vsv_kernel

    from common.data import load_datalist, read_nifti
    from common.dosimetry import monte_carlo_dose_rate, vsv_dose_rate
    from common.physics import hu_to_material
    from common.simulation.datasets import generate_dataset

    old_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # the phantom only: a token Monte Carlo (the reference dose is not used here)
            token = {"n_photons": 2000, "n_electrons": 20000, "n_batches": 2}
            generate_dataset("dose_rate_prediction", Path(tmp), n=1, seed=7000, progress=False, test_only=True, params=token)
            entry = load_datalist(tmp, "test")[0]
            act = read_nifti(entry["activity"])
            activity = torch.from_numpy(np.asarray(act.array, dtype=np.float32))
            ct = torch.from_numpy(np.asarray(read_nifti(entry["ct"]).array, dtype=np.float32))
        spacing = tuple(float(s) for s in np.sqrt((np.asarray(act.affine)[:3, :3] ** 2).sum(0)))
        density = hu_to_material(ct).density.float()
        body = density >= BODY_MIN_DENSITY

        n0 = 20_000 if quick else 100_000
        photon_runs = []
        for n in (n0, 4 * n0):
            r = monte_carlo_dose_rate(activity, ct, spacing, "Lu-177", n_photons=n, n_electrons=1000, n_batches=10, seed=1)
            photon_runs.append({"n_photons": n, "seconds": round(r.seconds, 2), "photon_rel_std": r.relative_std("photon", mask=body)})
        first, last = photon_runs
        n_2pct = last["n_photons"] * (last["photon_rel_std"] / TARGET_REL_STD) ** 2
        # the fixed cost (medium, source set-up) once, the histories at the marginal cost of the two runs
        per_photon = (last["seconds"] - first["seconds"]) / (last["n_photons"] - first["n_photons"])
        seconds_2pct = last["seconds"] + per_photon * (n_2pct - last["n_photons"])
        scaling = photon_runs[0]["photon_rel_std"] / photon_runs[1]["photon_rel_std"]  # 2.0 if 1/sqrt(N)

        dataset_mc = None
        if not quick:
            r = monte_carlo_dose_rate(activity, ct, spacing, "Lu-177", n_photons=int(DOSE_PARAMS["n_photons"]),
                                      n_electrons=int(DOSE_PARAMS["n_electrons"]), n_batches=int(DOSE_PARAMS["n_batches"]), seed=2)  # fmt: skip
            dataset_mc = {"n_photons": r.n_photons, "n_electrons": r.n_electrons, "seconds": round(r.seconds, 2),
                          "rel_std": r.relative_std("total", mask=body), "photon_rel_std": r.relative_std("photon", mask=body)}  # fmt: skip

        net = load_weights(DoseRateNet(), BUNDLE / "models" / "model.pt").eval()
        kernel = vsv_kernel("Lu-177", spacing, str(BUNDLE / "models"))

        def network() -> torch.Tensor:
            with torch.no_grad():
                return predict(net, activity, density, vsv_dose_rate(activity, kernel, spacing, density), "Lu-177", "cpu")

        network_s = median_seconds(network, 3)
        vsv_s = median_seconds(lambda: vsv_dose_rate(activity, kernel, spacing, density), 3)
    finally:
        torch.set_num_threads(old_threads)

    result = {
        "shape": list(activity.shape),
        "spacing_mm": list(spacing),
        "threads": THREADS,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "photon_runs": photon_runs,
        "photon_rel_std_ratio_4x_histories": round(scaling, 3),
        "photon_histories_for_2pct": int(round(n_2pct, -3)),
        "photon_seconds_for_2pct": round(seconds_2pct, 1),
        "dataset_settings_mc": dataset_mc,
        "network_s": round(network_s, 3),
        "vsv_density_s": round(vsv_s, 3),
        "network_speedup_vs_mc_2pct": round(seconds_2pct / network_s),
    }
    print(f"dose_rate_prediction: {tuple(activity.shape)} voxels of {spacing[0]:g} mm, {THREADS} threads, load {result['load_average_1min']}")
    for p in photon_runs:
        print(f"  Monte Carlo photons {p['n_photons']:>9,d}: {p['seconds']:7.2f} s, photon-part rel. std {100 * p['photon_rel_std']:.2f} %")
    print(f"  rel. std ratio at 4x histories {scaling:.2f} (2.00 for 1/sqrt(N)); 2 % needs about {n_2pct:,.0f} photons, {seconds_2pct:.0f} s")
    if dataset_mc:
        print(f"  Monte Carlo at the dataset's settings ({dataset_mc['n_photons']:,d} photons, {dataset_mc['n_electrons']:,d} electron "
              f"samples): {dataset_mc['seconds']:.1f} s, total rel. std {100 * dataset_mc['rel_std']:.2f} %")  # fmt: skip
    print(f"  network (density-scaled VSV input + U-Net): {network_s:.3f} s; density-scaled VSV alone {vsv_s:.3f} s")
    print(f"  network vs Monte Carlo to 2 % photon uncertainty: {result['network_speedup_vs_mc_2pct']}x faster")
    return result
