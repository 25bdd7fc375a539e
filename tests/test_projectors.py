"""SPECT and PET projectors: adjointness, attenuation, scale, orientation, collimator blur."""

from __future__ import annotations

import math

import pytest
import torch

from common.physics.projectors import CollimatorPSF, PETProjector, SPECTProjector

MU_WATER_140 = 0.15366  # 1/cm, water at 140.5 keV (REFERENCE.md section 1, xraydb 4.5.8)
MU_WATER_511 = 0.09599  # 1/cm, water at 511 keV (REFERENCE.md section 1, xraydb 4.5.8)
F64 = torch.float64


def _cylinder(n: int, nz: int, radius_vox: float, value: float) -> torch.Tensor:
    c = torch.arange(n, dtype=F64) - (n - 1) / 2
    inside = c[:, None] ** 2 + c[None, :] ** 2 <= radius_vox**2
    return (inside.to(F64) * value)[:, :, None].expand(n, n, nz).contiguous()


def _point_sources(shape, points) -> torch.Tensor:
    x = torch.zeros(shape, dtype=F64)
    for (i, j, k), a in points:
        x[i, j, k] = a
    return x


def _inner(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


# ------------------------------------------------------------------------------------ adjoint
def test_spect_adjoint_identity_point_sources_with_attenuation_and_blur():
    # Point sources against random positive projections: dense inputs hide adjoint errors (NOTES.md).
    n = 24
    proj = SPECTProjector(
        (n, n, 16), (4.0, 4.0, 5.0), 10, radius_mm=150.0, mu_map=_cylinder(n, 16, 9, MU_WATER_140)[:, :, :16],
        psf=CollimatorPSF.from_collimator("SY-LEHR", 140.5, 3.8), start_deg=7.0,
    )
    x = _point_sources((n, n, 16), [((3, 17, 2), 1.0), ((20, 6, 9), 2.0), ((12, 12, 15), 0.5)])
    y = torch.rand(proj.data_shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    lhs, rhs = _inner(proj.forward(x), y), _inner(x, proj.adjoint(y))
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)
    views = [1, 4, 7]
    lhs, rhs = _inner(proj.forward(x, views), y[views]), _inner(x, proj.adjoint(y[views], views))
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)


def test_pet_adjoint_identity_point_sources_with_attenuation_and_blur():
    n = 24
    proj = PETProjector((n, n, 6), (4.0, 4.0, 4.0), 18, mu_map=_cylinder(n, 6, 9, MU_WATER_511), psf_fwhm_mm=6.0)
    x = _point_sources((n, n, 6), [((3, 17, 1), 1.0), ((20, 6, 4), 2.0), ((12, 12, 5), 0.5)])
    y = torch.rand(proj.data_shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    lhs, rhs = _inner(proj.forward(x), y), _inner(x, proj.adjoint(y))
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)
    views = [0, 5, 11, 17]
    lhs, rhs = _inner(proj.forward(x, views), y[views]), _inner(x, proj.adjoint(y[views], views))
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)


# -------------------------------------------------------------------------------- attenuation
def test_spect_point_at_depth_in_water_cylinder_attenuated_by_exp_minus_mu_d():
    # Source in the centre voxel of a water cylinder of radius (k + 1/2) voxels: the photon path to
    # the surface is d = (k + 1/2) h along each axis-aligned view; own voxel counts half.
    n, h, k = 41, 4.0, 15
    mu = _cylinder(n, 3, k + 0.5, MU_WATER_140)
    x = _point_sources((n, n, 3), [((20, 20, 1), 1.0)])
    with_mu = SPECTProjector((n, n, 3), (h, h, h), 4, radius_mm=200.0, mu_map=mu).forward(x)
    without = SPECTProjector((n, n, 3), (h, h, h), 4, radius_mm=200.0).forward(x)
    expected = math.exp(-MU_WATER_140 * (k + 0.5) * h / 10.0)  # mm -> cm
    ratio = with_mu.sum((1, 2)) / without.sum((1, 2))
    torch.testing.assert_close(ratio, torch.full((4,), expected, dtype=F64), rtol=0.01, atol=0)


def test_pet_attenuation_factor_is_exp_minus_mu_times_chord_length():
    # A centred line of response through a water cylinder of radius R has chord 2R.
    n, h, r_vox = 41, 4.0, 15.5
    proj = PETProjector((n, n, 1), (h, h, h), 4, mu_map=_cylinder(n, 1, r_vox, MU_WATER_511))
    x = _point_sources((n, n, 1), [((20, 20, 0), 1.0)])
    plain = PETProjector((n, n, 1), (h, h, h), 4).forward(x)
    ratio = proj.forward(x).sum((1, 2)) / plain.sum((1, 2))
    expected = math.exp(-MU_WATER_511 * 2 * r_vox * h / 10.0)
    torch.testing.assert_close(ratio[[0, 2]], torch.full((2,), expected, dtype=F64), rtol=0.01, atol=0)


