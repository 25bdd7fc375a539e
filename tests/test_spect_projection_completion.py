"""Bundle ``spect_projection_completion``: circular view padding, the interpolation baseline,
projection files and their bad inputs, and the stock train / evaluate / inference workflows.

Fast tests run on a tiny simulated dataset (32 x 32 x 24 voxels of 16 mm, 24 views) made once per
session with the bundle's own dataset task; the shipped weights are tested on a full-size
held-out subject in a ``slow`` test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spect_projection_completion.networks import ViewCompletionNet
from spect_projection_completion.transforms import (
    LoadProjectionsd,
    SaveProjectionsd,
    SparseViewsd,
    read_projections,
    write_projections,
)

from common.data import load_datalist, read_json, read_nifti, read_npz
from common.learning.networks import CircularPadNet
from common.simulation.datasets import generate_dataset
from common.simulation.spect import interpolate_views

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "spect_projection_completion"
TINY = {"shape": [32, 32, 24], "spacing_mm": [16.0, 16.0, 16.0], "n_views": 24, "n_iters": 2, "n_subsets": 4}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """5 tiny subjects (3 training, 1 validation, 1 test) from the bundle's dataset task."""
    out = tmp_path_factory.mktemp("spect") / "data"
    with torch.random.fork_rng():
        generate_dataset("spect_projection_completion", out, n=5, seed=3, progress=False, params=TINY)
    return out


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.save(ViewCompletionNet().state_dict(), path)
    return path


def _sparse_study(folder: Path, counts: np.ndarray, f: int = 4, name: str = "scan", **header) -> Path:
    """Write the acquired views (every f-th of counts [U, V, N]) as NIfTI + sidecar."""
    n = counts.shape[2]
    sidecar = {
        "angles_deg": [360.0 * i / n for i in range(0, n, f)],
        "radius_mm": 270.0,
        "nuclide": "Lu-177",
        "energy_window_keV": [187.6, 229.2],
        "collimator": "SY-ME",
        "time_per_view_s": 20.0,
        "pixdim": [16.0, 16.0],
    } | header
    path = folder / f"{name}.nii.gz"
    folder.mkdir(parents=True, exist_ok=True)
    write_projections(path, counts[:, :, ::f], sidecar)
    return path


def _run(*args: str, cwd: Path = BUNDLE) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# --------------------------------------------------------------------------------- network
def test_circular_padding_equals_a_convolution_that_wraps_around_the_views():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 1, 3, padding=1, bias=False)
    x = torch.rand(1, 1, 6, 5, 12)
    out = CircularPadNet(conv, dim=2, margin=1, multiple=1)(x)
    wrapped = torch.cat([x[..., -1:], x, x[..., :1]], dim=-1)  # circular along views, zeros along u, v
    expected = F.conv3d(F.pad(wrapped, [0, 0, 1, 1, 1, 1]), conv.weight)
    assert out.shape == x.shape
    assert torch.allclose(out, expected, atol=1e-6)


def test_circular_padding_reaches_the_multiple_the_unet_needs_and_crops_back():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x.shape[-1])
            return x

    x = torch.arange(120.0).view(1, 1, 1, 1, 120)
    out = CircularPadNet(Probe(), dim=2, margin=4, multiple=8)(x)
    assert seen == [128] and torch.equal(out, x)


def test_the_network_passes_acquired_views_through_unchanged():
    net = ViewCompletionNet(channels=(4, 8), strides=(2,))
    interp = torch.rand(1, 1, 8, 6, 24)
    mask = torch.zeros_like(interp)
    mask[..., ::4] = 1
    out = net(torch.cat([interp, mask], dim=1))
    assert torch.equal(out[..., ::4], interp[..., ::4])


# -------------------------------------------------------------------------------- baseline
def test_linear_interpolation_keeps_acquired_views_and_wraps_from_the_last_view_to_the_first():
    sparse = torch.tensor([[0.0], [4.0], [8.0]])  # views 0, 4, 8 of 12
    full = interpolate_views(sparse, 4)
    assert full.shape == (12, 1)
    assert torch.equal(full[::4], sparse)
    assert torch.allclose(full[:, 0], torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 6, 4, 2.0]))


def test_sparse_views_input_is_scaled_by_the_mean_acquired_count():
    counts = torch.rand(1, 8, 6, 24) * 100
    d = SparseViewsd("image", 4)({"image": counts})
    scale = float(counts[..., ::4].mean())
    assert d["image"].shape == (2, 8, 6, 24) and float(d["scale"]) == pytest.approx(scale)
    assert torch.allclose(d["image"][0, ..., ::4] * scale, counts[0, ..., ::4], rtol=1e-5)
    assert torch.equal(d["image"][1, 0, 0], torch.tensor([1.0, 0, 0, 0] * 6))
    assert torch.allclose(d["label"] * scale, counts, rtol=1e-5)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "change, message",
    [
        ({"angles_deg": None}, "angles_deg"),
        ({"angles_deg": [0.0, 120.0, 60.0, 180.0, 240.0, 300.0]}, "must increase"),
        ({"angles_deg": [0.0, 60.0, 120.0]}, "3 angles_deg for 6 views"),
        ({"angles_deg": [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]}, "equally spaced over 360"),
        ({"radius_mm": -5}, "radius_mm"),
    ],
)
def test_a_bad_sidecar_is_refused_naming_the_file(tmp_path, change, message):
    path = _sparse_study(tmp_path, np.ones((8, 6, 24), np.float32), **change)
    with pytest.raises(ValueError, match=message) as err:
        read_projections(path)
    assert str(path) in str(err.value)


