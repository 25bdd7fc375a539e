"""Dataset tasks and their writer: the registry of subject builders and the seeded, resumable,
shardable dataset generator behind ``python -m scripts make_dataset`` and every bundle's
``ensure_dataset``.

A task (:class:`TaskSpec`) is registered by the module that defines its builder. Shared tasks
live in :mod:`common.simulation`; a task that serves one bundle lives in that bundle's package
(``bundles/<name>/<name>/dataset.py``), which the bundle's config imports, and which
``scripts.make_dataset`` finds by scanning the bundles (:func:`get_task` also imports every
module listed in :data:`TASK_MODULES`).
Layout of a generated dataset (``out_dir``)::

    dataset.json              manifest: task, task_version, seed, n, split, physical params
    datalist.json             {"training": [...], "validation": [...], "test": [...]}
    subjects/<id>/<key>.nii.gz  images, one file per key, with the subject's affine
    subjects/<id>/<key>.npz     raw data (e.g. PET prompts sinogram) where a task needs it
    subjects/<id>/subject.json  marker, written last: the subject's datalist entry
    shards/shard-<i>-of-<k>.json  written by sharded runs; ``merge_shards`` joins them

Split rule (:func:`split_sizes`): for ``n >= 3``, validation and test each hold
``max(1, round(0.15 n))`` subjects and training the rest (70/15/15); ``n == 2`` gives one
training and one validation subject, ``n == 1`` one training subject. Training subject ``i``
and validation subjects are built from ``numpy.random.default_rng([seed, i])``
(``i = 0 .. n_train + n_val - 1``, training first); test subject ``j`` from
``default_rng([seed + 1000, j])`` (DESIGN 4: held-out sets use ``data_seed + 1000`` and
above), so a larger ``n`` keeps every existing test subject and the same ``(seed, index)``
always gives the same subject, whatever ``n``, ``workers`` or shard it was built in. A
``test_only`` dataset (e.g. the main job's) holds ``n`` test subjects from
``default_rng([seed, j])``, the caller's seed being a held-out one already.

Determinism: files are written by :mod:`common.data` (no timestamps), and each subject is simulated with one torch thread,
so the same seed gives the same bytes for any ``workers``. Workers are ``spawn``ed processes
(forking a process with running torch threads can hang), so a script that calls
:func:`generate_dataset` with ``workers > 1`` needs the usual ``if __name__ == "__main__":``.

Resumability: a subject is built in a temporary folder that is renamed to ``subjects/<id>``
only after its marker ``subject.json`` is written, so a finished subject is complete by
construction and an interruption leaves no half-written file under a final name. Leftover
temporary folders of an interrupted run are removed when the run resumes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from common.data import (
    _TMP_PREFIX,
    DATALIST_KEYS,
    DATALIST_NAME,
    PathLike,
    _json_ready,
    as_int,
    read_datalist,
    read_json,
    write_datalist,
    write_json,
    write_nifti,
    write_npz,
)
from common.errors import InputError

__all__ = [
    "MANIFEST_NAME",
    "SubjectData",
    "SubjectRef",
    "TaskSpec",
    "TASKS",
    "TASK_MODULES",
    "add_bundle_paths",
    "bundle_task_modules",
    "import_bundle_tasks",
    "ensure_dataset",
    "entry_from_marker",
    "generate_dataset",
    "get_task",
    "merge_shards",
    "register_task",
    "split_sizes",
    "subject_plan",
]

MANIFEST_NAME = "dataset.json"
MARKER_NAME = "subject.json"
SUBJECTS_DIR = "subjects"
SHARDS_DIR = "shards"
#: Version of the on-disk layout written here; a manifest of another version is refused.
FORMAT_VERSION = 1
#: Held-out (test) subjects use seeds from ``seed + TEST_SEED_OFFSET`` (DESIGN 4).
TEST_SEED_OFFSET = 1000
#: The family every training set draws from (a task's default params); held-out sets may use others.
DEFAULT_FAMILY = "training"


# ----------------------------------------------------------------------------------------
# task registry
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class SubjectData:
    """What a subject builder returns; :func:`generate_dataset` writes it.

    images: key -> (array [X, Y, Z], affine 4x4); written as ``<key>.nii.gz`` in the array's
        dtype (float32 images, int16 labels).
    arrays: key -> {name: array}; written as ``<key>.npz`` (raw data, e.g. sinograms).
    attributes: JSON-able per-subject values copied into the datalist entry
        (weight_kg, injected_Bq, uptake_time_s, count level, ...).
    """

    images: dict[str, tuple[np.ndarray, np.ndarray]]
    arrays: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A dataset task: ``builder(rng, params) -> SubjectData`` simulates one subject from its
    generator (``numpy.random.default_rng([seed, index])``) and the dataset's params.

    image_keys, array_keys: the keys of the NIfTI images and NPZ arrays the builder writes
        (checked per subject), or a function of the params giving them (e.g. one image per
        dose reduction factor).
    params: default physical/geometry parameters (the ``training`` family); stored in the manifest.
    families: other families of subjects, as overrides of ``params`` (e.g. ``shifted``: ranges
        beyond the training ranges, for held-out tests that no training draws from).
    version: bump when the builder's output changes, so old folders are refused, not mixed.
    """

    name: str
    builder: Callable[[np.random.Generator, Mapping[str, Any]], SubjectData]
    image_keys: tuple[str, ...] | Callable[[Mapping[str, Any]], tuple[str, ...]]
    array_keys: tuple[str, ...] | Callable[[Mapping[str, Any]], tuple[str, ...]] = ()
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    version: str = "1"
    description: str = ""
    families: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def family_params(self, family: str = DEFAULT_FAMILY) -> dict[str, Any]:
        """The task's params for ``family``: the defaults (the training family) updated with the
        family's overrides. ValueError naming the known families otherwise."""
        if family == DEFAULT_FAMILY:
            return dict(self.params)
        if family not in self.families:
            known = ", ".join([DEFAULT_FAMILY, *sorted(self.families)])
            raise ValueError(f"task {self.name}: unknown family {family!r}; known: {known}")
        return {**self.params, **self.families[family]}

    def keys_for(self, params: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(image keys, array keys) written with these params."""
        return tuple(_call_or_value(self.image_keys, params)), tuple(_call_or_value(self.array_keys, params))


def _call_or_value(value: Any, params: Mapping[str, Any]) -> Any:
    return value(params) if callable(value) else value


#: Registered tasks: each bundle's dataset.py registers its own on import.
TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to :data:`TASKS` (replacing a task of the same name)."""
    if not spec.name or not spec.name.replace("_", "").isalnum():
        raise ValueError(f"task name must be lower_snake_case, got {spec.name!r}")
    TASKS[spec.name] = spec
    return spec


#: Modules of ``common`` that register shared tasks when imported.
TASK_MODULES: tuple[str, ...] = ()  # shared task modules (none today: every task lives with its bundle)
#: A bundle registers the tasks that serve it alone in ``<bundle_root>/<name>/dataset.py``.
BUNDLE_TASK_MODULE = "dataset"


def add_bundle_paths(root: PathLike | None = None) -> list[Path]:
    """Put every bundle root under ``root`` on ``sys.path``, as the bundles' configs do for
    themselves, so each bundle's own package (``<bundle_root>/<name>/``) imports as ``<name>``;
    returns those roots. The roots are ``root`` itself when it is a bundle (an unpacked zip, whose
    vendored ``common`` sits inside the bundle) and each folder of ``root/bundles`` (this
    repository). Default ``root``: the folder holding ``common``."""
    import sys

    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    candidates = [root, *sorted(p for p in (root / "bundles").glob("*") if p.is_dir())]
    roots = [b for b in candidates if (b / b.name / "__init__.py").is_file()]
    for bundle_root in roots:
        if str(bundle_root) not in sys.path:
            sys.path.append(str(bundle_root))
    return roots


def bundle_task_modules(root: PathLike | None = None) -> list[tuple[Path, str]]:
    """``(bundle_root, module)`` of every bundle task module under ``root``
    (:func:`add_bundle_paths`, which puts the roots on ``sys.path``)."""
    return [(b, f"{b.name}.{BUNDLE_TASK_MODULE}") for b in add_bundle_paths(root) if (b / b.name / f"{BUNDLE_TASK_MODULE}.py").is_file()]


def _import_modules(modules: Sequence[str]) -> list[str]:
    """Import ``modules``; returns the ones that failed to import, with the reason."""
    import importlib

    failed = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            failed.append(f"{module} failed to import: {e}")
    return failed


def import_bundle_tasks(root: PathLike | None = None) -> list[str]:
    """Import every bundle task module under ``root`` (:func:`bundle_task_modules`); returns the
    module names that failed to import, with the reason."""
    return _import_modules([module for _, module in bundle_task_modules(root)])


def get_task(task: str | TaskSpec) -> TaskSpec:
    """The registered task ``task`` (a :class:`TaskSpec` is returned as it is); when the name is
    not registered yet, the modules of :data:`TASK_MODULES` and of the bundles
    (:func:`import_bundle_tasks`) are imported first. InputError (a ValueError) listing the known tasks otherwise."""
    if isinstance(task, TaskSpec):
        return task
    notes = []
    if task not in TASKS:
        notes = _import_modules(TASK_MODULES)
        if task not in TASKS:
            notes += import_bundle_tasks()
    if task not in TASKS:
        note = f" ({'; '.join(notes)})" if notes else ""
        raise InputError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS)) or '(none)'}{note}")
    return TASKS[task]


