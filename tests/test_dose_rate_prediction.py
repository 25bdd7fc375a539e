"""Bundle ``dose_rate_prediction``: the input channels and the activity normalisation (the output
is exactly linear in activity), bad inputs refused naming the file, and the stock train / evaluate
/ inference workflows on a tiny dataset (28 x 24 x 24 voxels of 16 mm, a low-count Monte Carlo)
made once per session with the bundle's own dataset task; the shipped weights are tested on a
full-size held-out subject in a ``slow`` test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from dose_rate_prediction.networks import DoseRateNet
from dose_rate_prediction.transforms import (
    CheckSameGridd,
    DoseInputsd,
    FromScaled,
    inference_items,
    save_kernel,
)
from monai.data import MetaTensor

from common.data import load_datalist, read_json
from common.dosimetry import voxel_s_values
from common.errors import InputError
from common.simulation.datasets import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "dose_rate_prediction"
TINY = {"shape": [28, 24, 24], "spacing_mm": [16.0, 16.0, 16.0], "n_photons": 5000, "n_electrons": 50000, "n_batches": 4}
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NM_DEBUG")} | {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory) -> Path:
    """A low-count water kernel at 16 mm where the transforms look for it (instead of a 20 s Monte Carlo)."""
    out = tmp_path_factory.mktemp("kernels")
    with torch.random.fork_rng():
        save_kernel(voxel_s_values("Lu-177", 16.0, half_width=3, n_photons=5000, n_electrons=50000, n_batches=4), out)
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """3 tiny subjects (1 training, 1 validation, 1 test) from the bundle's dataset task."""
    out = tmp_path_factory.mktemp("dose") / "data"
    with torch.random.fork_rng():
        generate_dataset("dose_rate_prediction", out, n=3, seed=3, progress=False, params=TINY)
    return out


def _meta(array: torch.Tensor, spacing: float = 16.0, name: str = "x.nii.gz") -> MetaTensor:
    affine = torch.diag(torch.tensor([spacing, spacing, spacing, 1.0], dtype=torch.float64))
    return MetaTensor(array[None].float(), affine=affine, meta={"filename_or_obj": name})


def _body() -> tuple[torch.Tensor, torch.Tensor]:
    ct = torch.full((16, 16, 16), -1000.0)
    ct[2:-2, 2:-2, 2:-2] = 40.0
    ct[3:7, 3:-3, 3:-3] = -800.0  # lung
    ct[10:12, 3:-3, 3:-3] = 1200.0  # bone
    activity = torch.zeros(16, 16, 16)
    activity[7:10, 5:11, 5:11] = 1e5
    activity[4:6, 6:9, 6:9] = 2e4
    return activity, ct


def _dose(net, activity, ct, kernel_dir) -> torch.Tensor:
    d = DoseInputsd("image", label_key=None, kernel_dir=kernel_dir)({"image": _meta(activity), "ct": _meta(ct)})
    with torch.no_grad():
        pred = net(d["image"][None].as_tensor())[0]
    return FromScaled("pred")({"pred": pred, "dose_scale": d["dose_scale"]})["pred"]


def test_doubling_the_activity_doubles_the_predicted_dose_rate(kernel_dir):
    torch.manual_seed(0)
    net = DoseRateNet(channels=(4, 8), strides=(2,)).eval()
    with torch.no_grad():
        net.gain.fill_(0.5)  # the gains start at 0 (output = VSV); open them so the U-Net's corrections count
    activity, ct = _body()
    one, two = _dose(net, activity, ct, kernel_dir), _dose(net, 2 * activity, ct, kernel_dir)
    torch.testing.assert_close(two, 2 * one, rtol=1e-6, atol=0)
    three = _dose(net, 3.7 * activity, ct, kernel_dir)
    torch.testing.assert_close(three, 3.7 * one, rtol=1e-4, atol=1e-6 * float(one.max()))  # float32 round-off
    with torch.no_grad():
        net.gain.zero_()
    assert one.max() > 0 and not torch.allclose(one, _dose(net, activity, ct, kernel_dir), rtol=1e-3)  # not the VSV alone


def test_input_channels_are_activity_over_its_mean_density_and_scaled_vsv(kernel_dir):
    activity, ct = _body()
    d = DoseInputsd("image", label_key=None, kernel_dir=kernel_dir)({"image": _meta(activity), "ct": _meta(ct)})
    x = d["image"]
    assert x.shape == (3, 16, 16, 16) and "ct" not in d
    assert float(x[0].mean()) == pytest.approx(1.0, rel=1e-5)
    assert float(x[1][5, 8, 8]) == pytest.approx(0.2, abs=0.01) and float(x[1][11, 8, 8]) > 1.5  # lung, bone g/cm3


