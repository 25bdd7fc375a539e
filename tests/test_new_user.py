"""A new user's first hour with the bundles (issue 20), one test per item, as the user meets it:
the stock ``python -m monai.bundle run`` from the repository root (as README and the bundles' docs
say), ``monai.bundle.download``/``load``, ``python -m scripts download`` from a fresh clone and
``python -m monai.bundle verify_metadata``. Subprocess runs cost about 10 s each (importing MONAI),
so the default suite keeps two of them (the one-line error of item 3) and in-process twins of the
rest; the full runs are ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser, ConfigWorkflow

from common.data import load_datalist, read_nifti
from common.errors import InputError, UserError, user_error
from common.learning.handlers import ProgressBar, ValidationHandler
from common.learning.workflow import common_folder
from common.physics import HU_RANGE
from common.simulation.datasets import generate_dataset

REPO = Path(__file__).resolve().parents[1]
PCT, DENOISE = REPO / "bundles" / "pet_nac_to_pct", REPO / "bundles" / "pet_lowdose_denoising"
SPECT = REPO / "bundles" / "spect_projection_completion"
TINY = {"shape": [48, 48, 24], "spacing_mm": [10.0, 10.0, 10.0], "n_angles": 48}
PCT_TINY = ["--pixdim", "[10.0, 10.0, 10.0]", "--roi_size", "[48, 48, 24]"]
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NM_DEBUG")} | {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def pct_studies(tmp_path_factory) -> Path:
    """Two tiny held-out pet_nac_to_pct subjects (each folder holds nac.nii.gz, ct.nii.gz, ac.nii.gz)."""
    with torch.random.fork_rng():
        datalist = generate_dataset("pet_nac_to_pct", tmp_path_factory.mktemp("pct") / "data", n=2, seed=1000,
                                    progress=False, params=TINY, test_only=True)  # fmt: skip
    return datalist.parent


@pytest.fixture(scope="module")
def denoise_study(tmp_path_factory) -> dict:
    """One tiny held-out low-dose study (DRF 20, SUV) of pet_lowdose_denoising."""
    with torch.random.fork_rng():
        datalist = generate_dataset("pet_lowdose_denoising", tmp_path_factory.mktemp("den") / "data", n=1, seed=1000,
                                    progress=False, params={**TINY, "dose_reduction_factors": [20]}, test_only=True)  # fmt: skip
    return load_datalist(datalist.parent, "test")[0]


def bundle_run(workflow: str, bundle: Path, *args: str, debug: bool = False) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run training|inference`` from the repository root, as the bundles' docs say."""
    rel = bundle.relative_to(REPO)
    configs = f"{rel}/configs/{'train' if workflow == 'training' else 'inference'}.json"
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--bundle_root", str(rel), "--config_file", configs,
           "--meta_file", f"{rel}/configs/metadata.json", *args]  # fmt: skip
    env = ENV | ({"NM_DEBUG": "1"} if debug else {})
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def assert_one_line_error(run: subprocess.CompletedProcess, *words: str) -> str:
    """rc != 0, the last line is ``error: <message>`` naming ``words``, the message appears once, no traceback."""
    assert run.returncode != 0
    output = run.stdout + run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), output[-3000:]
    for word in words:
        assert word in last, last
    assert output.count(last[len("error: "):]) == 1 and "Traceback" not in output, output[-3000:]
    return last


def _inference_workflow(bundle: Path, **overrides) -> ConfigWorkflow:
    configs = bundle / "configs"
    wf = ConfigWorkflow(config_file=str(configs / "inference.json"), meta_file=str(configs / "metadata.json"),
                        workflow_type="inference", bundle_root=str(bundle), **overrides)  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def _random_weights(bundle: Path, path: Path, seed: int = 0) -> Path:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


# ------------------------------------------------------------------------------------------------
# 1. batch outputs named by subject, never on one name
# ------------------------------------------------------------------------------------------------
def test_1_outputs_keep_each_input_path_below_their_common_folder():
    items = [{"image": "/d/subjects/a/nac.nii.gz"}, {"image": "/d/subjects/b/nac.nii.gz"}]
    assert common_folder(items) == "/d/subjects"
    assert common_folder(items[:1]) == "/d/subjects/a"  # one study: its output lands in output_dir itself
    assert common_folder([{"image": "/x/nac.nii.gz"}, {"image": "/y/z/nac.nii.gz"}]) == "/"  # never '..'


