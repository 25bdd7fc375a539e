"""Tests for common.phantoms: seeded procedural anatomy, CT/MR/activity images, lesions.

Tissue values checked against approximate clinical ranges stated in the issue and in the module
docstrings (non-contrast CT: lung about -900..-700 HU, fat -120..-80, soft tissue 20..60,
trabecular bone 200..400, cortical bone 1000..1500; FDG SUV: liver 2-3, lesions 3-20, brain grey
matter 7-10, bladder 10-50). REFERENCE.md holds no organ HU/SUV table, so these are the issue's
values, not REFERENCE.md values.
"""

from __future__ import annotations

import numpy as np
import pytest

from common.simulation.phantoms import (
    HEAD_LABELS,
    LABELS,
    LESION_ID_START,
    TORSO_LABELS,
    TRACERS,
    make_head_phantom,
    make_torso_phantom,
)

COARSE = dict(shape=(64, 64, 48), spacing_mm=(8.0, 8.0, 8.0))  # same 512 x 512 x 384 mm field, fast
COARSE_HEAD = dict(shape=(64, 64, 64), spacing_mm=(4.0, 4.0, 4.0))
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def torso():
    return make_torso_phantom([7, 0])


@pytest.fixture(scope="module")
def head():
    return make_head_phantom([7, 0])


@pytest.fixture(scope="module")
def coarse_torsos():
    return [make_torso_phantom([11, i], **COARSE) for i in range(6)]


def _mean(img, labels, name):
    m = labels == LABELS[name]
    assert m.any(), f"{name} missing"
    return float(img[m].mean())


# ---- reproducibility -------------------------------------------------------------------------


def test_same_seed_gives_identical_arrays():
    a, b = make_torso_phantom([3, 5], **COARSE), make_torso_phantom([3, 5], **COARSE)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.ct_hu, b.ct_hu)
    np.testing.assert_array_equal(a.mr_t1, b.mr_t1)
    for t in TRACERS:
        np.testing.assert_array_equal(a.activity[t], b.activity[t])
    assert a.lesions == b.lesions and a.organ_uptake == b.organ_uptake and a.weight_kg == b.weight_kg


def test_other_seed_gives_different_anatomy():
    a, b = make_torso_phantom([3, 5], **COARSE), make_torso_phantom([3, 6], **COARSE)
    differing = np.mean(a.labels != b.labels)
    assert differing > 0.02, f"only {differing:.3%} of voxels differ"
    liver_a, liver_b = a.labels == LABELS["liver"], b.labels == LABELS["liver"]
    dice = 2 * np.sum(liver_a & liver_b) / (liver_a.sum() + liver_b.sum())
    assert dice < 0.97
    assert a.weight_kg != b.weight_kg


def test_head_same_seed_identical_other_seed_different():
    a, b, c = (make_head_phantom(s, **COARSE_HEAD) for s in (4, 4, 5))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.mr_t1, b.mr_t1)
    assert np.mean(a.labels != c.labels) > 0.01


def test_subject_parameters_do_not_depend_on_grid_resolution():
    # organ sizes/positions and uptakes come from one stream; only textures depend on the grid
    fine, coarse = make_torso_phantom([2, 9]), make_torso_phantom([2, 9], **COARSE)
    assert fine.organ_uptake == coarse.organ_uptake and fine.weight_kg == coarse.weight_kg
    for name in ("liver", "lung", "kidney_left", "bladder"):
        v_fine = np.sum(fine.labels == LABELS[name]) * 4.0**3
        v_coarse = np.sum(coarse.labels == LABELS[name]) * 8.0**3
        assert v_coarse == pytest.approx(v_fine, rel=0.15), name


# ---- geometry and metadata -------------------------------------------------------------------


