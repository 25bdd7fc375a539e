"""Benchmark suite ``pet_nac_to_pct``: inference time of the bundle on a 128 x 128 x 96 volume.

Times the shipped network with its sliding-window inferer on 2 threads (the target: under 5 s on
2 CPU cores), and the whole stock ``inference`` workflow (NIfTI in, checks, resampling, network,
``Invertd``, NIfTI out) on a simulated NAC PET of that size. The baseline measured in the same
run is the 3-class segmentation mu-map of :mod:`pet_nac_to_pct.baseline`, the method used without a CT.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "pet_nac_to_pct"
SHAPE = (128, 128, 96)
SPACING_MM = (4.0, 4.0, 4.0)
THREADS = 2
TARGET_S = 5.0


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _nac_volume(seed: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """A simulated NAC PET of the default size (the dataset builder of the bundle's task)."""
    from common.simulation.datasets import get_task

    spec = get_task("pet_nac_to_pct")
    data = spec.builder(np.random.default_rng([seed, 0]), dict(spec.params))
    nac, affine = data.images["nac"]
    return np.asarray(nac, dtype=np.float32), np.asarray(affine)


def run(quick: bool = False) -> dict:
    """Time the network (sliding window) and the stock inference workflow; print a table."""
    from monai.bundle import ConfigParser, ConfigWorkflow
    from pet_nac_to_pct.baseline import segment_nac

    from common.data import write_nifti

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    repeats = 1 if quick else 3
    try:
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / "configs" / "inference.json"))
        parser["bundle_root"] = str(BUNDLE)
        net = parser.get_parsed_content("network_def").eval()
        net.load_state_dict(torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True))
        inferer = parser.get_parsed_content("inferer")
        x = torch.rand((1, 1, *SHAPE), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            inferer(x, net)  # warm-up
            t_net = _best_of(lambda: inferer(x, net), repeats)

        nac, affine = _nac_volume()
        t_base = _best_of(lambda: segment_nac(torch.from_numpy(nac), SPACING_MM), repeats)
        with tempfile.TemporaryDirectory() as tmp:
            path = write_nifti(Path(tmp) / "nac.nii.gz", nac, affine)

            def workflow() -> None:
                wf = ConfigWorkflow(
                    config_file=str(BUNDLE / "configs" / "inference.json"),
                    meta_file=str(BUNDLE / "configs" / "metadata.json"),
                    workflow_type="inference",
                    bundle_root=str(BUNDLE),
                    input_image=str(path),
                    output_dir=str(Path(tmp) / "out"),
                )
                wf.initialize()
                wf.run()
                wf.finalize()

            t_wf = _best_of(workflow, repeats)
    finally:
        torch.set_num_threads(threads)
    result = {
        "shape": list(SHAPE),
        "threads": THREADS,
        "network_sliding_window_s": round(t_net, 3),
        "inference_workflow_s": round(t_wf, 3),
        "baseline_segmentation_s": round(t_base, 3),
        "target_s": TARGET_S,
        "meets_target": bool(t_wf < TARGET_S),
    }
    print(f"pet_nac_to_pct inference, {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} voxels, {THREADS} threads (best of {repeats})")
    print(f"  {'network + sliding window':<34} {t_net:7.2f} s")
    print(f"  {'stock inference workflow (I/O)':<34} {t_wf:7.2f} s   target < {TARGET_S:g} s: {'met' if t_wf < TARGET_S else 'MISSED'}")
    print(f"  {'baseline: 3-class segmentation':<34} {t_base:7.2f} s")
    return result
