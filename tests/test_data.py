"""Tests of common.data: atomic, reproducible files, validating readers, datalists and the
resumable, shardable dataset generator (with a tiny stand-in task, no physics)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from common import data as D
from common.simulation import datasets as DS

SHAPE = (6, 5, 4)
FAIL_AT: set[int] = set()  # indices whose build raises (monkeypatched per test)


def _toy_builder(rng: np.random.Generator, params) -> DS.SubjectData:
    """Noise volumes from the subject's generator; raises mid-subject for FAIL_AT indices."""
    shape = tuple(params["shape"])
    image = rng.random(shape, dtype=np.float32) * params["scale"]
    labels = (image > 0.5 * params["scale"]).astype(np.int16)
    counts = rng.poisson(3.0, size=(3, 4, shape[2])).astype(np.int32)
    index = int(rng.integers(1 << 30))  # attribute that identifies the draw
    if FAIL_AT and index in FAIL_AT:
        raise RuntimeError("simulated crash mid-subject")
    affine = D.centred_affine(shape, (4.0, 4.0, 4.0))
    return DS.SubjectData(
        images={"image": (image, affine), "labels": (labels, affine)},
        arrays={"raw": {"counts": counts}},
        attributes={"weight_kg": float(60 + 40 * rng.random()), "draw": index},
    )


TOY = DS.register_task(
    DS.TaskSpec("toy_noise", _toy_builder, ("image", "labels"), ("raw",), {"shape": list(SHAPE), "scale": 2.0})
)
OTHER = DS.register_task(DS.TaskSpec("toy_other", _toy_builder, ("image", "labels"), ("raw",), {"shape": list(SHAPE), "scale": 2.0}))


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _draw_of(folder: Path, index_in_datalist: int = 0) -> int:
    return D.read_datalist(folder / "datalist.json")["training"][index_in_datalist]["draw"]


# ---------------------------------------------------------------------------- files
def test_write_nifti_keeps_affine_dtype_and_sets_qform_and_sform(tmp_path):
    import nibabel as nib

    affine = D.centred_affine((4, 5, 6), (2.0, 3.0, 4.0))
    D.write_nifti(tmp_path / "a.nii.gz", np.arange(120, dtype=np.int16).reshape(4, 5, 6), affine)
    img = nib.load(tmp_path / "a.nii.gz")
    assert img.get_data_dtype() == np.int16
    assert np.allclose(img.get_qform(), affine) and np.allclose(img.get_sform(), affine)
    assert img.header.get_zooms() == (2.0, 3.0, 4.0)
    vol = D.read_nifti(tmp_path / "a.nii.gz")
    assert vol.spacing_mm == (2.0, 3.0, 4.0) and vol.array[3, 4, 5] == 119


def test_nifti_bytes_do_not_depend_on_time_or_file_name(tmp_path):
    arr = np.linspace(0, 1, 60, dtype=np.float32).reshape(3, 4, 5)
    D.write_nifti(tmp_path / "a.nii.gz", arr)
    D.write_nifti(tmp_path / "b.nii.gz", arr)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()


def test_write_nifti_refuses_fractions_as_int16(tmp_path):
    with pytest.raises(ValueError, match="non-integer"):
        D.write_nifti(tmp_path / "l.nii.gz", np.full((2, 2, 2), 0.5), dtype=np.int16)
    assert not list(tmp_path.iterdir())


