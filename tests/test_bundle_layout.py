"""Each bundle's own package (``bundles/<name>/<name>/``) and the vendored ``common`` are found
wherever the bundle runs (issue 12): from the repository root, from the bundle folder, and from
an unpacked zip in a folder that knows nothing of this repository. The subprocess prints where
``common`` and the bundle package were imported from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from common.simulation.datasets import generate_dataset, import_bundle_tasks
from scripts.download import install_bundle
from scripts.package import package_bundle

REPO = Path(__file__).resolve().parents[1]
TINY_PET = {"shape": [48, 48, 24], "spacing_mm": [10.0, 10.0, 10.0], "n_angles": 48}
# bundle -> (dataset params, inference overrides, input key of a test entry)
CASES = {
    "pet_nac_to_pct": (TINY_PET, ["--pixdim", "[10.0, 10.0, 10.0]", "--roi_size", "[48, 48, 24]"], "nac"),
    "pet_lowdose_denoising": ({**TINY_PET, "dose_reduction_factors": [20]}, ["--pixdim", "[10.0, 10.0, 10.0]", "--units", "SUV"], "drf20"),
}


@pytest.fixture(scope="module")
def tiny_studies(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, (params, _, key) in CASES.items():
        with torch.random.fork_rng():
            datalist = generate_dataset(name, tmp_path_factory.mktemp(name) / "data", n=1, seed=1000, progress=False, params=params, test_only=True)
        import json

        out[name] = datalist.parent / json.loads(datalist.read_text())["test"][0][key]
    return out


def _run_inference(bundle: Path, image: Path, out: Path, cwd: Path, extra: list[str]) -> list[str]:
    configs = bundle / "configs"
    cmd = [
        sys.executable, "-I", "-m", "monai.bundle", "run", "inference",
        "--bundle_root", str(bundle), "--config_file", str(configs / "inference.json"),
        "--meta_file", str(configs / "metadata.json"), "--input_image", str(image), "--output_dir", str(out),
        *extra,
        "--finalize", f"$print('IMPORTED', @common.__file__, load_module('{bundle.name}').__file__)",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted(out.rglob("*.nii.gz"))
    assert len(written) == 1 and nib.load(written[0]).shape == nib.load(image).shape
    np.testing.assert_allclose(nib.load(written[0]).affine, nib.load(image).affine, atol=1e-4)
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("IMPORTED")]
    return line.split()[1:]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("where", ["repository_root", "bundle_folder"])
def test_bundle_runs_from_the_repository_root_and_from_its_own_folder(name, where, tiny_studies, tmp_path):
    bundle = REPO / "bundles" / name
    cwd = REPO if where == "repository_root" else bundle
    common_file, package_file = _run_inference(bundle, tiny_studies[name], tmp_path / "out", cwd, CASES[name][1])
    assert Path(package_file) == bundle / name / "__init__.py"
    assert Path(common_file) == REPO / "common" / "__init__.py"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_unpacked_zip_runs_from_any_folder_with_its_vendored_common_and_own_package(name, tiny_studies, tmp_path):
    entry = package_bundle(REPO / "bundles" / name, dist=tmp_path / "dist", zoo=tmp_path / "zoo.json")
    bundle = install_bundle(name, entry["version"], dest=tmp_path / "dest", zoo=tmp_path / "zoo.json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    common_file, package_file = _run_inference(bundle, tiny_studies[name], tmp_path / "out", elsewhere, CASES[name][1])
    assert Path(common_file) == bundle / "common" / "__init__.py"  # not the repository's editable install
    assert Path(package_file) == bundle / name / "__init__.py"


def test_make_dataset_finds_every_bundle_task_by_scanning_the_bundles():
    assert import_bundle_tasks() == []
    from common.simulation.datasets import TASKS, get_task

    assert get_task("spect_projection_completion").builder.__module__ == "spect_projection_completion.dataset"
    assert get_task("dose_rate_prediction").builder.__module__ == "dose_rate_prediction.dataset"
    assert {"pet_nac_to_pct", "pet_lowdose_denoising", "pet_lowdose_split_counts"} <= set(TASKS)
    assert TASKS["pet_nac_to_pct"].builder.__module__ == "pet_nac_to_pct.dataset"
    assert TASKS["pet_lowdose_split_counts"].builder.__module__ == "pet_lowdose_denoising.dataset"
