"""Tests for common.simulation.phantoms: seeded procedural anatomy, CT/MR/activity images, lesions,
and the torso families (training and shifted) of issue #19.

Tissue values checked against approximate clinical ranges stated in the issue and in the module
docstrings (non-contrast CT: lung about -900..-700 HU, fat -120..-80, soft tissue 20..60,
trabecular bone 200..400, cortical bone 1000..1500; FDG SUV: liver 2-3, lesions 3-20, brain grey
matter 7-10, bladder 10-50). REFERENCE.md holds no organ HU/SUV table, so these are the issue's
values, not REFERENCE.md values.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from common.simulation.phantoms import (
    ARMS_MODES,
    HEAD_LABELS,
    HU_RANGES,
    LABELS,
    LESION_ID_START,
    MR_T1,
    SHIFTED_VARIETY,
    SUV_RANGES,
    TORSO_LABELS,
    TRACERS,
    TRAINING_VARIETY,
    VARIETIES,
    TorsoVariety,
    make_head_phantom,
    make_torso_phantom,
)

COARSE = dict(shape=(64, 64, 48), spacing_mm=(8.0, 8.0, 8.0))  # same 512 x 512 x 384 mm field, fast
COARSE_HEAD = dict(shape=(64, 64, 64), spacing_mm=(4.0, 4.0, 4.0))
TINY = dict(shape=(16, 16, 16), spacing_mm=(32.0, 32.0, 32.0))  # same field: subject parameters only
TALL = dict(shape=(64, 64, 64), spacing_mm=(8.0, 8.0, 8.0))  # up to z = +252 mm: lung apices, clavicles
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def torso():
    return make_torso_phantom([7, 0])


@pytest.fixture(scope="module")
def head():
    return make_head_phantom([7, 0])


@pytest.fixture(scope="module")
def coarse_torsos():
    return [make_torso_phantom([11, i], **COARSE, arms=False) for i in range(6)]


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
    assert LABELS["brown_fat"] == 16 and len(set(LABELS.values())) == len(LABELS)


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
    assert all(20 <= w <= 150 for w in weights)
    assert np.corrcoef(weights, body)[0, 1] > 0.6


# ---- CT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_ct_hu_per_tissue_in_realistic_ranges(seed):
    p = make_torso_phantom([21, seed], **COARSE)
    # training family: table value + soft-tissue offset within +-8 HU, bone x 0.82..1.14
    ranges = {"lung": (-900, -700), "fat": (-125, -75), "muscle": (15, 70), "soft_tissue": (15, 70),
              "liver": (15, 70), "spleen": (15, 70), "kidney_left": (15, 70), "blood_pool": (15, 70),
              "trabecular_bone": (150, 400), "cortical_bone": (880, 1620)}  # fmt: skip
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
    assert 0.35 <= _mean(suv, torso.labels, "lung") <= 0.9  # training family
    assert 5.0 <= _mean(suv, torso.labels, "bladder") <= 60.0
    assert 1.5 <= _mean(suv, torso.labels, "blood_pool") <= 3.0
    assert 7.0 <= _mean(head.suv("FDG"), head.labels, "grey_matter") <= 10.0
    assert all(3.0 <= les["suv"]["FDG"] <= 20.0 for les in torso.lesions)


def test_tracer_specific_uptake_patterns(torso):
    tc, lu = torso.suv("Tc99m-agent"), torso.suv("Lu177-agent")
    # bone agent: bone well above soft tissue; PSMA-like agent: kidneys far above liver
    assert _mean(tc, torso.labels, "trabecular_bone") > 5 * _mean(tc, torso.labels, "muscle")
    assert _mean(lu, torso.labels, "kidney_left") > 3 * _mean(lu, torso.labels, "liver")


def test_injected_activities_and_uptake_times_are_typical(coarse_torsos):
    for p in coarse_torsos:  # children (below 50 kg) get less: FDG down to 26 MBq, Tc by weight / 50 kg
        child = min(1.0, p.weight_kg / 50.0)
        assert (150e6 if child == 1.0 else 26e6) <= p.injected_activity_Bq["FDG"] <= 450e6
        assert 550e6 * child <= p.injected_activity_Bq["Tc99m-agent"] <= 925e6 * child
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
        assert 4.0 <= les["diameter_mm"] <= 30.0 and les["n_voxels"] >= 1
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
    adult = replace(TRAINING_VARIETY, weight_kg=(60, 80))  # arms inside the field of view
    without, with_arms = (make_torso_phantom(3, **COARSE, arms=a, variety=adult) for a in (False, True))
    added = (with_arms.labels > 0) & (without.labels == 0)
    assert added.sum() * 8.0**3 > 1e6  # two arms, litres of tissue
    assert np.any(with_arms.labels[added] == LABELS["cortical_bone"])  # with a humerus
    assert {LABELS["fat"], LABELS["muscle"], LABELS["trabecular_bone"]} <= set(np.unique(with_arms.labels[added]).tolist())


# ---- torso families: training and shifted (issue #19) ------------------------------------------

ADULT = replace(TRAINING_VARIETY, weight_kg=(65, 85))  # arms and trunk well inside the field of view
SHIFTED_RANGE_FIELDS = (
    "weight_kg", "height_scale", "adiposity", "shoulder_scale", "waist_scale", "aspect_scale", "arm_gap_mm",
    "lung_scale", "lung_apex_mm", "diaphragm_mm", "diaphragm_lr_mm", "soft_hu_offset", "bone_hu_scale", "lung_suv",
    "bladder_fill", "bladder_suv", "bowel_uptake", "brown_fat_suv",
)  # fmt: skip


def _value(p, name):
    return p.weight_kg if name == "weight_kg" else p.params[name]


def _in(value, ranges, tol=1e-9):
    return any(lo - tol <= value <= hi + tol for lo, hi in ranges)


def _z_mm(p):
    return (np.arange(p.labels.shape[2]) - (p.labels.shape[2] - 1) / 2) * p.spacing_mm[2]


def _width_mm(p, z_mm):
    """Lateral extent of the body (mm) in the axial slice nearest to z_mm."""
    k = int(np.argmin(np.abs(_z_mm(p) - z_mm)))
    xs = np.flatnonzero(np.any(p.labels[:, :, k] > 0, axis=1))
    return (xs.max() - xs.min() + 1) * p.spacing_mm[0]


def _aspect(p, z_mm=-60.0):
    k = int(np.argmin(np.abs(_z_mm(p) - z_mm)))
    body = p.labels[:, :, k] > 0
    xs, ys = np.flatnonzero(body.any(1)), np.flatnonzero(body.any(0))
    return (ys.max() - ys.min() + 1) / (xs.max() - xs.min() + 1)


def _lung_z(p, side=None):
    idx = np.argwhere(p.labels == LABELS["lung"])
    if side is not None:
        idx = idx[(idx[:, 0] - (p.labels.shape[0] - 1) / 2) * side > 0]
    return _z_mm(p)[idx[:, 2]]


def _centroid_z(p, *names):
    return float(np.mean(_z_mm(p)[np.argwhere(np.isin(p.labels, [LABELS[n] for n in names]))[:, 2]]))


def _bowel_contrast(p):
    """FDG in abdominal soft tissue (below z = -40 mm) over that in the chest's (above +60 mm)."""
    suv, soft, z = p.suv("FDG"), p.labels == LABELS["soft_tissue"], _z_mm(p)
    return suv[soft & (z < -40)].mean() / suv[soft & (z > 60)].mean()


