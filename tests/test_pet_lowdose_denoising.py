"""Bundle ``pet_lowdose_denoising`` and its library pieces (common.learning.networks and the bundle package pet_lowdose_denoising)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.bundle import ConfigParser
from pet_lowdose_denoising.baseline import gaussian_filter_fwhm, tune_gaussian_fwhm
from pet_lowdose_denoising.evaluation import check_targets, evaluate_case, summarize
from pet_lowdose_denoising.transforms import (
    DoseLevelChanneld,
    FromSUVd,
    ToSUVd,
    dose_code,
)

from common.learning.networks import SliceMarginLoss, SliceStackUNet, VolumeUNet

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "pet_lowdose_denoising"
SMALL_NET = dict(channels=(4, 8, 16), strides=(2, 2))


def _messages(exc: BaseException) -> str:
    """All messages along an exception's cause chain (MONAI wraps transform errors)."""
    out = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return " | ".join(out)


def _copy_bundle(tmp_path: Path) -> Path:
    """The bundle without its generated data, runs and outputs."""
    dst = tmp_path / "pet_lowdose_denoising"
    shutil.copytree(BUNDLE, dst, ignore=shutil.ignore_patterns("data", "runs", "eval", "checkpoints", "__pycache__"))
    return dst


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("shape", [(37, 50, 9), (16, 16, 1)])
def test_2p5d_network_keeps_any_spatial_shape_and_scripts(shape):
    net = SliceStackUNet(in_channels=2, **SMALL_NET).eval()
    x = torch.rand(2, 2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 1, *shape)
        assert torch.allclose(torch.jit.script(net)(x), y, atol=1e-6)


def test_2p5d_network_output_slice_depends_only_on_its_neighbour_slices():
    # 5 slices = centre +- 2: a change in slice 10 may move outputs 8..12 and nothing else
    net = SliceStackUNet(in_channels=2, slices=5, slice_batch=7, **SMALL_NET).eval()
    x = torch.rand(1, 2, 16, 16, 20, generator=torch.Generator().manual_seed(1))
    x2 = x.clone()
    x2[:, 0, :, :, 10] += 1.0
    with torch.no_grad():
        changed = (net(x) - net(x2)).abs().amax(dim=(0, 1, 2, 3)) > 1e-7
    assert changed.nonzero().flatten().tolist() == [8, 9, 10, 11, 12]


def test_residual_3d_network_starts_near_the_identity_of_channel_0():
    net = VolumeUNet(in_channels=2, channels=(4, 8), strides=(2,)).eval()
    for p in net.unet.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(1, 2, 10, 12, 14)
    assert torch.equal(net(x), x[:, :1])


def test_slice_margin_loss_ignores_the_padded_end_slices():
    pred, target = torch.zeros(1, 1, 4, 4, 10), torch.zeros(1, 1, 4, 4, 10)
    pred[..., :2] = 5.0  # wrong only where the 2.5D input was replicate-padded
    assert SliceMarginLoss(torch.nn.MSELoss(), margin=2)(pred, target) == 0
    assert SliceMarginLoss(torch.nn.MSELoss(), margin=0)(pred, target) > 0


# ----------------------------------------------------------------------------- transforms
def test_dose_level_channel_is_zero_at_full_dose_and_one_at_drf_100():
    out = DoseLevelChanneld("image")({"image": torch.ones(1, 3, 3, 3), "drf": 100})["image"]
    assert out.shape == (2, 3, 3, 3)
    assert torch.allclose(out[1], torch.ones(3, 3, 3))
    assert dose_code(1) == 0.0


@pytest.mark.parametrize("drf", [0.5, 0, -4, float("nan"), "ten"])
def test_dose_reduction_factor_below_one_or_not_a_number_is_refused(drf):
    with pytest.raises(ValueError, match="dose reduction factor"):
        DoseLevelChanneld("image")({"image": torch.ones(1, 2, 2, 2), "drf": drf})


