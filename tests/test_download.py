"""``python -m scripts download``: checked, all-or-nothing installs of packaged bundles."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import load as monai_load

from scripts.download import HashMismatchError, download, install_bundle
from scripts.package import COMMON_DIR, package_bundle, sha256sum


@pytest.fixture
def zoo(tiny_bundle, tmp_path) -> Path:
    """An index with the tiny bundle packaged (with a frozen copy of ``common``)."""
    common = shutil.copytree(COMMON_DIR, tmp_path / "common_snapshot", ignore=shutil.ignore_patterns("__pycache__"))
    zoo_file = tmp_path / "zoo" / "model_zoo.json"
    package_bundle(tiny_bundle, tmp_path / "zoo" / "dist", zoo_file, common)
    return zoo_file


def set_entry(zoo_file: Path, **values) -> None:
    index = json.loads(zoo_file.read_text())
    index["tiny_bundle"]["0.1.0"].update(values)
    zoo_file.write_text(json.dumps(index))


def crafted_zip(path: Path, extra: zipfile.ZipInfo | str) -> Path:
    """A bundle zip with one extra, hostile entry."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tiny_bundle/configs/metadata.json", json.dumps({"version": "0.1.0"}))
        zf.writestr(extra, b"x")
    return path


def test_matching_hash_installs_the_bundle_and_nothing_else(zoo, tmp_path):
    dest = tmp_path / "dest"
    target = install_bundle("tiny_bundle", dest=dest, zoo=zoo)
    assert target == dest / "tiny_bundle" and os.listdir(dest) == ["tiny_bundle"]  # no temporary leftovers
    assert (target / "common" / "__init__.py").is_file()
    assert json.loads((target / "configs" / "metadata.json").read_text())["version"] == "0.1.0"


def test_mismatched_hash_is_refused_before_unpacking(zoo, tmp_path):
    set_entry(zoo, sha256="0" * 64)
    dest = tmp_path / "dest"
    with pytest.raises(HashMismatchError, match="sha256 does not match"):
        install_bundle("tiny_bundle", dest=dest, zoo=zoo)
    assert os.listdir(dest) == []


@pytest.mark.parametrize(
    "member, reason",
    [
        ("tiny_bundle/../../evil.txt", "contains '..'"),
        ("/etc/evil.txt", "is an absolute path"),
        ("elsewhere/evil.txt", "is outside the bundle folder tiny_bundle/"),
    ],
)
def test_archive_entries_leaving_the_bundle_folder_are_refused(zoo, tmp_path, member, reason):
    archive = crafted_zip(tmp_path / "evil.zip", member)
    set_entry(zoo, source=archive.as_uri(), sha256=sha256sum(archive))  # a correct hash does not make it safe
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=f"refusing archive entry '{member}': it {reason}"):
        install_bundle("tiny_bundle", dest=dest, zoo=zoo)
    assert os.listdir(dest) == [] and not (tmp_path / "evil.txt").exists()


def test_symbolic_link_entries_are_refused(zoo, tmp_path):
    link = zipfile.ZipInfo("tiny_bundle/models/model.pt")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = crafted_zip(tmp_path / "link.zip", link)
    set_entry(zoo, source=str(archive), sha256=sha256sum(archive))  # a plain path works as a source too
    with pytest.raises(ValueError, match="is a symbolic link"):
        install_bundle("tiny_bundle", dest=tmp_path / "dest", zoo=zoo)


def test_unknown_name_or_version_lists_the_known_ones(zoo, tmp_path):
    with pytest.raises(ValueError, match=r"unknown bundle 'nope' \(known: tiny_bundle\)"):
        install_bundle("nope", dest=tmp_path, zoo=zoo)
    with pytest.raises(ValueError, match=r"no version '9.9.9' \(known: 0.1.0\)"):
        install_bundle("tiny_bundle", "9.9.9", dest=tmp_path, zoo=zoo)


def test_missing_or_invalid_index_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_zoo.json: file not found"):
        install_bundle("tiny_bundle", dest=tmp_path, zoo=tmp_path / "model_zoo.json")
    (tmp_path / "model_zoo.json").write_text('{"tiny_bundle": {\n  "0.1.0": }\n}')
    with pytest.raises(ValueError, match="model_zoo.json: invalid JSON at line 2, column 12"):
        install_bundle("tiny_bundle", dest=tmp_path, zoo=tmp_path / "model_zoo.json")


def test_existing_bundle_folder_is_not_silently_reused(zoo, tmp_path):
    dest = tmp_path / "dest"
    install_bundle("tiny_bundle", dest=dest, zoo=zoo)
    (dest / "tiny_bundle" / "stale.txt").write_text("from another version")
    with pytest.raises(ValueError, match="already exists \\(version '0.1.0'\\); pass --replace"):
        install_bundle("tiny_bundle", dest=dest, zoo=zoo)
    install_bundle("tiny_bundle", dest=dest, zoo=zoo, replace=True)
    assert not (dest / "tiny_bundle" / "stale.txt").exists() and os.listdir(dest) == ["tiny_bundle"]


def test_command_exits_with_one_clear_line(zoo, tmp_path):
    with pytest.raises(SystemExit, match=r"^download: .*model_zoo.json: bundle 'tiny_bundle' has no version '2.0.0'"):
        download("tiny_bundle", version="2.0.0", dest=str(tmp_path), zoo=str(zoo))
    with pytest.raises(SystemExit, match="give the version as X.Y.Z"):
        download("tiny_bundle", version=1.0, dest=str(tmp_path), zoo=str(zoo))  # what fire makes of "--version 1.0"


def test_monai_bundle_load_uses_the_installed_bundle_offline(zoo, tiny_bundle, tmp_path, monkeypatch):
    dest = tmp_path / "dest"
    install_bundle("tiny_bundle", dest=dest, zoo=zoo)
    monkeypatch.chdir(dest / "tiny_bundle")  # bundle_root "." of the configs
    monkeypatch.setattr(sys, "path", list(sys.path))  # the import idiom inserts bundle_root
    net = monai_load("tiny_bundle", bundle_dir=str(dest), workflow_type="inference", device="cpu")
    expected = torch.load(tiny_bundle / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in expected.items())


def test_downloaded_bundle_runs_inference_from_any_cwd_with_its_vendored_common(zoo, tiny_bundle, tmp_path):
    bundle = install_bundle("tiny_bundle", dest=tmp_path / "dest", zoo=zoo)
    cwd, out = tmp_path / "elsewhere", tmp_path / "out"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    configs = bundle / "configs"
    cmd = [
        sys.executable, "-I",  # isolated: neither the cwd nor PYTHON* variables reach sys.path
        "-m", "monai.bundle", "run", "inference",
        "--bundle_root", str(bundle),
        "--config_file", str(configs / "inference.json"),
        "--meta_file", str(configs / "metadata.json"),
        "--logging_file", str(configs / "logging.conf"),
        "--dataset_dir", str(tiny_bundle / "data"),
        "--output_dir", str(out),
        "--finalize", "$print('COMMON_FILE', @common.__file__)",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    common_file = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("COMMON_FILE")]
    assert common_file == [str(bundle / "common" / "__init__.py")]  # not the repository's editable install
    datalist = json.loads((tiny_bundle / "data" / "datalist.json").read_text())
    for item in datalist["test"]:
        source = nib.load(tiny_bundle / "data" / item["image"])
        written = nib.load(out / item["image"].replace(".nii.gz", "_pred.nii.gz"))
        assert written.shape == source.shape  # Spacingd ... Invertd puts it back on the input grid
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