def test_families_are_named_and_the_training_family_is_the_default():
    assert VARIETIES == {"training": TRAINING_VARIETY, "shifted": SHIFTED_VARIETY}
    assert TRAINING_VARIETY.name == "training" and SHIFTED_VARIETY.name == "shifted"
    assert make_torso_phantom(5, **TINY).params["family"] == "training"
    assert make_torso_phantom(5, **TINY, variety="shifted").params["family"] == "shifted"
    custom = replace(TRAINING_VARIETY, name="mine", weight_kg=(60, 61))
    p = make_torso_phantom(5, **TINY, variety=custom)
    assert p.params["family"] == "mine" and 60 <= p.weight_kg <= 61


@pytest.mark.parametrize("kwargs, word", [(dict(variety="validation"), "variety"), (dict(variety=3), "variety"), (dict(arms="up"), "arms"), (dict(arms=1), "arms")])
def test_bad_variety_or_arms_raises_value_error_naming_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_torso_phantom(0, **TINY, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [dict(weight_kg=(90, 20)), dict(lung_suv=(float("nan"), 1)), dict(lesion_suv_fdg=(0.0, 3.0)), dict(arms_probabilities=(0, 0, 0)),
     dict(brown_fat_probability=1.5), dict(lesion_hosts=(("heart", 1.0),))],
)  # fmt: skip
def test_bad_variety_ranges_raise_value_error_naming_the_field(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TorsoVariety(**kwargs)


def test_a_range_may_be_a_pair_or_a_union_of_intervals():
    assert TorsoVariety(weight_kg=(40, 90)).weight_kg == ((40.0, 90.0),)
    assert SHIFTED_VARIETY.weight_kg == ((15.0, 20.0), (150.0, 190.0))


def test_every_sampled_subject_value_is_recorded_in_params():
    p = make_torso_phantom(2, **TINY)
    expected = {"family", "stature_scale", "height_scale", "adiposity", "fat_mm", "visceral_fat_fraction", "shoulder_scale",
                "waist_scale", "aspect_scale", "trunk_width_mm", "trunk_depth_mm", "arms_mode", "arm_gap_mm", "lung_scale",
                "lung_apex_mm", "diaphragm_mm", "diaphragm_lr_mm", "z_diaphragm_right", "z_diaphragm_left", "soft_hu_offset",
                "bone_hu_scale", "lung_suv", "myocardium_high", "myocardium_suv", "bladder_fill", "bladder_suv", "bladder_mL",
                "bowel_uptake", "brown_fat", "brown_fat_suv", "hu", "ct_noise_hu", "mr_noise"}  # fmt: skip
    assert expected <= set(p.params)
    assert p.params["arms_mode"] in ARMS_MODES


def test_training_family_never_draws_outside_its_ranges_over_30_seeds():
    v, seen = TRAINING_VARIETY, {"arms": set(), "myo": set(), "brown": set()}
    for i in range(30):
        p = make_torso_phantom([17, i], **TINY, n_lesions=3)
        for name in SHIFTED_RANGE_FIELDS:
            value = _value(p, name)
            if value is not None and not (name == "arm_gap_mm" and p.params["arms_mode"] == "touching"):
                assert _in(value, getattr(v, name)), (name, value)  # gap: separate arms; brown fat SUV: active
        assert _in(p.params["myocardium_suv"], v.myocardium_high_suv if p.params["myocardium_high"] else v.myocardium_low_suv)
        assert (p.params["arm_gap_mm"] is None) == (p.params["arms_mode"] == "raised")
        for les in p.lesions:
            assert _in(les["diameter_mm"], v.lesion_diameter_mm) and _in(les["suv"]["FDG"], v.lesion_suv_fdg)
            assert _in(les["suv"]["Lu177-agent"], v.lesion_suv_lu177)
        seen["arms"].add(p.params["arms_mode"])
        seen["myo"].add(p.params["myocardium_high"])
        seen["brown"].add(p.params["brown_fat"])
    assert seen == {"arms": set(ARMS_MODES), "myo": {True, False}, "brown": {True, False}}


def test_shifted_family_draws_every_shifted_parameter_outside_the_training_ranges():
    t = TRAINING_VARIETY
    for i in range(20):
        p = make_torso_phantom([18, i], **TINY, n_lesions=3, variety="shifted")
        for name in SHIFTED_RANGE_FIELDS:
            value = _value(p, name)
            if name == "arm_gap_mm" and p.params["arms_mode"] == "touching":
                continue
            lo, hi = getattr(t, name)[0]
            assert not (lo < value < hi), (name, value)  # touching the training range's end at most
        assert p.params["arms_mode"] != "raised" and p.params["brown_fat"]
        myo = p.params["myocardium_suv"]
        assert myo <= t.myocardium_low_suv[0][0] or myo >= t.myocardium_high_suv[0][1]
        for les in p.lesions:
            assert not (4.0 < les["diameter_mm"] < 30.0) and not (3.0 < les["suv"]["FDG"] < 20.0)


def test_same_seed_gives_identical_arrays_in_the_shifted_family():
    a, b = (make_torso_phantom([3, 1], **COARSE, variety="shifted") for _ in range(2))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.ct_hu, b.ct_hu)
    np.testing.assert_array_equal(a.activity["FDG"], b.activity["FDG"])
    assert a.params == b.params and a.lesions == b.lesions


