"""AttenuationLoss: the voxel HU term and the line integrals of mu that PET attenuation correction depends on."""

from __future__ import annotations

import math

import pytest
import torch
from pet_nac_to_pct.losses import AttenuationLoss

from common.physics import ct_to_mu


def scaled(hu: torch.Tensor) -> torch.Tensor:
    return (hu + 1000.0) / 1000.0


def water(shape=(1, 1, 8, 6, 4)) -> torch.Tensor:
    return torch.zeros(shape)


def test_loss_is_zero_for_the_true_ct():
    ct = scaled(water() + 30.0 * torch.randn(1, 1, 8, 6, 4))
    assert AttenuationLoss()(ct, ct) == 0.0


def test_line_term_is_the_mean_error_of_the_attenuation_line_integrals():
    target = water()
    pred = target.clone()
    pred[..., :, 2, :] = 100.0  # one row of +100 HU soft tissue along X: 8 voxels x 0.4 cm
    extra = AttenuationLoss(line_weight=1.0)(scaled(pred), scaled(target)) - AttenuationLoss(line_weight=0.0)(scaled(pred), scaled(target))
    d_mu = float(ct_to_mu(torch.tensor(100.0)) - ct_to_mu(torch.tensor(0.0)))  # 1/cm at 511 keV
    along_x = 8 * 0.4 * d_mu / 6  # one of 6 Y rows per slice carries the error
    along_y = 0.4 * d_mu  # every X column crosses the row once
    assert math.isclose(float(extra), (along_x + along_y) / 2, rel_tol=1e-5)


def test_bone_voxels_weigh_bone_weight_times_more_in_the_voxel_term():
    target = water()
    target[0, 0, 0, 0, 0] = 1200.0  # cortical bone
    pred = target.clone()
    loss = AttenuationLoss(bone_weight=3.0, line_weight=0.0, beta=1e-6)
    err_bone, err_soft = pred.clone(), pred.clone()
    err_bone[0, 0, 0, 0, 0] -= 100.0
    err_soft[0, 0, 1, 0, 0] -= 100.0
    ratio = loss(scaled(err_bone), scaled(target)) / loss(scaled(err_soft), scaled(target))
    assert math.isclose(float(ratio), 3.0, rel_tol=1e-4)


def test_gradients_reach_the_prediction():
    pred = scaled(water() + 50.0).requires_grad_()
    AttenuationLoss()(pred, scaled(water())).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [{"bone_weight": 0.5}, {"line_weight": -1.0}, {"spacing_mm": (4.0, 4.0)}, {"hu_scale": 0.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        AttenuationLoss(**kwargs)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        AttenuationLoss()(water(), water((1, 1, 8, 6, 5)))
