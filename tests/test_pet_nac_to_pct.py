"""Bundle ``pet_nac_to_pct``: pseudo-CT from NAC PET, its baseline, task metric and bad input.

Fast tests run on a tiny simulated dataset (48 x 48 x 24 voxels of 10 mm, 48 angles) built once
per session with the bundle's own data task; tests that need the full 4 mm torso are ``slow``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from pet_nac_to_pct.baseline import (
    AIR,
    BASELINE_HU,
    LUNG,
    SOFT_TISSUE,
    baseline_pseudo_ct,
    classes_to_hu,
    segment_nac,
)

from common.data import load_datalist, read_nifti, read_npz
from common.learning.transforms import HALO_RULE, CheckAttenuationCorrection, scatter_halo
from common.physics import HU_RANGE, ct_to_mu
from common.simulation.datasets import generate_dataset

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "pet_nac_to_pct"
CONFIGS = BUNDLE / "configs"
TINY = {"shape": [48, 48, 24], "spacing_mm": [10.0, 10.0, 10.0], "n_angles": 48}
TINY_OVERRIDES = {"pixdim": [10.0, 10.0, 10.0], "patch_size": [32, 32, 16], "roi_size": [48, 48, 24]}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """4 tiny pet_nac_to_pct subjects (2 training, 1 validation, 1 test) from the bundle's task."""
    out = tmp_path_factory.mktemp("pct") / "data"
    with torch.random.fork_rng():
        generate_dataset("pet_nac_to_pct", out, n=4, seed=3, progress=False, params=TINY)
    return out


@pytest.fixture(scope="session")
def tiny_subject(tiny_data: Path) -> dict:
    entry = load_datalist(tiny_data, "training")[0]
    return {
        **{k: read_nifti(entry[k]) for k in ("nac", "ct", "labels", "ac")},
        "raw": read_npz(entry["raw"]),
        "entry": entry,
    }


def _inference(tmp_path: Path, image: Path, weights: Path | None = None, **overrides) -> Path:
    """Run the stock inference workflow on one NIfTI; returns the output folder."""
    out = tmp_path / "out"
    wf = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        meta_file=str(CONFIGS / "metadata.json"),
        workflow_type="inference",
        bundle_root=str(BUNDLE),
        input_image=str(image),
        output_dir=str(out),
        model_path=str(weights or BUNDLE / "models" / "model.pt"),
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return out