def test_truncated_nifti_is_reported_with_its_file_name(tmp_path):
    path = tmp_path / "ct.nii.gz"
    D.write_nifti(path, np.random.default_rng(0).random((16, 16, 16), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ValueError, match=r"ct\.nii\.gz.*(corrupt|truncated)"):
        D.read_nifti(path)


def test_nifti_with_a_wrong_header_is_reported_with_its_file_name(tmp_path):
    path = tmp_path / "pet.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 40))
    with pytest.raises(ValueError, match=r"pet\.nii\.gz"):
        D.read_nifti(path)


def test_missing_nifti_raises_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        D.read_nifti(tmp_path / "nope.nii.gz")


def test_nan_in_nifti_is_reported_with_file_name_and_voxel(tmp_path):
    import nibabel as nib

    arr = np.ones((4, 4, 4), np.float32)
    arr[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nac.nii.gz")  # written by another tool
    with pytest.raises(ValueError, match=r"nac\.nii\.gz: 1 NaN/Inf voxel.*\(1, 2, 3\)"):
        D.read_nifti(tmp_path / "nac.nii.gz")


def test_npz_is_byte_reproducible_and_round_trips(tmp_path):
    arrays = {"prompts": np.arange(24, dtype=np.int32).reshape(2, 3, 4), "scale": np.float64(2.5), "n": np.int64(7)}
    D.write_npz(tmp_path / "a.npz", arrays)
    D.write_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = D.read_npz(tmp_path / "a.npz")
    assert np.array_equal(back["prompts"], arrays["prompts"]) and back["scale"] == 2.5 and back["n"].shape == ()


def test_invalid_json_datalist_names_file_line_and_column(tmp_path):
    (tmp_path / "datalist.json").write_text('{\n  "training": [\n    {"image": "a.nii.gz",}\n  ]\n}\n')
    with pytest.raises(ValueError, match=r"datalist\.json: invalid JSON at line 3, column"):
        D.read_datalist(tmp_path / "datalist.json")


def test_datalist_with_missing_or_absolute_paths_names_entry_and_problem(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    datalist = {"training": [{"image": "a.nii.gz"}, {"image": "b.nii.gz"}], "test": [{"image": str(tmp_path / "a.nii.gz")}]}
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    with pytest.raises(ValueError) as err:
        D.read_datalist(tmp_path / "datalist.json")
    assert "training[1].image: file 'b.nii.gz' not found" in str(err.value)
    assert "test[0].image" in str(err.value) and "must be relative" in str(err.value)


def test_datalist_without_split_keys_is_refused(tmp_path):
    with pytest.raises(ValueError, match="none of the keys"):
        D.validate_datalist({"train": []}, tmp_path, source="x.json")


# ---------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be >= 1"),
        ({"n": 2.5}, "n must be an integer"),
        ({"n": "ten"}, "n must be an integer"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"shard": 2, "num_shards": 2}, r"shard must be in 0\.\.1"),
        ({"num_shards": 0}, "num_shards must be >= 1"),
        ({"workers": True}, "workers must be an integer"),
        ({"params": {"shapes": [2, 2, 2]}}, "unknown params"),
    ],
)
def test_invalid_generate_arguments_raise_clear_errors(tmp_path, kwargs, message):
    args = {"n": 3, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        DS.generate_dataset("toy_noise", tmp_path / "ds", progress=False, **args)
    assert not (tmp_path / "ds").exists()


def test_unknown_task_error_lists_known_tasks(tmp_path):
    with pytest.raises(ValueError, match=r"unknown task 'nope'.*toy_noise"):
        DS.generate_dataset("nope", tmp_path / "ds", 3)


def test_fire_style_integers_are_converted():
    # fire passes --seed 007 as the text '007' and --n 1e2 as the float 100.0 (NOTES.md)
    assert D.as_int("seed", "007") == 7 and D.as_int("n", 1e2) == 100 and D.as_int("n", "1e2") == 100


# ---------------------------------------------------------------------------- split
@pytest.mark.parametrize("n, sizes", [(1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)), (20, (14, 3, 3)), (100, (70, 15, 15))])
def test_split_is_70_15_15_with_at_least_one_each_from_three(n, sizes):
    assert DS.split_sizes(n) == sizes


def test_test_subjects_use_seeds_from_data_seed_plus_1000():
    # DESIGN 4: every held-out set uses seeds of data_seed + 1000 and above
    plan = DS.subject_plan(20, seed=5)
    assert {r.seed for r in plan if r.split == "test"} == {1005}
    assert {r.seed for r in plan if r.split != "test"} == {5}