def test_1_batch_pseudo_ct_writes_one_file_per_subject(pct_studies, tmp_path):
    # a user's dataset whose subjects all hold nac.nii.gz, in folders of different depths
    data = tmp_path / "mine"
    entries = load_datalist(pct_studies, "test")
    test = []
    for entry, rel in zip([*entries, entries[0]], ["p1/nac.nii.gz", "p2/nac.nii.gz", "site2/p1/nac.nii.gz"]):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(entry["nac"], data / rel)
        test.append({"nac": rel})
    (data / "datalist.json").write_text(json.dumps({"test": test}))
    out = tmp_path / "out"
    _inference_workflow(PCT, dataset_dir=str(data), output_dir=str(out), pixdim=[10.0] * 3, roi_size=[48, 48, 24])
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert written == ["p1/nac_pct.nii.gz", "p2/nac_pct.nii.gz", "site2/p1/nac_pct.nii.gz"]


# ------------------------------------------------------------------------------------------------
# 2. the wrong kind of image is refused: AC as NAC (and NAC as AC), a DRF beyond training
# ------------------------------------------------------------------------------------------------
def _denoise_preprocessing(**overrides):
    parser = ConfigParser()
    parser.read_config(str(DENOISE / "configs" / "inference.json"))
    parser["bundle_root"] = str(DENOISE)
    for k, v in overrides.items():
        parser[k] = v
    return parser.get_parsed_content("preprocessing")


def test_2_dose_reduction_factor_above_the_trained_range_is_refused_naming_the_fix(denoise_study):
    item = {"image": denoise_study["drf20"], "units": "SUV"}
    with pytest.raises(Exception) as info:
        _denoise_preprocessing()({**item, "drf": 1000})
    found = user_error(info.value)
    assert isinstance(found, InputError) and "4-100" in str(found) and "--dose_reduction_factor 100" in str(found)
    with pytest.warns(UserWarning, match="below the 4-100"):
        _denoise_preprocessing()({**item, "drf": 2})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for drf in (4, 20, 100):
            _denoise_preprocessing()({**item, "drf": drf})
    assert not [w for w in caught if "trained on" in str(w.message)]


def test_2_a_nac_given_to_the_denoiser_is_refused_and_ac_check_warn_lets_it_through(pct_studies):
    nac = load_datalist(pct_studies, "test")[0]["nac"]
    with pytest.raises(Exception) as info:
        _denoise_preprocessing()({"image": nac, "units": "SUV", "drf": 20})
    assert "looks non-attenuation-corrected" in str(user_error(info.value)) and "--ac_check warn" in str(user_error(info.value))
    with pytest.warns(UserWarning, match="looks non-attenuation-corrected"):
        _denoise_preprocessing(ac_check="warn")({"image": nac, "units": "SUV", "drf": 20})


@pytest.mark.slow
def test_2_attenuation_corrected_pet_given_as_nac_is_refused_by_the_stock_runner(pct_studies, tmp_path):
    ac = load_datalist(pct_studies, "test")[0]["ac"]
    run = bundle_run("inference", PCT, "--input_image", ac, "--output_dir", str(tmp_path / "out"), *PCT_TINY)
    assert_one_line_error(run, ac, "looks attenuation-corrected", "--ac_check warn")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.nii.gz"))


@pytest.mark.slow
def test_2_dose_reduction_factor_1000_is_refused_by_the_stock_runner(denoise_study, tmp_path):
    run = bundle_run("inference", DENOISE, "--input_image", denoise_study["drf20"], "--output_dir", str(tmp_path / "out"),
                     "--units", "SUV", "--dose_reduction_factor", "1000", "--pixdim", "[10.0, 10.0, 10.0]")  # fmt: skip
    assert_one_line_error(run, denoise_study["drf20"], "1000", "--dose_reduction_factor 100")


# ------------------------------------------------------------------------------------------------
# 3. an input check's message as the last line, once, with the file name; traceback on request
# ------------------------------------------------------------------------------------------------
def test_3_a_ct_given_as_nac_ends_the_run_with_one_line_naming_the_file(pct_studies, tmp_path):
    ct = load_datalist(pct_studies, "test")[0]["ct"]
    run = bundle_run("inference", PCT, "--input_image", ct, "--output_dir", str(tmp_path / "out"), *PCT_TINY)
    assert_one_line_error(run, ct, "looks like a CT in HU", "give the NAC PET image")