def test_family_values_do_not_depend_on_grid_resolution():
    # arm positions keep the gap on the voxel grid, so only they may differ between grids
    a, b = make_torso_phantom([6, 2], **TINY, variety="shifted"), make_torso_phantom([6, 2], **COARSE, variety="shifted")
    grid_dependent = {"arm_right_x_mm", "arm_left_x_mm"}
    assert {k: v for k, v in a.params.items() if k not in grid_dependent | {"ct_noise_hu", "mr_noise"}} == {
        k: v for k, v in b.params.items() if k not in grid_dependent | {"ct_noise_hu", "mr_noise"}
    }
    assert a.organ_uptake == b.organ_uptake and a.weight_kg == b.weight_kg


# ---- arms ----------------------------------------------------------------------------------------


def test_forcing_the_arms_changes_nothing_else_about_the_subject():
    ps = {a: make_torso_phantom([8, 1], **COARSE, arms=a, variety=ADULT) for a in ("separate", "touching", False)}
    trunk = ps[False].labels > 0
    arm_keys = {"arms_mode", "arm_gap_mm", "arm_right_x_mm", "arm_left_x_mm", "arm_y_mm"}
    for a in ("separate", "touching"):
        assert {k: v for k, v in ps[a].params.items() if k not in arm_keys} == {k: v for k, v in ps[False].params.items() if k not in arm_keys}
        np.testing.assert_array_equal(ps[a].labels[trunk], ps[False].labels[trunk])
        np.testing.assert_array_equal(ps[a].ct_hu[trunk], ps[False].ct_hu[trunk])
        assert ps[a].lesions == ps[False].lesions
    assert ps[False].params["arms_mode"] == "raised" and ps[False].params["arm_gap_mm"] is None


