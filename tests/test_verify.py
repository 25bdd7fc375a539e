"""``python -m scripts verify``: the tiny bundle passes; each broken copy fails with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.verify import MAX_FILE_BYTES, SCHEMA_FILE, show, verify, verify_bundle

OFFICIAL_SCHEMA = Path("/work/shared/meta_schema_20240725.json")


def edit_json(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content, indent=4))


def only_failure(bundle: Path) -> str:
    failures = verify_bundle(bundle)
    assert len(failures) == 1, failures
    return failures[0]


def test_tiny_bundle_passes_every_check(tiny_bundle):
    assert verify_bundle(tiny_bundle) == []


def test_missing_required_file_is_named(tiny_bundle_copy):
    missing = tiny_bundle_copy / "docs" / "data_license.txt"
    missing.unlink()
    assert only_failure(tiny_bundle_copy) == f"{show(missing)}: required file missing"


def test_invalid_json_reports_file_line_and_column(tiny_bundle_copy):
    config = tiny_bundle_copy / "configs" / "train.json"
    lines = config.read_text().splitlines()
    bad = '    "stray": ,'
    lines.insert(1, bad)  # becomes line 2
    config.write_text("\n".join(lines))
    failure = only_failure(tiny_bundle_copy)
    assert failure.startswith(f"{show(config)}: invalid JSON at line 2, column {bad.index(',') + 1}:")


def test_metadata_key_of_wrong_type_names_its_json_path(tiny_bundle_copy):
    meta = tiny_bundle_copy / "configs" / "metadata.json"
    edit_json(meta, lambda m: m["network_data_format"]["inputs"]["image"].update(num_channels="one"))
    assert only_failure(tiny_bundle_copy) == (
        f"{show(meta)}: network_data_format.inputs.image.num_channels: 'one' is not of type 'integer'"
    )


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("pytorch_version", "2.13.0+cpu", "exact pip pin"),  # NOTES: versions are read as exact pins
        ("version", "0.1", "X.Y.Z"),
    ],
)
def test_metadata_versions_must_be_exact(tiny_bundle_copy, key, value, words):
    meta = tiny_bundle_copy / "configs" / "metadata.json"
    edit_json(meta, lambda m: m.update({key: value}))
    failures = verify_bundle(tiny_bundle_copy)
    assert any(f.startswith(f"{show(meta)}: {key}: {value!r}") and words in f for f in failures), failures


def test_channel_def_without_units_fails(tiny_bundle_copy):
    meta = tiny_bundle_copy / "configs" / "metadata.json"
    edit_json(meta, lambda m: m["network_data_format"]["outputs"]["pred"].update(channel_def={"0": "denoised"}))
    failure = only_failure(tiny_bundle_copy)
    assert failure.startswith(f"{show(meta)}: network_data_format.outputs.pred.channel_def.0: 'denoised'")


@pytest.mark.parametrize("missing", ["image", "pred"])
def test_network_io_keys_image_and_pred_are_required(tiny_bundle_copy, missing):
    meta = tiny_bundle_copy / "configs" / "metadata.json"
    side = "inputs" if missing == "image" else "outputs"
    edit_json(meta, lambda m: m["network_data_format"][side].update(other=m["network_data_format"][side].pop(missing)))
    failures = verify_bundle(tiny_bundle_copy)
    assert f"{show(meta)}: network_data_format.{side}: '{missing}' is a required property" in failures


def test_version_without_changelog_entry_fails(tiny_bundle_copy):
    meta = tiny_bundle_copy / "configs" / "metadata.json"
    edit_json(meta, lambda m: m.update(version="0.2.0"))
    assert "'0.2.0' has no changelog entry" in only_failure(tiny_bundle_copy)


def test_version_older_than_newest_changelog_entry_fails(tiny_bundle_copy):
    meta = tiny_bundle_copy / "configs" / "metadata.json"
    edit_json(meta, lambda m: m["changelog"].update({"0.10.0": "newer, and 10 > 9 numerically"}))
    assert "is not the newest changelog entry '0.10.0'" in only_failure(tiny_bundle_copy)


def test_train_json_must_keep_the_ids_users_override(tiny_bundle_copy):
    config = tiny_bundle_copy / "configs" / "train.json"
    edit_json(config, lambda c: [c.pop(i) for i in ("data_seed", "n_subjects")])
    assert only_failure(tiny_bundle_copy) == f"{show(config)}: missing ids users override: n_subjects, data_seed"


@pytest.mark.parametrize(
    "content, words",
    [
        (lambda sd: {"model": sd, "epoch": 3}, "is not a state_dict"),  # a checkpoint, not network weights
        (lambda sd: torch.nn.Linear(2, 2), "cannot be loaded with torch.load(weights_only=True)"),  # a pickled module
    ],
)
def test_weights_that_are_not_a_state_dict_fail(tiny_bundle_copy, content, words):
    weights = tiny_bundle_copy / "models" / "model.pt"
    torch.save(content(torch.load(weights, weights_only=True)), weights)
    failure = only_failure(tiny_bundle_copy)
    assert failure.startswith(f"{show(weights)}: {words}")


def test_weights_of_another_network_fail(tiny_bundle_copy):
    weights = tiny_bundle_copy / "models" / "model.pt"
    torch.save(torch.nn.Conv3d(1, 1, 3).state_dict(), weights)
    assert only_failure(tiny_bundle_copy).startswith(f"{show(weights)}: does not load into network_def")


def test_output_spatial_shape_is_checked_beyond_verify_net_in_out(tiny_bundle_copy):
    # verify_net_in_out compares only channels and dtype; a wrong spatial shape must still fail
    meta = tiny_bundle_copy / "configs" / "metadata.json"
    edit_json(meta, lambda m: m["network_data_format"]["outputs"]["pred"].update(spatial_shape=[8, 8, 8]))
    failure = only_failure(tiny_bundle_copy)
    assert "output spatial shape (16, 16, 16)" in failure and "(8, 8, 8)" in failure


def test_wrong_output_channel_count_fails_verify_net_in_out(tiny_bundle_copy):
    meta = tiny_bundle_copy / "configs" / "metadata.json"
    edit_json(meta, lambda m: m["network_data_format"]["outputs"]["pred"].update(num_channels=2))
    assert "verify_net_in_out" in only_failure(tiny_bundle_copy)


def test_file_over_25_mb_fails(tiny_bundle_copy):
    big = tiny_bundle_copy / "docs" / "figure.bin"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no 25 MB written
    assert only_failure(tiny_bundle_copy).startswith(f"{show(big)}: 25.0 MB is over the 25 MB limit")


def test_run_outputs_are_not_checked(tiny_bundle_copy):
    # data/, eval/ and models/checkpoints/ are git-ignored and never shipped
    for rel in ("eval/huge.bin", "models/checkpoints/huge.pt"):
        (tiny_bundle_copy / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(tiny_bundle_copy / rel, "wb") as f:
            f.truncate(MAX_FILE_BYTES + 1)
    assert verify_bundle(tiny_bundle_copy) == []


@pytest.mark.skipif(not OFFICIAL_SCHEMA.is_file(), reason="the shared copy of MONAI's schema is not on this machine")
def test_project_schema_embeds_the_official_schema_unchanged():
    official = json.loads(OFFICIAL_SCHEMA.read_text())
    embedded = dict(json.loads(SCHEMA_FILE.read_text())["$defs"]["official"])
    embedded.pop("$id")
    official.pop("$schema")
    assert embedded == official


def run_verify(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "scripts", "verify", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_cli_exits_nonzero_with_one_line_per_failure_and_a_summary(tiny_bundle_copy, tmp_path):
    (tiny_bundle_copy / "LICENSE").unlink()
    (tiny_bundle_copy / "docs" / "README.md").unlink()
    proc = run_verify("--root", "bundles", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines == [
        "bundles/tiny_bundle/docs/README.md: required file missing",
        "bundles/tiny_bundle/LICENSE: required file missing",
        "tiny_bundle: FAILED (2)",
        "verify: 0 of 1 bundles passed",
    ]


def test_no_bundles_at_all_is_said_and_succeeds(tmp_path, capsys):
    verify(root=str(tmp_path))  # returns: exit status 0
    assert "no bundles" in capsys.readouterr().out


def test_unknown_bundle_name_fails(tiny_bundle_copy, capsys):
    with pytest.raises(SystemExit) as exit_:
        verify("no_such_bundle", root=str(tiny_bundle_copy.parent))
    assert exit_.value.code == 1
    assert "unknown bundle 'no_such_bundle' (known: tiny_bundle)" in capsys.readouterr().out