# -------------------------------------------------------------------------------------- scale
def test_spect_every_view_total_equals_object_total_without_attenuation():
    # Scale = plain voxel sums; blur kernels are normalised and the object stays clear of the edges.
    n = 32
    g = torch.Generator().manual_seed(3)
    x = torch.rand((n, n, 20), dtype=F64, generator=g) * _cylinder(n, 20, 10, 1.0)
    x[:, :, :4] = 0
    x[:, :, -4:] = 0
    proj = SPECTProjector((n, n, 20), (4.0, 4.0, 4.0), 17, radius_mm=200.0, psf=CollimatorPSF(0.02, 1.0, 2.0), start_deg=3.0)
    totals = proj.forward(x).sum((1, 2))
    torch.testing.assert_close(totals, torch.full_like(totals, float(x.sum())), rtol=1e-9, atol=0)


def test_pet_every_angle_total_equals_slice_total_without_attenuation():
    n = 32
    x = torch.rand((n, n, 3), dtype=F64, generator=torch.Generator().manual_seed(4))
    totals = PETProjector((n, n, 3), (4.0, 4.0, 4.0), 25).forward(x).sum(1)  # [angles, Z]
    torch.testing.assert_close(totals, x.sum((0, 1)).expand_as(totals), rtol=1e-9, atol=0)


# -------------------------------------------------------------------------------- orientation
def test_spect_off_centre_source_projects_to_u_documented_by_angle_convention():
    # theta = 0: u along +x; 90: u along -y; 180: u along -x; 270: u along +y (module docstring).
    n, off = 33, 8
    x = _point_sources((n, n, 3), [((16 + off, 16, 1), 1.0)])
    proj = SPECTProjector((n, n, 3), (4.0, 4.0, 4.0), 4, radius_mm=150.0)
    peaks = proj.forward(x).sum(2).argmax(1).tolist()
    assert peaks == [16 + off, 16, 16 - off, 16]


def test_spect_detector_side_follows_angle_convention():
    # The detector at theta lies at n = (-sin, -cos): at 270 degrees on +x, so a +x source is
    # attenuated least there and most at 90 degrees.
    n = 33
    x = _point_sources((n, n, 3), [((16 + 10, 16, 1), 1.0)])
    mu = torch.full((n, n, 3), MU_WATER_140, dtype=F64)
    totals = SPECTProjector((n, n, 3), (4.0, 4.0, 4.0), 4, radius_mm=150.0, mu_map=mu).forward(x).sum((1, 2))
    assert int(totals.argmax()) == 3 and int(totals.argmin()) == 1


@pytest.mark.parametrize("case", ["lehr", "me"])
def test_spect_matches_pytomography_with_same_blur_and_attenuation(case):
    """Low-energy (Tc-99m) and medium-energy (Lu-177, PyTomography's sigma = 0.03235 d + 0.1246 cm) blur."""
    pytest.importorskip("pytomography")
    from scripts.bench_physics import _phantom, _pytomography_spect, spect_psfs

    # Voxels of 10 mm: at coarser sampling the two bilinear rotations (ours normalised to conserve
    # counts) differ by more than 1% at the body edge.
    act, mu = _phantom(48, 48, 10.0, MU_WATER_140)
    psf = spect_psfs()[case][1]
    proj = SPECTProjector((48, 48, 48), (10.0, 10.0, 10.0), 24, radius_mm=300.0, mu_map=mu, psf=psf)
    ours = proj.forward(act)
    ref = _pytomography_spect(mu, psf, proj).forward(act)
    assert float((ours - ref).norm() / ref.norm()) < 0.01


# ---------------------------------------------------------------------------- collimator blur
def test_sy_lehr_fwhm_at_10cm_is_5_9_mm():
    # REFERENCE.md section 6: SY-LEHR (D 1.11 mm, L 24.05 mm) at 140.5 keV, mu_Pb 26.87 /cm:
    # FWHM_coll(d) = 0.0476 d + 1.11 mm, 5.9 mm at 10 cm.
    psf = CollimatorPSF.from_collimator("SY-LEHR", 140.5)
    assert psf.slope == pytest.approx(0.0476, abs=5e-4)
    assert float(psf.fwhm_mm(100.0)) == pytest.approx(5.87, abs=0.05)


