"""``python -m scripts package``: deterministic zips with one top-level folder and a vendored ``common``."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from scripts.package import COMMON_DIR, package, package_bundle, sha256sum


@pytest.fixture
def common_snapshot(tmp_path) -> Path:
    """A frozen copy of the repository's ``common``: other work may change it while tests run."""
    return Path(shutil.copytree(COMMON_DIR, tmp_path / "common_snapshot", ignore=shutil.ignore_patterns("__pycache__")))


def names_in(zip_path: str | Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


def test_packaging_twice_gives_the_same_sha256(tiny_bundle_copy, common_snapshot, tmp_path):
    first = package_bundle(tiny_bundle_copy, tmp_path / "a" / "dist", tmp_path / "a" / "zoo.json", common_snapshot)
    for path in tiny_bundle_copy.rglob("*"):  # a fresh clone has other mtimes
        os.utime(path, (1.7e9, 1.7e9))
    second = package_bundle(tiny_bundle_copy, tmp_path / "b" / "dist", tmp_path / "b" / "zoo.json", common_snapshot)
    assert first["sha256"] == second["sha256"] == sha256sum(tmp_path / "b" / "dist" / "tiny_bundle_v0.1.0.zip")


def test_zip_holds_one_top_level_folder_with_the_bundle_and_common(tiny_bundle_copy, common_snapshot, tmp_path):
    package_bundle(tiny_bundle_copy, tmp_path / "dist", tmp_path / "zoo.json", common_snapshot)
    names = names_in(tmp_path / "dist" / "tiny_bundle_v0.1.0.zip")
    assert {n.split("/")[0] for n in names} == {"tiny_bundle"}
    assert {"tiny_bundle/configs/metadata.json", "tiny_bundle/models/model.pt", "tiny_bundle/common/__init__.py"} <= set(names)
    assert names == sorted(names)
    vendored = sorted(n.removeprefix("tiny_bundle/common/") for n in names if n.startswith("tiny_bundle/common/"))
    assert vendored == sorted(p.relative_to(common_snapshot).as_posix() for p in common_snapshot.rglob("*") if p.is_file())


def test_zip_leaves_out_caches_data_and_run_outputs(tiny_bundle_copy, common_snapshot, tmp_path):
    outputs = ("eval/metrics.csv", "runs/events", "models/checkpoints/ckpt.pt", "models/runs/events", "dist/old.zip")
    for rel in (*outputs, "configs/__pycache__/x.pyc"):
        (tiny_bundle_copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (tiny_bundle_copy / rel).write_bytes(b"x")
    (common_snapshot / "__pycache__").mkdir()
    (common_snapshot / "__pycache__" / "physics.cpython-311.pyc").write_bytes(b"x")
    package_bundle(tiny_bundle_copy, tmp_path / "dist", tmp_path / "zoo.json", common_snapshot)
    names = names_in(tmp_path / "dist" / "tiny_bundle_v0.1.0.zip")
    assert (tiny_bundle_copy / "data" / "datalist.json").is_file()  # the fixture's dataset is there ...
    assert not [n for n in names if n.split("/")[1] in ("data", "eval", "runs", "dist") or "checkpoints" in n or "pycache" in n
                or n.startswith("tiny_bundle/models/runs/")]  # fmt: skip


def test_zip_entries_have_fixed_date_and_permissions(tiny_bundle_copy, common_snapshot, tmp_path):
    package_bundle(tiny_bundle_copy, tmp_path / "dist", tmp_path / "zoo.json", common_snapshot)
    with zipfile.ZipFile(tmp_path / "dist" / "tiny_bundle_v0.1.0.zip") as zf:
        assert {(i.date_time, i.external_attr >> 16) for i in zf.infolist()} == {((1980, 1, 1, 0, 0, 0), 0o100644)}


def test_zoo_records_name_version_task_description_source_and_sha256(tiny_bundle_copy, common_snapshot, tmp_path):
    meta = json.loads((tiny_bundle_copy / "configs" / "metadata.json").read_text())
    package_bundle(tiny_bundle_copy, tmp_path / "dist", tmp_path / "zoo.json", common_snapshot)
    zoo = json.loads((tmp_path / "zoo.json").read_text())
    assert zoo == {
        "tiny_bundle": {
            meta["version"]: {
                "name": "tiny_bundle",
                "version": meta["version"],
                "task": meta["task"],
                "description": meta["description"],
                "source": "dist/tiny_bundle_v0.1.0.zip",  # relative to the index's folder
                "sha256": sha256sum(tmp_path / "dist" / "tiny_bundle_v0.1.0.zip"),
            }
        }
    }


def test_zoo_source_outside_the_index_folder_is_a_file_url(tiny_bundle_copy, common_snapshot, tmp_path):
    entry = package_bundle(tiny_bundle_copy, tmp_path / "dist", tmp_path / "index" / "zoo.json", common_snapshot)
    assert entry["source"] == (tmp_path / "dist" / "tiny_bundle_v0.1.0.zip").resolve().as_uri()


def test_bundle_with_its_own_common_is_refused(tiny_bundle_copy, common_snapshot, tmp_path):
    (tiny_bundle_copy / "common").mkdir()
    with pytest.raises(ValueError, match="must not hold its own common/"):
        package_bundle(tiny_bundle_copy, tmp_path / "dist", tmp_path / "zoo.json", common_snapshot)


def test_command_refuses_a_bundle_that_fails_verify_and_writes_nothing(tiny_bundle_copy, tmp_path):
    (tiny_bundle_copy / "LICENSE").unlink()
    dist, zoo = tmp_path / "dist", tmp_path / "zoo.json"
    with pytest.raises(SystemExit, match="LICENSE: required file missing"):
        package("tiny_bundle", root=str(tiny_bundle_copy.parent), dist=str(dist), zoo=str(zoo))
    assert not dist.exists() and not zoo.exists()


def test_command_refuses_an_unknown_bundle(tiny_bundle_copy, tmp_path):
    with pytest.raises(SystemExit, match=r"unknown bundle 'nope' .*\(known: tiny_bundle\)"):
        package("nope", root=str(tiny_bundle_copy.parent), dist=str(tmp_path / "dist"), zoo=str(tmp_path / "zoo.json"))
