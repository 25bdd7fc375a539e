"""Physical and behavioural facts of common.dosimetry (Monte Carlo dose rate, voxel S-values,
convolution dosimetry) and of the CT -> material conversion it shares with common.physics.

Reference values cite /work/shared/REFERENCE.md. Monte Carlo runs are small (1-5 s each, one thread).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.dosimetry import (
    Medium,
    PhotonTables,
    density_scaled_vsv_dose_rate,
    electron_point_kernel,
    emission_spectrum,
    local_deposition_dose_rate,
    monte_carlo_dose_rate,
    transport_photons,
    voxel_s_values,
    vsv_dose_rate,
)
from common.dosimetry.electrons import ELECTRON_REST_KEV, csda_range
from common.dosimetry.inputs import MEV_TO_J
from common.dosimetry.montecarlo import sample_klein_nishina
from common.errors import InputError
from common.physics import cortical_bone_hu, hu_to_mu
from common.physics.attenuation import HU_RANGE, hu_to_material, mixture_mu


def _body(n: int = 15) -> tuple[torch.Tensor, torch.Tensor]:
    """A small heterogeneous phantom: soft tissue with a lung block, a bone slab and air around;
    activity in a soft-tissue cube next to both. Returns (activity Bq/mL, CT HU)."""
    ct = torch.full((n, n, n), -1000.0)
    ct[2:-2, 2:-2, 2:-2] = 40.0
    ct[3:7, 3:-3, 3:-3] = -800.0  # lung
    ct[9:11, 3:-3, 3:-3] = 1200.0  # bone
    activity = torch.zeros(n, n, n)
    activity[7:9, 5:10, 5:10] = 1e5
    activity[4:6, 6:8, 6:8] = 2e4  # some uptake in the lung
    return activity, ct


# --- CT -> (material, density): one conversion for Monte Carlo and density-scaled VSV ---------


def test_ct_density_rises_monotonically_from_air_to_dense_bone():
    hu = torch.linspace(*HU_RANGE, 4001)
    density = hu_to_material(hu).density
    assert (torch.diff(density) > 0).all()
    assert float(density[0]) == pytest.approx(0.001205, rel=1e-3)  # dry air
    assert float(hu_to_material(torch.tensor(0.0)).density) == pytest.approx(1.0, rel=1e-6)  # water
    assert float(hu_to_material(torch.tensor(cortical_bone_hu(120))).density) == pytest.approx(1.92, rel=1e-4)


def test_ct_mass_fractions_are_non_negative_and_sum_to_one():
    m = hu_to_material(torch.linspace(-1200, 3500, 1000))
    assert (m.mass_fraction >= 0).all()
    assert torch.allclose(m.mass_fraction.sum(0), torch.ones(1000), atol=1e-5)


@pytest.mark.parametrize("energy_keV", [113.0, 140.5, 208.0, 364.0])
def test_ct_material_attenuates_exactly_as_hu_to_mu_at_spect_energies(energy_keV):
    """The Monte Carlo's medium and the SPECT simulation's mu-map are one model: identical up to the
    CT number of cortical bone, within 3% beyond (dense bone continued on the density line)."""
    hu = torch.linspace(-1000.0, 3000.0, 4001, dtype=torch.float64)
    ratio = mixture_mu(hu_to_material(hu), energy_keV) / hu_to_mu(hu, energy_keV)
    bone = hu <= cortical_bone_hu(120)
    assert torch.allclose(ratio[bone], torch.ones_like(ratio[bone]), atol=2e-5)
    assert (ratio - 1).abs().max() < 0.03


def test_ct_material_agrees_with_carney_bilinear_at_511kev_within_4_percent():
    hu = torch.linspace(-950.0, 3000.0, 3951, dtype=torch.float64)
    ratio = mixture_mu(hu_to_material(hu), 511.0) / hu_to_mu(hu, 511.0)
    assert (ratio - 1).abs().max() < 0.04


def test_ct_material_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        hu_to_material(torch.tensor([0.0, float("nan")]))


# --- emissions ---------------------------------------------------------------------------------


def test_f18_emits_a_positron_spectrum_and_two_511kev_photons_per_positron():
    spec = emission_spectrum("F-18")
    assert spec.photon_keV == (511.0,)
    assert spec.photons_per_decay == pytest.approx(2 * spec.positron_yield, rel=1e-3)  # REFERENCE 3: 0.9673
    assert spec.beta_MeV_per_decay == pytest.approx(0.2416, rel=0.01)  # REFERENCE 3


def test_lu177_electron_energy_per_decay_includes_conversion_and_auger_electrons():
    # REFERENCE 3: beta 0.13327 MeV, total electron (beta + IE + Auger) 0.1479 MeV per decay
    assert emission_spectrum("Lu-177").electron_MeV_per_decay == pytest.approx(0.1479, rel=0.005)
    assert emission_spectrum("Lu-177", line_electrons=False).electron_MeV_per_decay == pytest.approx(0.13327, rel=0.005)


# --- physics pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize("energy_keV", [113.0, 208.0, 511.0])
def test_klein_nishina_sampling_reproduces_the_analytic_mean_scattered_energy(energy_keV):
    k = energy_keV / ELECTRON_REST_KEV
    cos = np.linspace(-1, 1, 200001)
    ratio = 1 / (1 + k * (1 - cos))  # E'/E
    dsigma = ratio**2 * (ratio + 1 / ratio - (1 - cos**2))  # Klein-Nishina, per d(cos)
    analytic = np.trapezoid(dsigma * ratio, cos) / np.trapezoid(dsigma, cos)
    g = torch.Generator().manual_seed(1)
    e_out, cos_t = sample_klein_nishina(torch.full((400_000,), energy_keV), g)
    assert float(e_out.mean()) / energy_keV == pytest.approx(analytic, abs=2e-3)
    # Compton kinematics hold for every sample
    assert torch.allclose(e_out, energy_keV / (1 + k * (1 - cos_t)), rtol=1e-4)


def test_electron_kernel_deposits_everything_within_the_csda_range():
    kernel = electron_point_kernel("Lu-177")
    assert float(kernel.cdf[0]) == 0.0 and float(kernel.cdf[-1]) == pytest.approx(1.0)
    assert (torch.diff(kernel.cdf) >= 0).all()
    # Lu-177 beta end point 498 keV: CSDA range 1.76 mm; scattering keeps 90% within 0.7 mm
    assert kernel.csda_range_max == pytest.approx(float(csda_range(torch.tensor([497.8]))[0]), rel=1e-3)
    assert float(kernel.fraction_within(0.07)) > 0.9


def test_narrow_beam_uncollided_photons_follow_beer_lambert_through_lung_bone_and_tissue():
    """Woodcock tracking through heterogeneous voxels: the fraction of 208 keV photons leaving a
    lung | bone | soft-tissue stack unscattered is exp(-sum mu_i t_i), with mu = photoelectric +
    Compton of xraydb (coherent scattering is not transported)."""
    spacing = 4.0
    ct = torch.full((20, 3, 3), 40.0)
    ct[:6] = -800.0
    ct[6:9] = 1300.0
    medium = Medium.from_ct(ct, spacing)
    tables = PhotonTables.build(medium)
    material = hu_to_material(ct[:, 1, 1])
    mu = mixture_mu(material, 208.0, "photo") + mixture_mu(material, 208.0, "incoh")
    expected = math.exp(-float(mu.sum()) * spacing / 10)
    n = 200_000
    start = torch.tensor([[0.0, 0.6, 0.6]]).repeat(n, 1)
    direction = torch.tensor([[1.0, 0.0, 0.0]]).repeat(n, 1)
    out = transport_photons(medium, tables, start, direction, torch.full((n,), 208.0), torch.Generator().manual_seed(3))
    uncollided = ((out.n_scatter == 0) & (out.exit_energy_keV > 0)).double().mean().item()
    sigma = math.sqrt(expected * (1 - expected) / n)
    assert abs(uncollided - expected) < 4 * sigma, (uncollided, expected, sigma)


# --- the engine --------------------------------------------------------------------------------


@pytest.mark.parametrize("nuclide", ["Lu-177", "F-18"])
def test_energy_is_conserved_deposited_plus_escaped_equals_emitted(nuclide):
    activity, ct = _body()
    n = 100_000
    kwargs = dict(n_photons=n, n_electrons=n, n_batches=4, seed=5)
    r = monte_carlo_dose_rate(activity, ct, 4.0, nuclide, photon_estimator="analog", **kwargs)
    # every history's energy ends deposited or escaped
    assert r.deposited_W + r.escaped_W == pytest.approx(r.sampled_W, rel=1e-6)
    # the dose map holds the deposited energy: exactly when scored at the interactions, within
    # statistics with the track-length estimator (same histories, same seed)
    mass_kg = hu_to_material(ct).density.double() * 0.064 * 1e-3
    assert float((r.dose_rate.double() * mass_kg).sum()) == pytest.approx(r.deposited_W, rel=1e-4)
    tle = monte_carlo_dose_rate(activity, ct, 4.0, nuclide, **kwargs)
    assert float((tle.dose_rate.double() * mass_kg).sum()) == pytest.approx(r.deposited_W, rel=0.01)
    # the histories carry the emitted energy within statistics (photon lines are drawn at random)
    spec = emission_spectrum(nuclide)
    e = np.asarray(spec.photon_keV)
    p = np.asarray(spec.photon_yield) / spec.photons_per_decay
    sigma_W = r.activity_Bq * spec.photons_per_decay * math.sqrt((p @ e**2 - (p @ e) ** 2) / n) * 1e-3 * MEV_TO_J
    assert abs(r.sampled_W - r.emitted_W) < 4 * sigma_W + 1e-9 * r.emitted_W
    assert r.escaped_W > 0 and r.deposited_W > 0


def test_lu177_voxel_s_values_in_soft_tissue_match_lanconelli_2012():
    """REFERENCE.md section 4 (Lanconelli et al. 2012, Phys Med Biol 57:517), Lu-177, soft tissue,
    4.0 mm voxels: S(0,0,0) = 0.302 and S(0,0,1) = 0.00498 mGy/(MBq s); within 5% and 20%.

    Soft tissue is a 40 HU CT voxel through hu_to_material (1.026 g/cm3), as the engine sees it in a
    phantom. The source is the beta spectrum only (line_electrons=False), which is what the table
    holds: its first shell, S(0,0,0) + 6 S(0,0,1) + 12 S(0,1,1) + 8 S(1,1,1) = 0.334 mGy/(MBq s),
    is 0.1334 MeV per decay x (rho / 1 g/cm3) of electron energy, the ICRP-107 beta mean energy
    (0.1333 MeV), not the 0.1479 MeV with conversion and Auger electrons (the same holds at 3 mm:
    0.1335 rho). With those electrons (the engine's default) S(0,0,0) is about 10% higher.
    """
    n = 7
    ct = torch.full((n, n, n), 40.0)
    activity = torch.zeros(n, n, n)
    activity[3, 3, 3] = 1.0 / 0.064  # 1 Bq in the centre voxel
    kwargs = dict(n_photons=100_000, n_electrons=1_000_000, n_batches=10, seed=11)
    beta = monte_carlo_dose_rate(activity, ct, 4.0, "Lu-177", line_electrons=False, **kwargs)
    s000, s001 = (float(beta.dose_rate[3, 3, k]) * 1e9 for k in (3, 4))  # Gy/(Bq s) -> mGy/(MBq s)
    assert s000 == pytest.approx(0.302, rel=0.05)
    assert s001 == pytest.approx(0.00498, rel=0.20)
    assert float(beta.std[3, 3, 3]) * 1e9 < 0.002 * s000  # the statistics are not what decides
    full = monte_carlo_dose_rate(activity, ct, 4.0, "Lu-177", **kwargs)
    # conversion and Auger electrons add their energy, self-absorbed about as much as the betas
    energy_ratio = emission_spectrum("Lu-177").electron_MeV_per_decay / emission_spectrum(
        "Lu-177", line_electrons=False
    ).electron_MeV_per_decay
    assert float(full.dose_rate[3, 3, 3]) * 1e9 / s000 == pytest.approx(energy_ratio, rel=0.02)


def test_dose_rate_is_linear_in_activity():
    activity, ct = _body(11)
    kwargs = dict(n_photons=20_000, n_batches=2, seed=2)
    one = monte_carlo_dose_rate(activity, ct, 4.0, "Lu-177", **kwargs)
    three = monte_carlo_dose_rate(3 * activity, ct, 4.0, "Lu-177", **kwargs)
    assert torch.allclose(three.dose_rate, 3 * one.dose_rate, rtol=1e-5, atol=0)


def test_standard_error_predicts_the_spread_between_independent_runs():
    activity, ct = _body(11)
    kwargs = dict(n_photons=60_000, n_electrons=60_000, n_batches=10)
    a = monte_carlo_dose_rate(activity, ct, 4.0, "Lu-177", seed=1, **kwargs)
    b = monte_carlo_dose_rate(activity, ct, 4.0, "Lu-177", seed=2, **kwargs)
    body = ct > -900  # air voxels weigh little: their dose rate is large and not of interest
    for part in ("photon", "electron"):
        da, sa = getattr(a, f"{part}_dose_rate"), getattr(a, f"{part}_std")
        db, sb = getattr(b, f"{part}_dose_rate"), getattr(b, f"{part}_std")
        mask = body & (da > 0.01 * da[body].max())
        z = ((da - db) / torch.sqrt(sa**2 + sb**2))[mask]
        assert mask.sum() > 30
        # 10 batches: each standard error has 9 degrees of freedom, so z is t-like (std about 1.06)
        assert 0.8 < float(z.std()) < 1.4, part
        assert abs(float(z.mean())) < 0.3, part


def test_photon_uncertainty_falls_as_one_over_root_histories():
    activity, ct = _body(11)
    small = monte_carlo_dose_rate(activity, ct, 4.0, "Lu-177", n_photons=20_000, n_electrons=1000, n_batches=10)
    large = monte_carlo_dose_rate(activity, ct, 4.0, "Lu-177", n_photons=80_000, n_electrons=1000, n_batches=10)
    body = ct > -900
    ratio = small.relative_std("photon", mask=body) / large.relative_std("photon", mask=body)
    assert ratio == pytest.approx(2.0, rel=0.2)


def test_empty_activity_gives_zero_dose():
    r = monte_carlo_dose_rate(torch.zeros(5, 5, 5), torch.zeros(5, 5, 5), 4.0, n_photons=100)
    assert float(r.dose_rate.abs().max()) == 0.0 and r.emitted_W == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_engine_runs_on_cuda_tensors():
    activity, ct = _body(11)
    r = monte_carlo_dose_rate(activity.cuda(), ct.cuda(), 4.0, n_photons=10_000, n_batches=2)
    assert r.dose_rate.is_cuda and r.deposited_W + r.escaped_W == pytest.approx(r.sampled_W, rel=1e-5)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a, c: (-a, c), "negative"),
        (lambda a, c: (a.index_put_((torch.tensor([5]),) * 3, torch.tensor(float("nan"))), c), "activity contains NaN"),
        (lambda a, c: (a, c[:-1]), "differ in shape"),
        (lambda a, c: (a, c.index_put_((torch.tensor([1]),) * 3, torch.tensor(float("nan")))), "CT contains NaN"),
        (lambda a, c: (a[0], c[0]), "3D"),
    ],
    ids=["negative activity", "NaN activity", "shape mismatch", "NaN CT", "2D input"],
)
def test_bad_input_is_refused_naming_the_problem(change, match):
    activity, ct = _body(11)
    activity, ct = change(activity.clone(), ct.clone())
    with pytest.raises(InputError, match=match):
        monte_carlo_dose_rate(activity, ct, 4.0, n_photons=100, n_batches=2)


@pytest.mark.parametrize("spacing", [0.0, -4.0, (4.0, 4.0), (4.0, float("nan"), 4.0)])
def test_bad_spacing_is_refused(spacing):
    activity, ct = _body(5)
    with pytest.raises(InputError, match="spacing"):
        monte_carlo_dose_rate(activity, ct, spacing, n_photons=100, n_batches=2)


# --- voxel S-values and convolution dosimetry ----------------------------------------------------


@pytest.fixture(scope="module")
def lu177_water_kernel():
    return voxel_s_values("Lu-177", 4.0, half_width=3, n_photons=50_000, n_electrons=200_000, n_batches=4, seed=4)


def test_vsv_of_a_one_voxel_source_is_the_kernel(lu177_water_kernel):
    k = lu177_water_kernel
    activity = torch.zeros(9, 9, 9)
    activity[4, 4, 4] = 1.0 / 0.064  # 1 Bq
    dose = vsv_dose_rate(activity, k, 4.0)
    assert torch.allclose(dose[1:8, 1:8, 1:8].double(), k.kernel, rtol=1e-4, atol=1e-20)
    assert k.density == 1.0 and k.s(0, 0, 0) > 0.3  # water; the self-dose dominates


def test_vsv_in_water_agrees_with_the_monte_carlo_it_came_from(lu177_water_kernel):
    n = 13
    activity = torch.zeros(n, n, n)
    activity[4:9, 4:9, 4:9] = 1e4
    ct = torch.zeros(n, n, n)  # water
    mc = monte_carlo_dose_rate(activity, ct, 4.0, "Lu-177", n_photons=50_000, n_electrons=400_000, n_batches=4)
    vsv = vsv_dose_rate(activity, lu177_water_kernel, 4.0)
    inside = activity > 0
    assert float(vsv[inside].mean() / mc.dose_rate[inside].mean()) == pytest.approx(1.0, abs=0.01)


def test_density_scaled_vsv_divides_by_relative_density(lu177_water_kernel):
    activity, ct = _body(11)
    water = vsv_dose_rate(activity, lu177_water_kernel, 4.0)
    scaled = density_scaled_vsv_dose_rate(activity, ct, lu177_water_kernel, 4.0)
    density = hu_to_material(ct).density
    assert torch.allclose(scaled, water / density, rtol=1e-4, atol=1e-30)


def test_kernel_of_another_voxel_size_is_refused(lu177_water_kernel):
    with pytest.raises(InputError, match="kernel has voxels"):
        vsv_dose_rate(torch.ones(5, 5, 5), lu177_water_kernel, 3.0)


def test_local_deposition_is_electron_energy_over_mass():
    activity = torch.full((3, 3, 3), 1e6)  # 1 MBq/mL
    ct = torch.zeros(3, 3, 3)  # water, 1 g/cm3
    dose = local_deposition_dose_rate(activity, ct, 4.0, "Lu-177")
    expected = 1e6 * 0.1479 * MEV_TO_J / 1e-3  # Bq/mL x J / (kg/mL); REFERENCE 3: 0.1479 MeV per decay
    assert float(dose[1, 1, 1]) == pytest.approx(expected, rel=0.005)
    with pytest.raises(InputError, match="negative"):
        local_deposition_dose_rate(-activity, ct, 4.0)