def test_suv_conversion_round_trips_and_needs_weight_and_activity():
    # SUV = C [Bq/mL] x W [g] / A [Bq] (DESIGN 3): 5000 Bq/mL x 70000 g / 3.5e8 Bq = 1.0
    item = {"image": torch.full((1, 2, 2, 2), 5000.0), "weight_kg": 70.0, "injected_Bq": 3.5e8}
    out = ToSUVd("image", units="Bq/mL")(item)
    assert torch.allclose(out["image"], torch.ones(1, 2, 2, 2))
    back = FromSUVd("image")({**out, "image": out["image"].clone()})
    assert torch.allclose(back["image"], item["image"])
    with pytest.raises(ValueError, match="weight_kg"):
        ToSUVd("image", units="Bq/mL")({"image": torch.ones(1, 2, 2, 2)})
    study = MetaTensor(torch.ones(1, 2, 2, 2), meta={"filename_or_obj": "/x/pet.nii.gz"})
    with pytest.raises(ValueError, match=r"^/x/pet.nii.gz: an image in Bq/mL needs the patient's weight"):
        ToSUVd("image", units="Bq/mL")({"image": study})  # the message names the image
    # an item that states its units wins over the default (synthetic data are stored in SUV)
    assert ToSUVd("image", units="Bq/mL")({"image": torch.ones(1), "units": "SUV"})["suv_factor"] == 1.0


# ----------------------------------------------------------------------------- baseline
def test_gaussian_filter_has_the_requested_fwhm_and_keeps_the_total():
    x = torch.zeros(61, 61, 61, dtype=torch.float64)
    x[30, 30, 30] = 1.0
    y = gaussian_filter_fwhm(x, 12.0, (1.0, 1.0, 1.0))
    profile = y[:, 30, 30]
    # FWHM from the half-maximum crossings, linearly interpolated
    half = profile.max() / 2
    above = (profile >= half).nonzero().flatten()
    lo, hi = int(above[0]), int(above[-1])
    left = lo - 1 + (half - profile[lo - 1]) / (profile[lo] - profile[lo - 1])
    right = hi + (profile[hi] - half) / (profile[hi] - profile[hi + 1])
    assert float(right - left) == pytest.approx(12.0, rel=0.03)
    assert float(y.sum()) == pytest.approx(1.0, rel=1e-6)


def test_tuned_gaussian_picks_a_larger_fwhm_at_a_higher_dose_reduction_factor():
    # Smooth "activity" plus white noise whose variance grows with the DRF (Poisson: var ~ DRF).
    g = torch.Generator().manual_seed(0)
    zz, yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, 32)] * 3, indexing="ij")
    truth = 1.0 + torch.exp(-((xx - 0.2) ** 2 + yy**2 + zz**2) / 0.1) * 3.0
    pairs = []
    for drf in (4.0, 100.0):
        for _ in range(2):
            noisy = truth + torch.randn(truth.shape, generator=g) * 0.05 * math.sqrt(drf)
            pairs.append((drf, noisy, truth, None, (4.0, 4.0, 4.0)))
    tuned = tune_gaussian_fwhm(pairs)
    assert tuned[100.0]["fwhm_mm"] > tuned[4.0]["fwhm_mm"] > 0
    assert tuned[100.0]["n_subjects"] == 2


# ----------------------------------------------------------------------------- evaluation
def _toy_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(24, 24, 24, dtype=torch.int16)
    labels[4:20, 4:20, 2:22] = 1
    labels[8:12, 8:12, 8:12] = 100  # 16 mm at 4 mm voxels
    labels[15, 15, 15] = 101  # one voxel: a lesion under 10 mm
    noise_free = torch.where(labels > 0, 1.0, 0.0) + 4.0 * (labels >= 100)
    full = noise_free + 0.1 * torch.randn(noise_free.shape, generator=g) * (labels > 0)
    return labels, noise_free, full


def test_perfect_denoiser_scores_the_ceiling_and_unbiased_lesions():
    labels, noise_free, full = _toy_case()
    case = evaluate_case({"perfect": noise_free, "input": full}, full, noise_free, labels, (4.0, 4.0, 4.0))
    perfect = case["methods"]["perfect"]
    assert perfect["vs_full_dose"]["psnr"] == pytest.approx(case["ceiling_psnr"])
    assert all(les["suv_max_bias"] == 0 and les["contrast_recovery"] == pytest.approx(1.0) for les in perfect["lesions"])
    # SUVmax of a noisy image is biased up against the noise-free reference (DESIGN 5.1 (b))
    assert any(les["suv_max_bias"] > 0 for les in case["methods"]["input"]["lesions"])


def test_lesions_under_10_mm_are_reported_apart():
    labels, noise_free, full = _toy_case()
    cases = [{"id": "a", "drf": 4.0, **evaluate_case({"network": full}, full, noise_free, labels, (4.0, 4.0, 4.0))}]
    table = summarize(cases)["4"]["network"]
    assert table["lesions_ge_10mm"]["n_lesions"] == 1
    assert table["lesions_lt_10mm"]["n_lesions"] == 1


