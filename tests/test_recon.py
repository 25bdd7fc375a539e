"""MLEM/OSEM: convergence on noiseless data, background model, dose scaling, bad input."""

from __future__ import annotations

import pytest
import torch

from common.physics.projectors import CollimatorPSF, PETProjector, SPECTProjector
from common.physics.recon import mlem, osem, subset_views

MU_WATER_140 = 0.15366  # 1/cm, water at 140.5 keV (REFERENCE.md section 1, xraydb 4.5.8)
F64 = torch.float64


def _hot_sphere_phantom(n: int, nz: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Warm water cylinder with two hot spheres (8:1): (activity, mu 1/cm)."""
    c = torch.arange(n, dtype=F64) - (n - 1) / 2
    cz = torch.arange(nz, dtype=F64) - (nz - 1) / 2
    x, y, z = torch.meshgrid(c, c, cz, indexing="ij")
    body = x**2 + y**2 <= (0.4 * n) ** 2
    act = body.to(F64)
    act[(x - 4) ** 2 + (y + 3) ** 2 + z**2 <= 9] = 8.0
    act[(x + 5) ** 2 + (y - 4) ** 2 + (z - 2) ** 2 <= 4] = 8.0
    return act, body.to(F64) * MU_WATER_140


def _nrmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def spect_problem():
    act, mu = _hot_sphere_phantom(24, 12)
    proj = SPECTProjector(
        (24, 24, 12), (6.0, 6.0, 6.0), 24, radius_mm=150.0, mu_map=mu,
        psf=CollimatorPSF.from_collimator("SY-LEHR", 140.5, 3.8),
    )
    return proj, act, proj.forward(act)


def test_osem_error_falls_every_iteration_on_noiseless_data(spect_problem):
    proj, act, data = spect_problem
    errors: list[float] = []
    osem(proj, data, 6, 4, callback=lambda it, f: errors.append(_nrmse(f, act)))
    assert len(errors) == 6
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))


def test_osem_modelling_background_beats_ignoring_it():
    act, mu = _hot_sphere_phantom(24, 6)
    proj = PETProjector((24, 24, 6), (4.0, 4.0, 4.0), 24, mu_map=mu * 0.62)
    clean = proj.forward(act)
    background = torch.full_like(clean, 0.3 * float(clean.mean()))  # flat randoms-like term
    data = clean + background
    with_bg = osem(proj, data, 8, 4, background=background)
    without = osem(proj, data, 8, 4)
    assert _nrmse(with_bg, act) < 0.7 * _nrmse(without, act)


def test_thinned_data_with_sensitivity_scale_reconstructs_full_dose_units(spect_problem):
    # Expected data at dose fraction s, with sensitivity and background scaled by s, give the
    # same image as the full-dose data (DESIGN.md section 3).
    proj, act, data = spect_problem
    background = torch.full_like(data, 0.1 * float(data.mean()))
    full = osem(proj, data + background, 2, 4, background=background)
    thinned = osem(proj, 0.25 * (data + background), 2, 4, background=background, sensitivity_scale=0.25)
    torch.testing.assert_close(thinned, full, rtol=1e-9, atol=1e-12)


def test_mlem_is_osem_with_one_subset(spect_problem):
    proj, _, data = spect_problem
    torch.testing.assert_close(mlem(proj, data, 2), osem(proj, data, 2, 1))


def test_subsets_interleave_views_and_cover_each_once():
    subsets = subset_views(10, 3)
    assert subsets[0] == [0, 3, 6, 9] and subsets[1] == [1, 4, 7]
    assert sorted(v for s in subsets for v in s) == list(range(10))


def test_post_filter_smooths_but_keeps_counts_of_an_image_clear_of_the_edges(spect_problem):
    # A normalised Gaussian moves counts, it does not create or remove them inside the image.
    proj, act, data = spect_problem
    init = act.clone()
    init[0], init[-1], init[:, 0], init[:, -1] = 0, 0, 0, 0
    raw = osem(proj, data, 2, 4, init=init)
    smooth = osem(proj, data, 2, 4, init=init, post_filter_fwhm_mm=8.0)
    inner = (slice(None), slice(None), slice(3, -3))
    assert float(smooth[inner].sum()) == pytest.approx(float(raw[inner].sum()), rel=0.02)
    assert float(smooth.std()) < float(raw.std())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"measured": "nan"}, "measured"),
        ({"measured": "negative"}, "measured"),
        ({"n_subsets": 0}, "n_subsets"),
        ({"n_iters": 0}, "n_iters"),
        ({"background": "wrong_shape"}, "background"),
        ({"sensitivity_scale": 0.0}, "sensitivity_scale"),
    ],
)
def test_osem_bad_input_raises_value_error_naming_argument(kwargs, match):
    proj = PETProjector((8, 8, 2), (4.0, 4.0, 4.0), 6)
    data = torch.ones(proj.data_shape)
    args = {"measured": data, "n_iters": 1, "n_subsets": 2}
    args.update(kwargs)
    replace = {"nan": data * float("nan"), "negative": -data, "wrong_shape": torch.ones(6, 3, 2)}
    args = {k: replace[v] if isinstance(v, str) else v for k, v in args.items()}
    with pytest.raises(ValueError, match=match):
        osem(proj, **args)