# ----------------------------------------------------------------------------------------
# split and plan
# ----------------------------------------------------------------------------------------
class SubjectRef(NamedTuple):
    """One planned subject: its split, generator seed ``[seed, index]`` and folder id."""

    split: str
    seed: int
    index: int

    @property
    def id(self) -> str:
        return f"s{self.seed}_{self.index:04d}"


def split_sizes(n: int) -> tuple[int, int, int]:
    """(training, validation, test) sizes: 70/15/15 with at least one each for n >= 3."""
    n = as_int("n", n, minimum=1)
    if n < 3:
        return (1, n - 1, 0)
    k = max(1, int(math.floor(0.15 * n + 0.5)))
    return (n - 2 * k, k, k)


def subject_plan(n: int, seed: int, test_only: bool = False) -> list[SubjectRef]:
    """All subjects of a dataset of ``n`` from ``seed``, in datalist order (module docstring).
    ``test_only``: ``n`` test subjects from ``default_rng([seed, j])``, for a caller whose
    ``seed`` is already a held-out seed (e.g. the main job's ``data_seed + 2000``)."""
    seed = as_int("seed", seed, minimum=0)
    if test_only:
        return [SubjectRef("test", seed, j) for j in range(as_int("n", n, minimum=1))]
    n_train, n_val, n_test = split_sizes(n)
    plan = [SubjectRef("training", seed, i) for i in range(n_train)]
    plan += [SubjectRef("validation", seed, n_train + i) for i in range(n_val)]
    plan += [SubjectRef("test", seed + TEST_SEED_OFFSET, j) for j in range(n_test)]
    return plan