def test_collimator_blur_fwhm_of_point_source_grows_as_a_d_plus_b():
    # Point sources on the central ray at three depths; FWHM from the second moment of the u profile.
    n, h, radius = 64, 2.0, 250.0
    psf = CollimatorPSF(0.05, 1.5)
    proj = SPECTProjector((n, n, 5), (h, h, h), 1, radius_mm=radius, psf=psf, n_u=64)
    u = (torch.arange(64, dtype=F64) - 31.5) * h
    for s_vox in (-25, 0, 25):  # depth towards the detector (-y at theta = 0)
        j = int(31.5 - s_vox + 0.5)
        x = _point_sources((n, n, 5), [((32, j, 2), 1.0)])
        prof = proj.forward(x)[0, :, 2]
        mean = float((prof * u).sum() / prof.sum())
        fwhm = 2 * math.sqrt(2 * math.log(2)) * math.sqrt(float((prof * (u - mean) ** 2).sum() / prof.sum()))
        d = radius - (31.5 - j) * h
        assert fwhm == pytest.approx(float(psf.fwhm_mm(d)), rel=0.02)


def test_grouped_depth_blur_matches_per_plane_blur():
    n = 32
    act = torch.rand((n, n, 8), dtype=F64, generator=torch.Generator().manual_seed(5)) * _cylinder(n, 8, 12, 1.0)
    psf = CollimatorPSF.from_collimator("SY-LEHR", 140.5, 3.8)
    grouped = SPECTProjector((n, n, 8), (4.0, 4.0, 4.0), 6, radius_mm=200.0, psf=psf)
    exact = SPECTProjector((n, n, 8), (4.0, 4.0, 4.0), 6, radius_mm=200.0, psf=psf, psf_tolerance=0.0)
    assert grouped.n_nodes < exact.n_nodes
    a, b = grouped.forward(act), exact.forward(act)
    assert float((a - b).norm() / b.norm()) < 1e-3


def test_transparent_collimator_is_refused():
    # Lead at 364 keV (I-131) has mu ~ 3.4 /cm: an LEHR's septa of 24 mm are no collimator.
    with pytest.raises(ValueError, match="transparent"):
        CollimatorPSF.from_collimator("SY-LEHR", 364.0, mu_lead_per_cm=0.5)


# --------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.forward(torch.zeros(8, 8)), "activity"),
        (lambda p: p.forward(torch.full((8, 8, 4), float("nan"))), "activity"),
        (lambda p: p.forward(-torch.ones(8, 8, 4)), "activity"),
        (lambda p: p.adjoint(torch.zeros(3, 8, 4)), "projections"),
        (lambda p: p.forward(torch.ones(8, 8, 4), views=[9]), "views"),
    ],
)
def test_spect_bad_input_raises_value_error_naming_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make(SPECTProjector((8, 8, 4), (4.0, 4.0, 4.0), 4))


def test_mu_map_of_other_shape_or_in_hu_is_refused():
    with pytest.raises(ValueError, match="mu_map"):
        SPECTProjector((8, 8, 4), (4.0, 4.0, 4.0), 4, mu_map=torch.zeros(8, 8, 5))
    with pytest.raises(ValueError, match="mu_map"):
        PETProjector((8, 8, 4), (4.0, 4.0, 4.0), 4, mu_map=torch.full((8, 8, 4), 1000.0))
    with pytest.raises(ValueError, match="mu_map"):
        PETProjector((8, 8, 4), (4.0, 4.0, 4.0), 4, mu_map=torch.full((8, 8, 4), float("inf")))


def test_anisotropic_in_plane_spacing_is_refused():
    with pytest.raises(ValueError, match="spacing_mm"):
        SPECTProjector((8, 8, 4), (4.0, 3.0, 4.0), 4)


def test_pet_bad_image_raises_value_error_naming_argument():
    proj = PETProjector((8, 8, 4), (4.0, 4.0, 4.0), 4)
    with pytest.raises(ValueError, match="image"):
        proj.forward(torch.ones(2, 8, 8, 5))
    with pytest.raises(ValueError, match="sinogram"):
        proj.adjoint(torch.ones(4, 3, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_pet_nan_or_inf_anywhere_is_refused_and_huge_finite_values_are_not(bad):
    proj = PETProjector((8, 8, 4), (4.0, 4.0, 4.0), 4)
    image = torch.ones(8, 8, 4)
    image[3, 5, 2] = bad
    with pytest.raises(ValueError, match="image contains NaN or Inf"):
        proj.forward(image)
    huge = torch.full((8, 8, 4), 3e38)  # finite, but its sum overflows: must not be called NaN or Inf
    proj.forward(huge)