def test_arms_none_draws_the_position_from_the_family_probabilities():
    for probs, mode in (((1, 0, 0), "separate"), ((0, 1, 0), "touching"), ((0, 0, 1), "raised")):
        p = make_torso_phantom(4, **TINY, variety=replace(ADULT, arms_probabilities=probs))
        assert p.params["arms_mode"] == mode
    # arms=True keeps its old meaning (arms beside the body), in a down position of the family
    assert make_torso_phantom(4, **TINY, arms=True, variety=replace(ADULT, arms_probabilities=(0, 0, 1))).params["arms_mode"] == "touching"
    assert make_torso_phantom(4, **TINY, arms=True, variety=replace(ADULT, arms_probabilities=(1, 0, 1))).params["arms_mode"] == "separate"


def _arm_rows(seed, arms, variety):
    """Per image row beside the trunk (z -80..120 mm, right side): air voxels between trunk and arm."""
    w, wo = (make_torso_phantom(seed, **COARSE, arms=a, variety=variety) for a in (arms, False))
    arm = (w.labels > 0) & (wo.labels == 0)
    gaps = []
    for k in np.flatnonzero((_z_mm(w) > -80) & (_z_mm(w) < 120)):
        for j in range(w.labels.shape[1]):
            trunk_x, arm_x = np.flatnonzero(wo.labels[:, j, k] > 0), np.flatnonzero(arm[32:, j, k]) + 32
            if trunk_x.size and arm_x.size:
                gaps.append((arm_x.min() - trunk_x.max() - 1, w.ct_hu[trunk_x.max() + 1 : arm_x.min(), j, k]))
    return w, gaps


