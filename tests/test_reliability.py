"""Reliability sweep over every bundle (issue 17, DESIGN section 7). Where each point is tested:

1. Bad input: one clear line naming the file and the problem, before anything is written.
   - here: ``test_1_bad_inference_input_is_refused_in_one_line_before_anything_is_written`` (every
     bundle x NaN, Inf, negative activity / counts, CT given as PET / projections, 2D, 4D, truncated
     and corrupt NIfTI, missing file, empty datalist, datalist pointing at a missing file),
     ``test_1_paired_training_images_off_one_grid_are_refused_before_training`` (pet_nac_to_pct and
     pet_lowdose_denoising x shape, voxel size, orientation; PET given as CT, CT given as full-dose
     PET), ``test_1_the_one_line_reaches_the_user_of_the_stock_runner`` (``python -m monai.bundle
     run`` on a truncated file);
   - elsewhere: tests/test_new_user.py::test_3_* (CT as NAC and a missing input, stock runner),
     tests/test_transforms.py, tests/test_data.py::test_truncated_* / test_nan_* / test_datalist_*,
     tests/test_spect_projection_completion.py::test_a_bad_sidecar_* / test_negative_counts_*.
   spect_projection_completion has no paired images: its target is the same file's full view set.
2. Orientation: ``test_2_a_reoriented_anisotropic_input_gives_the_same_anatomy_on_its_own_grid``
   (both PET bundles: flipped, axes permuted (90-degree rotations), anisotropic voxels). SPECT
   projections are in detector coordinates (u, v, view), not patient space, so "RAS" has no
   meaning there; their analogue, ``test_2_spect_projections_keep_their_pixel_size_and_refuse_an_oblique_or_flipped_affine``:
   anisotropic pixels are kept, an affine that is not diag(du, dv, 1) is refused instead of
   silently dropped.
3. Temporary name + rename: ``test_3_every_image_saver_of_every_bundle_writes_through_a_temporary_name``
   (all configs), ``test_3_an_inference_killed_while_writing_leaves_the_old_output`` (every bundle; a
   non-atomic saver, which never renames, fails it too),
   ``test_3_writers_killed_mid_write_leave_the_old_file_or_the_new_one`` (SIGKILL of a process
   writing in a loop: common.data.write_nifti and the bundles' NIfTI writer); elsewhere
   tests/test_data.py::test_resume_after_crash_* (dataset writer).
4. Resume: ``test_4_training_killed_mid_epoch_resumes_with_the_same_epochs_and_lr_schedule``
   (slow; SIGTERM and SIGKILL, pet_nac_to_pct on tiny phantoms),
   ``test_4_every_training_config_checkpoints_what_resume_needs`` (every bundle),
   ``test_4_a_checkpoint_of_another_network_is_refused_in_one_line`` (every bundle: resume,
   --pretrained, --model_path of inference; a pickled model); elsewhere tests/test_workflow.py.
5. Archives and weights: ``test_5_every_torch_load_reads_weights_only`` (the repository's code and
   MONAI's CheckpointLoader); elsewhere tests/test_download.py (``..``, absolute, symlink and
   outside-folder entries refused; sha256 mismatch refused before unpacking; nothing left behind)
   and tests/test_new_user.py::test_6_monai_download_and_load_of_our_zip_* (every bundle:
   ``monai.bundle.download`` from a local ``file://`` zip, then ``monai.bundle.load``).
6. Property-based (hypothesis): ``test_6_*`` here (input checks, metrics, Poisson thinning and
   splitting, file checks with random shapes, spacings and values).
7. torchrun: tests/test_torchrun.py (free rendezvous port from a bound socket, static rendezvous
   on 127.0.0.1, gloo on loopback, timeout, whole output in the assertion message, no retry).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.bundle import ConfigParser, ConfigWorkflow

from common.data import check_nifti_file, check_same_grid, load_datalist, read_nifti, write_nifti
from common.errors import InputError, UserError, _message, user_error
from common.learning import metrics
from common.learning.transforms import CheckEmission
from common.learning.workflow import attach_pretrained, attach_resume, check_weights
from common.physics import noise
from common.simulation.datasets import generate_dataset

REPO = Path(__file__).resolve().parents[1]
PCT, DENOISE = REPO / "bundles" / "pet_nac_to_pct", REPO / "bundles" / "pet_lowdose_denoising"
SPECT = REPO / "bundles" / "spect_projection_completion"
DOSE = REPO / "bundles" / "dose_rate_prediction"
BUNDLES = [PCT, DENOISE, SPECT]  # the sweeps that build bad studies per bundle (dose: the bad-input sweep too)
ALL_BUNDLES = [*BUNDLES, DOSE]  # the checks of configs and weights
DOSE_TINY = {"shape": [28, 24, 24], "spacing_mm": [16.0, 16.0, 16.0], "n_photons": 5000, "n_electrons": 50000, "n_batches": 4}
TINY = {"shape": [48, 48, 24], "spacing_mm": [10.0, 10.0, 10.0], "n_angles": 48}
PET_OVERRIDES = {
    PCT: {"pixdim": [10.0] * 3, "roi_size": [48, 48, 24]},
    DENOISE: {"pixdim": [10.0] * 3, "units": "SUV", "dose_reduction_factor": 20},
    SPECT: {},
}
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NM_DEBUG")} | {"OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------------
# fixtures: one tiny study per bundle
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pct_entry(tmp_path_factory) -> dict:
    """One tiny held-out pet_nac_to_pct subject: nac, ct, ac (absolute paths)."""
    with torch.random.fork_rng():
        datalist = generate_dataset("pet_nac_to_pct", tmp_path_factory.mktemp("pct") / "data", n=1, seed=1000,
                                    progress=False, params=TINY, test_only=True)  # fmt: skip
    return load_datalist(datalist.parent, "test")[0]


@pytest.fixture(scope="module")
def denoise_entry(tmp_path_factory) -> dict:
    """One tiny held-out pet_lowdose_denoising subject: drf20, drf20_comp, full, labels (SUV)."""
    with torch.random.fork_rng():
        datalist = generate_dataset("pet_lowdose_denoising", tmp_path_factory.mktemp("den") / "data", n=1, seed=1000,
                                    progress=False, params={**TINY, "dose_reduction_factors": [20]}, test_only=True)  # fmt: skip
    return load_datalist(datalist.parent, "test")[0]


@pytest.fixture(scope="module")
def dose_entry(tmp_path_factory) -> dict:
    """One tiny held-out dose_rate_prediction subject (activity, ct) and a low-count water kernel
    for its 16 mm voxels (``kernel_dir``), so no Monte Carlo runs in the test."""
    from dose_rate_prediction.transforms import save_kernel

    from common.dosimetry import voxel_s_values

    kernels = tmp_path_factory.mktemp("dose_kernels")
    with torch.random.fork_rng():
        save_kernel(voxel_s_values("Lu-177", 16.0, half_width=3, n_photons=5000, n_electrons=50000, n_batches=4), kernels)
        datalist = generate_dataset("dose_rate_prediction", tmp_path_factory.mktemp("dose") / "data", n=1, seed=1000,
                                    progress=False, params=DOSE_TINY, test_only=True)  # fmt: skip
    return {**load_datalist(datalist.parent, "test")[0], "kernel_dir": str(kernels)}


def spect_counts(seed: int = 0) -> np.ndarray:
    """Plausible sparse-view counts [U, V, 6 views]: a blob that moves with the view angle, Poisson noise."""
    rng = np.random.default_rng(seed)
    u, v, n = np.meshgrid(np.arange(16), np.arange(12), np.arange(6), indexing="ij")
    centre = 8 + 4 * np.cos(2 * np.pi * n / 6)
    mean = 50.0 * np.exp(-((u - centre) ** 2 + (v - 6) ** 2) / 10.0) + 2.0
    return rng.poisson(mean).astype(np.float32)


def write_spect_study(path: Path, counts: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Sparse-view projections as NIfTI + sidecar (what the bundle's --input_image takes)."""
    from spect_projection_completion.transforms import sidecar_path

    path.parent.mkdir(parents=True, exist_ok=True)
    n = counts.shape[-1] if counts.ndim >= 3 else 6
    side = {"angles_deg": [360.0 * i / n for i in range(n)], "radius_mm": 250.0, "nuclide": "Lu-177", "pixdim": [4.0, 4.0]}
    sidecar_path(path).write_text(json.dumps(side))
    nib.Nifti1Image(counts, np.diag([4.0, 4.0, 1.0, 1.0]) if affine is None else affine).to_filename(path)
    return path


