"""``python -m scripts label_server``: serve the bundles with a real MONAI Label server, offline.

Examples::

    python -m scripts label_server                                  # every servable bundle, port 8000
    python -m scripts label_server --bundles pet_nac_to_pct --studies my_studies --port 8010
    python -m scripts label_server --dry_run true                   # prepare, print the command, exit

It (1) links each chosen bundle into the app's model folder (``scripts/label_app/model/<name>``,
git-ignored), (2) makes sure the studies folder holds ``n_studies`` synthetic held-out studies
per bundle (simulated with the bundle's dataset task, seed ``data_seed + 4000``; the main job
uses ``+ 2000`` and ``+ 3000``) and lists them, with the request parameters each needs, in
``<studies>/label_studies.json``, and (3) runs ``monailabel start_server --app scripts/label_app
--studies DIR --host 127.0.0.1 --port P --conf models a,b`` (through ``python -m scripts.label_app``,
which fixes two imports first: ``scripts/label_app/lib/compat.py``) until Ctrl-C. Images of your own
(``*.nii.gz``) can sit in the same folder. Nothing is downloaded at run time.

A study is what the bundle's own ``--input_image`` takes. For most bundles that is the NIfTI its
test items name, copied as it is; ``spect_projection_completion`` takes a sparse-view acquisition,
so its study is made from the subject's ``raw.npz`` (all views): every ``sparse_factor``-th view as
NIfTI ``(u, v, views)`` with its JSON sidecar beside it (:data:`STUDY_MAKERS`). A bundle that
takes a second image (``dose_rate_prediction``: ``--input_ct``) gets it as a study of its own,
``<study>_<key>.nii.gz`` (``..._ct``), named in the study's request parameter ``input_<key>``.

A bundle is served when it is image in, image out as NIfTI (``scripts/label_app/lib/bundles.py``);
the others are listed with their reason and skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from scripts.label_app.lib.bundles import NIFTI_EXTS, extra_images, find_bundles, study_facts

ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = ROOT / "bundles"
APP_DIR = ROOT / "scripts" / "label_app"
#: held-out seeds of the served studies: data_seed + this (DESIGN 4: held-out >= data_seed + 1000)
STUDY_SEED_OFFSET = 4000
MANIFEST = "label_studies.json"
SOURCES = ".sources"  # generated datasets, inside the studies folder (MONAI Label lists only its top-level files)


def _names(value: Any) -> list[str] | None:
    """fire gives ``--bundles a,b`` as a tuple and ``--bundles a`` as a str."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, Iterable) else None
    if items is None or not all(isinstance(i, str) for i in items):
        raise ValueError(f"bundles must be names separated by commas, got {value!r}")
    return [i.strip() for i in items if i.strip()]


def choose_bundles(names: Iterable[str] | None = None, root: Path = BUNDLES_DIR) -> tuple[dict[str, Path], dict[str, str]]:
    """``({name: path} to serve, {name: reason} skipped)``: all servable bundles under ``root``, or
    the named ones (ValueError naming the reason for one that cannot be served)."""
    served, skipped = find_bundles(root)
    if names is None:
        return served, skipped
    bad = [f"{n}: {skipped.get(n, 'no such bundle under ' + str(root))}" for n in names if n not in served]
    if bad:
        raise ValueError("cannot serve " + "; ".join(bad))
    return {n: served[n] for n in names}, {}


def link_bundles(app_dir: Path, bundles: Mapping[str, Path]) -> Path:
    """Symbolic links ``<app_dir>/model/<name>`` -> each bundle folder (MONAI Label's bundle
    location); a stale link is replaced, anything else in the way is refused."""
    model_dir = Path(app_dir) / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    for name, src in bundles.items():
        dst = model_dir / name
        if dst.is_symlink():
            if dst.resolve() == Path(src).resolve():
                continue
            dst.unlink()
        elif dst.exists():
            raise FileExistsError(f"{dst} exists and is not a link to {src}; move it away")
        dst.symlink_to(Path(src).resolve(), target_is_directory=True)
    return model_dir


