"""Input checks shared by every bundle (DESIGN section 7): each bad input is refused with a
message that names the file, and harmless reconstruction negatives are clipped."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from common.learning.transforms import (
    HU_RULE,
    CheckCT,
    CheckCTd,
    CheckEmission,
    CheckEmissiond,
)


def _img(arr, name="subject_007/nac.nii.gz"):
    return MetaTensor(torch.as_tensor(arr, dtype=torch.float32), meta={"filename_or_obj": name})


def _pet(seed=0):
    return np.random.default_rng(seed).gamma(2.0, 1.0, size=(1, 12, 12, 8)).astype(np.float32)


def test_plausible_pet_passes_unchanged():
    x = _img(_pet())
    assert torch.equal(CheckEmission()(x), x)


@pytest.mark.parametrize(
    "arr, fragment",
    [
        (np.full((1, 6, 6, 6), np.nan), "NaN/Inf"),
        (np.zeros((1, 6, 6, 6)), "empty"),
        (np.ones((6, 6, 6)), "channel-first"),
        (np.ones((2, 6, 6, 6)), "1 channel"),
    ],
)
def test_unusable_emission_input_is_refused_naming_the_file(arr, fragment):
    with pytest.raises(ValueError, match=fragment) as err:
        CheckEmissiond("image")({"image": _img(arr)})
    assert "subject_007/nac.nii.gz" in str(err.value)


def test_ct_in_hu_given_as_pet_is_refused_by_the_named_rule():
    ct = np.where(np.random.default_rng(1).random((1, 10, 10, 10)) < 0.3, -1000.0, 40.0)
    with pytest.raises(ValueError, match=HU_RULE.name):
        CheckEmission(name="NAC PET")(_img(ct))


def test_activity_in_bq_per_ml_with_deep_negatives_is_refused_for_its_negatives_not_as_a_ct():
    # -5e4 Bq/mL is "below -500" but no CT number of air: the HU rule needs air (CT_AIR_HU) beside it
    act = _pet() * 1e5
    act[0, :3] = -0.5 * act.max()
    with pytest.raises(ValueError, match="clearly wrong negative values"):
        CheckEmission(name="activity")(_img(act))


def test_ct_with_padding_outside_the_scan_circle_is_still_seen_as_a_ct():
    ct = np.full((1, 12, 12, 6), -3024.0)  # padding
    ct[0, 2:10, 2:10] = -1000.0  # air inside the scan circle
    ct[0, 4:8, 4:8] = 40.0  # body
    with pytest.raises(ValueError, match=HU_RULE.name):
        CheckEmission(name="NAC PET")(_img(ct))


def test_ct_cropped_to_the_body_without_air_is_refused_asking_whether_it_is_a_ct():
    ct = np.where(np.random.default_rng(2).random((1, 10, 10, 10)) < 0.3, -800.0, 40.0)  # lung, soft tissue
    with pytest.raises(ValueError, match="is it a CT in HU"):
        CheckEmission(name="NAC PET")(_img(ct))


def test_small_reconstruction_negatives_are_clipped_with_a_warning():
    pet = _pet()
    pet[0, 0, 0, 0] = -0.01 * np.percentile(pet, 99.9)
    with pytest.warns(UserWarning, match="clipping 1 small negative"):
        out = CheckEmission()(_img(pet))
    assert float(out.min()) == 0.0


def test_deep_negatives_are_refused_not_clipped():
    pet = _pet()
    pet[0, :2] = -0.5 * np.percentile(pet, 99.9)
    with pytest.raises(ValueError, match="negative"):
        CheckEmission()(_img(pet))


def test_pet_given_as_ct_is_refused_because_it_holds_no_air():
    with pytest.raises(ValueError, match="does not look like HU"):
        CheckCTd("ct")({"ct": _img(_pet(), "ct.nii.gz")})


def test_ct_with_air_passes():
    ct = np.full((1, 6, 6, 6), 40.0)
    ct[0, 0] = -1000.0
    assert CheckCT()(_img(ct)).shape == (1, 6, 6, 6)