# ----------------------------------------------------------------------------------------
# manifest
# ----------------------------------------------------------------------------------------
def _code_version() -> str:
    try:
        from importlib.metadata import version

        return version("nm-image-generation-bundles")
    except Exception:  # a packaged bundle vendors common without installing it
        return "unknown"


def _manifest(
    spec: TaskSpec, seed: int, n: int, params: Mapping[str, Any], test_only: bool = False, family: str = DEFAULT_FAMILY
) -> dict[str, Any]:
    n_train, n_val, n_test = (0, 0, n) if test_only else split_sizes(n)
    rule = (
        "test_only: all n subjects are test subjects from default_rng([seed, j])"
        if test_only
        else "n>=3: validation = test = max(1, round(0.15 n)), training the rest; "
        "training/validation from default_rng([seed, i]), test from default_rng([seed + 1000, j])"
    )
    return {
        "format": "nm-image-generation dataset",
        "format_version": FORMAT_VERSION,
        "task": spec.name,
        "task_version": spec.version,
        "description": spec.description,
        "seed": seed,
        "test_seed": seed if test_only else seed + TEST_SEED_OFFSET,
        "test_only": bool(test_only),
        "family": family,
        "n": n,
        "split": {"training": n_train, "validation": n_val, "test": n_test, "rule": rule},
        "keys": [k for keys in spec.keys_for(params) for k in keys],
        "params": _json_ready(dict(params)),
        "code_version": _code_version(),
    }