def test_separate_arms_leave_an_air_gap_column_between_arm_and_trunk():
    w, gaps = _arm_rows([4, 2], "separate", replace(ADULT, arm_gap_mm=(30, 40)))
    assert len(gaps) > 50  # arm and trunk side by side over the height of the upper arm
    n_air = np.array([g for g, _ in gaps])
    gap_vox = w.params["arm_gap_mm"] / 8.0
    assert n_air.min() >= int(gap_vox) - 1 and n_air.min() >= 2  # the sampled gap, to a voxel
    assert all(hu.max() < -900 for _, hu in gaps)  # and it is air in the CT


def test_touching_arms_rest_against_the_trunk():
    _, gaps = _arm_rows([4, 2], "touching", ADULT)
    n_air = np.array([g for g, _ in gaps])
    assert len(n_air) > 50 and np.mean(n_air == 0) > 0.4


def test_a_wider_arm_gap_moves_the_arms_out():
    narrow, wide = (make_torso_phantom(6, **COARSE, arms="separate", variety=replace(ADULT, arm_gap_mm=g)) for g in ((10, 10), (40, 40)))
    assert wide.params["arm_right_x_mm"] - narrow.params["arm_right_x_mm"] == pytest.approx(30.0, abs=8.0)


def test_arms_of_a_large_subject_leave_the_field_of_view_and_are_clipped():
    big = replace(TRAINING_VARIETY, weight_kg=(150, 150), adiposity=(1.3, 1.3), arm_gap_mm=(40, 40))
    p = make_torso_phantom(1, **COARSE, arms="separate", variety=big)
    assert p.params["arm_right_x_mm"] > 256.0  # the shoulder lies outside the 512 mm field
    assert np.isfinite(p.ct_hu).all() and p.labels.shape == (64, 64, 48)


# ---- body size and shape -------------------------------------------------------------------------


def test_a_child_has_a_small_torso_and_an_obese_subject_a_wide_one_with_thick_fat():
    child = make_torso_phantom(3, **COARSE, arms=False, variety=replace(TRAINING_VARIETY, weight_kg=(22, 22)))
    obese = make_torso_phantom(3, **COARSE, arms=False, variety=replace(TRAINING_VARIETY, weight_kg=(145, 145), adiposity=(1.3, 1.3)))
    assert child.params["stature_scale"] < 0.75 and _width_mm(child, -60) < 0.6 * _width_mm(obese, -60)
    # the fat ring in front of the abdomen (AP midline, z -60 mm): count fat voxels from the skin in
    def front_fat_voxels(p):
        k = int(np.argmin(np.abs(_z_mm(p) + 60)))
        col = p.labels[32, ::-1, k]
        start = int(np.argmax(col > 0))
        return int(np.argmax(col[start:] != LABELS["fat"]))

    assert front_fat_voxels(obese) >= 4 and front_fat_voxels(obese) >= front_fat_voxels(child) + 3
    assert obese.params["fat_mm"] > 40.0 and child.params["fat_mm"] < 5.0
    assert obese.params["visceral_fat_fraction"] > child.params["visceral_fat_fraction"] + 0.3