def _json_value(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def inference_items(bundle: Path, dataset_dir: Path) -> list[dict[str, Any]]:
    """The items the bundle's own ``inference.json`` would run on ``dataset_dir`` (its ``datalist``)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle.resolve())
    parser["dataset_dir"] = str(dataset_dir.resolve())
    parser["input_image"] = ""
    return list(parser.get_parsed_content("datalist"))


def _bundle_module(bundle: Path, module: str):
    """``<name>.<module>`` of a bundle's own package, imported as its configs import it."""
    import importlib

    root = str(Path(bundle).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"{Path(bundle).name}.{module}")


def sparse_view_study(bundle: Path, item: Mapping[str, Any], dst: Path) -> Path:
    """A ``spect_projection_completion`` study from a dataset subject: the acquired views (every
    ``sparse_factor``-th of ``raw.npz``'s ``projections`` [views, u, v]) as NIfTI ``(u, v, views)``
    plus the sidecar ``<dst stem>.json`` (acquired angles, radius, pixdim, nuclide, collimator, energy,
    time per view), written by the bundle's own ``write_projections``. Returns the NIfTI."""
    transforms = _bundle_module(bundle, "transforms")
    counts, header = transforms.read_projections(item["image"])  # all views, (u, v, views)
    config = json.loads((Path(bundle) / "configs" / "inference.json").read_text())
    f = int(item.get("sparse_factor", config.get("sparse_factor", 4)))
    facts = {
        k: _json_value(item[k]) for k in ("nuclide", "collimator", "energy_keV", "time_per_view_s") if item.get(k) is not None
    }
    header = {**header, **facts, "angles_deg": header["angles_deg"][::f]}
    return transforms.write_projections(dst, counts[..., ::f], header)


def _ext(path: Path) -> str:
    """``.nii.gz`` or ``.nii``, else all of the name's suffixes."""
    return next((e for e in NIFTI_EXTS if path.name.endswith(e)), "".join(path.suffixes))


#: bundles whose study is not a copy of their test item's NIfTI: ``(bundle, item, dst .nii.gz) -> path``
STUDY_MAKERS = {"spect_projection_completion": sparse_view_study}


def make_studies(
    studies: Path,
    bundles: Mapping[str, Path],
    n: int = 1,
    progress: bool = True,
    dataset_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict]:
    """Make sure ``studies`` holds ``n`` held-out studies of each bundle; returns the manifest
    ``{image id: {"model": name, "params": {...}, "source": path}}`` (also written to
    ``<studies>/label_studies.json``). Each study is the input the bundle's own inference takes,
    flat in ``studies`` as ``<name>_<subject>.nii.gz`` (a copy of the test item, or made by the
    bundle's :data:`STUDY_MAKERS` entry, e.g. a sparse-view acquisition with its ``.json``
    sidecar); ``params`` holds its per-study facts under the request parameter names (e.g.
    ``dose_reduction_factor``, ``units``) and the ids of its further images (``input_ct``: the
    subject's CT, copied beside it as ``<image id>_ct``). ``dataset_params``: overrides of a
    bundle's dataset-task params, ``{name: {"shape": [...], ...}}`` (small or fast studies for
    tests)."""
    from common.simulation.datasets import generate_dataset
    from scripts.main import _data_seed

    studies = Path(studies)
    studies.mkdir(parents=True, exist_ok=True)
    manifest_path = studies / MANIFEST
    manifest: dict[str, dict] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for name, bundle in bundles.items():
        if sum(1 for m in manifest.values() if m["model"] == name) >= n:
            continue
        seed = _data_seed(bundle) + STUDY_SEED_OFFSET
        source = studies / SOURCES / name
        overrides = dict((dataset_params or {}).get(name) or {}) or None
        generate_dataset(name, source, n=n, seed=seed, test_only=True, workers=1, progress=progress, params=overrides)
        config = json.loads((bundle / "configs" / "inference.json").read_text())
        facts = study_facts(config)
        maker = STUDY_MAKERS.get(name)
        for i, item in enumerate(inference_items(bundle, source)):
            src = Path(item["image"])
            ext = _ext(src)
            if maker is None and ext not in NIFTI_EXTS:
                raise ValueError(f"{name}: its test items are {ext} files, not NIfTI; add a study maker to STUDY_MAKERS")
            image_id = f"{name}_{item.get('id', i)}"
            while image_id in manifest and manifest[image_id]["source"] != str(src):
                image_id += f"_{i}"
            if maker is None:
                shutil.copyfile(src, studies / f"{image_id}{ext}")
            else:
                maker(bundle, item, studies / f"{image_id}.nii.gz")
            params = {p: _json_value(item[k]) for p, k in facts.items() if item.get(k) is not None}
            for param, key in extra_images(config).items():  # e.g. the CT of a dose-rate study
                shutil.copyfile(item[key], studies / f"{image_id}_{key}{_ext(Path(item[key]))}")
                params[param] = f"{image_id}_{key}"
            manifest[image_id] = {"model": name, "params": params, "source": str(src), "seed": seed}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def server_command(app_dir: Path, studies: Path, models: Iterable[str], host: str = "127.0.0.1", port: int = 8000) -> list[str]:
    """MONAI Label's ``start_server`` for this app, through ``python -m scripts.label_app`` (the
    ``monailabel`` command after the import fixes of ``scripts/label_app/lib/compat.py``)."""
    return [sys.executable, "-m", "scripts.label_app", "start_server", "--app", str(app_dir), "--studies", str(studies),
            "--host", host, "--port", str(port), "--conf", "models", ",".join(models)]  # fmt: skip


def label_server(
    bundles: Any = None,
    studies: str = "results/run/label_studies",
    port: int = 8000,
    host: str = "127.0.0.1",
    n_studies: int = 1,
    dry_run: bool = False,
) -> None:
    """Serve the bundles with MONAI Label (``monailabel start_server``) on ``host:port`` until Ctrl-C.

    Args:
        bundles: names separated by commas; default every bundle the app can serve (image in,
            image out as NIfTI), the others listed with their reason.
        studies: the studies folder; it gets ``n_studies`` synthetic held-out studies per bundle
            (listed with their request parameters in ``label_studies.json``) unless it has them.
        port: TCP port.
        host: address to listen on; the default keeps the server on this machine.
        n_studies: synthetic studies per bundle (0: serve only what the folder holds).
        dry_run: prepare the app and studies, print the server command, do not start it.
    """
    if importlib.util.find_spec("monailabel") is None:
        sys.exit("MONAI Label is not installed in this Python: run `python3 scripts/bootstrap.py` (it installs the label extra)")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be a whole number 1-65535, got {port!r}")
    if isinstance(n_studies, bool) or not isinstance(n_studies, int) or n_studies < 0:
        raise ValueError(f"n_studies must be a whole number >= 0, got {n_studies!r}")
    if not isinstance(studies, (str, os.PathLike)) or not str(studies).strip():
        raise ValueError(f"studies must be a folder path, got {studies!r}; quote a numeric name")
    try:
        chosen, skipped = choose_bundles(_names(bundles))
    except ValueError as e:
        sys.exit(f"label_server: {e}")
    for name, reason in skipped.items():
        print(f"label_server: skipping {name}: {reason}")
    if not chosen:
        sys.exit(f"label_server: no bundle under {BUNDLES_DIR} can be served")
    link_bundles(APP_DIR, chosen)
    studies_dir = Path(studies).resolve()
    manifest = make_studies(studies_dir, chosen, n=n_studies) if n_studies else {}
    cmd = server_command(APP_DIR, studies_dir, chosen, host=host, port=port)
    print(f"label_server: bundles {', '.join(chosen)}; studies {studies_dir}")
    for image_id, m in manifest.items():
        if m["model"] in chosen:
            print(f"  {image_id}: POST /infer/{m['model']}?image={image_id}&output=image  params={json.dumps(m['params'])}")
    print("label_server: " + " ".join(cmd))
    if dry_run:
        return
    sys.exit(_run_until_stopped(cmd))


def _run_until_stopped(cmd: list[str]) -> int:
    """Run the server; on Ctrl-C (which the server gets too) let it shut down cleanly."""
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            return proc.wait()