# Fields that must agree for subjects of an existing folder to be reused.
_MANIFEST_IDENTITY = ("format_version", "task", "task_version", "seed", "test_only", "family", "params")


def _check_out_dir(out_dir: Path, manifest: Mapping[str, Any]) -> None:
    """Refuse a folder that holds another dataset (task, seed, params) or foreign files."""
    path = out_dir / MANIFEST_NAME
    if path.exists():
        old = read_json(path)
        if not isinstance(old, dict):
            raise ValueError(f"{path}: not a dataset manifest")
        if old.get("task") != manifest["task"]:
            raise InputError(
                f"{out_dir} holds a dataset of task {old.get('task')!r}, not {manifest['task']!r} ({path}); "
                "choose another output folder"
            )
        diff = [k for k in _MANIFEST_IDENTITY if _json_ready(old.get(k)) != _json_ready(manifest[k])]
        if diff:
            detail = "; ".join(f"{k}: {old.get(k)!r} there vs {manifest[k]!r} requested" for k in diff)
            hints = []
            if "seed" in diff:  # e.g. made with make_dataset --seed 5, trained with the default data_seed
                hints.append(f"to use it as it is, pass --data_seed {old.get('seed')} (and its params) to the bundle")
            if "task_version" in diff:
                hints.append("it was made by another version of the code: move it away or delete it")
            hint = "; ".join(hints + ["or choose another output folder"])
            raise InputError(f"{out_dir} holds a different {manifest['task']} dataset ({detail}); {hint}")
        return
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(_TMP_PREFIX))
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise InputError(
                f"{out_dir} is not empty and has no {MANIFEST_NAME} (holds {shown}); "
                "refusing to write a dataset into it: choose an empty or new folder"
            )


# ----------------------------------------------------------------------------------------
# building subjects
# ----------------------------------------------------------------------------------------
def _subject_dir(out_dir: Path, ref: SubjectRef) -> Path:
    return out_dir / SUBJECTS_DIR / ref.id


def _read_marker(out_dir: Path, ref: SubjectRef) -> dict[str, Any] | None:
    """The subject's marker if the subject is complete (marker valid, files present)."""
    folder = _subject_dir(out_dir, ref)
    try:
        marker = read_json(folder / MARKER_NAME)
    except (FileNotFoundError, ValueError):
        return None
    files = marker.get("files", {}) if isinstance(marker, dict) else {}
    if not files or not all((folder / f).is_file() for f in files.values()):
        return None
    return marker


def _remove_leftovers(out_dir: Path, refs: Sequence[SubjectRef]) -> None:
    """Remove temporary folders of these subjects left by an interrupted run (only these:
    other shards may be writing theirs next to them)."""
    sub = out_dir / SUBJECTS_DIR
    if not sub.is_dir():
        return
    ids = {r.id for r in refs}
    for p in sub.iterdir():
        if p.name.startswith(_TMP_PREFIX) and p.name[len(_TMP_PREFIX) :].split(".")[0] in ids:
            shutil.rmtree(p, ignore_errors=True)
    for r in refs:  # a final folder without a complete marker (e.g. files deleted by hand)
        folder = _subject_dir(out_dir, r)
        if folder.exists() and _read_marker(out_dir, r) is None:
            shutil.rmtree(folder, ignore_errors=True)


