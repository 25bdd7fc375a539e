"""Metric conventions of common.learning.metrics on constructed cases (REFERENCE.md 5(a) UDPET, 5(b) SynthRAD)."""

import math

import pytest
import torch
from monai.metrics import SSIMMetric

from common.learning.metrics import (
    bone_adjacent_mask,
    contrast_recovery,
    dilate_box,
    lesion_metrics,
    lesion_stats,
    mae,
    nrmse,
    psnr,
    regional_mean_error,
    ssim,
    suv_peak,
)


def _ramp(shape=(16, 16, 16)) -> torch.Tensor:
    return torch.linspace(0.0, 10.0, math.prod(shape)).reshape(shape)


def test_nrmse_of_identical_images_is_zero():
    ref = _ramp()
    assert nrmse(ref.clone(), ref) == 0.0


# UDPET: NRMSE = RMSE / (max(ref) - min(ref)); a constant offset of 1 on a 0..10 ramp gives 0.1.
def test_nrmse_normalises_by_the_reference_range():
    ref = _ramp()
    assert nrmse(ref + 1.0, ref) == pytest.approx(0.1)


# UDPET: PSNR = 20 log10(max(ref) / RMSE): max 10, RMSE 1 -> 20 dB.
def test_psnr_uses_reference_max_over_rmse():
    ref = _ramp()
    assert psnr(ref + 1.0, ref) == pytest.approx(20.0)


# SynthRAD: data_range 4024 (HU clipped to [-1024, 3000]); RMSE 40.24 HU -> 40 dB.
def test_psnr_with_data_range_uses_synthrad_convention():
    ref = torch.zeros(8, 8, 8)
    assert psnr(ref + 40.24, ref, data_range=4024.0) == pytest.approx(40.0)


def test_psnr_of_identical_images_is_infinite():
    ref = _ramp()
    assert psnr(ref, ref) == math.inf


def test_errors_outside_the_mask_are_ignored():
    ref = _ramp()
    pred = ref.clone()
    mask = torch.zeros_like(ref, dtype=torch.bool)
    mask[4:12, 4:12, 4:12] = True
    pred[~mask] += 100.0
    assert nrmse(pred, ref, mask) == 0.0 and mae(pred, ref, mask) == 0.0


def test_mae_of_a_constant_hu_offset_is_the_offset():
    ref = torch.full((8, 8, 8), 40.0)
    assert mae(ref - 25.0, ref) == pytest.approx(25.0)


def test_ssim_of_identical_volumes_is_one():
    ref = torch.rand(24, 24, 24, generator=torch.Generator().manual_seed(0))
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-6)


def test_ssim_without_mask_equals_monai_ssim_on_max_normalised_volumes():
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(24, 24, 24, generator=g) * 5
    pred = ref + torch.rand(24, 24, 24, generator=g)
    expected = SSIMMetric(spatial_dims=3, data_range=1.0)(pred[None, None] / ref.max(), ref[None, None] / ref.max())
    assert ssim(pred, ref) == pytest.approx(expected.item(), rel=1e-5)


def test_ssim_sees_a_global_scale_error_because_both_use_the_reference_max():
    ref = torch.rand(24, 24, 24, generator=torch.Generator().manual_seed(2)) + 1.0
    assert ssim(0.5 * ref, ref) < 0.9


def test_ssim_in_mask_ignores_noise_outside_it():
    g = torch.Generator().manual_seed(3)
    ref = torch.rand(40, 40, 40, generator=g)
    pred = ref.clone()
    pred[:, :, 25:] += torch.rand(40, 40, 15, generator=g)
    mask = torch.zeros_like(ref, dtype=torch.bool)
    mask[:, :, :10] = True  # > kernel radius away from the noisy slab
    assert ssim(pred, ref, mask) == pytest.approx(1.0, abs=1e-6)
    assert ssim(pred, ref) < 0.99


def test_regional_mean_error_on_constructed_regions():
    labels = torch.zeros(10, 10, 10, dtype=torch.int16)
    labels[:5] = 1
    labels[5:] = 2
    ref = torch.full((10, 10, 10), 2000.0)
    pred = torch.where(labels == 1, ref * 1.10, ref * 0.95)
    err = regional_mean_error(pred, ref, labels, [1, 2])
    assert err[1] == pytest.approx(0.10) and err[2] == pytest.approx(-0.05)


def test_regional_mean_error_refuses_an_absent_region():
    labels = torch.ones(4, 4, 4, dtype=torch.int16)
    with pytest.raises(ValueError, match="region id 7"):
        regional_mean_error(torch.ones(4, 4, 4), torch.ones(4, 4, 4), labels, [7])


