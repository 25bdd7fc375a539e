"""Tests of common.simulation.spect: the SPECT count level, acquisition model, AC OSEM, sparse
views and the ``spect_projection_completion`` builder, on small volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.data import read_datalist, read_nifti, read_npz
from common.physics import hu_to_mu
from common.simulation import spect as S
from common.simulation.datasets import add_bundle_paths

add_bundle_paths()
from spect_projection_completion import dataset as T  # noqa: E402  (the task builder, with its bundle)

from common.simulation.datasets import generate_dataset

SPACING = (8.0, 8.0, 8.0)
SENS = 95.0  # cps/MBq, about an LEHR head at 140.5 keV
# Tiny builder geometry: 16 mm voxels cover the torso phantom; 24 views keep it a few seconds.
TINY = {"shape": [32, 32, 28], "spacing_mm": [16.0, 16.0, 16.0], "n_views": 24, "n_iters": 2, "n_subsets": 4}


def _cylinder(shape=(32, 32, 6), radius_mm=96.0):
    """Uniform water cylinder (0 HU) in air, 1000 Bq/mL inside; radial distance map in mm."""
    x = (torch.arange(shape[0]) - (shape[0] - 1) / 2) * SPACING[0]
    r = torch.sqrt(x[:, None] ** 2 + x[None, :] ** 2)[:, :, None].expand(*shape)
    inside = r <= radius_mm
    return torch.where(inside, 1000.0, 0.0), torch.where(inside, 0.0, -1000.0), r


def _system(ct=None, n_views=32, collimator="SY-LEHR"):
    mu = None if ct is None else hu_to_mu(ct, 140.5)
    return S.spect_projector(ct.shape if ct is not None else (32, 32, 6), SPACING, n_views, 200.0, mu, collimator, 140.5, 3.8)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ count level
def test_lehr_sensitivity_from_collimator_geometry_is_near_the_vendor_order_of_90_cps_per_MBq():
    # Anger's formula with SIMIND's SY-LEHR geometry and the ICRP-107 140.5 keV yield 0.8906
    # (REFERENCE.md 3); LEHR heads are specified at about 90 cps/MBq (~200 cpm/uCi).
    sens = S.collimator_sensitivity("SY-LEHR", 140.5, S.photon_yield("Tc-99m", 140.5))
    assert 80.0 < sens < 110.0


def test_medium_energy_lu177_sensitivity_is_far_below_lehr_tc99m_because_of_the_11_percent_yield():
    # Lu-177 208 keV yield 0.11 vs Tc-99m 0.89 (REFERENCE.md 3), and larger ME septa.
    tc = S.collimator_sensitivity("SY-LEHR", 140.5, S.photon_yield("Tc-99m", 140.5))
    lu = S.collimator_sensitivity("SY-ME", 208.4, S.photon_yield("Lu-177", 208.4))
    assert lu < 0.25 * tc


@pytest.mark.parametrize("time_factor, dose_fraction", [(2.0, 1.0), (1.0, 0.25)])
def test_mean_counts_are_proportional_to_acquisition_time_and_dose(time_factor, dose_fraction):
    activity, ct, _ = _cylinder()
    p = _system(ct)
    base = S.simulate_spect(activity, p, S.spect_count_scale(SPACING, SENS, 10.0), generator=_gen(0))
    k = S.spect_count_scale(SPACING, SENS, 10.0 * time_factor)
    other = S.simulate_spect(activity * dose_fraction, p, k, generator=_gen(1))
    ratio = float(other.counts.sum() / base.counts.sum())
    expected = time_factor * dose_fraction
    sigma = expected * math.sqrt(1 / float(base.counts.sum()) + 1 / float(other.counts.sum()))
    assert abs(ratio - expected) < 5 * sigma


def test_without_attenuation_each_view_holds_activity_times_sensitivity_times_time():
    activity, _, _ = _cylinder()
    p = S.spect_projector(activity.shape, SPACING, 32, 200.0, None, None)  # no attenuation, no blur
    t_view = 20.0
    data = S.simulate_spect(activity, p, S.spect_count_scale(SPACING, SENS, t_view), 0.0, generator=_gen(0))
    activity_Bq = float(activity.sum()) * math.prod(SPACING) / 1000.0  # Bq/mL x mL
    expected = activity_Bq * SENS * 1e-6 * t_view
    per_view = data.counts.sum(dim=(1, 2))
    assert torch.all((per_view - expected).abs() < 5 * math.sqrt(expected))
    assert abs(float(per_view.mean()) - expected) < 5 * math.sqrt(expected / 32)


# ----------------------------------------------------------------------------- reconstruction
def _recon_cylinder(with_mu: bool):
    activity, ct, r = _cylinder()
    sim = _system(ct)
    k = S.spect_count_scale(SPACING, SENS, 15.0)
    data = S.simulate_spect(activity, sim, k, generator=_gen(0))
    rec = sim if with_mu else _system(None)
    # Noise-free data: the expectation, with the scatter as known background.
    return S.reconstruct_spect(rec, data.expected, data.scatter, k, n_iters=20, n_subsets=4), r


def test_ac_osem_of_a_uniform_water_cylinder_is_flat_within_5_percent_in_bq_per_ml():
    # Radial profile: means over 16 mm rings out to 2/3 of the 96 mm radius (single voxels carry a
    # +-7 % angular-sampling pattern at 8 mm voxels and 32 views, which is not a dip).
    image, r = _recon_cylinder(with_mu=True)
    rings = torch.stack([image[(r >= a) & (r < a + 16.0)].mean() for a in (0.0, 16.0, 32.0, 48.0)])
    assert float(rings.max() - rings.min()) / float(rings.mean()) < 0.05
    assert float((rings / 1000.0 - 1.0).abs().max()) < 0.05


def test_nac_osem_of_a_uniform_water_cylinder_shows_the_central_dip():
    # 19 cm of water at 140.5 keV (mu 0.154 /cm, REFERENCE.md 1) attenuates the centre most.
    image, r = _recon_cylinder(with_mu=False)
    centre, rim = image[r <= 24.0].mean(), image[(r >= 64.0) & (r <= 88.0)].mean()
    assert float(centre / rim) < 0.8


def test_sparse_view_osem_has_fewer_views_and_larger_error_at_the_same_counts_per_view():
    activity, ct, r = _cylinder()
    activity = torch.where((r <= 32.0) & (r > 0), 4000.0, activity)  # a hot insert for structure
    full_p = _system(ct, n_views=48)
    k = S.spect_count_scale(SPACING, SENS, 15.0)
    data = S.simulate_spect(activity, full_p, k, generator=_gen(3))
    idx = S.sparse_views(48, 4)
    sparse_p = S.ViewSubset(full_p, idx)
    full = S.reconstruct_spect(full_p, data.counts, data.scatter, k, 4, 4)
    sparse = S.reconstruct_spect(sparse_p, data.counts[idx], data.scatter[idx], k, 4, 4)
    body = r <= 96.0
    nrmse = [float((im - activity)[body].norm() / activity[body].norm()) for im in (full, sparse)]
    assert sparse_p.n_views == 12 < full_p.n_views
    assert nrmse[1] > 1.1 * nrmse[0]


def test_view_subset_adjoint_matches_its_forward():
    activity, ct, _ = _cylinder()
    sub = S.ViewSubset(_system(ct, n_views=16), [0, 4, 8, 12])
    x = torch.rand(activity.shape, generator=_gen(0), dtype=torch.float64)
    y = torch.rand((4, 32, 6), generator=_gen(1), dtype=torch.float64)
    lhs, rhs = float((sub.forward(x) * y).sum()), float((x * sub.adjoint(y)).sum())
    assert abs(lhs - rhs) < 1e-9 * abs(lhs)


def test_same_seed_gives_identical_projections_and_another_seed_does_not():
    activity, ct, _ = _cylinder()
    p, k = _system(ct), S.spect_count_scale(SPACING, SENS, 15.0)
    a, b, c = (S.simulate_spect(activity, p, k, generator=_gen(s)).counts for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "override, message",
    [
        ({"tracer": "FDG"}, "tracer"),
        ({"sparse_factor": 1}, "sparse_factor"),
        ({"sparse_factor": 7}, "does not divide"),
        ({"time_per_view_s": -15.0}, "time_per_view_s"),
        ({"tracer": "Lu177-agent", "collimator": "SY-LEHR"}, "septal penetration"),  # LEHR at 208 keV
    ],
)
def test_bad_acquisition_parameters_raise_a_value_error_naming_the_problem(override, message):
    with pytest.raises(ValueError, match=message):
        T.build_spect_projection_completion(np.random.default_rng(0), {**T.SPECT_PARAMS, **TINY, **override})


def test_an_orbit_inside_the_body_is_refused():
    with pytest.raises(ValueError, match="radius_mm"):
        T.build_spect_projection_completion(np.random.default_rng(0), {**T.SPECT_PARAMS, **TINY, "radius_mm": 100.0})


# ---------------------------------------------------------------------------------- builder
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("spect")
    generate_dataset("spect_projection_completion", out, n=1, seed=3, progress=False, params=TINY)
    return out, read_datalist(out / "datalist.json")["training"][0]


def test_task_writes_full_view_projections_and_the_sparse_subset(tiny_dataset):
    out, entry = tiny_dataset
    raw = read_npz(out / entry["raw"])
    assert raw["projections"].shape == (24, 32, 28)  # [views, u, v]
    assert list(raw["sparse_views"]) == list(range(0, 24, 4))
    assert entry["n_sparse_views"] == 6 and entry["total_counts"] == float(raw["projections"].sum())


def test_stored_raw_data_reconstruct_to_the_stored_full_view_osem(tiny_dataset):
    out, entry = tiny_dataset
    raw, ct = read_npz(out / entry["raw"]), read_nifti(out / entry["ct"]).array
    image = S.reconstruct_spect_raw(raw, ct).numpy()
    stored = read_nifti(out / entry["osem_full"]).array
    assert np.allclose(image, stored, rtol=1e-4, atol=1e-3 * stored.max())


def test_lu177_overrides_simulate_with_the_medium_energy_collimator_psf_at_208_kev():
    from common.physics.projectors import CollimatorPSF

    data = T.build_spect_projection_completion(np.random.default_rng(1), {**T.SPECT_PARAMS, **TINY, **T.LU177_PARAMS})
    expected = CollimatorPSF.from_collimator("SY-ME", 208.4, 3.8)
    assert data.attributes["collimator"] == "SY-ME" and data.attributes["energy_keV"] == 208.4
    assert np.allclose(data.arrays["raw"]["psf"], [expected.slope, expected.intercept_mm, expected.intrinsic_fwhm_mm])