def test_targets_compare_network_gaussian_and_noise2noise():
    labels, noise_free, full = _toy_case()
    worse = noise_free + 3.0 * (full - noise_free)  # twice the error of the noise-free image vs full dose
    methods = {"network": noise_free, "gaussian": worse, "noise2noise": worse}
    cases = [
        {"id": "a", "drf": drf, **evaluate_case(methods, full, noise_free, labels, (4.0, 4.0, 4.0))} for drf in (4.0, 20.0)
    ]
    targets = check_targets(summarize(cases))
    assert targets["psnr_gain"]["met"] and targets["lesion_suvmax"]["met"] and targets["dose_saving"]["met"]
    assert not targets["noise2noise"]["met"] and targets["noise2noise"]["nrmse_excess"]["4"] > 0.1


# ----------------------------------------------------------------------------- bundle pipeline
def _inference_preprocessing():
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    return parser.get_parsed_content("preprocessing")


def _write(path: Path, array: np.ndarray, spacing=(4.0, 4.0, 4.0)) -> str:
    nib.Nifti1Image(array.astype(np.float32), np.diag([*spacing, 1.0])).to_filename(path)
    return str(path)


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("ct", lambda a: np.pad(np.full((14, 14, 16), 40.0), ((3, 3), (3, 3), (0, 0)), constant_values=-1000.0), "CT in HU"),
        ("negative", lambda a: a - 1.3, "negative"),
        ("nan", lambda a: np.where(a > 1.5, np.nan, a), "NaN"),
        ("2d", lambda a: a[:, :, 8], "3 spatial dimensions"),
    ],
)
def test_bad_inference_input_gets_a_clear_error(tmp_path, name, make, words):
    pet = np.ones((20, 20, 16)) + np.pad(np.ones((6, 6, 6)), ((7, 7), (7, 7), (5, 5)))
    path = _write(tmp_path / f"{name}.nii.gz", make(pet))
    with pytest.raises(Exception) as info:
        _inference_preprocessing()({"image": path, "drf": 10, "units": "SUV"})
    assert words in _messages(info.value)
    assert f"{name}.nii.gz" in _messages(info.value)  # the file is named


def test_inference_refuses_a_dose_reduction_factor_below_one(tmp_path):
    path = _write(tmp_path / "pet.nii.gz", np.ones((20, 20, 16)))
    with pytest.raises(Exception) as info:
        _inference_preprocessing()({"image": path, "drf": 0.5, "units": "SUV"})
    assert "dose reduction factor" in _messages(info.value) and ">= 1" in _messages(info.value)


def test_inference_keeps_the_input_affine_and_shape(tmp_path):
    from monai.bundle import run

    bundle = _copy_bundle(tmp_path)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    # 3 x 3.5 x 5 mm voxels, an odd shape and an off-centre, rotated-axis affine: resampled to
    # 4 mm for the network and back (Spacingd ... Invertd)
    # 34 slices of 5 mm = 43 slices of 4 mm: more than the network's 32-slice chunk at inference
    affine = np.array([[0, -3.0, 0, 20.0], [3.5, 0, 0, -31.0], [0, 0, 5.0, 7.5], [0, 0, 0, 1]])
    array = np.random.default_rng(0).gamma(2.0, 1.0, (27, 33, 34)).astype(np.float32)
    src = tmp_path / "in" / "pet.nii.gz"
    src.parent.mkdir()
    nib.Nifti1Image(array, affine).to_filename(src)
    out_dir = tmp_path / "out"
    run(
        "inference",
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
        output_dir=str(out_dir),
        datalist=[{"image": str(src), "drf": 20, "weight_kg": 70.0, "injected_Bq": 3.0e8}],
        input_root="",
    )
    out = nib.load(out_dir / "pet_denoised.nii.gz")
    assert out.shape == array.shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-4)
    assert np.isfinite(out.get_fdata()).all()


def test_split_count_halves_are_independent_halves_of_the_stored_low_dose_counts():
    from pet_lowdose_denoising.dataset import (
        LOWDOSE_PARAMS,
        build_pet_lowdose_denoising,
        build_pet_lowdose_split_counts,
    )

    params = {**LOWDOSE_PARAMS, "shape": [32, 32, 16], "dose_reduction_factors": [4]}
    main = build_pet_lowdose_denoising(np.random.default_rng([0, 1]), params)
    halves = build_pet_lowdose_split_counts(np.random.default_rng([0, 1]), params)
    assert np.array_equal(main.images["labels"][0], halves.images["labels"][0])  # same subject
    ref = main.images["noise_free"][0]
    body = main.images["labels"][0] > 0
    e1, e2 = (halves.images[f"drf4_half{i}"][0][body] - ref[body] for i in (1, 2))
    e_low = main.images["drf4"][0][body] - ref[body]
    assert abs(np.corrcoef(e1, e2)[0, 1]) < 0.1  # independent noise: what noise2noise needs
    # half the counts: noise std about sqrt(2) x that of the low-dose study (Poisson)
    assert 1.2 < e1.std() / e_low.std() < 1.7