# one row per family parameter: two subjects of one seed at the low and the high end of a range, and
# the image quantity that parameter controls (arms raised, so only the trunk is measured)
_PARAMETER_EFFECTS = [
    ("weight_kg", (40, 40), (120, 120), lambda p: np.sum(p.labels > 0), "more_body_voxels"),
    ("height_scale", (0.94, 0.94), (1.06, 1.06), lambda p: _centroid_z(p, "myocardium") - _centroid_z(p, "kidney_left", "kidney_right"), "longer_trunk"),
    ("adiposity", (0.7, 0.7), (1.3, 1.3), lambda p: np.mean(p.labels[p.labels > 0] == LABELS["fat"]), "more_fat"),
    ("shoulder_scale", (0.92, 0.92), (1.12, 1.12), lambda p: _width_mm(p, 170.0), "wider_upper_chest"),
    ("waist_scale", (0.88, 0.88), (1.15, 1.15), lambda p: _width_mm(p, -60.0), "wider_abdomen"),
    ("aspect_scale", (0.82, 0.82), (1.2, 1.2), _aspect, "deeper_than_wide"),
    ("lung_scale", (0.84, 0.84), (1.03, 1.03), lambda p: np.sum(p.labels == LABELS["lung"]), "larger_lungs"),
    ("lung_apex_mm", (205, 205), (240, 240), lambda p: _lung_z(p).max(), "higher_lung_apex"),
    ("diaphragm_mm", (15, 15), (65, 65), lambda p: _lung_z(p).min(), "higher_lung_base"),
    ("diaphragm_lr_mm", (0, 0), (25, 25), lambda p: _lung_z(p, 1).mean() - _lung_z(p, -1).mean(), "right_lung_above_left"),
    ("soft_hu_offset", (-8, -8), (8, 8), lambda p: _mean(p.ct_hu, p.labels, "muscle"), "denser_muscle"),
    ("bone_hu_scale", (0.82, 0.82), (1.14, 1.14), lambda p: _mean(p.ct_hu, p.labels, "cortical_bone"), "denser_cortical_bone"),
    ("lung_suv", (0.35, 0.35), (0.9, 0.9), lambda p: _mean(p.suv("FDG"), p.labels, "lung"), "hotter_lung"),
    ("bladder_fill", (0.0, 0.0), (1.0, 1.0), lambda p: np.sum(p.labels == LABELS["bladder"]), "larger_bladder"),
    ("bladder_suv", (5, 5), (60, 60), lambda p: _mean(p.suv("FDG"), p.labels, "bladder"), "hotter_bladder"),
    ("bowel_uptake", (0.8, 0.8), (3.0, 3.0), _bowel_contrast, "hotter_bowel"),
]  # fmt: skip


@pytest.mark.parametrize("name, low, high, measure", [r[:4] for r in _PARAMETER_EFFECTS], ids=[f"{r[0]}_gives_{r[4]}" for r in _PARAMETER_EFFECTS])
def test_raising_a_family_parameter_raises_what_it_controls(name, low, high, measure):
    grid = TALL if name == "lung_apex_mm" else COARSE  # an adult's apices lie above the 384 mm field
    lo, hi = (make_torso_phantom([9, 3], **grid, arms=False, n_lesions=0, variety=replace(ADULT, **{name: r})) for r in (low, high))
    assert _value(lo, name) == pytest.approx(low[0]) and _value(hi, name) == pytest.approx(high[0])
    assert measure(hi) > measure(lo) * (1.02 if measure(lo) > 0 else 1.0) + 1e-9, (measure(lo), measure(hi))


def test_bone_density_scale_multiplies_the_cortical_and_trabecular_hu():
    p = make_torso_phantom(2, **COARSE, variety=replace(ADULT, bone_hu_scale=(1.14, 1.14)))
    for bone in ("cortical_bone", "trabecular_bone"):
        lo, hi = HU_RANGES[bone]
        assert lo * 1.14 <= p.params["hu"][bone] <= hi * 1.14
    assert 1100 * 1.14 - 60 <= _mean(p.ct_hu, p.labels, "cortical_bone") <= 1400 * 1.14 + 60
    assert 220 * 1.14 - 40 <= _mean(p.ct_hu, p.labels, "trabecular_bone") <= 330 * 1.14 + 40


# ---- FDG patterns --------------------------------------------------------------------------------


def test_suppressed_myocardium_is_low_and_active_myocardium_high_in_fdg():
    off, on = (make_torso_phantom(5, **COARSE, variety=replace(ADULT, myocardium_high_probability=q)) for q in (0.0, 1.0))
    assert not off.params["myocardium_high"] and on.params["myocardium_high"]
    assert 1.0 <= _mean(off.suv("FDG"), off.labels, "myocardium") <= 2.0
    assert 4.0 <= _mean(on.suv("FDG"), on.labels, "myocardium") <= 12.0