def test_outside_the_body_the_network_passes_the_vsv_through():
    net = DoseRateNet(channels=(4, 8), strides=(2,))
    with torch.no_grad():
        net.gain.fill_(0.5)  # corrections on (they start at 0)
    x = torch.rand(1, 3, 8, 8, 8)
    x[:, 1] = 0.001  # air
    assert torch.equal(net(x), x[:, 2:3])
    x[:, 1, :4] = 1.0  # half of it body: corrected there
    assert not torch.equal(net(x)[..., :4, :, :], x[:, 2:3, :4])


def test_an_untrained_network_returns_the_density_scaled_vsv():
    x = torch.rand(1, 3, 8, 8, 8) + 0.5  # all body
    assert torch.equal(DoseRateNet(channels=(4, 8), strides=(2,))(x), x[:, 2:3])


def test_a_missing_activity_image_is_named_before_the_ct(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"act.nii.gz: input image not found"):
        inference_items(str(tmp_path / "act.nii.gz"), "", "")
    activity = tmp_path / "act.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), activity)
    with pytest.raises(FileNotFoundError, match=r"^\(none given\): CT not found \(--input_ct\)"):
        inference_items(str(activity), "", "")


def test_activity_and_ct_of_different_grids_are_refused_naming_both_files():
    a = _meta(torch.ones(8, 8, 8), name="act.nii.gz")
    with pytest.raises(InputError, match="act.nii.gz.*ct.nii.gz.*differ in shape"):
        CheckSameGridd("image")({"image": a, "ct": _meta(torch.ones(8, 8, 6), name="ct.nii.gz")})
    with pytest.raises(InputError, match="act.nii.gz.*ct.nii.gz.*differ in voxel spacing"):
        CheckSameGridd("image")({"image": a, "ct": _meta(torch.ones(8, 8, 8), spacing=4.0, name="ct.nii.gz")})


def _run(*args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        *args,
        "--bundle_root",
        str(BUNDLE),
        "--meta_file",
        str(BUNDLE / "configs" / "metadata.json"),
    ]
    return subprocess.run(cmd, check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def test_train_evaluate_and_infer_with_the_stock_runner(tiny_data, kernel_dir, tmp_path):
    c = BUNDLE / "configs"
    common = ["--dataset_dir", str(tiny_data), "--kernel_dir", str(kernel_dir), "--n_subjects", "3", "--data_seed", "3",
              "--dataset_params", json.dumps(TINY)]  # fmt: skip
    run = _run("training", "--config_file", str(c / "train.json"), "--output_dir", str(tmp_path / "m"), "--num_epochs", "1",
               "--val_interval", "1", "--patch_size", "[16, 16, 16]", *common)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    weights = tmp_path / "m" / "model.pt"
    assert weights.is_file()
    run = _run("evaluating", "--config_file", str([str(c / "train.json"), str(c / "evaluate.json")]), "--output_dir",
               str(tmp_path / "e"), "--model_path", str(weights), "--max_figures", "1", *common)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    summary = read_json(tmp_path / "e" / "summary.json")
    assert summary["n_subjects"] == 1 and {"model", "baseline", "vsv_water", "local_deposition"} <= set(summary["headline"])
    assert list((tmp_path / "e").glob("*.png"))
    entry = load_datalist(tiny_data, "test")[0]
    out = tmp_path / "i"
    run = _run("inference", "--config_file", str(c / "inference.json"), "--input_image", entry["activity"], "--input_ct", entry["ct"],
               "--output_dir", str(out), "--model_path", str(weights), "--kernel_dir", str(kernel_dir), "--pixdim", "[16.0, 16.0, 16.0]")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    (written,) = sorted(out.rglob("*.nii.gz"))
    src = nib.load(entry["activity"])
    assert written.name == "activity_dose_rate.nii.gz" and nib.load(written).shape == src.shape
    np.testing.assert_allclose(nib.load(written).affine, src.affine, atol=1e-4)
    # a CT given as the activity: one line naming the file
    run = _run("inference", "--config_file", str(c / "inference.json"), "--input_image", entry["ct"], "--input_ct", entry["ct"],
               "--output_dir", str(tmp_path / "bad"), "--model_path", str(weights), "--kernel_dir", str(kernel_dir))  # fmt: skip
    last = run.stderr.strip().splitlines()[-1]
    assert run.returncode != 0 and last.startswith("error: ") and entry["ct"] in last and "looks like a CT in HU" in last
    assert "Traceback" not in run.stdout + run.stderr


@pytest.mark.slow
def test_shipped_weights_beat_vsv_in_water_in_the_lung_of_a_held_out_study(tmp_path):
    from dose_rate_prediction.evaluation import evaluate, load_weights

    data = tmp_path / "data"
    generate_dataset("dose_rate_prediction", data, n=1, seed=2000, progress=False, test_only=True)
    net = load_weights(DoseRateNet(), BUNDLE / "models" / "model.pt")
    s = evaluate(net, data, tmp_path / "eval", kernel_dir=str(BUNDLE / "models"), max_figures=0)["summary"]["methods"]
    # 0.1.0 beats VSV-water in the lung (0.22x on the test split, docs/README.md)
    assert s["network"]["lung_error_pct"] < s["vsv_water"]["lung_error_pct"]
