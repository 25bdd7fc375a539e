"""Tests of the ``make_dataset`` and ``preview`` commands: fire-style arguments are converted
and checked, errors say what is wrong, and a preview PNG shows a subject."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import data as D
from common.simulation import datasets as DS
from scripts.make_dataset import make_dataset
from scripts.preview import preview


def _cube_builder(rng: np.random.Generator, params) -> DS.SubjectData:
    """A hot cube in a noisy cylinder, and a fake sinogram: enough for the scripts."""
    n = int(params["size"])
    vol = rng.random((n, n, n), dtype=np.float32)
    vol[n // 4 : n // 2, n // 4 : n // 2, n // 4 : n // 2] += 5.0
    return DS.SubjectData(
        images={"pet": (vol, D.centred_affine(vol.shape, (4.0, 4.0, 2.0)))},
        arrays={"sino": {"prompts": rng.poisson(2.0, size=(6, 7, n)).astype(np.int32)}},
        attributes={"weight_kg": 70.0},
    )


DS.register_task(DS.TaskSpec("toy_cubes", _cube_builder, ("pet",), ("sino",), {"size": 8}))


def test_fire_text_and_float_numbers_are_accepted(tmp_path):
    # fire passes --seed 007 as '007' and --n 3.0 / 3e0 as a float (NOTES.md)
    path = make_dataset(task="toy_cubes", n=3.0, out=str(tmp_path / "ds"), seed="007", workers="1", progress=False)
    manifest = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert Path(path).name == "datalist.json" and manifest["seed"] == 7 and manifest["n"] == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "nope", "n": 3}, r"unknown task 'nope'; known tasks: .*toy_cubes"),
        ({"task": "toy_cubes"}, "--n"),
        ({"n": 3}, "--task is required"),
        ({"task": "toy_cubes", "n": 0}, "n must be >= 1"),
        ({"task": "toy_cubes", "n": 3, "seed": "abc"}, "seed must be an integer"),
        ({"task": "toy_cubes", "n": 3, "seed": 1.5}, "seed must be an integer"),
        ({"task": "toy_cubes", "n": 3, "shard": 1}, "both --shard and --num_shards"),
        ({"task": "toy_cubes", "n": 3, "shard": 3, "num_shards": 2}, r"shard must be in 0\.\.1"),
        ({"task": "toy_cubes", "n": 3, "out": 1e5}, "fire read the folder name as the number"),
        ({"task": "toy_cubes", "n": 3, "params": "{bad"}, "params must be a JSON object"),
        ({"task": "toy_cubes", "merge": "x"}, "--merge DIR takes no --task"),
    ],
)
def test_bad_arguments_give_a_clear_error_before_writing(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)  # the default --out is data/<task> under the working directory
    with pytest.raises(ValueError, match=message):
        make_dataset(progress=False, **kwargs)
    assert not list(tmp_path.iterdir())


def test_shards_then_merge_write_one_datalist(tmp_path):
    out = str(tmp_path / "ds")
    for shard in ("0", "1", "2"):
        make_dataset(task="toy_cubes", n=4, out=out, shard=shard, num_shards="3", progress=False)
    assert not (tmp_path / "ds" / "datalist.json").exists()
    make_dataset(merge=out)
    datalist = D.read_datalist(tmp_path / "ds" / "datalist.json")
    assert sum(len(datalist[k]) for k in D.DATALIST_KEYS) == 4


def test_command_line_reports_an_unknown_task_with_the_known_ones(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "scripts", "make_dataset", "--task", "nope", "--n", "2", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and proc.stderr.startswith("error: unknown task 'nope'; known tasks:"), proc.stderr


def test_a_misspelt_flag_stops_the_command_before_it_writes_anything(tmp_path):
    # fire alone would run the job with the default output folder, then complain about --out_dir
    proc = subprocess.run(
        [sys.executable, "-m", "scripts", "make_dataset", "--task", "pet_nac_to_pct", "--n", "2", "--out_dir", str(tmp_path / "x")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode != 0 and "unknown flag(s) --out_dir" in proc.stderr and "--out," in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_output_folder_is_refused_in_one_line_and_left_as_it_was(tmp_path):
    (tmp_path / "mine").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "scripts", "make_dataset", "--task", "pet_nac_to_pct", "--n", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path} is not empty and has no dataset.json (holds mine); refusing to write a dataset into it: "
        "choose an empty or new folder"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_preview_writes_a_png_with_one_row_per_image_and_array(tmp_path):
    import matplotlib.image as mpimg

    make_dataset(task="toy_cubes", n=1, out=str(tmp_path / "ds"), progress=False)
    path = Path(preview(str(tmp_path / "ds")))
    assert path == tmp_path / "ds" / "previews" / "s0_0000.png"
    img = mpimg.imread(path)
    assert img.shape[0] > img.shape[1] * 0.5  # two rows of three panels
    assert img[..., :3].std() > 0.05  # not blank


def test_preview_of_an_unknown_subject_lists_the_ids(tmp_path):
    make_dataset(task="toy_cubes", n=1, out=str(tmp_path / "ds"), progress=False)
    with pytest.raises(ValueError, match=r"subject 'zz' not in .*s0_0000"):
        preview(str(tmp_path / "ds"), subject="zz")