@pytest.fixture(scope="module")
def spect_weights(tmp_path_factory) -> Path:
    return random_weights(SPECT, tmp_path_factory.mktemp("spect_w") / "model.pt")


def random_weights(bundle: Path, path: Path, seed: int = 0) -> Path:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def inference(bundle: Path, out: Path, **overrides) -> ConfigWorkflow:
    """The bundle's inference workflow in this process (what ``monai.bundle run inference`` runs)."""
    configs = bundle / "configs"
    wf = ConfigWorkflow(config_file=str(configs / "inference.json"), meta_file=str(configs / "metadata.json"),
                        workflow_type="inference", bundle_root=str(bundle), output_dir=str(out), **overrides)  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_user_error_line(exc: BaseException, *words: str) -> str:
    """The exception holds a user error whose message (what the user sees, one line) names ``words``."""
    found = user_error(exc)
    assert isinstance(found, (UserError, FileNotFoundError)), f"not a user error: {exc!r}"
    line = "error: " + _message(found)
    assert "\n" not in str(found).strip(), str(found)
    for word in words:
        assert word in line, (word, line)
    print(line)
    return line


# ------------------------------------------------------------------------------------------------
# 1. bad input
# ------------------------------------------------------------------------------------------------
def _pet_source(bundle: Path, pct_entry: dict, denoise_entry: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """(the good PET array, its affine, the CT of the same subject as array) for a PET bundle."""
    pet = read_nifti(pct_entry["nac"] if bundle == PCT else denoise_entry["drf20"])
    return pet.array, pet.affine, {"ct": read_nifti(pct_entry["ct"]).array}


def _truncate(path: Path) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def make_bad_input(case: str, bundle: Path, folder: Path, pct_entry: dict, denoise_entry: dict, dose_entry: dict | None = None) -> tuple[dict, list[str]]:
    """Overrides that give ``bundle`` the bad input ``case``, and the words its one-line error must hold.
    The dose bundle's activity is the bad input; its (good) CT is passed beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    extra: dict = {}
    if bundle == SPECT:
        good, affine, ct = spect_counts(), np.diag([4.0, 4.0, 1.0, 1.0]), None
    elif bundle == DOSE:
        activity, ct_image = read_nifti(dose_entry["activity"]), read_nifti(dose_entry["ct"])
        good, affine, ct = activity.array, activity.affine, ct_image.array
        extra = {"input_ct": str(write_nifti(folder / "ct.nii.gz", ct, ct_image.affine)), "kernel_dir": dose_entry["kernel_dir"]}
    else:
        good, affine, other = _pet_source(bundle, pct_entry, denoise_entry)
        ct = other["ct"]
    path = folder / "study.nii.gz"

    def write(array, aff=affine):
        if bundle == SPECT:
            return write_spect_study(path, np.asarray(array, np.float32), aff)
        nib.Nifti1Image(np.asarray(array, np.float32), aff).to_filename(path)
        return path

    overrides, words = _bad_case(case, bundle, folder, good, ct, write, path)
    if "input_image" in overrides:
        overrides.update(extra)
    return overrides, words


def _bad_case(case, bundle, folder, good, ct, write, path) -> tuple[dict, list[str]]:
    if case == "nan":
        bad = good.copy()
        bad[bad > np.percentile(bad, 90)] = np.nan
        return {"input_image": str(write(bad))}, [str(path), "NaN/Inf"]
    if case == "inf":
        bad = good.copy()
        bad.flat[np.argmax(bad)] = np.inf
        return {"input_image": str(write(bad))}, [str(path), "NaN/Inf"]
    if case == "negative":
        bad = good.copy()
        bad[: bad.shape[0] // 3] = -0.5 * float(good.max())
        # in Bq/mL (dose) -0.5 x max lies far below -500 HU, but it holds no air: refused for its negatives
        return {"input_image": str(write(bad))}, [str(path), "negative"]
    if case == "ct_as_pet":
        if bundle == SPECT:  # a CT (HU) as projections: air at -1000 are negative counts
            ctlike = np.full(good.shape, -1000.0, np.float32)
            ctlike[4:12, 3:9] = 40.0
            return {"input_image": str(write(ctlike))}, [str(path), "negative counts"]
        return {"input_image": str(write(ct))}, [str(path), "looks like a CT in HU"]
    if case == "2d":
        return {"input_image": str(write(good[:, :, 0]))}, [str(path), "must be one 3D volume, got a 2D image"]
    if case == "4d":
        return {"input_image": str(write(np.stack([good] * 3, axis=-1)))}, [
            str(path),
            "must be one 3D volume, got a 4D (3 frames",
        ]
    if case == "truncated":
        return {"input_image": str(_truncate(write(good)))}, [str(path), "corrupt or truncated"]
    if case == "corrupt":
        write(good)
        path.write_bytes(b"this is not a NIfTI file" * 50)
        return {"input_image": str(path)}, [str(path), "not a readable NIfTI file"]
    if case == "missing_input":
        return {"input_image": str(folder / "nope.nii.gz")}, [str(folder / "nope.nii.gz"), "not found"]
    if case == "empty_datalist":
        (folder / "datalist.json").write_text(json.dumps({"training": [], "validation": [], "test": []}))
        return {"dataset_dir": str(folder)}, [str(folder / "datalist.json"), "no 'test' entries"]
    if case == "datalist_missing_file":
        key = {PCT: "nac", DENOISE: "drf20", SPECT: "raw", DOSE: "activity"}[bundle]
        name = "gone.npz" if bundle == SPECT else "gone.nii.gz"
        (folder / "datalist.json").write_text(json.dumps({"test": [{"id": "s1", key: name, "units": "SUV"}]}))
        return {"dataset_dir": str(folder)}, [str(folder / "datalist.json"), f"file '{name}' not found"]
    raise AssertionError(case)


BAD_CASES = ["nan", "inf", "negative", "ct_as_pet", "2d", "4d", "truncated", "corrupt", "missing_input", "empty_datalist",
             "datalist_missing_file"]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda p: p.name)
def test_1_bad_inference_input_is_refused_in_one_line_before_anything_is_written(
    bundle, case, pct_entry, denoise_entry, dose_entry, spect_weights, tmp_path
):
    overrides, words = make_bad_input(case, bundle, tmp_path / "in", pct_entry, denoise_entry, dose_entry)
    if bundle == SPECT:
        overrides["model_path"] = str(spect_weights)
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        inference(bundle, out, **PET_OVERRIDES.get(bundle, {}), **overrides)
    assert_user_error_line(info.value, *words)
    assert files_in(out) == []


def _paired_dataset(folder: Path, bundle: Path, pct_entry: dict, denoise_entry: dict, case: str) -> tuple[Path, list[str]]:
    """A user dataset (datalist, no manifest) of one training and one validation subject whose pair is broken by ``case``."""
    folder.mkdir(parents=True)
    # the denoiser trains on the complementary-count target and needs the lesion map for its loss weight
    image_key, label_key = ("nac", "ct") if bundle == PCT else ("drf20", "drf20_comp")
    entry = pct_entry if bundle == PCT else denoise_entry
    image, label = read_nifti(entry[image_key]), read_nifti(entry[label_key])
    lab_array, lab_affine = label.array, label.affine.copy()
    words = {"shape": "not on the same grid: shape", "spacing": "not on the same grid: voxel size",
             "orientation": "orientation RAS vs LAS", "origin": "affines differ (origin shift [0.0, 0.0, 20.0] mm"}.get(case, "")  # fmt: skip
    if case == "shape":
        lab_array = lab_array[:, :, :20]
    elif case == "spacing":
        lab_affine[2, 2] = 12.0
    elif case == "origin":  # the same grid moved 20 mm along z (e.g. another couch position)
        lab_affine[2, 3] += 20.0
    elif case == "orientation":
        lab_array = lab_array[::-1]
        lab_affine[:, 0] *= -1
        lab_affine[:3, 3] = image.affine[:3, 3] + image.affine[:3, 0] * (image.array.shape[0] - 1)
    elif case == "pet_as_ct":
        lab_array = image.array
        words = "does not look like HU"
    elif case == "ct_as_full_dose":
        lab_array = read_nifti(pct_entry["ct"]).array
        words = "looks like a CT in HU"
    write_nifti(folder / "image.nii.gz", image.array, image.affine)
    write_nifti(folder / "label.nii.gz", np.ascontiguousarray(lab_array), lab_affine)
    item = {"id": "s1", image_key: "image.nii.gz", label_key: "label.nii.gz", "units": "SUV"}
    if bundle != PCT:
        shutil.copy(entry["labels"], folder / "labels.nii.gz")
        item["labels"] = "labels.nii.gz"
    (folder / "datalist.json").write_text(json.dumps({"training": [item], "validation": [item], "test": [item]}))
    return folder / ("label.nii.gz"), [str(folder / "label.nii.gz"), words]


@pytest.mark.parametrize("shift", ["shape", "origin"])
def test_1_dose_activity_and_ct_off_one_grid_are_refused_before_anything_is_written(shift, dose_entry, tmp_path):
    """The dose bundle's two inputs must lie voxel by voxel on one grid: a CT cropped or moved 20 mm
    is refused in one line naming it, and nothing is written."""
    activity, ct = read_nifti(dose_entry["activity"]), read_nifti(dose_entry["ct"])
    folder = tmp_path / "in"
    folder.mkdir()
    ct_array, ct_affine = ct.array, ct.affine.copy()
    if shift == "shape":
        ct_array = ct_array[:, :, :-2]
    else:
        ct_affine[2, 3] += 20.0
    act_path = write_nifti(folder / "activity.nii.gz", activity.array, activity.affine)
    ct_path = write_nifti(folder / "ct.nii.gz", np.ascontiguousarray(ct_array), ct_affine, dtype=np.int16)
    out = tmp_path / "out"
    with pytest.raises(Exception) as info:
        inference(DOSE, out, input_image=str(act_path), input_ct=str(ct_path), kernel_dir=dose_entry["kernel_dir"])
    assert_user_error_line(info.value, "activity.nii.gz", "ct.nii.gz", "not on the same grid")
    assert files_in(out) == []


@pytest.mark.parametrize(
    "bundle, case",
    [(PCT, "shape"), (PCT, "spacing"), (PCT, "orientation"), (PCT, "pet_as_ct"),
     (PCT, "origin"), (DENOISE, "shape"), (DENOISE, "spacing"), (DENOISE, "orientation"), (DENOISE, "origin"),
     (DENOISE, "ct_as_full_dose")],
    ids=lambda x: getattr(x, "name", x),
)  # fmt: skip
def test_1_paired_training_images_off_one_grid_are_refused_before_training(bundle, case, pct_entry, denoise_entry, tmp_path):
    data = tmp_path / "data"
    _, words = _paired_dataset(data, bundle, pct_entry, denoise_entry, case)
    out = tmp_path / "models"
    overrides = {
        "pixdim": [10.0] * 3,
        "patch_size": [32, 32, 16],
        "num_epochs": 1,
        "dataset_dir": str(data),
        "output_dir": str(out),
    }
    if bundle == DENOISE:
        overrides |= {"dose_reduction_factors": [20], "units": "SUV"}
    configs = bundle / "configs"
    wf = ConfigWorkflow(config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"),
                        workflow_type="train", bundle_root=str(bundle), **overrides)  # fmt: skip
    with pytest.raises(Exception) as info:
        wf.initialize()
        wf.run()
    assert_user_error_line(info.value, *words)
    assert files_in(out) == []  # not a checkpoint, not a TensorBoard file


def test_1_the_one_line_reaches_the_user_of_the_stock_runner(denoise_entry, tmp_path):
    bad = _truncate(Path(shutil.copy(denoise_entry["drf20"], tmp_path / "pet.nii.gz")))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--bundle_root", str(DENOISE),
           "--config_file", str(DENOISE / "configs" / "inference.json"), "--meta_file", str(DENOISE / "configs" / "metadata.json"),
           "--input_image", str(bad), "--output_dir", str(out), "--units", "SUV", "--dose_reduction_factor", "20"]  # fmt: skip
    run = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {bad}: ") and "truncated" in last and "Traceback" not in run.stderr, run.stderr[-3000:]
    print(last)
    assert files_in(out) == []


# ------------------------------------------------------------------------------------------------
# 2. orientation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bundle", [PCT, DENOISE], ids=lambda p: p.name)
def test_2_a_reoriented_anisotropic_input_gives_the_same_anatomy_on_its_own_grid(bundle, pct_entry, denoise_entry, tmp_path):
    pet = read_nifti(pct_entry["nac"] if bundle == PCT else denoise_entry["drf20"])
    # the RAS study, with anisotropic voxels (10 x 10 x 12.5 mm) and an off-centre origin
    ras_affine = np.diag([10.0, 10.0, 12.5, 1.0])
    ras_affine[:3, 3] = (-230.0, -245.0, -120.0)
    ras = nib.Nifti1Image(pet.array, ras_affine)
    ras_path = tmp_path / "ras" / "pet.nii.gz"
    ras_path.parent.mkdir()
    ras.to_filename(ras_path)
    # the same voxels stored flipped left-right and front-back, with the two in-plane axes swapped
    # (a 90-degree rotation): axis codes P, L, S
    ornt = nib.orientations.axcodes2ornt(("P", "L", "S"))
    other = ras.as_reoriented(ornt)
    assert "".join(nib.aff2axcodes(other.affine)) == "PLS"
    other_path = tmp_path / "other" / "pet.nii.gz"
    other_path.parent.mkdir()
    other.to_filename(other_path)
    results = {}
    for name, path in (("ras", ras_path), ("other", other_path)):
        out = tmp_path / f"out_{name}"
        inference(bundle, out, input_image=str(path), **PET_OVERRIDES[bundle])
        (written,) = [out / f for f in files_in(out)]
        results[name] = nib.load(written)
    np.testing.assert_allclose(results["other"].affine, other.affine, atol=1e-4)  # on its own grid
    np.testing.assert_allclose(results["ras"].affine, ras_affine, atol=1e-4)
    assert results["other"].shape == other.shape
    # the same anatomy in the same place: brought back to RAS, the two outputs agree voxel by voxel
    back = results["other"].as_reoriented(nib.orientations.io_orientation(results["other"].affine))
    np.testing.assert_allclose(back.affine, ras_affine, atol=1e-4)
    a, b = np.asarray(results["ras"].dataobj), np.asarray(back.dataobj)
    scale = float(np.abs(a).max())
    assert np.abs(a - b).max() <= 1e-4 * scale, np.abs(a - b).max() / scale


def test_2_spect_projections_keep_their_pixel_size_and_refuse_an_oblique_or_flipped_affine(spect_weights, tmp_path):

    study = write_spect_study(tmp_path / "in" / "scan.nii.gz", spect_counts(), np.diag([4.0, 3.0, 1.0, 1.0]))
    inference(SPECT, tmp_path / "out", input_image=str(study), model_path=str(spect_weights))
    result = read_nifti(tmp_path / "out" / "scan_completed.nii.gz")
    assert result.spacing_mm == pytest.approx((4.0, 3.0, 1.0)) and result.array.shape == (16, 12, 24)
    flipped = np.diag([-4.0, 4.0, 1.0, 1.0])
    theta = np.deg2rad(20)
    oblique = np.diag([4.0, 4.0, 1.0, 1.0])
    oblique[:2, :2] = 4.0 * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    for name, affine in (("flipped", flipped), ("oblique", oblique)):
        path = write_spect_study(tmp_path / name / "scan.nii.gz", spect_counts(), affine)
        with pytest.raises(Exception) as info:
            inference(SPECT, tmp_path / f"out_{name}", input_image=str(path), model_path=str(spect_weights))
        assert_user_error_line(info.value, str(path), "detector coordinates")
        assert files_in(tmp_path / f"out_{name}") == []


# ------------------------------------------------------------------------------------------------
# 3. outputs through a temporary name
# ------------------------------------------------------------------------------------------------
def _targets(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _targets(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _targets(v)


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda p: p.name)
def test_3_every_image_saver_of_every_bundle_writes_through_a_temporary_name(bundle):
    savers = []
    for config in sorted((bundle / "configs").glob("*.json")):
        for node in _targets(json.loads(config.read_text())):
            target = str(node.get("_target_", ""))
            if target.split(".")[-1].startswith("Save"):
                savers.append((config.name, target, node.get("writer", "")))
    assert savers, "no saver found"
    for config, target, writer in savers:
        if target == "SaveImaged":
            assert "common.learning.writers" in writer and "Atomic" in writer, (config, writer)
        else:  # the bundle's own saver: its module writes with common.data's atomic writers only
            module = __import__(target.rsplit(".", 1)[0], fromlist=["x"])
            source = Path(module.__file__).read_text()
            assert "write_nifti" in source and "to_filename" not in source and "nib.save" not in source, (config, target)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_3_an_inference_killed_while_writing_leaves_the_old_output(
    bundle, pct_entry, denoise_entry, spect_weights, tmp_path, monkeypatch
):
    if bundle == SPECT:
        study = write_spect_study(tmp_path / "in" / "scan.nii.gz", spect_counts())
        overrides = {"input_image": str(study), "model_path": str(spect_weights)}
        final = tmp_path / "out" / "scan_completed.nii.gz"
    else:
        source = pct_entry["nac"] if bundle == PCT else denoise_entry["drf20"]
        overrides = {"input_image": source, **PET_OVERRIDES[bundle]}
        final = tmp_path / "out" / Path(source).name.replace(".nii.gz", "_pct.nii.gz" if bundle == PCT else "_denoised.nii.gz")
    final.parent.mkdir(parents=True)
    final.write_bytes(b"the previous run's output")

    class Killed(BaseException):
        """A kill at the last moment of the write: the whole new file exists, it is not yet renamed."""

    real_replace = os.replace

    def killed_before_rename(src, dst, *args, **kwargs):
        if Path(dst).parent == final.parent:
            raise Killed(f"killed before {src} became {dst}")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", killed_before_rename)
    with pytest.raises(BaseException) as info:
        inference(bundle, tmp_path / "out", **overrides)
    chain, e = [], info.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, Killed) for x in chain), info.value
    assert final.read_bytes() == b"the previous run's output"  # never a half file under the final name
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # and no temporary leftover


_WRITER_LOOP = """
import sys, numpy as np
from pathlib import Path
target, kind = Path(sys.argv[1]), sys.argv[2]
arrays = [np.full((96, 96, 64), v, np.float32) + np.random.default_rng(0).random((96, 96, 64), dtype=np.float32) for v in (1.0, 2.0)]
if kind == "monai":
    from common.learning.writers import AtomicNibabelWriter
    def save(a):
        w = AtomicNibabelWriter(output_dtype=np.float32)
        w.set_data_array(a[None], channel_dim=0)
        w.set_metadata({"affine": np.eye(4), "original_affine": np.eye(4)}, resample=False)
        w.write(str(target))
else:
    from common.data import write_nifti
    def save(a):
        write_nifti(target, a, compresslevel=1)
i = 0
while True:
    save(arrays[i % 2])
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


@pytest.mark.parametrize("kind", ["common.data", "monai"])
def test_3_writers_killed_mid_write_leave_the_old_file_or_the_new_one(kind, tmp_path):
    target = tmp_path / "out" / "pred.nii.gz"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER_LOOP, str(target), kind], env=ENV, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        rng = np.random.default_rng(0)
        for _ in range(3):
            time.sleep(float(rng.uniform(0.05, 0.4)))
            header = check_nifti_file(target)  # whatever moment we look: a complete file
            assert header.shape == (96, 96, 64)
        time.sleep(float(rng.uniform(0.05, 0.4)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    value = float(np.median(read_nifti(target).array))  # after the kill: the old or the new file, whole
    assert 1.0 < value < 3.0 and value in (pytest.approx(1.5, abs=0.1), pytest.approx(2.5, abs=0.1))
    leftovers = [p.name for p in target.parent.iterdir() if p != target]
    assert all(p.startswith(".tmp-") for p in leftovers), leftovers  # at most a temporary file, never under a final name


# ------------------------------------------------------------------------------------------------
# 4. resume
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda p: p.name)
def test_4_every_training_config_checkpoints_what_resume_needs(bundle):
    config = json.loads((bundle / "configs" / "train.json").read_text())
    assert set(config["checkpoint_dict"]) == {"model", "optimizer", "lr_scheduler", "trainer"}
    saver = config["train"]["checkpoint_saver"]
    assert saver["_target_"] == "CheckpointSaver" and saver["epoch_level"] is True and saver["save_interval"] == 1
    assert saver["save_dict"] == "@checkpoint_dict"
    assert any("attach_resume(@train#trainer, @checkpoint_dict, @checkpoint_dir, @resume" in step for step in config["prepare"])


def _network(bundle: Path) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    return parser.get_parsed_content("network_def")


@pytest.mark.parametrize("bundle", ALL_BUNDLES, ids=lambda p: p.name)
def test_4_a_checkpoint_of_another_network_is_refused_in_one_line(bundle, pct_entry, denoise_entry, tmp_path):
    from ignite.engine import Engine

    other = ALL_BUNDLES[(ALL_BUNDLES.index(bundle) + 1) % len(ALL_BUNDLES)]
    net, foreign = _network(bundle), _network(other)
    optimizer = torch.optim.Adam(net.parameters())
    # a checkpoint of another bundle's training in the checkpoint folder: --resume true
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    torch.save({"model": foreign.state_dict(), "optimizer": torch.optim.Adam(foreign.parameters()).state_dict()},
               ckpt / "checkpoint_epoch=3.pt")  # fmt: skip
    with pytest.raises(InputError) as info:
        attach_resume(Engine(lambda e, b: None), {"model": net, "optimizer": optimizer}, ckpt, "true")
    assert_user_error_line(info.value, str(ckpt / "checkpoint_epoch=3.pt"), "for another network", "resume only from")
    # another bundle's model.pt as --pretrained
    with pytest.raises(InputError) as info:
        attach_pretrained(Engine(lambda e, b: None), net, other / "models" / "model.pt")
    assert_user_error_line(info.value, str(other / "models" / "model.pt"), "for another network", "--pretrained")
    # a pickled whole network (not a state_dict): weights_only refuses it
    pickled = tmp_path / "whole_model.pt"
    torch.save(foreign, pickled)
    with pytest.raises(InputError) as info:
        check_weights(pickled, net)
    assert_user_error_line(info.value, str(pickled), "not a weights file of tensors", "save network.state_dict() instead")
    assert "\x1b" not in str(info.value)  # no terminal colour codes from torch's message
    # a checkpoint cut short (a copy interrupted, a full disk)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((other / "models" / "model.pt").read_bytes()[:4096])
    with pytest.raises(InputError) as info:
        check_weights(cut, net)
    assert_user_error_line(info.value, str(cut), "not a weights file of tensors")
    # another bundle's weights as --model_path of inference: nothing is written
    if bundle == SPECT:
        study = write_spect_study(tmp_path / "in" / "scan.nii.gz", spect_counts())
        overrides = {"input_image": str(study)}
    elif bundle == DOSE:  # an activity and a CT on one grid
        overrides = {"input_image": pct_entry["nac"], "input_ct": pct_entry["ct"]}
    else:
        overrides = {"input_image": pct_entry["nac"] if bundle == PCT else denoise_entry["drf20"], **PET_OVERRIDES[bundle]}
    with pytest.raises(Exception) as info:
        inference(bundle, tmp_path / "out", model_path=str(other / "models" / "model.pt"), **overrides)
    assert_user_error_line(info.value, str(other / "models" / "model.pt"), "for another network", "--model_path")
    assert files_in(tmp_path / "out") == []


KILL_CONFIG = {
    "kill_at_iteration": 5,
    "kill_signal": 15,
    "run": [
        "@prepare",
        "$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED(once=@kill_at_iteration), "
        "lambda engine: os.kill(os.getpid(), @kill_signal))",
        "$@train#trainer.run()",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_4_training_killed_mid_epoch_resumes_with_the_same_epochs_and_lr_schedule(sig, tmp_path):
    data, out = tmp_path / "data", tmp_path / "models"
    with torch.random.fork_rng():
        generate_dataset("pet_nac_to_pct", data, n=4, seed=0, progress=False, params=TINY)  # 2 training subjects
    (tmp_path / "kill.json").write_text(json.dumps(KILL_CONFIG | {"kill_signal": int(sig)}))
    configs = PCT / "configs"
    num_epochs, lr = 4, 0.002

    def run(*config_files: str, resume: bool) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--bundle_root", str(PCT),
               "--config_file", str([str(configs / "train.json"), *config_files]), "--meta_file", str(configs / "metadata.json"),
               "--dataset_dir", str(data), "--output_dir", str(out), "--n_subjects", "4", "--dataset_params", json.dumps(TINY),
               "--num_epochs", str(num_epochs), "--val_interval", "100", "--patch_size", "[32, 32, 16]",
               "--pixdim", "[10.0, 10.0, 10.0]", "--roi_size", "[48, 48, 24]", "--learning_rate", str(lr),
               "--train#dataloader#batch_size", "1", "--resume", str(resume).lower()]  # fmt: skip
        return subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)

    # 2 training subjects, 1 volume (2 patches) per batch: 2 iterations per epoch; killed after iteration 5, in epoch 3
    killed = run(str(tmp_path / "kill.json"), resume=False)
    assert killed.returncode == -int(sig), killed.stderr[-3000:]
    left = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert left == ["checkpoint_epoch=2.pt"], left  # the last whole epoch, no half-written checkpoint
    resumed = run(resume=True)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    final = torch.load(out / "checkpoints" / f"checkpoint_epoch={num_epochs}.pt", weights_only=True)
    assert final["trainer"]["epoch_length"] == 2 and final["trainer"]["iteration"] == 2 * num_epochs  # ignite keeps no epoch
    assert final["lr_scheduler"]["last_epoch"] == num_epochs  # stepped once per epoch, never restarted
    lrs = [float(x) for x in __import__("re").findall(r"Current learning rate: ([0-9.e-]+)", resumed.stdout + resumed.stderr)]
    cosine = [lr * (1 + math.cos(math.pi * k / num_epochs)) / 2 for k in range(num_epochs + 1)]
    assert lrs == pytest.approx(cosine[3:], abs=1e-9), lrs  # epochs 3 and 4 only, on the schedule of an unbroken run
    assert (out / "model.pt").is_file()


# ------------------------------------------------------------------------------------------------
# 5. weights are read with weights_only=True
# ------------------------------------------------------------------------------------------------
def test_5_every_torch_load_reads_weights_only():
    import ast
    import inspect

    from monai.handlers import CheckpointLoader

    calls = []
    for path in [
        *REPO.glob("common/**/*.py"),
        *REPO.glob("scripts/**/*.py"),
        *REPO.glob("bundles/*/*/**/*.py"),
        *REPO.glob("tests/*.py"),
    ]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                    ok = any(
                        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                        for k in node.keywords
                    )
                    calls.append((f"{path.relative_to(REPO)}:{node.lineno}", ok))
    assert calls and [c for c, ok in calls if not ok] == []
    assert "weights_only=True" in inspect.getsource(CheckpointLoader.__call__)  # what the configs' handlers use


# ------------------------------------------------------------------------------------------------
# 6. property-based: shared transforms, metrics, noise, file checks
# ------------------------------------------------------------------------------------------------
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
shapes = st.tuples(*[st.integers(2, 9)] * 3)
spacings = st.tuples(*[st.floats(0.5, 12.0, allow_nan=False)] * 3)


@FAST
# >= 125 voxels: one negative voxel is then < 1% of the body (NEGATIVE_RULE counts a fraction, so on a 2x2x2
# image one clipped voxel is already 12.5%); scale <= 1e3: a negative below -500 would meet HU_RULE (absolute)
@given(
    shape=st.tuples(*[st.integers(5, 9)] * 3), seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3), small=st.floats(0.0, 0.04)
)
def test_6_emission_check_passes_positive_images_and_clips_small_negatives_only(shape, seed, scale, small):
    rng = np.random.default_rng(seed)
    arr = (rng.gamma(2.0, 1.0, size=(1, *shape)) * scale).astype(np.float32)
    out = CheckEmission()(torch.from_numpy(arr))
    assert torch.equal(torch.as_tensor(out), torch.from_numpy(arr))
    arr[0, 0, 0, 0] = -small * float(np.percentile(arr, 99.9))  # within the rule: clipped, never refused
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = CheckEmission()(torch.from_numpy(arr))
    assert float(torch.as_tensor(out).min()) >= 0 and tuple(out.shape) == arr.shape