def test_3_a_missing_input_ends_the_run_with_one_line(tmp_path):
    missing = str(tmp_path / "pet.nii.gz")
    run = bundle_run("inference", DENOISE, "--input_image", missing, "--output_dir", str(tmp_path / "out"))
    assert_one_line_error(run, missing, "input image not found (--input_image)")


@pytest.mark.slow
def test_3_nm_debug_shows_the_traceback(pct_studies, tmp_path):
    ct = load_datalist(pct_studies, "test")[0]["ct"]
    run = bundle_run("inference", PCT, "--input_image", ct, "--output_dir", str(tmp_path / "out"), *PCT_TINY, debug=True)
    assert run.returncode != 0 and "Traceback" in run.stderr and "looks like a CT in HU" in run.stderr
    assert not run.stderr.strip().splitlines()[-1].startswith("error: ")


def test_3_excepthook_prints_the_user_error_of_the_chain_and_bugs_keep_their_traceback(capsys):
    from common import errors

    try:
        try:
            raise InputError("/x/ct.nii.gz: NAC PET looks like a CT in HU")
        except InputError as e:
            raise RuntimeError("applying transform <CheckEmissiond>") from e
    except RuntimeError as outer:
        try:
            raise RuntimeError('Failed to evaluate ConfigExpression: "$@evaluator.run()"') from outer
        except RuntimeError as top:
            errors._excepthook(type(top), top, top.__traceback__)
            bug = ZeroDivisionError("division by zero")
            errors._excepthook(type(bug), bug, None)
    err = capsys.readouterr().err
    assert err.startswith("error: /x/ct.nii.gz: NAC PET looks like a CT in HU\n")
    assert err.rstrip().endswith("ZeroDivisionError: division by zero")  # a bug: Python's own report
    assert isinstance(user_error(FileNotFoundError("x")), FileNotFoundError) and issubclass(InputError, ValueError)


# ------------------------------------------------------------------------------------------------
# 4. one way to run one study in every bundle: --input_image and per-study ids
# ------------------------------------------------------------------------------------------------
def test_4_and_8_denoising_runs_one_study_from_input_image_and_writes_no_negative_suv(denoise_study, tmp_path):
    out = tmp_path / "out"
    weights = _random_weights(DENOISE, tmp_path / "random.pt")  # untrained: its raw output goes negative
    _inference_workflow(DENOISE, input_image=denoise_study["drf20"], output_dir=str(out), units="SUV",
                        dose_reduction_factor=20, model_path=str(weights), pixdim=[10.0] * 3)  # fmt: skip
    written = sorted(out.rglob("*.nii.gz"))
    assert [p.relative_to(out).as_posix() for p in written] == ["drf20_denoised.nii.gz"]
    image = nib.load(written[0])
    assert image.shape == nib.load(denoise_study["drf20"]).shape and float(np.min(image.dataobj)) >= 0.0


@pytest.mark.slow
def test_4_readme_input_image_command_runs_for_the_denoiser_or_names_the_missing_fact(denoise_study, tmp_path):
    common = ["--input_image", denoise_study["drf20"], "--output_dir", str(tmp_path / "out"), "--pixdim", "[10.0, 10.0, 10.0]"]
    assert_one_line_error(bundle_run("inference", DENOISE, *common), "--weight_kg", "--units SUV")
    done = bundle_run("inference", DENOISE, *common, "--units", "SUV", "--dose_reduction_factor", "20")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "drf20_denoised.nii.gz").is_file()


# ------------------------------------------------------------------------------------------------
# 5. a dataset folder made with another seed: the hint names --data_seed
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_5_training_on_a_dataset_made_with_another_seed_names_data_seed(tmp_path):
    data = tmp_path / "data"
    with torch.random.fork_rng():
        generate_dataset("pet_nac_to_pct", data, n=4, seed=5, progress=False, params=TINY)
    run = bundle_run("training", PCT, "--dataset_dir", str(data), "--output_dir", str(tmp_path / "models"), "--n_subjects", "4",
                     "--dataset_params", json.dumps(TINY), "--num_epochs", "1")  # fmt: skip
    assert_one_line_error(run, str(data), "--data_seed 5")