def _make_subject(spec: TaskSpec, ref: SubjectRef, params: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Simulate and write one subject (folder renamed into place after its marker)."""
    rng = np.random.default_rng([ref.seed, ref.index])
    data = spec.builder(rng, params)
    image_keys, array_keys = spec.keys_for(params)
    if set(data.images) != set(image_keys) or set(data.arrays) != set(array_keys):
        raise ValueError(
            f"task {spec.name}: builder returned keys {sorted(data.images)} + {sorted(data.arrays)}, "
            f"registered {list(image_keys)} + {list(array_keys)}"
        )
    final = _subject_dir(out_dir, ref)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{ref.id}.", dir=final.parent))
    try:
        files: dict[str, str] = {}
        for key in image_keys:  # registered order, so the marker is deterministic
            array, affine = data.images[key]
            files[key] = f"{key}.nii.gz"
            write_nifti(tmp / files[key], array, affine)
        for key in array_keys:
            files[key] = f"{key}.npz"
            write_npz(tmp / files[key], data.arrays[key])
        marker = {
            "id": ref.id,
            "split": ref.split,
            "subject_seed": [ref.seed, ref.index],
            "files": files,
            "attributes": _json_ready(data.attributes),
        }
        write_json(tmp / MARKER_NAME, marker)  # last: marks the subject complete
        os.chmod(tmp, 0o755)
        if final.exists():  # an incomplete leftover; a complete one is never rebuilt
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return marker


def _worker_init() -> None:
    """One torch thread per worker: no oversubscription, and the same float results as the
    single-process path (summation order can depend on the thread count)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _build_sequential(spec, refs, params, out_dir, bar) -> None:
    try:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
    except ImportError:
        torch, threads = None, 0
    try:
        for ref in refs:
            try:
                _make_subject(spec, ref, params, out_dir)
            except Exception as e:
                raise RuntimeError(f"task {spec.name}: subject {ref.id} failed: {type(e).__name__}: {e}") from e
            bar.update(1)
    finally:
        if torch is not None:
            torch.set_num_threads(threads)


def _build_parallel(spec, refs, params, out_dir, bar, workers: int) -> None:
    import multiprocessing as mp

    # spawn, not fork: forking a process whose torch/OpenMP threads are running can hang.
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        pending = {pool.submit(_make_subject, spec, ref, params, out_dir): ref for ref in refs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                ref = pending.pop(fut)
                err = fut.exception()
                if err is not None:
                    for other in pending:
                        other.cancel()
                    raise RuntimeError(f"task {spec.name}: subject {ref.id} failed: {type(err).__name__}: {err}") from err
                bar.update(1)


def entry_from_marker(marker: Mapping[str, Any]) -> dict[str, Any]:
    """Datalist entry from a subject marker: id, file paths relative to the dataset folder,
    the subject seed and the builder's attributes."""
    sid = marker["id"]
    entry: dict[str, Any] = {"id": sid}
    entry.update({k: f"{SUBJECTS_DIR}/{sid}/{f}" for k, f in marker["files"].items()})
    entry["subject_seed"] = marker["subject_seed"]
    entry.update(marker.get("attributes", {}))
    return entry


def _shard_record(shard: int, num_shards: int) -> str:
    return f"{SHARDS_DIR}/shard-{shard}-of-{num_shards}.json"


def merge_shards(dataset_dir: PathLike) -> Path:
    """Write ``datalist.json`` of a dataset built in shards (possibly on many machines and
    copied together). Every planned subject must be complete; ValueError lists the missing
    ones with their shard. Returns the datalist path."""
    dataset_dir = Path(dataset_dir)
    manifest_path = dataset_dir / MANIFEST_NAME
    manifest = read_json(manifest_path)
    try:
        seed, n = int(manifest["seed"]), int(manifest["n"])
        num_shards = int(manifest.get("num_shards", 1))
        test_only = bool(manifest.get("test_only", False))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{manifest_path}: not a dataset manifest ({e})") from None
    plan = subject_plan(n, seed, test_only)
    datalist: dict[str, list] = {k: [] for k in DATALIST_KEYS}
    missing = []
    for pos, ref in enumerate(plan):
        marker = _read_marker(dataset_dir, ref)
        if marker is None:
            missing.append(f"{ref.id} (shard {pos % num_shards} of {num_shards})")
        else:
            datalist[ref.split].append(entry_from_marker(marker))
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise ValueError(f"{dataset_dir}: {len(missing)} of {len(plan)} subjects missing or incomplete: {shown}")
    return write_datalist(dataset_dir / DATALIST_NAME, datalist)


def generate_dataset(
    task: str | TaskSpec,
    out_dir: PathLike,
    n: int,
    seed: int = 0,
    workers: int = 1,
    shard: int = 0,
    num_shards: int = 1,
    progress: bool = True,
    params: Mapping[str, Any] | None = None,
    test_only: bool = False,
    family: str = DEFAULT_FAMILY,
) -> Path:
    """Simulate ``n`` subjects of ``task`` into ``out_dir`` (layout and split: module
    docstring), resuming where a previous run stopped.

    Args:
        task: a registered task name (:data:`TASKS`) or a :class:`TaskSpec`.
        out_dir: new, empty, or holding this same dataset (same task, seed and params);
            anything else is refused with a ValueError.
        n: number of subjects (training + validation + test), >= 1.
        seed: data seed >= 0; test subjects use ``seed + 1000``.
        workers: processes (one torch thread each).
        shard, num_shards: build only subjects ``shard, shard + num_shards, ...`` of the
            plan; with ``num_shards > 1`` the run records its shard under ``shards/`` and
            :func:`merge_shards` writes the datalist once all shards are done.
        progress: show a tqdm progress bar.
        params: overrides of the task's default params (e.g. a small ``shape`` for tests).
        test_only: all ``n`` subjects go to ``test``, from ``default_rng([seed, j])`` (the
            caller passes a held-out seed, e.g. ``data_seed + 2000``).
        family: ``training`` (the task's default params) or another family of the task
            (:attr:`TaskSpec.families`, e.g. ``shifted``); ``params`` override it.

    Returns:
        ``out_dir/datalist.json``, or the shard record when ``num_shards > 1``.
    """
    spec = get_task(task)
    task = spec.name
    n = as_int("n", n, minimum=1)
    seed = as_int("seed", seed, minimum=0)
    workers = as_int("workers", workers, minimum=1)
    num_shards = as_int("num_shards", num_shards, minimum=1)
    shard = as_int("shard", shard, minimum=0)
    if shard >= num_shards:
        raise ValueError(f"shard must be in 0..{num_shards - 1} for num_shards={num_shards}, got {shard}")
    unknown = sorted(set(params or {}) - set(spec.params))
    if unknown:
        raise ValueError(f"task {task}: unknown params {unknown}; known: {sorted(spec.params)}")
    full_params = _json_ready({**spec.family_params(family), **(params or {})})
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} exists and is not a folder")

    manifest = _manifest(spec, seed, n, full_params, bool(test_only), family)
    manifest["num_shards"] = num_shards
    _check_out_dir(out_dir, manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / MANIFEST_NAME, manifest)

    plan = subject_plan(n, seed, bool(test_only))
    mine = plan[shard::num_shards]
    _remove_leftovers(out_dir, mine)
    todo = [r for r in mine if _read_marker(out_dir, r) is None]

    from tqdm.auto import tqdm

    desc = f"{task}" + (f" shard {shard}/{num_shards}" if num_shards > 1 else "")
    with tqdm(total=len(mine), initial=len(mine) - len(todo), desc=desc, unit="subject", disable=not progress) as bar:
        if workers == 1 or len(todo) <= 1:
            _build_sequential(spec, todo, full_params, out_dir, bar)
        else:
            _build_parallel(spec, todo, full_params, out_dir, bar, min(workers, len(todo)))

    if num_shards == 1:
        return merge_shards(out_dir)
    return write_json(out_dir / _shard_record(shard, num_shards), {"shard": shard, "num_shards": num_shards, "subjects": [r.id for r in mine]})


def ensure_dataset(
    task: str | TaskSpec,
    dataset_dir: PathLike,
    n: int,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    params: Mapping[str, Any] | None = None,
    family: str = DEFAULT_FAMILY,
) -> Path:
    """The datalist a bundle trains or evaluates on: ``dataset_dir/datalist.json`` as it is for
    user data (a datalist and no manifest) and for a held-out set of ``task`` made with
    ``test_only``; otherwise the synthetic dataset of ``task``, generated or extended first when
    its manifest does not match ``n``/``seed``/``params``. Returns the datalist path."""
    dataset_dir = Path(dataset_dir)
    datalist = dataset_dir / DATALIST_NAME
    manifest_path = dataset_dir / MANIFEST_NAME
    if datalist.is_file() and not manifest_path.exists():
        read_datalist(datalist)  # user data: validate only
        return datalist
    if datalist.is_file():
        spec = get_task(task)
        task = spec.name
        full = _json_ready({**spec.family_params(family), **(params or {})})
        want = _manifest(spec, as_int("seed", seed, 0), as_int("n", n, 1), full, family=family)
        have = read_json(manifest_path)
        if have.get("task") == task and have.get("test_only"):
            return datalist
        if all(_json_ready(have.get(k)) == _json_ready(want[k]) for k in (*_MANIFEST_IDENTITY, "n")):
            return datalist
    return generate_dataset(task, dataset_dir, n, seed, workers=workers, progress=progress, params=params, family=family)
