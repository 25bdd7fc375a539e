"""Tests of common.simulation.pet: the PET acquisition model, its reconstructions and the task
builders, on small volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.data import read_datalist, read_nifti, read_npz
from common.physics import ct_to_mu, hu_to_mu
from common.physics.noise import thin
from common.simulation import pet as S
from common.simulation.datasets import generate_dataset

# Small geometry for the builders: 10 mm voxels cover the torso phantom (about 430 mm axially).
SMALL = {"shape": [40, 40, 44], "spacing_mm": [10.0, 10.0, 10.0], "voxel_scale": None, "n_angles": 48, "n_subsets": 8, "psf_fwhm_mm": 8.0}


def _cylinder(shape=(40, 40, 6), spacing=4.0, radius_mm=64.0):
    """Uniform water cylinder (0 HU) in air, 1000 Bq/mL inside; radial distance map in mm."""
    x = (torch.arange(shape[0]) - (shape[0] - 1) / 2) * spacing
    r = torch.sqrt(x[:, None] ** 2 + x[None, :] ** 2)[:, :, None].expand(*shape)
    inside = r <= radius_mm
    ct = torch.where(inside, 0.0, -1000.0)
    return torch.where(inside, 1000.0, 0.0), ct, r


def _recon_cylinder(with_mu: bool, expected: bool = True, fraction: float = 1.0, seed: int = 0):
    activity, ct, r = _cylinder()
    nac_p, ac_p = S.pet_system(activity.shape, (4.0, 4.0, 4.0), 64, hu_to_mu(ct, 511.0))
    data = S.simulate_pet(activity, nac_p, ac_p, psf_fwhm_mm=None, generator=torch.Generator().manual_seed(seed))
    prompts = data.expected if expected else data.prompts
    if fraction != 1.0:
        prompts = thin(data.prompts, fraction, generator=torch.Generator().manual_seed(seed + 1))
    projector, background = (ac_p, data.background) if with_mu else (nac_p, data.randoms)
    image = S.reconstruct_pet(projector, prompts, background, data.count_scale, 10, 4, fraction)
    return image, r, data


def test_ac_of_uniform_water_cylinder_is_flat_within_5_percent():
    image, r, _ = _recon_cylinder(with_mu=True)
    core = image[r <= 48.0]  # 3/4 of the 64 mm radius, away from the edge
    assert float(core.max() - core.min()) / float(core.mean()) < 0.05
    assert abs(float(core.mean()) / 1000.0 - 1.0) < 0.05  # and in Bq/mL


def test_nac_of_uniform_water_cylinder_shows_the_central_dip():
    # 12.8 cm of water at 511 keV (mu 0.096 /cm, REFERENCE.md 1) attenuates the central lines
    # most; without correction the centre reads low against the rim.
    image, r, _ = _recon_cylinder(with_mu=False)
    centre, rim = image[r <= 16.0].mean(), image[(r >= 40.0) & (r <= 56.0)].mean()
    assert float(centre / rim) < 0.8


def test_nac_is_not_zero_outside_the_body_because_scatter_is_not_corrected():
    image, r, _ = _recon_cylinder(with_mu=False)
    outside = image[(r >= 72.0) & (r <= 76.0)].mean()
    assert float(outside) > 0.02 * float(image[r <= 16.0].mean())


def test_trues_scatter_and_randoms_match_the_requested_count_level_and_fractions():
    activity, ct, _ = _cylinder()
    nac_p, ac_p = S.pet_system(activity.shape, (4.0, 4.0, 4.0), 64, hu_to_mu(ct, 511.0))
    d = S.simulate_pet(activity, nac_p, ac_p, trues_per_4mm_slice=1e5, scatter_fraction=0.35, randoms_fraction=0.15)
    T, Sc, R = (float(v.sum()) for v in (d.trues, d.scatter, d.randoms))
    assert math.isclose(T, 1e5 * 6, rel_tol=1e-4)  # 6 slices of 4 mm
    assert math.isclose(Sc / (T + Sc), 0.35, rel_tol=1e-4) and math.isclose(R / (T + Sc + R), 0.15, rel_tol=1e-4)
    assert abs(float(d.prompts.sum()) / (T + Sc + R) - 1) < 5 / math.sqrt(T + Sc + R)  # Poisson total


def test_counts_scale_with_the_dose_fraction_and_the_image_keeps_its_mean():
    full, r, data = _recon_cylinder(with_mu=True, expected=False)
    low, _, _ = _recon_cylinder(with_mu=True, expected=False, fraction=0.1)
    kept = thin(data.prompts, 0.1, generator=torch.Generator().manual_seed(1))
    n = float(data.prompts.sum())
    assert abs(float(kept.sum()) / n - 0.1) < 5 * math.sqrt(0.1 * 0.9 / n)  # binomial
    core = r <= 48.0
    assert abs(float(low[core].mean() / full[core].mean()) - 1) < 0.03


def test_simulate_pet_refuses_a_scatter_fraction_of_one():
    activity, ct, _ = _cylinder()
    nac_p, ac_p = S.pet_system(activity.shape, (4.0, 4.0, 4.0), 16, hu_to_mu(ct, 511.0))
    with pytest.raises(ValueError, match="scatter_fraction"):
        S.simulate_pet(activity, nac_p, ac_p, scatter_fraction=1.0)


def test_attenuated_projector_matches_petprojector_with_the_same_mu_map():
    from common.physics.projectors import PETProjector

    _, ct, _ = _cylinder(shape=(24, 24, 3))
    mu = hu_to_mu(ct, 511.0)
    _, ac = S.pet_system(mu.shape, (4.0, 4.0, 4.0), 12, mu)
    ref = PETProjector(mu.shape, (4.0, 4.0, 4.0), 12, mu_map=mu)
    x = torch.rand(mu.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ac.forward(x, [1, 5]), ref.forward(x, [1, 5]), rtol=1e-5, atol=1e-6)
    y = torch.rand(2, ac.n_bins, 3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ac.adjoint(y, [1, 5]), ref.adjoint(y, [1, 5]), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def lowdose_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("lowdose")
    generate_dataset("pet_lowdose_denoising", out, 1, seed=0, progress=False, params=SMALL)
    return out


@pytest.fixture(scope="module")
def pct_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("pct")
    generate_dataset("pet_nac_to_pct", out, 1, seed=0, progress=False, params=SMALL)
    return out


def _liver(labels: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_erosion(labels == 8, iterations=1)  # 8 = liver (common.simulation.phantoms.LABELS)


def test_noise_free_ac_recovers_the_phantom_liver_suv(lowdose_dataset):
    from common.simulation.phantoms import make_torso_phantom

    entry = read_datalist(lowdose_dataset)["training"][0]
    labels = read_nifti(lowdose_dataset / entry["labels"]).array
    ph = make_torso_phantom(entry["phantom_seed"], shape=SMALL["shape"], spacing_mm=SMALL["spacing_mm"], n_lesions=(1, 8), variety="training")
    truth = ph.suv("FDG")[_liver(labels)].mean()
    ref = read_nifti(lowdose_dataset / entry["noise_free"]).array[_liver(labels)].mean()
    assert abs(ref / truth - 1) < 0.05


def test_lower_dose_gives_a_noisier_liver_with_the_same_mean(lowdose_dataset):
    entry = read_datalist(lowdose_dataset)["training"][0]
    liver = _liver(read_nifti(lowdose_dataset / entry["labels"]).array)
    ref = read_nifti(lowdose_dataset / entry["noise_free"]).array[liver]
    noise = [np.std(read_nifti(lowdose_dataset / entry[k]).array[liver] - ref) for k in ("full", "drf4", "drf20", "drf100")]
    assert all(a < b for a, b in zip(noise, noise[1:]))


def test_lowdose_entry_holds_the_subject_attributes(lowdose_dataset):
    from common.simulation.phantoms import TRAINING_VARIETY

    entry = read_datalist(lowdose_dataset)["training"][0]
    lo, hi = min(r[0] for r in TRAINING_VARIETY.weight_kg), max(r[1] for r in TRAINING_VARIETY.weight_kg)
    assert lo <= entry["weight_kg"] <= hi and entry["injected_Bq"] > 0 and entry["uptake_time_s"] > 0
    assert entry["units"] == "SUV" and 4e5 <= entry["trues_per_4mm_slice"] <= 4e6
    assert entry["psf_fwhm_mm"] == 8.0 and entry["spacing_mm"] == [10.0, 10.0, 10.0] and entry["phantom_variety"] == "training"


def test_stored_raw_data_reconstruct_to_the_stored_ac_image(pct_dataset):
    entry = read_datalist(pct_dataset)["training"][0]
    raw = read_npz(pct_dataset / entry["raw"])
    ct = torch.from_numpy(read_nifti(pct_dataset / entry["ct"]).array)
    again = S.reconstruct_pet_suv(raw, ct_to_mu(ct, 511.0, air_below_hu=float(raw["ct_air_below_hu"])))
    stored = read_nifti(pct_dataset / entry["ac"]).array
    assert np.allclose(again.numpy(), stored, rtol=1e-4, atol=1e-4 * stored.max())


def test_pct_nac_underestimates_the_liver_against_ac(pct_dataset):
    entry = read_datalist(pct_dataset)["training"][0]
    liver = _liver(read_nifti(pct_dataset / entry["labels"]).array)
    nac, ac = (read_nifti(pct_dataset / entry[k]).array[liver].mean() for k in ("nac", "ac"))
    assert nac < 0.7 * ac


@pytest.mark.slow
def test_pet_subjects_are_byte_identical_for_one_or_two_workers(tmp_path):
    import hashlib

    def digest(folder):
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}

    for workers in (1, 2):
        generate_dataset("pet_nac_to_pct", tmp_path / f"w{workers}", 2, seed=5, workers=workers, progress=False, params=SMALL)
    assert digest(tmp_path / "w1") == digest(tmp_path / "w2")



# ---- every acquisition parameter of the families reaches the images (issue 19) ---------------------


def _subject(index: int = 0, **params):
    from pet_nac_to_pct.dataset import TASK

    return TASK.builder(np.random.default_rng([0, index]), {**TASK.params, **SMALL, **params})


def test_count_level_sets_the_true_counts_and_fewer_counts_give_a_noisier_liver():
    from pet_lowdose_denoising.dataset import TASK

    def noise(trues):
        params = {**TASK.params, **SMALL, "dose_reduction_factors": [4], "trues_per_4mm_slice": trues}
        d = TASK.builder(np.random.default_rng([0, 0]), params)
        liver = d.images["labels"][0] == 8
        full, ref = d.images["full"][0][liver], d.images["noise_free"][0][liver]
        return float(np.std(full - ref) / np.mean(ref)), d.attributes

    (low_noise, low), (high_noise, high) = noise(4e5), noise(4e6)
    assert low["trues_per_4mm_slice"] == 4e5 and high["trues_per_4mm_slice"] == 4e6
    assert abs(high["total_trues"] / low["total_trues"] / 10.0 - 1) < 0.02  # the same subject, ten times the counts
    assert low_noise > 2.0 * high_noise  # Poisson: sqrt(10) = 3.2 in theory


def test_count_level_range_is_drawn_log_uniformly():
    rng = np.random.default_rng(0)
    draws = np.array([S.sample_log_param(rng, [4e5, 4e6]) for _ in range(4000)])
    assert draws.min() >= 4e5 and draws.max() <= 4e6
    below_geometric_mean = np.mean(draws < math.sqrt(4e5 * 4e6))
    assert abs(below_geometric_mean - 0.5) < 0.03  # half of the draws below the geometric mean


def test_scanner_resolution_blurs_the_reconstruction():
    sharp, blurred = _subject(psf_fwhm_mm=4.0), _subject(psf_fwhm_mm=20.0)
    def edge(d):  # mean gradient magnitude of the noise-free-ish AC image inside the body
        g = np.gradient(d.images["ac"][0])
        return float(np.mean(np.sqrt(sum(x * x for x in g))[d.images["labels"][0] > 0]))
    assert edge(blurred) < 0.8 * edge(sharp)


def test_scatter_fraction_raises_the_nac_haze_outside_the_body():
    low, high = _subject(scatter_fraction=0.2), _subject(scatter_fraction=0.5)
    def haze(d):
        labels, nac = d.images["labels"][0], d.images["nac"][0]
        return float(nac[labels == 0].mean())
    assert haze(high) > 1.5 * haze(low)
    assert (low.attributes["scatter_fraction"], high.attributes["scatter_fraction"]) == (0.2, 0.5)


def test_randoms_fraction_raises_the_flat_background_of_the_prompts():
    low, high = _subject(randoms_fraction=0.05, scatter_fraction=0.0), _subject(randoms_fraction=0.3, scatter_fraction=0.0)
    corner = lambda d: float(d.arrays["raw"]["background"][:, :3].astype(np.float64).mean())  # noqa: E731 (edge bins)
    assert corner(high) > 5 * corner(low)


def test_voxel_size_choice_sets_the_grid_over_the_same_field_of_view():
    d = _subject(voxel_scale=[[0.8, 0.8, 0.5]])
    assert d.images["nac"][0].shape == (50, 50, 88)  # 400 x 400 x 440 mm at 8 x 8 x 5 mm
    assert d.attributes["spacing_mm"] == [8.0, 8.0, 5.0]
    np.testing.assert_allclose(np.diag(d.images["nac"][1])[:3], [8.0, 8.0, 5.0])


def test_shifted_family_draws_acquisitions_beyond_every_training_range():
    from pet_nac_to_pct.dataset import TASK

    training, shifted = TASK.family_params("training"), TASK.family_params("shifted")
    for key in ("trues_per_4mm_slice", "psf_fwhm_mm", "scatter_fraction", "randoms_fraction"):
        (lo, hi), (slo, shi) = training[key], shifted[key]
        assert shi <= lo or slo >= hi, key  # the two ranges do not overlap
    assert not {tuple(v) for v in training["voxel_scale"]} & {tuple(v) for v in shifted["voxel_scale"]}
    assert shifted["phantom_variety"] == "shifted" and training["phantom_variety"] == "training"
    with pytest.raises(ValueError, match="unknown family 'sideways'; known: training, shifted"):
        TASK.family_params("sideways")


def test_a_shifted_dataset_records_its_family_and_refuses_to_be_mixed_with_training(tmp_path):
    from common.data import read_json

    generate_dataset("pet_nac_to_pct", tmp_path / "d", 1, seed=3000, progress=False, params=SMALL, test_only=True, family="shifted")
    assert read_json(tmp_path / "d" / "dataset.json")["family"] == "shifted"
    entry = read_datalist(tmp_path / "d")["test"][0]
    assert entry["phantom_variety"] == "shifted" and entry["trues_per_4mm_slice"] <= 4e5
    with pytest.raises(ValueError, match="family"):
        generate_dataset("pet_nac_to_pct", tmp_path / "d", 1, seed=3000, progress=False, params=SMALL, test_only=True)