def test_5_the_seed_hint_is_a_user_error(tmp_path):
    from common.simulation import datasets as DS

    with torch.random.fork_rng():
        generate_dataset("pet_nac_to_pct", tmp_path / "d", n=3, seed=5, progress=False, params=TINY)  # make_dataset --seed 5
    with pytest.raises(UserError, match="pass --data_seed 5"):
        DS.ensure_dataset("pet_nac_to_pct", tmp_path / "d", n=3, seed=0, progress=False, params=TINY)


# ------------------------------------------------------------------------------------------------
# 6. monai.bundle.download / load of our zips give a network, without generating data
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bundle", [PCT, DENOISE, SPECT], ids=lambda p: p.name)
def test_6_monai_download_and_load_of_our_zip_return_the_trained_network(bundle, tmp_path, monkeypatch):
    from monai.bundle import download, load

    from scripts.package import package_bundle

    entry = package_bundle(bundle, dist=tmp_path / "dist", zoo=tmp_path / "zoo.json")
    dest = tmp_path / "hub"
    download(bundle.name, bundle_dir=str(dest), url=(tmp_path / "dist" / f"{bundle.name}_v{entry['version']}.zip").as_uri())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the configs' import idiom inserts bundle_root
    expected = torch.load(bundle / "models" / "model.pt", weights_only=True)
    for workflow_type in ("train", "inference"):
        net = load(bundle.name, bundle_dir=str(dest), workflow_type=workflow_type, device="cpu", progress=False)
        assert all(torch.equal(net.state_dict()[k], v) for k, v in expected.items()), workflow_type
    shipped = [p.name for p in bundle.iterdir() if p.name not in ("data", "eval", "runs")] + ["common"]
    assert list(cwd.iterdir()) == [] and sorted(p.name for p in (dest / bundle.name).iterdir()) == sorted(shipped)
    assert not (dest / bundle.name / "models" / "checkpoints").exists()  # nothing generated, nowhere


# ------------------------------------------------------------------------------------------------
# 7. python -m scripts download works from a fresh clone (no dist/) for every listed version
# ------------------------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True)


def test_7_a_missing_archive_is_rebuilt_from_the_commit_that_recorded_it(tiny_bundle, tmp_path):
    from scripts.download import install_bundle
    from scripts.package import COMMON_DIR, package_bundle

    repo = tmp_path / "repo"
    shutil.copytree(tiny_bundle, repo / "bundles" / "tiny_bundle", ignore=shutil.ignore_patterns("data", "__pycache__"))
    shutil.copytree(COMMON_DIR, repo / "common", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / ".gitignore").write_text("dist/\n__pycache__/\n")
    package_bundle(repo / "bundles" / "tiny_bundle", repo / "dist", repo / "model_zoo.json", repo / "common")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "package 0.1.0")
    (repo / "bundles" / "tiny_bundle" / "docs" / "README.md").write_text("changed after packaging\n")
    _git(repo, "commit", "-qam", "later work")
    shutil.rmtree(repo / "dist")  # what a fresh clone has
    target = install_bundle("tiny_bundle", "0.1.0", dest=tmp_path / "dest", zoo=repo / "model_zoo.json")
    assert (target / "docs" / "README.md").read_text() != "changed after packaging\n"  # the recorded files
    shutil.rmtree(repo / ".git")  # a copy without history cannot rebuild it: say what to do
    with pytest.raises(ValueError, match="python -m scripts package tiny_bundle.*or remove that entry"):
        install_bundle("tiny_bundle", "0.1.0", dest=tmp_path / "dest2", zoo=repo / "model_zoo.json")


@pytest.mark.slow
def test_7_every_version_in_model_zoo_downloads_from_a_fresh_clone(tmp_path):
    from scripts.download import install_bundle

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    zoo = json.loads((clone / "model_zoo.json").read_text())
    assert not (clone / "dist").exists()
    for name, versions in zoo.items():
        for version in versions:
            target = install_bundle(name, version, dest=tmp_path / "dest" / version, zoo=clone / "model_zoo.json")
            assert json.loads((target / "configs" / "metadata.json").read_text())["version"] == version