@FAST
@given(shape=shapes, seed=st.integers(0, 2**16), offset=st.floats(-1e3, 1e3), scale=st.floats(1e-3, 1e3))
def test_6_metrics_are_zero_or_infinite_for_identical_images_and_ordered_by_error_size(shape, seed, offset, scale):
    rng = np.random.default_rng(seed)
    ref = torch.from_numpy(rng.random(shape) * scale + offset)
    ref[0, 0, 0] += scale  # never constant
    assert metrics.nrmse(ref, ref) == 0 and metrics.mae(ref, ref) == 0
    noise_ = torch.from_numpy(rng.standard_normal(shape))
    small, large = ref + 0.01 * scale * noise_, ref + 0.1 * scale * noise_
    assert 0 < metrics.nrmse(small, ref) < metrics.nrmse(large, ref)
    assert metrics.mae(large, ref) == pytest.approx(10 * metrics.mae(small, ref), rel=1e-6)
    assert metrics.mae(small, ref) == pytest.approx(metrics.mae(ref, small))
    if float(ref.max()) > 0:
        assert math.isinf(metrics.psnr(ref, ref)) and metrics.psnr(small, ref) > metrics.psnr(large, ref)


@FAST
@given(shape=st.tuples(*[st.integers(11, 14)] * 3), seed=st.integers(0, 2**16), scale=st.floats(1e-2, 1e4))
def test_6_ssim_is_one_for_identical_images_at_most_one_otherwise_and_scale_free(shape, seed, scale):
    rng = np.random.default_rng(seed)
    ref = torch.from_numpy(rng.random(shape)).float() + 0.1
    pred = ref + 0.2 * torch.from_numpy(rng.standard_normal(shape)).float()
    assert metrics.ssim(ref, ref) == pytest.approx(1.0, abs=1e-5)
    value = metrics.ssim(pred, ref)
    assert value <= 1.0 + 1e-6
    assert metrics.ssim(pred * scale, ref * scale) == pytest.approx(value, abs=1e-4)  # max-normalised


