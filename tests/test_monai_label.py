"""Every servable bundle served by a real MONAI Label server (``monailabel start_server``) on 127.0.0.1.

The server is MONAI Label's own ``start_server`` run through ``python -m scripts.label_app`` (the
``monailabel`` command after two import fixes this environment needs: scripts/label_app/lib/compat.py).

One server for the module: a private copy of ``scripts/label_app`` with the bundles linked under
its ``model/`` folder (``scripts.label_server.link_bundles``), one synthetic held-out study per
bundle (``make_studies``), a free port. Each bundle's ``/infer`` answer must be float32 NIfTI in
the bundle's output units, equal to what the bundle's own ``python -m monai.bundle run inference``
writes for the same study: on the input's grid and affine for the ``SaveImaged`` bundles; for
``spect_projection_completion`` (a sparse-view acquisition with its JSON sidecar in, written by
the bundle's own saver) all views, the acquired ones unchanged, with the completed sidecar in the
response's params; for ``dose_rate_prediction`` (activity as the study, its CT named in the request
parameter ``input_ct``) the dose rate in Gy/s. Client mistakes get 4xx and leave the server running.
Request times (first and second request per bundle) are printed.

The served bundles are the repository's bundle folders with their weights copied (a training run
may rewrite ``models/model.pt`` while this runs; the server and the reference run must load the
same weights; other files of ``models/``, e.g. the dose bundle's VSV kernel, are linked) and
without their ``data/`` folders (a request must not need one).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

from scripts.label_app.lib.bundles import WEIGHTS, extra_images, own_saver
from scripts.label_server import BUNDLES_DIR, choose_bundles, link_bundles, make_studies, server_command

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SERVED, SKIPPED = choose_bundles()
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 600
#: small dataset-task params per bundle (the shipped networks take any size); the others: full size
STUDY_PARAMS = {
    "spect_projection_completion": {
        "shape": [32, 32, 24],
        "spacing_mm": [16.0, 16.0, 16.0],
        "n_views": 24,
        "n_iters": 2,
        "n_subsets": 4,
    },
    # the study is the activity and the CT; the subject's Monte Carlo dose (25 s at the defaults) is not used
    "dose_rate_prediction": {"n_photons": 20_000, "n_electrons": 200_000, "n_batches": 2},
}
NOT_SERVED = {"models", "data", "eval", "runs", "__pycache__", ".ruff_cache"}  # of a bundle folder


def _config(name: str) -> dict:
    return json.loads((SERVED[name] / "configs" / "inference.json").read_text())


def _snapshot_bundle(bundle: Path, dst: Path, tries: int = 5) -> Path:
    """``bundle`` as served: its files linked, its weights copied (checked to load: a training
    run may be writing them)."""
    import torch

    dst.mkdir(parents=True)
    for entry in bundle.iterdir():
        if entry.name not in NOT_SERVED:
            (dst / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    (dst / "models").mkdir()
    for entry in (bundle / "models").iterdir():  # e.g. a precomputed kernel the inference reads
        if entry.is_file() and entry.name not in WEIGHTS:
            (dst / "models" / entry.name).symlink_to(entry.resolve())
    for weights in WEIGHTS:
        src = bundle / "models" / weights
        if not src.is_file():
            continue
        for attempt in range(tries):
            shutil.copyfile(src, dst / "models" / weights)
            try:
                if weights.endswith(".pt"):
                    torch.load(dst / "models" / weights, map_location="cpu", weights_only=True)
                break
            except Exception:  # caught mid-write: copy again
                if attempt == tries - 1:
                    raise
                time.sleep(2)
    return dst


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path, n: int = 40) -> str:
    return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-n:]) if log.exists() else "(no log)"


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path, studies: Path, manifest: dict, start_s: float,
                 bundles: dict[str, Path]):  # fmt: skip
        self.url, self.proc, self.log, self.studies, self.manifest, self.start_s = url, proc, log, studies, manifest, start_s
        self.bundles = bundles  # the served copies
        self.times: dict[str, list[float]] = {}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def study(self, model: str) -> tuple[str, dict]:
        return next((k, v) for k, v in self.manifest.items() if v["model"] == model)

    def infer(self, model: str, image: str, params=None, output: str = "image") -> requests.Response:
        files = None if params is None else {"params": (None, params if isinstance(params, str) else json.dumps(params))}
        return requests.post(f"{self.url}/infer/{model}", params={"image": image, "output": output}, files=files,
                             timeout=REQUEST_TIMEOUT_S)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    if importlib.util.find_spec("monailabel") is None:
        pytest.fail("MONAI Label is not installed in this venv: run `python3 scripts/bootstrap.py` (label extra)")
    assert SERVED, f"no servable bundle under {BUNDLES_DIR}: {SKIPPED}"
    tmp = tmp_path_factory.mktemp("monai_label")
    runtime = shutil.ignore_patterns("model", "logs", "bin", "__pycache__")  # made by the server or by link_bundles
    app = Path(shutil.copytree(ROOT / "scripts" / "label_app", tmp / "app", ignore=runtime))
    bundles = {name: _snapshot_bundle(path, tmp / "bundles" / name) for name, path in SERVED.items()}
    link_bundles(app, bundles)
    studies = tmp / "studies"
    manifest = make_studies(studies, bundles, n=1, progress=False, dataset_params=STUDY_PARAMS)
    port = _free_port()
    log = tmp / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = server_command(app, studies, SERVED, host="127.0.0.1", port=port)  # monailabel start_server, import fixes first
    t0 = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"monailabel start_server exited with {proc.returncode}:\n{_tail(log)}")
            if time.time() - t0 > START_TIMEOUT_S:
                pytest.fail(f"no answer on {url}/info/ within {START_TIMEOUT_S} s:\n{_tail(log)}")
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        srv = Server(url, proc, log, studies, manifest, time.time() - t0, bundles)
        yield srv
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # uvicorn shuts down cleanly on Ctrl-C
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_info_lists_the_servable_bundles_as_image_models(server):
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    assert sorted(info["models"]) == sorted(SERVED)
    for name, model in info["models"].items():
        assert model["type"] == "others" and model["labels"] == {}, name
    assert info["skipped"] == {}  # every bundle linked into the app is served; those left out never reached it
    # each study, and the further images (a dose-rate study's CT) as studies of their own
    assert info["datastore"]["total"] == sum(1 + len(extra_images(_config(m["model"]))) for m in server.manifest.values())


def _reference(server: Server, tmp_path: Path, name: str, image_id: str, params: dict) -> tuple[nib.Nifti1Image, dict | None]:
    """The bundle's own stock inference on the same study file: the image it writes and the JSON
    sidecar beside it (None when it writes none)."""
    bundle = server.bundles[name]
    study = next(server.studies.glob(f"{image_id}.nii*"))
    out = tmp_path / "reference"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--bundle_root", str(bundle),
           "--config_file", str(bundle / "configs" / "inference.json"), "--meta_file", str(bundle / "configs" / "metadata.json"),
           "--input_image", str(study), "--output_dir", str(out)]  # fmt: skip
    for key, value in params.items():
        if key in extra_images(_config(name)):  # a study id: the file, as --input_ct takes it
            value = next(server.studies.glob(f"{value}.nii*"))
        cmd += [f"--{key}", str(value)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (written,) = sorted(out.rglob("*.nii*"))
    sidecar = written.with_name(written.name.split(".nii")[0] + ".json")
    return nib.load(written), (json.loads(sidecar.read_text()) if sidecar.is_file() else None)


@pytest.mark.parametrize("name", sorted(SERVED))
def test_infer_returns_the_bundle_output_as_float32_nifti(server, tmp_path, name, capsys):
    image_id, study = server.study(name)
    times = []
    for _ in range(2):  # the first request loads the network, the second shows the steady state
        t0 = time.time()
        r = server.infer(name, image_id, study["params"])
        times.append(time.time() - t0)
        assert r.status_code == 200, r.text[:2000]
    result = tmp_path / "result.nii.gz"
    result.write_bytes(r.content)
    got = nib.load(result)
    given = nib.load(next(server.studies.glob(f"{image_id}.nii*")))
    ref, ref_sidecar = _reference(server, tmp_path, name, image_id, study["params"])

    assert got.get_data_dtype() == np.float32
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-4)
    x, y = got.get_fdata(dtype=np.float32), ref.get_fdata(dtype=np.float32)
    assert np.isfinite(x).all() and x.max() > x.min()
    assert not np.array_equal(x, np.round(x)), "integer-valued output: was it cast?"
    output = json.loads((SERVED[name] / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]
    if output["format"] == "hounsfield":
        assert -1100 <= x.min() and x.max() <= 4000, (x.min(), x.max())
    if name == "dose_rate_prediction":  # Gy/s (~1e-4 in a Lu-177 hot spot), not the network's scaled units (~1-100)
        assert 0 <= x.min() and 0 < x.max() < 1e-2, (x.min(), x.max())
    scale = float(np.abs(y).max()) or 1.0  # relative to the output's range (Gy/s values are ~1e-4)
    np.testing.assert_allclose([x.min(), x.max()], [y.min(), y.max()], atol=1e-4 * scale)
    np.testing.assert_allclose(x, y, atol=1e-4 * scale)

    sidecar = None
    if own_saver(_config(name)) is None:  # SaveImaged bundles: the input's grid and affine
        assert got.shape == given.shape
        np.testing.assert_allclose(got.affine, given.affine, atol=1e-4)
        assert ref_sidecar is None
    else:  # the bundle's own file, and the sidecar it writes beside it in the response's params
        params = server.infer(name, image_id, study["params"], output="json")
        assert params.status_code == 200, params.text[:2000]
        sidecar = params.json().get("sidecar")
        assert sidecar == ref_sidecar
    if name == "spect_projection_completion":  # all views in counts, the acquired ones as measured
        f = int(_config(name)["sparse_factor"])
        views = given.shape[2] * f
        assert got.shape == (*given.shape[:2], views)
        assert x.min() >= 0
        np.testing.assert_allclose(x[..., ::f], given.get_fdata(dtype=np.float32), rtol=1e-5, atol=1e-3)
        acquired = json.loads(next(server.studies.glob(f"{image_id}.json")).read_text())
        assert len(sidecar["angles_deg"]) == views and sidecar["acquired_views"] == list(range(0, views, f))
        np.testing.assert_allclose(sidecar["angles_deg"][::f], acquired["angles_deg"], atol=1e-9)
        assert sidecar["nuclide"] == acquired["nuclide"] and sidecar["time_per_view_s"] == acquired["time_per_view_s"]

    server.times[name] = times
    with capsys.disabled():
        print(f"\n[monai label] {name}: {given.shape} voxels in, {got.shape} out, request {times[0]:.2f} s (first, loads "
              f"the network), {times[1]:.2f} s (second); server start {server.start_s:.1f} s")  # fmt: skip


def test_client_mistakes_get_4xx_and_the_server_keeps_serving(server, tmp_path):
    name = min(SERVED)
    image_id, study = server.study(name)
    numeric = [n for n in sorted(SERVED) if any(isinstance(v, (int, float)) for v in server.study(n)[1]["params"].values())]
    with_facts = (numeric[0], server.study(numeric[0])) if numeric else None

    cases = [
        ("unknown model", "no_such_model", image_id, study["params"], 404),
        ("unknown image", name, "no_such_study", study["params"], 404),
        ("params not JSON", name, image_id, '{"units": ', 400),
        ("params not an object", name, image_id, "[1, 2]", 400),
    ]
    if with_facts is not None:  # a per-study fact the bundle's checks refuse
        fname, (fid, fstudy) = with_facts
        facts = fstudy["params"]
        numeric = next(k for k, v in facts.items() if isinstance(v, (int, float)))
        cases.append((f"{numeric} not a number", fname, fid, {**facts, numeric: "not-a-number"}, 422))
        if "dose_reduction_factor" in facts:
            cases.append(("dose reduction factor below 1", fname, fid, {**facts, "dose_reduction_factor": 0.5}, 422))
        if "units" in facts:
            cases.append(("unknown units", fname, fid, {**facts, "units": "furlongs"}, 422))
    if "pet_nac_to_pct" in SERVED:  # the wrong kind of image: the subject's CT (a server-side path) sent as NAC PET
        _, nac = server.study("pet_nac_to_pct")
        cases.append(("a CT sent as NAC PET", "pet_nac_to_pct", str(Path(nac["source"]).with_name("ct.nii.gz")), {}, 422))
    if "spect_projection_completion" in SERVED:  # bad sparse-view acquisitions (server-side paths)
        cases += _bad_projection_studies(server, tmp_path)
    if "dose_rate_prediction" in SERVED:  # the CT: not given, unknown, the activity sent as CT
        did, dstudy = server.study("dose_rate_prediction")
        no_ct = {k: v for k, v in dstudy["params"].items() if k != "input_ct"}
        cases += [
            ("dose rate without its CT", "dose_rate_prediction", did, no_ct, 422),
            ("dose rate with an unknown CT", "dose_rate_prediction", did, {**no_ct, "input_ct": "no_such_ct"}, 404),
            ("dose rate with the activity as CT", "dose_rate_prediction", did, {**no_ct, "input_ct": did}, 422),
        ]
    details = {}
    for what, model, image, params, status in cases:
        r = server.infer(model, image, params, output="json")
        assert r.status_code == status, f"{what}: HTTP {r.status_code} {r.text[:500]}"
        details[what] = r.json().get("detail")
        assert details[what], what
        assert server.alive(), f"server died after {what}:\n{_tail(server.log)}"
    if "dose_rate_prediction" in SERVED:  # the answer names the parameter or the CT it could not find
        assert "input_ct" in details["dose rate without its CT"]
        assert "no_such_ct" in details["dose rate with an unknown CT"]

    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200
    for model in sorted(SERVED):
        image_id, study = server.study(model)
        r = server.infer(model, image_id, study["params"], output="json")
        assert r.status_code == 200, f"{model}: {r.text[:2000]}"


def _bad_projection_studies(server: Server, tmp_path: Path) -> list[tuple]:
    """``spect_projection_completion`` studies its checks refuse (each 422): no sidecar, negative
    counts, angles that do not match the views."""
    name = "spect_projection_completion"
    image_id, _ = server.study(name)
    study = next(server.studies.glob(f"{image_id}.nii*"))
    img = nib.load(study)
    header = json.loads(study.with_name(f"{image_id}.json").read_text())
    counts = img.get_fdata(dtype=np.float32)

    def write(stem: str, array: np.ndarray, sidecar: dict | None) -> str:
        path = tmp_path / f"{stem}.nii.gz"
        nib.save(nib.Nifti1Image(array.astype(np.float32), img.affine), path)
        if sidecar is not None:
            (tmp_path / f"{stem}.json").write_text(json.dumps(sidecar))
        return str(path)

    negative = counts.copy()
    negative[0, 0, 0] = -5.0
    return [
        ("projections without their sidecar", name, write("no_sidecar", counts, None), {}, 422),
        ("negative counts", name, write("negative", negative, header), {}, 422),
        (
            "angles that do not match the views",
            name,
            write("angles", counts, {**header, "angles_deg": header["angles_deg"][:-1]}),
            {},
            422,
        ),
    ]