def _preprocessing():
    """The inference preprocessing (load, input checks, resampling, normalisation) of the bundle."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    return parser.get_parsed_content("preprocessing")


def _write(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine).to_filename(path)
    return path


# ----------------------------------------------------------------------------------------------
# baseline mu-map
# ----------------------------------------------------------------------------------------------
def test_baseline_class_values_give_the_martinez_moller_mu_at_511kev():
    # Martinez-Moeller et al. J Nucl Med 2009;50:520: lung 0.018 /cm, soft tissue 0.100 /cm; through
    # the Carney 2006 bilinear below its break point (REFERENCE.md section 2).
    mu = ct_to_mu(classes_to_hu(torch.tensor([AIR, LUNG, SOFT_TISSUE])), 511.0)
    assert torch.allclose(mu, torch.tensor([0.0, 0.018, 0.100]), atol=1e-6)


def test_baseline_segments_air_lung_soft_tissue_and_no_bone(tiny_subject):
    nac = torch.from_numpy(tiny_subject["nac"].array)
    classes = segment_nac(nac, tiny_subject["nac"].spacing_mm)
    assert set(torch.unique(classes).tolist()) <= {AIR, LUNG, SOFT_TISSUE}
    body = torch.from_numpy(tiny_subject["labels"].array > 0)
    found = classes > AIR
    dice = 2 * (found & body).sum() / (found.sum() + body.sum())
    assert dice > 0.85, f"body outline Dice {dice:.3f}"
    hu = baseline_pseudo_ct(nac, tiny_subject["nac"].spacing_mm)
    assert torch.equal(hu, classes_to_hu(classes))
    assert torch.allclose(torch.unique(hu), torch.tensor(sorted(BASELINE_HU.values()))[torch.unique(classes)])
    assert hu.max() < 100.0  # no bone: nothing denser than soft tissue


def test_ct_to_mu_clips_hu_to_the_physical_range():
    hu = torch.tensor([-3000.0, -1000.0, 0.0, 3000.0, 9000.0])
    mu = ct_to_mu(hu)
    assert mu[0] == mu[1] == 0.0
    assert mu[3] == mu[4] == ct_to_mu(torch.tensor(HU_RANGE[1]))
    assert math.isclose(float(mu[2]), 0.096, rel_tol=1e-6)  # water at 511 keV, Carney 2006


def test_ct_air_rule_removes_the_attenuation_of_noise_in_air_and_keeps_lung():
    noisy_air = -1000.0 + 15.0 * torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    assert ct_to_mu(noisy_air, air_below_hu=None).mean() > 5e-4  # positive half of the noise: ~6 HU
    assert ct_to_mu(noisy_air).mean() < 1e-5  # only the tail beyond 3.3 sigma is left
    lung = torch.tensor([-940.0, -835.0, -500.0])  # Kinahan et al. 2003: lung -900..-500 HU
    assert torch.equal(ct_to_mu(lung), ct_to_mu(lung, air_below_hu=None))


# ----------------------------------------------------------------------------------------------
# task metric
# ----------------------------------------------------------------------------------------------
def test_task_metric_is_zero_for_the_true_ct_and_not_for_the_baseline(tiny_subject):
    from pet_nac_to_pct.evaluation import evaluate_subject

    names = {int(i): str(n) for i, n in zip(tiny_subject["raw"]["label_ids"], tiny_subject["raw"]["label_names"])}
    ct = torch.from_numpy(tiny_subject["ct"].array)
    result, images = evaluate_subject(
        torch.from_numpy(tiny_subject["nac"].array), ct, ct.clone(), torch.from_numpy(tiny_subject["labels"].array.astype(np.int64)),
        names, tiny_subject["raw"],
    )
    pct = result["suv_error_pct"]["pct"]
    assert all(abs(e) < 1e-3 for group in pct.values() for e in group.values())
    base = result["suv_error_pct"]["baseline"]["organ"]
    assert max(abs(e) for e in base.values()) > 1.0  # the 3-class map misses bone at least
    # the true-CT AC image is the simulation's own AC reconstruction
    ac = torch.from_numpy(tiny_subject["ac"].array)
    assert torch.allclose(images["ac_ct"], ac, rtol=1e-3, atol=1e-3 * float(ac.max()))


def test_class_mean_oracle_scores_a_perfect_tissue_map_without_subject_densities(tiny_subject):
    from pet_nac_to_pct.evaluation import (
        CLASS_ORACLE,
        class_mean_ct,
        evaluate_subject,
        phantom_class_hu,
    )

    names = {int(i): str(n) for i, n in zip(tiny_subject["raw"]["label_ids"], tiny_subject["raw"]["label_names"])}
    labels = torch.from_numpy(tiny_subject["labels"].array.astype(np.int64))
    class_hu = phantom_class_hu()
    oracle = class_mean_ct(labels, names, class_hu)
    liver = labels == next(i for i, n in names.items() if n == "liver")
    assert torch.all(oracle[liver] == 53.0)  # middle of the phantom's 48-58 HU liver range
    ct = torch.from_numpy(tiny_subject["ct"].array)
    result, _ = evaluate_subject(torch.from_numpy(tiny_subject["nac"].array), ct, ct.clone(), labels, names, tiny_subject["raw"], class_hu=class_hu)
    errors = [abs(e) for group in result["suv_error_pct"][CLASS_ORACLE].values() for e in group.values()]
    assert 0.0 < max(errors)  # the subject's own densities differ from the population's


def test_class_mean_ct_refuses_a_label_without_a_ct_number():
    from pet_nac_to_pct.evaluation import class_mean_ct

    with pytest.raises(ValueError, match="no CT number for label 7"):
        class_mean_ct(torch.tensor([0, 7]), {0: "background", 7: "unicorn"}, {"background": -1000.0})


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case, message",
    [
        ("ct_as_nac", "looks like a CT in HU"),
        ("nan", "NaN"),
        ("empty", "empty"),
        ("two_channels", "channel"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_subject, tmp_path, case, message):
    nac, ct = tiny_subject["nac"], tiny_subject["ct"]
    array = {"ct_as_nac": ct.array, "nan": np.where(nac.array > np.median(nac.array), np.nan, nac.array),
             "empty": np.zeros_like(nac.array), "two_channels": np.stack([nac.array, nac.array], axis=-1)}[case]
    path = _write(tmp_path / f"{case}.nii.gz", array, nac.affine)
    with pytest.raises(Exception) as err:
        _preprocessing()({"image": str(path)})
    text = "".join(str(e) for e in _chain(err.value))
    assert message in text and path.name in text


def _chain(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def test_attenuation_corrected_pet_given_as_nac_is_refused_and_the_nac_passes(tiny_subject):
    nac, ac = tiny_subject["nac"], tiny_subject["ac"]
    assert scatter_halo(nac.array, nac.spacing_mm) >= HALO_RULE.threshold > scatter_halo(ac.array, ac.spacing_mm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CheckAttenuationCorrection("nac", spacing_mm=nac.spacing_mm)(torch.from_numpy(nac.array)[None])  # without a word
    with pytest.raises(ValueError, match=f"looks attenuation-corrected.*{HALO_RULE.name}.*--ac_check warn"):
        CheckAttenuationCorrection("nac", spacing_mm=ac.spacing_mm)(torch.from_numpy(ac.array)[None])
    with pytest.warns(UserWarning, match=HALO_RULE.name):
        CheckAttenuationCorrection("nac", action="warn", spacing_mm=ac.spacing_mm)(torch.from_numpy(ac.array)[None])
    # the denoising bundle checks the other way round
    with pytest.raises(ValueError, match="looks non-attenuation-corrected"):
        CheckAttenuationCorrection("ac", spacing_mm=nac.spacing_mm)(torch.from_numpy(nac.array)[None])


def test_halo_rule_gives_no_verdict_on_a_field_of_view_cropped_to_the_body():
    body = np.ones((20, 20, 8), dtype=np.float32)  # 80 mm, all body: no air 20 mm away
    assert scatter_halo(body, (4.0, 4.0, 4.0)) is None
    CheckAttenuationCorrection("nac", spacing_mm=(4.0, 4.0, 4.0))(torch.from_numpy(body)[None])


# ----------------------------------------------------------------------------------------------
# inference and training with the stock runner
# ----------------------------------------------------------------------------------------------
def test_inference_keeps_the_input_grid_and_writes_hu(tiny_subject, tmp_path):
    nac = tiny_subject["nac"]
    affine = nac.affine.copy()
    affine[:3, 3] += (3.0, -7.0, 5.0)  # off-centre, so a lost affine would show
    path = _write(tmp_path / "nac.nii.gz", nac.array[:, :, :21], affine)  # odd size: padding is undone
    out = _inference(tmp_path, path, **TINY_OVERRIDES)
    written = sorted(out.glob("*.nii.gz"))
    assert len(written) == 1
    img = nib.load(written[0])
    assert img.shape == (48, 48, 21)
    assert np.allclose(img.affine, affine, atol=1e-4)
    pct = np.asarray(img.dataobj)
    assert pct.dtype == np.float32 and HU_RANGE[0] <= pct.min() and pct.max() <= HU_RANGE[1]


@pytest.mark.slow
def test_bundle_trains_one_epoch_with_the_stock_runner(tiny_data, tmp_path):
    # user-data mode (a datalist without a dataset manifest), as for --dataset_dir of one's own
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "dataset.json").unlink()
    out = tmp_path / "models"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--bundle_root", str(BUNDLE),
        "--config_file", str(CONFIGS / "train.json"), "--meta_file", str(CONFIGS / "metadata.json"),
        "--dataset_dir", str(data), "--output_dir", str(out), "--num_epochs", "1", "--val_interval", "1",
        *(f"--{k}={json.dumps(v)}" for k, v in TINY_OVERRIDES.items()),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert any((out / "checkpoints").glob("checkpoint_epoch=1.pt"))


def test_verify_passes_for_the_bundle():
    from scripts.verify import verify_bundle

    assert verify_bundle(BUNDLE) == []