# ------------------------------------------------------------------------------------------------
# 8. physically valid outputs (SUV >= 0 above; HU within the documented range)
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_8_shipped_denoiser_on_a_4mm_torso_writes_no_negative_suv_and_the_pseudo_ct_stays_in_range(tmp_path):
    with torch.random.fork_rng():
        datalist = generate_dataset("pet_lowdose_denoising", tmp_path / "d", n=1, seed=1000, progress=False,
                                    params={"dose_reduction_factors": [20]}, test_only=True)  # fmt: skip
    study = load_datalist(datalist.parent, "test")[0]
    run = bundle_run("inference", DENOISE, "--input_image", study["drf20"], "--output_dir", str(tmp_path / "out"),
                     "--units", "SUV", "--dose_reduction_factor", "20")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert float(read_nifti(tmp_path / "out" / "drf20_denoised.nii.gz").array.min()) >= 0.0
    with torch.random.fork_rng():
        pct = generate_dataset("pet_nac_to_pct", tmp_path / "p", n=1, seed=1000, progress=False, test_only=True)
    nac = load_datalist(pct.parent, "test")[0]["nac"]
    run = bundle_run("inference", PCT, "--input_image", nac, "--output_dir", str(tmp_path / "pct"))
    assert run.returncode == 0, run.stderr[-3000:]
    hu = read_nifti(tmp_path / "pct" / "nac_pct.nii.gz").array
    assert HU_RANGE[0] <= hu.min() and hu.max() <= HU_RANGE[1]


# ------------------------------------------------------------------------------------------------
# 9. training: progress bar, TensorBoard under output_dir, model.pt from any completed run
# ------------------------------------------------------------------------------------------------
def test_9_validation_runs_at_the_interval_and_after_the_last_epoch():
    validated = []

    class Validator:
        def run(self, epoch):
            validated.append(epoch)

    for max_epochs, expected in ((7, [5, 7]), (10, [5, 10]), (1, [1])):
        trainer = Engine(lambda engine, batch: {"loss": 0.5})
        handler = ValidationHandler(interval=5, epoch_level=True)
        handler.validator = Validator()  # set_validator wants a MONAI Evaluator; this one only records epochs
        handler.attach(trainer)
        validated.clear()
        trainer.run([0, 1], max_epochs=max_epochs)
        assert validated == expected


def test_9_progress_bar_shows_the_loss_when_attached_the_monai_way(capsys):
    trainer = Engine(lambda engine, batch: [{"loss": torch.tensor(0.25)}])
    ProgressBar(output_key="loss", persist=True).attach(trainer)
    trainer.run([0, 1, 2], max_epochs=1)
    assert "loss=0.25" in capsys.readouterr().err


@pytest.mark.slow
def test_9_one_epoch_with_validation_every_5_leaves_model_pt_tensorboard_in_output_dir_and_a_bar(pct_studies, tmp_path):
    data = tmp_path / "data"
    with torch.random.fork_rng():
        generate_dataset("pet_nac_to_pct", data, n=4, seed=0, progress=False, params=TINY)
    out = tmp_path / "models"
    before = set(PCT.rglob("events.out.tfevents.*"))
    run = bundle_run("training", PCT, "--dataset_dir", str(data), "--output_dir", str(out), "--n_subjects", "4",
                     "--dataset_params", json.dumps(TINY), "--num_epochs", "1", "--val_interval", "5",
                     "--patch_size", "[32, 32, 16]", *PCT_TINY)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert list((out / "runs").glob("events.out.tfevents.*")) and set(PCT.rglob("events.out.tfevents.*")) == before
    assert re.search(r"loss=\d", run.stderr)  # the progress bar
    assert "train_loss:" not in run.stdout + run.stderr  # no loss line per iteration


# ------------------------------------------------------------------------------------------------
# 10. verify_metadata offline with the schema the repository ships
# ------------------------------------------------------------------------------------------------
VERIFY = (
    "python -m monai.bundle verify_metadata --meta_file bundles/{name}/configs/metadata.json"
    " --filepath scripts/bundle_schema.json"
)


@pytest.mark.parametrize("bundle", [PCT, DENOISE, SPECT], ids=lambda p: p.name)
def test_10_verify_metadata_works_offline_with_the_documented_filepath(bundle, monkeypatch):
    import urllib.request

    from monai.bundle import verify_metadata

    def offline(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    monkeypatch.chdir(REPO)
    verify_metadata(meta_file=f"bundles/{bundle.name}/configs/metadata.json", filepath="scripts/bundle_schema.json")
    assert VERIFY.format(name="<name>") in (REPO / "README.md").read_text()  # the documented command


@pytest.mark.slow
def test_10_documented_verify_metadata_command_passes():
    cmd = VERIFY.format(name="pet_nac_to_pct").split()
    run = subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "metadata is verified with no error" in run.stdout + run.stderr, run.stderr[-2000:]