@pytest.mark.slow
def test_bundle_trains_one_epoch_and_resumes_with_the_stock_runner(tmp_path):
    bundle = _copy_bundle(tmp_path)
    common_args = [
        "--bundle_root", str(bundle),
        "--config_file", str(bundle / "configs" / "train.json"),
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--n_subjects", "3",
        "--dataset_params", "{'shape': [32, 32, 16]}",
        "--patch_size", "[32, 32, 12]",
        "--val_interval", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "monai.bundle", "run", "training", *common_args]
    done = subprocess.run([*run, "--num_epochs", "1"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert json.loads((bundle / "data" / "dataset.json").read_text())["task"] == "pet_lowdose_denoising"
    assert list((bundle / "models" / "checkpoints").glob("checkpoint_epoch=1.pt"))
    resumed = subprocess.run([*run, "--num_epochs", "2", "--resume", "true"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert "Epoch[2] Complete" in log and "Epoch[1] Complete" not in log  # continued, not restarted
    assert list((bundle / "models" / "checkpoints").glob("checkpoint_epoch=2.pt"))


def test_shipped_bundle_passes_verify():
    from scripts.verify import verify_bundle

    if not (BUNDLE / "models" / "model.pt").is_file():
        pytest.skip("weights not trained yet")
    assert verify_bundle(BUNDLE) == []


def test_lesion_weight_channel_and_weighted_loss():
    """LesionWeightd appends w in (dilated) lesions, 1 elsewhere, and drops the label map; without a
    label map the item is unchanged. WeightedMSELoss uses that channel, and is plain MSE without it."""
    from pet_lowdose_denoising.losses import WeightedMSELoss
    from pet_lowdose_denoising.transforms import LesionWeightd

    labels = torch.zeros((1, 8, 8, 6), dtype=torch.int16)
    labels[0, 1:7, 1:7, :] = 3  # an organ
    labels[0, 4, 4, 3] = 101  # a one-voxel lesion
    target = torch.rand((1, 8, 8, 6))
    out = LesionWeightd("label", weight=5.0, margin_vox=1)({"label": target, "labels": labels})
    assert "labels" not in out and out["label"].shape == (2, 8, 8, 6)
    assert torch.equal(out["label"][0], target[0])
    w = out["label"][1]
    assert float(w[3:6, 3:6, 2:5].min()) == 5.0 and float(w.sum()) == 8 * 8 * 6 + 4.0 * 27
    assert LesionWeightd("label")({"label": target})["label"] is target  # no label map: unchanged
    with pytest.raises(ValueError, match="weight must be finite and >= 1"):
        LesionWeightd("label", weight=0.5)

    loss = WeightedMSELoss()
    pred = torch.zeros((1, 1, 8, 8, 6))
    plain = loss(pred, target[None])
    assert torch.isclose(plain, (target**2).mean())
    weighted = loss(pred, out["label"][None])
    assert torch.isclose(weighted, (w * target[0] ** 2).mean())
    with pytest.raises(ValueError, match="with or without one weight channel"):
        loss(pred, torch.zeros((1, 3, 8, 8, 6)))


def test_complementary_count_target_items():
    """Training items take the complementary counts of the same DRF as the label; a datalist
    without them is refused naming the key."""
    from pet_lowdose_denoising.transforms import dose_items

    entry = {"id": "s0", "drf4": "a.nii.gz", "drf4_comp": "c.nii.gz", "full": "f.nii.gz", "labels": "l.nii.gz"}
    (item,) = dose_items([entry], [4], target_key="drf{drf}_comp", extra_keys={"labels": "labels"})
    assert item["image"] == "a.nii.gz" and item["label"] == "c.nii.gz" and item["labels"] == "l.nii.gz"
    with pytest.raises(Exception, match="no 'drf10_comp'"):
        dose_items([{**entry, "drf10": "b.nii.gz"}], [10], target_key="drf{drf}_comp")
