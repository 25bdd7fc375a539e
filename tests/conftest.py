"""Shared fixtures: a ready copy of ``tests/tiny_bundle`` with a tiny synthetic dataset and weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data.synthetic import create_test_image_3d

from common.simulation.datasets import add_bundle_paths

TINY_BUNDLE = Path(__file__).parent / "tiny_bundle"
# Each bundle's own package (bundles/<name>/<name>/) imports as ``<name>``, as it does when the
# bundle's configs put its root on sys.path.
add_bundle_paths(Path(__file__).resolve().parents[1])
SHAPE = (32, 30, 24)  # voxels; not multiples of the 16^3 patch, so padding and Invertd are exercised
SPACING_MM = 2.5  # != the bundle's 4 mm, so Spacingd resamples and Invertd must undo it


def write_tiny_dataset(dataset_dir: Path, n_subjects: int = 7, seed: int = 0) -> Path:
    """Noisy/clean synthetic sphere pairs as NIfTI plus ``datalist.json`` (4 training, 2 validation, rest test).

    Two validation subjects, so each of two DDP ranks gets one."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    affine = np.diag([SPACING_MM] * 3 + [1.0])
    affine[:3, 3] = -0.5 * SPACING_MM * (np.array(SHAPE) - 1)  # volume centred on the origin
    items = []
    for i in range(n_subjects):
        rng = np.random.default_rng([seed, i])
        clean, _ = create_test_image_3d(*SHAPE, num_objs=3, rad_max=6, rad_min=3, random_state=np.random.RandomState(seed + i))
        noisy = clean + rng.normal(0.0, 0.1, SHAPE)
        item = {}
        for key, array in (("image", noisy), ("label", clean)):
            name = f"{key}_{i:03d}.nii.gz"
            nib.Nifti1Image(array.astype(np.float32), affine).to_filename(dataset_dir / name)
            item[key] = name
        items.append(item)
    datalist = {"training": items[:4], "validation": items[4:6], "test": items[6:]}
    (dataset_dir / "datalist.json").write_text(json.dumps(datalist, indent=2))
    return dataset_dir


def write_initial_weights(bundle_dir: Path, seed: int = 0) -> Path:
    """``models/model.pt``: the seeded initial state_dict of the bundle's ``network_def``."""
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir.resolve())
    with torch.random.fork_rng():  # leave the global RNG as it was
        torch.manual_seed(seed)
        net = parser.get_parsed_content("network_def")
    path = bundle_dir / "models" / "model.pt"
    path.parent.mkdir(exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A complete tiny bundle (dataset in its default ``data/``, initial weights). Do not modify it."""
    bundle = tmp_path_factory.mktemp("pristine") / "tiny_bundle"
    shutil.copytree(TINY_BUNDLE, bundle)
    write_tiny_dataset(bundle / "data")
    write_initial_weights(bundle)
    return bundle


@pytest.fixture
def tiny_bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`tiny_bundle` that a test may change."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundles" / "tiny_bundle"))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only with ``NM_RUN_SLOW=1`` (CI sets it), keeping the default suite fast."""
    import os

    if os.environ.get("NM_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set NM_RUN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
