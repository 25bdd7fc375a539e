"""Benchmark suite ``pet_lowdose_denoising``: inference time of one 128 x 128 x 96 PET volume
(4 mm voxels) on 2 CPU threads, for the bundle's network alone, the bundle's whole inference
workflow (NIfTI in, resampling, network, inversion, NIfTI out) and the tuned-Gaussian baseline.
Target (issue 7): under 5 s per volume on 2 cores.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from scripts.benchmark import median_seconds

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "pet_lowdose_denoising"
SHAPE = (128, 128, 96)
SPACING_MM = (4.0, 4.0, 4.0)
THREADS = 2
TARGET_S = 5.0


def _phantom_like_volume(seed: int = 0) -> np.ndarray:
    """A smooth body with hot spots and Poisson-like noise, SUV (no simulation: timing only)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    body = ((x / 0.8) ** 2 + (y / 0.6) ** 2 < 1).astype(np.float32)
    hot = 8.0 * np.exp(-((x - 0.2) ** 2 + y**2 + (z - 0.1) ** 2) / 0.002)
    mean = body * (1.0 + hot)
    return rng.gamma(4.0, mean / 4.0 + 1e-6).astype(np.float32) * body


def run(quick: bool = False) -> dict:
    from monai.bundle import ConfigParser
    from monai.bundle import run as bundle_run
    from pet_lowdose_denoising.baseline import gaussian_filter_fwhm

    from common.data import centred_affine, write_nifti

    repeats = 1 if quick else 3
    old_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / "configs" / "inference.json"))
        parser["bundle_root"] = str(BUNDLE)
        net = parser.get_parsed_content("network_def").eval()
        weights = BUNDLE / "models" / "model.pt"
        if weights.is_file():
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        volume = _phantom_like_volume()
        x = torch.from_numpy(volume)[None, None]
        x = torch.cat([x, torch.full_like(x, 0.65)], dim=1)  # dose channel of DRF 20
        with torch.no_grad():
            t_net = median_seconds(lambda: net(x), repeats)
        t_gauss = median_seconds(lambda: gaussian_filter_fwhm(x[0, 0], 8.0, SPACING_MM), repeats)

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "pet.nii.gz"
            write_nifti(src, volume, centred_affine(SHAPE, SPACING_MM))

            def workflow():
                bundle_run(
                    "inference",
                    config_file=str(BUNDLE / "configs" / "inference.json"),
                    bundle_root=str(BUNDLE),
                    output_dir=str(Path(tmp) / "out"),
                    datalist=[{"image": str(src), "drf": 20, "units": "SUV"}],
                    input_root="",
                )

            t_flow = median_seconds(workflow, repeats) if weights.is_file() else None
    finally:
        torch.set_num_threads(old_threads)

    result = {
        "volume_shape": list(SHAPE),
        "threads": THREADS,
        "repeats": repeats,
        "network_s": round(t_net, 3),
        "workflow_s": round(t_flow, 3) if t_flow is not None else None,
        "gaussian_baseline_s": round(t_gauss, 3),
        "target_s": TARGET_S,
        "meets_target": bool((t_flow if t_flow is not None else t_net) < TARGET_S),
        "weights": "shipped" if weights.is_file() else "untrained (no models/model.pt)",
    }
    print(f"pet_lowdose_denoising inference, {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} voxels, {THREADS} threads (median of {repeats})")
    print(f"  {'network forward':<34} {result['network_s']:8.3f} s")
    if t_flow is not None:
        print(f"  {'bundle inference workflow (NIfTI)':<34} {result['workflow_s']:8.3f} s   target < {TARGET_S:g} s")
    print(f"  {'Gaussian post-filter (baseline)':<34} {result['gaussian_baseline_s']:8.3f} s")
    return result


if __name__ == "__main__":
    run()