def test_active_brown_fat_gives_hot_voxels_in_supraclavicular_and_paravertebral_fat():
    v = replace(ADULT, brown_fat_suv=(8.0, 8.0))
    off, on = (make_torso_phantom(5, **TALL, variety=replace(v, brown_fat_probability=q)) for q in (0.0, 1.0))
    assert on.params["brown_fat"] and not off.params["brown_fat"] and off.params["brown_fat_suv"] is None
    assert np.array_equal(on.labels, off.labels)  # the depots exist in everyone; only their uptake differs
    x = ((np.arange(64) - 31.5) * 8.0)[:, None, None]
    brown, z = on.labels == LABELS["brown_fat"], _z_mm(on)
    for depot in (brown & (z > 200) & (np.abs(x) < 110), brown & (z > 60) & (z < 200) & (np.abs(x) < 60)):  # supraclavicular, paravertebral
        assert depot.sum() >= 2
        assert np.median(on.suv("FDG")[depot]) > 4.0 and on.suv("FDG")[depot].max() > 8.0  # hot spots
        assert off.suv("FDG")[depot].max() < 1.0  # inactive: fat-like
    assert _mean(on.suv("FDG"), on.labels, "brown_fat") == pytest.approx(8.0, rel=1e-4)
    assert -90 - 8 - 10 <= _mean(on.ct_hu, on.labels, "brown_fat") <= -60 + 8 + 10  # denser than white fat


def test_brown_fat_label_has_hu_mr_and_uptake_entries_for_every_tracer():
    assert LABELS["brown_fat"] in TORSO_LABELS and LABELS["brown_fat"] not in HEAD_LABELS
    assert "brown_fat" in HU_RANGES and "brown_fat" in MR_T1
    assert all("brown_fat" in SUV_RANGES[t] for t in TRACERS)


@pytest.mark.parametrize("tracer", TRACERS)
def test_organ_means_equal_configured_values_with_hot_bowel_and_active_brown_fat(tracer):
    v = replace(ADULT, bowel_uptake=(3.0, 3.0), brown_fat_probability=1.0)
    p = make_torso_phantom(6, **COARSE, variety=v)
    for organ, conc in p.organ_uptake[tracer].items():
        mask = p.labels == LABELS[organ]
        if mask.any():
            assert p.activity[tracer][mask].mean(dtype=np.float64) == pytest.approx(conc, rel=1e-4), organ


# ---- lesions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", [h for h, _ in TRAINING_VARIETY.lesion_hosts])
def test_lesions_can_be_placed_in_every_host_organ(host):
    p = make_torso_phantom(3, **COARSE, n_lesions=2, variety=replace(ADULT, lesion_hosts=((host, 1.0),)))
    assert len(p.lesions) == 2 and all(les["organ"] == host for les in p.lesions)


@pytest.mark.parametrize("host", ["lung", "trabecular_bone", "cortical_bone"])
def test_lung_and_bone_lesions_are_4_to_30_mm_and_lie_in_their_host(host):
    v = replace(ADULT, lesion_hosts=((host, 1.0),))
    p = make_torso_phantom([12, 1], shape=(128, 128, 96), spacing_mm=(4.0, 4.0, 4.0), n_lesions=4, variety=v)
    bare = make_torso_phantom([12, 1], shape=(128, 128, 96), spacing_mm=(4.0, 4.0, 4.0), n_lesions=0, variety=v)
    allowed = {LABELS["cortical_bone"], LABELS["trabecular_bone"]} if host == "cortical_bone" else {LABELS[host]}
    for les in p.lesions:
        assert 4.0 <= les["diameter_mm"] <= 30.0 and les["n_voxels"] >= 1
        under = set(np.unique(bare.labels[p.labels == les["id"]]).tolist())
        assert under <= allowed, (les, under)  # clipped to the host (cortical: cortex and adjacent marrow)


def test_lesions_stay_in_the_trunk_never_in_the_arms():
    v = replace(ADULT, lesion_hosts=(("muscle", 1.0), ("fat", 1.0)), arms_probabilities=(1, 0, 0))
    p = make_torso_phantom(2, **COARSE, n_lesions=12, variety=v)
    trunk = make_torso_phantom(2, **COARSE, n_lesions=0, arms=False, variety=v).labels > 0
    assert len(p.lesions) == 12 and not np.any((p.labels >= LESION_ID_START) & ~trunk)