@FAST
@given(shape=shapes, seed=st.integers(0, 2**16), mean=st.floats(0.0, 500.0), fraction=st.floats(0.01, 1.0))
def test_6_thinning_and_splitting_keep_integer_counts_within_the_input(shape, seed, mean, fraction):
    g = torch.Generator().manual_seed(seed)
    counts = noise.poisson(torch.full(shape, mean, dtype=torch.float64), generator=g)
    assert torch.equal(counts, counts.round()) and counts.min() >= 0
    thinned = noise.thin(counts, fraction, generator=g)
    assert torch.equal(thinned, thinned.round()) and torch.all((0 <= thinned) & (thinned <= counts))
    first, second = noise.split_counts(counts, generator=g)
    assert torch.equal(first + second, counts) and first.min() >= 0 and second.min() >= 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=shapes, spacing=spacings, flip=st.booleans(), seed=st.integers(0, 2**16), cut=st.floats(0.05, 0.95))
def test_6_file_checks_accept_any_whole_3d_nifti_and_refuse_every_truncation(shape, spacing, flip, seed, cut, tmp_path_factory):
    folder = tmp_path_factory.mktemp("prop")
    affine = np.diag([*spacing, 1.0])
    if flip:
        affine[0, 0] *= -1
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    path = write_nifti(folder / "a.nii.gz", data, affine)
    header = check_nifti_file(path)
    assert header.shape == shape and header.spacing_mm == pytest.approx(spacing, rel=1e-5)
    check_same_grid(header, check_nifti_file(write_nifti(folder / "b.nii.gz", data * 2, affine)))
    with pytest.raises(InputError, match="not on the same grid"):
        check_same_grid(header, check_nifti_file(write_nifti(folder / "c.nii.gz", data, affine * np.diag([1, 1, 1.5, 1]))))
    raw = path.read_bytes()
    cut_path = folder / "cut.nii.gz"
    cut_path.write_bytes(raw[: max(1, int(len(raw) * cut))])
    with pytest.raises(InputError, match=str(cut_path)):
        check_nifti_file(cut_path)
