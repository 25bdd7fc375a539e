"""The named steps bundle configs call (common.learning.workflow): each refuses bad input with
a message naming the file or value."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from common.data import write_nifti
from common.learning.workflow import as_bool, attach_pretrained, attach_resume, datalist_pairs, latest_checkpoint, study_items


@pytest.mark.parametrize("value, expected", [(True, True), ("true", True), ("1", True), (1, True), (False, False), ("false", False), ("0", False), ("", False), (None, False)])
def test_as_bool_reads_command_line_spellings(value, expected):
    assert as_bool(value) is expected


def test_as_bool_refuses_a_misspelling_instead_of_reading_it_as_yes():
    with pytest.raises(ValueError, match="resume must be true or false, got 'ture'"):
        as_bool("ture", "resume")


def test_latest_checkpoint_is_the_newest_file_and_a_missing_one_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        latest_checkpoint(tmp_path)
    old, new = tmp_path / "checkpoint_epoch=1.pt", tmp_path / "checkpoint_epoch=2.pt"
    old.write_bytes(b"a")
    new.write_bytes(b"b")
    os.utime(old, (time.time() + 10, time.time() + 10))  # modification time decides, not the name
    assert latest_checkpoint(tmp_path) == old


def test_resume_false_attaches_nothing_and_resume_true_without_checkpoint_fails_clearly(tmp_path):
    engine = Engine(lambda e, b: None)
    assert attach_resume(engine, {"model": torch.nn.Linear(1, 1)}, tmp_path, "false") is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        attach_resume(engine, {"model": torch.nn.Linear(1, 1)}, tmp_path, True)


def test_resume_loads_the_newest_checkpoint_when_the_trainer_starts(tmp_path):
    saved = torch.nn.Linear(2, 1)
    torch.save({"model": saved.state_dict()}, tmp_path / "checkpoint_epoch=3.pt")
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    assert attach_resume(engine, {"model": net}, tmp_path, "true").name == "checkpoint_epoch=3.pt"
    engine.run([0], max_epochs=1)
    assert torch.equal(net.weight, saved.weight)


def test_pretrained_is_skipped_when_resuming_and_a_missing_file_is_named(tmp_path):
    engine, net = Engine(lambda e, b: None), torch.nn.Linear(1, 1)
    assert attach_pretrained(engine, net, "", False) is None
    assert attach_pretrained(engine, net, tmp_path / "nope.pt", True) is None
    with pytest.raises(FileNotFoundError, match="nope.pt: pretrained weights not found"):
        attach_pretrained(engine, net, tmp_path / "nope.pt", False)


def _dataset(tmp_path):
    for name in ("a_nac.nii.gz", "a_ct.nii.gz"):  # real NIfTIs: datalist_pairs checks them before anything runs
        write_nifti(tmp_path / name, np.ones((4, 4, 3), np.float32))
    entry = {"id": "a", "nac": "a_nac.nii.gz", "ct": "a_ct.nii.gz", "weight_kg": 70.0}
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [entry], "validation": [], "test": [entry]}))
    return tmp_path


def test_datalist_pairs_map_entry_keys_to_image_and_label_with_absolute_paths(tmp_path):
    (item,) = datalist_pairs(_dataset(tmp_path), "training", "nac", "ct")
    assert item["image"] == str(tmp_path / "a_nac.nii.gz") and item["label"] == str(tmp_path / "a_ct.nii.gz")
    assert item["weight_kg"] == 70.0  # per-subject facts travel with the item
    assert datalist_pairs(tmp_path, "test", "nac", limit=0) == []


def test_datalist_pairs_name_the_missing_key(tmp_path):
    with pytest.raises(ValueError, match="has no 'mr'"):
        datalist_pairs(_dataset(tmp_path), "training", "mr")


def test_study_items_hold_one_absolute_path_and_the_given_facts(tmp_path):
    image = write_nifti(tmp_path / "pet.nii.gz", np.ones((4, 4, 3), np.float32))
    assert study_items(image, {"drf": 10, "weight_kg": None}) == [{"image": str(image), "drf": 10}]
    with pytest.raises(FileNotFoundError, match="missing.nii.gz: input image not found"):
        study_items(tmp_path / "missing.nii.gz")