# ---------------------------------------------------------------------------- generation
def test_datalist_paths_are_relative_and_exist_with_subject_attributes(tmp_path):
    path = DS.generate_dataset("toy_noise", tmp_path / "ds", 4, seed=1, progress=False)
    raw = json.loads(path.read_text())
    assert [len(raw[k]) for k in D.DATALIST_KEYS] == [2, 1, 1]
    for entry in raw["training"] + raw["validation"] + raw["test"]:
        for key in ("image", "labels", "raw"):
            assert not Path(entry[key]).is_absolute() and (tmp_path / "ds" / entry[key]).is_file()
        assert 60 <= entry["weight_kg"] <= 100
    assert raw["test"][0]["subject_seed"] == [1001, 0]


def test_same_seed_gives_identical_bytes_for_any_worker_count(tmp_path):
    DS.generate_dataset("toy_noise", tmp_path / "a", 4, seed=3, workers=1, progress=False)
    DS.generate_dataset("toy_noise", tmp_path / "b", 4, seed=3, workers=2, progress=False)
    assert _tree_hashes(tmp_path / "a") == _tree_hashes(tmp_path / "b")


def test_another_seed_gives_different_subjects(tmp_path):
    DS.generate_dataset("toy_noise", tmp_path / "a", 3, seed=3, progress=False)
    DS.generate_dataset("toy_noise", tmp_path / "b", 3, seed=4, progress=False)
    a, b = (D.read_nifti(tmp_path / d / "subjects" / f"s{s}_0000" / "image.nii.gz").array for d, s in (("a", 3), ("b", 4)))
    assert not np.array_equal(a, b)