def test_negative_counts_and_missing_sidecars_are_refused(tmp_path):
    counts = np.ones((8, 6, 24), np.float32)
    counts[1, 2, 0] = -3
    path = _sparse_study(tmp_path, counts)
    with pytest.raises(ValueError, match="negative counts"):
        read_projections(path)
    path.with_name("scan.json").unlink()
    with pytest.raises(FileNotFoundError, match="sidecar scan.json not found"):
        read_projections(path)


def test_a_view_count_that_the_factor_does_not_divide_is_refused(tmp_path):
    d = LoadProjectionsd("image")({"image": str(_sparse_study(tmp_path, np.ones((8, 6, 20), np.float32), f=1))})
    with pytest.raises(ValueError, match="20 views do not divide by the sparse factor 3"):
        SparseViewsd("image", 3)(d)


# ------------------------------------------------------------------------------- workflows
def test_batch_outputs_keep_each_subject_folder_even_when_it_is_a_symbolic_link(tmp_path):
    # subjects' files share a name (raw.npz); a linked subject folder must not fall back to one output name
    (tmp_path / "store" / "a").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a").symlink_to(tmp_path / "store" / "a", target_is_directory=True)
    (tmp_path / "data" / "b").mkdir()
    saver = SaveProjectionsd("pred", output_dir=tmp_path / "out", data_root_dir=tmp_path / "data")
    outs = {saver.output_path(tmp_path / "data" / s / "raw.npz") for s in ("a", "b")}
    assert outs == {tmp_path / "out" / s / "raw_completed.nii.gz" for s in ("a", "b")}


def test_inference_of_one_study_writes_all_views_with_the_acquired_ones_unchanged(tiny_data, random_weights, tmp_path):
    entry = load_datalist(tiny_data, "test")[0]
    counts = np.transpose(read_npz(entry["raw"])["projections"], (1, 2, 0)).astype(np.float32)  # [U, V, N]
    study = _sparse_study(tmp_path / "in", counts)
    out = tmp_path / "out"
    r = _run("run", "inference", "--config_file", "configs/inference.json", "--input_image", str(study),
             "--model_path", str(random_weights), "--output_dir", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    result = read_nifti(out / "scan_completed.nii.gz")
    side = read_json(out / "scan_completed.json")
    assert result.array.shape == counts.shape and result.array.dtype == np.float32
    assert result.spacing_mm == pytest.approx((16.0, 16.0, 1.0))
    assert np.allclose(result.array[..., ::4], counts[..., ::4], rtol=1e-5, atol=1e-3)
    assert result.array.min() >= 0
    assert side["angles_deg"] == pytest.approx([15.0 * i for i in range(24)])
    assert side["acquired_views"] == list(range(0, 24, 4)) and side["nuclide"] == "Lu-177"


def test_inference_refuses_a_bad_study_with_the_file_in_the_message(tiny_data, random_weights, tmp_path):
    counts = np.ones((8, 6, 24), np.float32)
    counts[0, 0, 0] = -1
    study = _sparse_study(tmp_path / "in", counts)
    r = _run("run", "inference", "--config_file", "configs/inference.json", "--input_image", str(study),
             "--model_path", str(random_weights), "--output_dir", str(tmp_path / "out"))  # fmt: skip
    assert r.returncode != 0 and f"{study}: negative counts" in r.stderr
    assert not (tmp_path / "out" / "scan_completed.nii.gz").exists()


def test_train_then_evaluate_with_the_stock_runner(tiny_data, tmp_path):
    common = ["--bundle_root", ".", "--dataset_dir", str(tiny_data), "--n_subjects", "5", "--data_seed", "3", "--data_workers", "1",
              "--dataset_params", json.dumps(TINY), "--output_dir", str(tmp_path / "models"), "--log_dir", str(tmp_path / "runs")]  # fmt: skip
    r = _run("run", "training", "--config_file", "configs/train.json", "--num_epochs", "1", "--val_interval", "1", *common)
    assert r.returncode == 0, r.stderr[-3000:]
    weights = tmp_path / "models" / "model.pt"
    assert weights.is_file()
    common[common.index("--output_dir") + 1] = str(tmp_path / "eval")
    r = _run("run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']", "--model_path", str(weights), *common)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = read_json(tmp_path / "eval" / "metrics.json")
    summary = metrics["summary"]
    assert set(summary["recon"]) == {"full", "network", "interpolated", "sparse", "noise_free"}
    assert summary["recon"]["noise_free"]["nrmse_vs_noise_free"] == 0
    # more counts, fewer errors: the full-view OSEM is closer to the noise-free one than the sparse-view OSEM
    assert summary["recon"]["full"]["nrmse_vs_noise_free"] < summary["recon"]["sparse"]["nrmse_vs_noise_free"]
    assert set(summary["targets"]) >= {"recon_nrmse_network_over_interpolated", "organ_error_vs_full_pct"}
    assert list((tmp_path / "eval").glob("*.png"))


@pytest.mark.slow
def test_shipped_weights_complete_a_held_out_full_size_study_better_than_interpolation(tmp_path):
    from spect_projection_completion.evaluation import complete_views, load_weights

    out = tmp_path / "data"
    generate_dataset("spect_projection_completion", out, n=1, seed=4321, progress=False, test_only=True)
    raw = read_npz(load_datalist(out, "test")[0]["raw"])
    counts = torch.from_numpy(raw["projections"].astype(np.float32))
    net = load_weights(ViewCompletionNet(), BUNDLE / "models" / "model.pt")
    completed = complete_views(net, counts[::4], 4)
    interp = interpolate_views(counts[::4], 4)
    missing = torch.ones(counts.shape[0], dtype=torch.bool)
    missing[::4] = False

    def err(p):
        return float((p[missing] - counts[missing]).square().mean())

    assert torch.equal(completed[::4], counts[::4])
    assert err(completed) < 0.9 * err(interp)