@pytest.mark.parametrize("spacing, last_included", [((4.0, 4.0, 4.0), 3), ((2.0, 4.0, 4.0), 6)])
def test_bone_adjacent_region_is_soft_tissue_within_10mm_of_bone(spacing, last_included):
    labels = torch.full((20, 6, 6), 2, dtype=torch.int16)  # soft tissue
    labels[:2] = 5  # bone slab at x = 0, 1
    near = bone_adjacent_mask(labels, spacing, bone_ids=[5], tissue_ids=[2], distance_mm=10.0)
    xs = near.any(dim=(1, 2)).nonzero().flatten().tolist()
    assert xs == list(range(2, last_included + 1))


def test_bone_adjacent_region_is_empty_without_bone():
    labels = torch.full((5, 5, 5), 2, dtype=torch.int16)
    assert not bone_adjacent_mask(labels, (4.0, 4.0, 4.0), [5], [2]).any()


# A 1 mL sphere has radius 6.20 mm: at 4 mm spacing it holds the centre, 6 face (4 mm) and
# 12 edge (5.66 mm) neighbours, not the corners (6.93 mm) -> 19 voxels.
def test_suv_peak_averages_a_1ml_sphere_around_the_hottest_voxel():
    image = torch.zeros(11, 11, 11)
    image[5, 5, 5] = 19.0
    mask = image > 0
    assert suv_peak(image, mask, (4.0, 4.0, 4.0)) == pytest.approx(1.0)


def test_lesion_stats_of_a_uniform_lesion_are_its_value():
    image = torch.ones(12, 12, 12)
    mask = torch.zeros_like(image, dtype=torch.bool)
    mask[2:10, 2:10, 2:10] = True  # 16 mm cube holds the 12.4 mm sphere
    image[mask] = 6.0
    stats = lesion_stats(image, mask, (2.0, 2.0, 2.0))
    assert stats == pytest.approx({"max": 6.0, "mean": 6.0, "peak": 6.0})


def _lesion_phantom(lesion_value: float):
    image = torch.ones(12, 12, 12)
    lesion = torch.zeros_like(image, dtype=torch.bool)
    lesion[4:8, 4:8, 4:8] = True
    image[lesion] = lesion_value
    return image, lesion, ~lesion


def test_contrast_recovery_of_identical_images_is_one():
    ref, lesion, background = _lesion_phantom(4.0)
    assert contrast_recovery(ref.clone(), ref, lesion, background) == pytest.approx(1.0)


# (2.5/1 - 1) / (4/1 - 1) = 0.5
def test_contrast_recovery_halves_when_lesion_contrast_halves():
    ref, lesion, background = _lesion_phantom(4.0)
    pred, _, _ = _lesion_phantom(2.5)
    assert contrast_recovery(pred, ref, lesion, background) == pytest.approx(0.5)


def test_lesion_metrics_report_relative_bias_against_reference():
    ref, lesion, background = _lesion_phantom(4.0)
    pred, _, _ = _lesion_phantom(3.0)
    m = lesion_metrics(pred, ref, lesion, background, (4.0, 4.0, 4.0))
    assert m["suv_max_bias"] == pytest.approx(-0.25) and m["suv_mean_bias"] == pytest.approx(-0.25)
    assert m["suv_peak_bias"] == pytest.approx(-0.25) and m["contrast_recovery"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "pred, ref, mask, message",
    [
        (torch.ones(4, 4, 4), torch.ones(4, 4, 5), None, "shape"),
        (torch.full((4, 4, 4), float("nan")), torch.ones(4, 4, 4), None, "NaN"),
        (torch.ones(4, 4, 4), torch.ones(4, 4, 4), torch.zeros(4, 4, 4, dtype=torch.bool), "empty"),
    ],
)
def test_bad_metric_inputs_are_refused(pred, ref, mask, message):
    with pytest.raises(ValueError, match=message):
        mae(pred, ref, mask)


def test_nrmse_of_a_constant_reference_is_refused():
    with pytest.raises(ValueError, match="constant"):
        nrmse(torch.ones(4, 4, 4), torch.ones(4, 4, 4))


def test_dilate_box_is_the_3d_box():
    """The separable dilation (lesion shells, lesion loss weights, dose interfaces) gives the 3D
    box's mask (brute force)."""

    g = torch.Generator().manual_seed(3)
    for shape, radius in (((17, 12, 9), (2, 1, 3)), ((9, 9, 9), (4, 4, 4)), ((6, 11, 5), (0, 2, 1))):
        mask = torch.rand(shape, generator=g) > 0.97
        expected = torch.zeros(shape, dtype=torch.bool)
        for x, y, z in torch.nonzero(mask).tolist():
            rx, ry, rz = radius
            expected[max(0, x - rx) : x + rx + 1, max(0, y - ry) : y + ry + 1, max(0, z - rz) : z + rz + 1] = True
        assert torch.equal(dilate_box(mask, radius), expected), (shape, radius)