def test_resume_after_crash_keeps_finished_subjects_and_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    DS.generate_dataset("toy_noise", tmp_path / "ref", 4, seed=2, progress=False)
    third_draw = D.read_datalist(tmp_path / "ref" / "datalist.json")["validation"][0]["draw"]  # plan position 2
    monkeypatch.setattr(__import__(__name__), "FAIL_AT", {third_draw})
    with pytest.raises(RuntimeError, match="subject s2_0002 failed.*simulated crash"):
        DS.generate_dataset("toy_noise", out, 4, seed=2, progress=False)
    finished = sorted(p.name for p in (out / "subjects").iterdir())
    assert finished == ["s2_0000", "s2_0001"]  # nothing of the crashed subject, no temp folder
    assert not (out / "datalist.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "subjects").rglob("*") if p.is_file()}

    monkeypatch.setattr(__import__(__name__), "FAIL_AT", set())
    DS.generate_dataset("toy_noise", out, 4, seed=2, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # kept, not rebuilt
    assert _tree_hashes(out) == _tree_hashes(tmp_path / "ref")


def test_leftover_temporary_folder_of_a_killed_run_is_removed_on_resume(tmp_path):
    out = tmp_path / "ds"
    DS.generate_dataset("toy_noise", out, 1, seed=0, progress=False)
    leftover = out / "subjects" / ".tmp-s0_0000.abc123"
    leftover.mkdir()
    (leftover / "image.nii.gz").write_bytes(b"half")
    DS.generate_dataset("toy_noise", out, 1, seed=0, progress=False)
    assert not leftover.exists()


def test_folder_holding_another_tasks_data_is_refused(tmp_path):
    DS.generate_dataset("toy_noise", tmp_path / "ds", 1, progress=False)
    with pytest.raises(ValueError, match=r"holds a dataset of task 'toy_noise', not 'toy_other'"):
        DS.generate_dataset("toy_other", tmp_path / "ds", 1, progress=False)


def test_folder_holding_the_same_task_with_other_params_is_refused(tmp_path):
    DS.generate_dataset("toy_noise", tmp_path / "ds", 1, progress=False)
    with pytest.raises(ValueError, match=r"params"):
        DS.generate_dataset("toy_noise", tmp_path / "ds", 1, progress=False, params={"scale": 3.0})


def test_non_empty_folder_without_manifest_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("user file")
    with pytest.raises(ValueError, match="not empty and has no dataset.json"):
        DS.generate_dataset("toy_noise", tmp_path, 1, progress=False)


def test_larger_n_keeps_existing_test_subjects(tmp_path):
    DS.generate_dataset("toy_noise", tmp_path / "ds", 4, seed=0, progress=False)
    before = D.read_datalist(tmp_path / "ds")["test"]
    DS.generate_dataset("toy_noise", tmp_path / "ds", 10, seed=0, progress=False)
    after = D.read_datalist(tmp_path / "ds")["test"]
    assert after[: len(before)] == before and len(after) == 2


def test_shards_merged_give_the_datalist_of_a_single_run(tmp_path):
    DS.generate_dataset("toy_noise", tmp_path / "one", 5, seed=7, progress=False)
    for shard in (0, 1):
        DS.generate_dataset("toy_noise", tmp_path / "sh", 5, seed=7, shard=shard, num_shards=2, progress=False)
    DS.merge_shards(tmp_path / "sh")
    assert (tmp_path / "sh" / "datalist.json").read_bytes() == (tmp_path / "one" / "datalist.json").read_bytes()


def test_merge_with_a_missing_shard_names_the_missing_subjects(tmp_path):
    DS.generate_dataset("toy_noise", tmp_path / "sh", 5, seed=7, shard=0, num_shards=2, progress=False)
    with pytest.raises(ValueError, match=r"2 of 5 subjects missing.*s7_0001 \(shard 1 of 2\)"):
        DS.merge_shards(tmp_path / "sh")


def test_load_datalist_gives_absolute_paths_for_monai(tmp_path):
    DS.generate_dataset("toy_noise", tmp_path / "ds", 3, progress=False)
    entry = D.load_datalist(tmp_path / "ds", "validation")[0]
    assert Path(entry["image"]).is_absolute() and Path(entry["image"]).is_file()


def test_ensure_dataset_uses_user_datalist_as_it_is(tmp_path):
    D.write_nifti(tmp_path / "x.nii.gz", np.zeros((2, 2, 2), np.float32))
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "x.nii.gz"}]}))
    assert DS.ensure_dataset("toy_noise", tmp_path, 3) == tmp_path / "datalist.json"
    assert not (tmp_path / "dataset.json").exists()


def test_test_only_dataset_holds_n_test_subjects_from_the_given_seed(tmp_path):
    DS.generate_dataset("toy_noise", tmp_path / "ho", 3, seed=2000, test_only=True, progress=False)
    datalist = D.read_datalist(tmp_path / "ho")
    assert [len(datalist[k]) for k in D.DATALIST_KEYS] == [0, 0, 3]
    assert [e["subject_seed"] for e in datalist["test"]] == [[2000, 0], [2000, 1], [2000, 2]]


def test_registered_keys_may_depend_on_the_params(tmp_path):
    def builder(rng, params):
        affine = np.eye(4)
        return DS.SubjectData(images={f"img{k}": (np.full((2, 2, 2), k, np.float32), affine) for k in params["ks"]})

    DS.register_task(DS.TaskSpec("toy_keys", builder, lambda p: tuple(f"img{k}" for k in p["ks"]), params={"ks": [1, 2]}))
    DS.generate_dataset("toy_keys", tmp_path / "ds", 1, progress=False, params={"ks": [3]})
    assert set(D.read_datalist(tmp_path / "ds")["training"][0]) >= {"img3"}


def test_a_dataset_of_another_seed_is_refused_with_the_data_seed_that_would_use_it(tmp_path):
    DS.generate_dataset("toy_noise", tmp_path / "d", 3, seed=5, progress=False)
    with pytest.raises(ValueError, match="pass --data_seed 5"):
        DS.generate_dataset("toy_noise", tmp_path / "d", 3, seed=0, progress=False)