def test_default_torso_shapes_dtypes_and_centred_affine(torso):
    assert torso.labels.shape == (128, 128, 96) and torso.labels.dtype == np.int16
    for img in (torso.ct_hu, torso.mr_t1, *torso.activity.values()):
        assert img.shape == torso.labels.shape and img.dtype == np.float32 and np.isfinite(img).all()
    assert set(torso.activity) == set(TRACERS)
    np.testing.assert_allclose(np.diag(torso.affine)[:3], torso.spacing_mm)
    centre = torso.affine @ np.array([*(np.array(torso.labels.shape) - 1) / 2, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)


def test_label_ids_are_stable_constants():
    # datasets and metrics depend on these ids: changing one is a breaking change
    expected = {"background": 0, "fat": 1, "muscle": 2, "soft_tissue": 3, "lung": 4, "liver": 8, "spleen": 9,
                "kidney_right": 10, "kidney_left": 11, "bladder": 12, "cortical_bone": 13, "trabecular_bone": 14,
                "grey_matter": 20, "white_matter": 21}  # fmt: skip
    assert {k: LABELS[k] for k in expected} == expected
    assert LESION_ID_START == 100 and max(LABELS.values()) < LESION_ID_START


def test_torso_contains_every_torso_tissue(torso):
    present = set(np.unique(torso.labels).tolist())
    missing = [torso.label_names[t] for t in TORSO_LABELS if t not in present]
    assert not missing


def test_head_contains_every_head_tissue(head):
    assert head.labels.shape == (128, 128, 128)
    present = set(np.unique(head.labels).tolist())
    missing = [head.label_names[t] for t in HEAD_LABELS if t not in present]
    assert not missing


def test_organs_are_anatomically_placed(torso):
    def centroid(name):
        idx = np.argwhere(torso.labels == LABELS[name])
        return (idx.mean(0) - (np.array(torso.labels.shape) - 1) / 2) * torso.spacing_mm

    liver, spleen, lung, bladder = (centroid(n) for n in ("liver", "spleen", "lung", "bladder"))
    assert liver[0] > 0 > spleen[0]  # RAS: liver on the subject's right (+x), spleen left
    assert lung[2] > liver[2] > bladder[2]  # lungs above liver above bladder (+z superior)
    assert centroid("kidney_right")[1] < liver[1]  # kidneys posterior (-y)


def test_weight_correlates_with_body_size(coarse_torsos):
    weights = [p.weight_kg for p in coarse_torsos]
    body = [np.sum(p.labels > 0) for p in coarse_torsos]
    assert all(50 <= w <= 110 for w in weights)
    assert np.corrcoef(weights, body)[0, 1] > 0.6


# ---- CT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_ct_hu_per_tissue_in_realistic_ranges(seed):
    p = make_torso_phantom([21, seed], **COARSE)
    ranges = {"lung": (-900, -700), "fat": (-120, -80), "muscle": (20, 60), "soft_tissue": (20, 60),
              "liver": (20, 60), "spleen": (20, 60), "kidney_left": (20, 60), "blood_pool": (20, 60),
              "trabecular_bone": (200, 400), "cortical_bone": (1000, 1500)}  # fmt: skip
    for name, (lo, hi) in ranges.items():
        assert lo <= _mean(p.ct_hu, p.labels, name) <= hi, name
    bone = (p.labels == LABELS["cortical_bone"]) | (p.labels == LABELS["trabecular_bone"])
    assert 300 <= p.ct_hu[bone].mean() <= 1500


def test_ct_noise_std_is_ct_like(torso):
    # fat carries only 4 HU texture, so its spread is mostly the sampled 10-20 HU noise
    fat = torso.ct_hu[torso.labels == LABELS["fat"]]
    assert 9.0 <= fat.std() <= 22.0


def test_lung_has_texture_around_minus_850(torso):
    lung = torso.ct_hu[torso.labels == LABELS["lung"]]
    assert -880 <= np.median(lung) <= -800
    assert np.percentile(lung, 99) > -600  # vessels


def test_head_ct_brain_and_skull(head):
    assert _mean(head.ct_hu, head.labels, "grey_matter") > _mean(head.ct_hu, head.labels, "white_matter")
    assert -1000 <= _mean(head.ct_hu, head.labels, "sinus") <= -900
    assert 1000 <= _mean(head.ct_hu, head.labels, "cortical_bone") <= 1500


# ---- MR ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_mr_t1_contrast_fat_bright_liver_above_spleen_bone_and_air_dark(seed):
    p = make_torso_phantom([31, seed], **COARSE)
    m = {n: _mean(p.mr_t1, p.labels, n) for n in ("fat", "liver", "spleen", "muscle", "cortical_bone", "lung")}
    assert m["fat"] > m["liver"] > m["spleen"]
    assert m["fat"] > 2 * m["muscle"]
    assert m["cortical_bone"] < 0.2 * m["fat"] and m["lung"] < 0.2 * m["fat"]


def test_mr_bone_and_air_are_both_dark_so_mr_cannot_tell_them_apart(head):
    # the MR-to-CT problem: cortical bone (+1000 HU) and sinus air (-1000 HU) share one MR level
    bone = _mean(head.mr_t1, head.labels, "cortical_bone")
    air = _mean(head.mr_t1, head.labels, "sinus")
    wm = _mean(head.mr_t1, head.labels, "white_matter")
    assert bone < 0.2 * wm and air < 0.2 * wm
    assert _mean(head.ct_hu, head.labels, "cortical_bone") - _mean(head.ct_hu, head.labels, "sinus") > 1500


def test_mr_has_rician_background_and_no_negatives(torso):
    assert torso.mr_t1.min() >= 0
    air = torso.mr_t1[torso.labels == 0]
    assert 0 < air.mean() < 0.1  # Rayleigh floor: sigma * sqrt(pi / 2), not zero


# ---- activity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tracer", TRACERS)
def test_organ_mean_activity_equals_configured_value_lesions_excluded(torso, tracer):
    # lesions carry their own ids, so an organ's voxels exclude its lesions by construction
    act, checked = torso.activity[tracer], 0
    for organ, conc in torso.organ_uptake[tracer].items():
        mask = torso.labels == LABELS[organ]
        if mask.any():
            assert act[mask].mean(dtype=np.float64) == pytest.approx(conc, rel=1e-4), organ
            checked += 1
    assert checked >= 12


def test_organ_activity_is_textured_not_flat(torso):
    liver = torso.activity["FDG"][torso.labels == LABELS["liver"]]
    assert 0.01 < liver.std() / liver.mean() < 0.3


def test_lesion_activity_is_its_suv_times_injected_over_weight(torso):
    assert torso.lesions
    for tracer in TRACERS:
        scale = torso.injected_activity_Bq[tracer] / (torso.weight_kg * 1000.0)
        for les in torso.lesions:
            conc = torso.activity[tracer][torso.labels == les["id"]]
            np.testing.assert_allclose(conc, les["suv"][tracer] * scale, rtol=1e-5)


def test_fdg_suvs_are_clinically_plausible(torso, head):
    suv = torso.suv("FDG")
    assert 2.0 <= _mean(suv, torso.labels, "liver") <= 3.0
    assert 0.4 <= _mean(suv, torso.labels, "lung") <= 0.7
    assert 10.0 <= _mean(suv, torso.labels, "bladder") <= 50.0
    assert 1.5 <= _mean(suv, torso.labels, "blood_pool") <= 3.0
    assert 7.0 <= _mean(head.suv("FDG"), head.labels, "grey_matter") <= 10.0
    assert all(3.0 <= les["suv"]["FDG"] <= 20.0 for les in torso.lesions)


def test_tracer_specific_uptake_patterns(torso):
    tc, lu = torso.suv("Tc99m-agent"), torso.suv("Lu177-agent")
    # bone agent: bone well above soft tissue; PSMA-like agent: kidneys far above liver
    assert _mean(tc, torso.labels, "trabecular_bone") > 5 * _mean(tc, torso.labels, "muscle")
    assert _mean(lu, torso.labels, "kidney_left") > 3 * _mean(lu, torso.labels, "liver")


def test_injected_activities_and_uptake_times_are_typical(coarse_torsos):
    for p in coarse_torsos:
        assert 150e6 <= p.injected_activity_Bq["FDG"] <= 450e6
        assert 550e6 <= p.injected_activity_Bq["Tc99m-agent"] <= 925e6
        assert p.injected_activity_Bq["Lu177-agent"] == pytest.approx(7.4e9, rel=0.1)
        assert 45 * 60 <= p.uptake_time_s["FDG"] <= 75 * 60
        assert 18 * 3600 <= p.uptake_time_s["Lu177-agent"] <= 30 * 3600


def test_organ_uptake_varies_between_subjects(coarse_torsos):
    livers = {round(p.organ_uptake["FDG"]["liver"] * p.weight_kg * 1000 / p.injected_activity_Bq["FDG"], 6) for p in coarse_torsos}
    assert len(livers) == len(coarse_torsos)


# ---- lesions ----------------------------------------------------------------------------------


def test_lesions_have_own_ids_size_and_lie_in_their_organ(torso):
    half = (np.array(torso.labels.shape) - 1) / 2
    for les in torso.lesions:
        assert les["id"] >= LESION_ID_START and torso.label_names[les["id"]].startswith("lesion")
        assert 5.0 <= les["diameter_mm"] <= 30.0 and les["n_voxels"] >= 1
        ijk = tuple(np.round(np.array(les["centre_mm"]) / np.array(torso.spacing_mm) + half).astype(int))
        assert torso.labels[ijk] == les["id"]
        # never larger than its nominal spheroid (half-axes at most 1.15 x radius) plus a voxel shell
        r = 0.5 * les["diameter_mm"] * 1.15 + max(torso.spacing_mm)
        assert les["n_voxels"] * np.prod(torso.spacing_mm) <= 4 / 3 * np.pi * r**3


def test_lesion_count_follows_n_lesions():
    assert len(make_torso_phantom(1, **COARSE, n_lesions=0).lesions) == 0
    assert len(make_torso_phantom(1, **COARSE, n_lesions=4).lesions) == 4
    ids = [les["id"] for les in make_head_phantom(1, **COARSE_HEAD, n_lesions=(2, 2)).lesions]
    assert ids == [LESION_ID_START, LESION_ID_START + 1]


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(shape=(64, 64)), "shape"),
        (dict(shape=(64, 64, 0)), "shape"),
        (dict(shape=(64, 64, 8)), "shape"),
        (dict(shape=(64.0, 64, 48)), "shape"),
        (dict(spacing_mm=(4.0, 0.0, 4.0)), "spacing_mm"),
        (dict(spacing_mm=(4.0, -1.0, 4.0)), "spacing_mm"),
        (dict(spacing_mm=(4.0, float("nan"), 4.0)), "spacing_mm"),
        (dict(spacing_mm=4.0), "spacing_mm"),
        (dict(n_lesions=(3, 1)), "n_lesions"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_torso_phantom(0, **kwargs)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", [], [1, -2], True])
def test_bad_seed_raises_value_error(seed):
    with pytest.raises(ValueError, match="seed"):
        make_head_phantom(seed, **COARSE_HEAD)


def test_arms_option_adds_limbs_beside_the_trunk():
    without, with_arms = make_torso_phantom(3, **COARSE), make_torso_phantom(3, **COARSE, arms=True)
    added = (with_arms.labels > 0) & (without.labels == 0)
    assert added.sum() * 8.0**3 > 1e6  # two arms, litres of tissue
    assert np.any(with_arms.labels[added] == LABELS["cortical_bone"])  # with a humerus
