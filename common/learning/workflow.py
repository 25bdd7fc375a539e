"""Named steps that every bundle's configs call, so no config holds logic in a long ``$`` string
(DESIGN 4): reading a yes/no override, resuming from the newest checkpoint, warm-starting from
pretrained weights, and turning a datalist or one study into MONAI items.

Command-line overrides reach a config as strings when ``fire`` cannot parse them (``--resume
true`` gives ``'true'``, ``--resume false`` the truthy ``'false'``), so yes/no ids go through
:func:`as_bool`.
"""

from __future__ import annotations

import glob
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.data import DATALIST_NAME, check_nifti_file, check_same_grid, is_nifti_path, load_datalist
from common.errors import InputError, MissingFileError

__all__ = [
    "CHECKPOINT_PATTERN",
    "as_bool",
    "latest_checkpoint",
    "attach_resume",
    "attach_pretrained",
    "check_items",
    "check_weights",
    "datalist_pairs",
    "study_items",
    "common_folder",
]

#: File names of ignite's CheckpointSaver with ``epoch_level`` (``checkpoint_epoch=<n>.pt``).
CHECKPOINT_PATTERN = "checkpoint_epoch=*.pt"
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "", "none")


def as_bool(value: Any, name: str = "value") -> bool:
    """``True``/``False`` from a bool, a number or a string such as ``'true'``/``'false'``;
    ValueError naming ``name`` for anything else (``'ture'`` is refused, not read as yes)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(f"{name} must be true or false, got {value!r}")


def latest_checkpoint(checkpoint_dir: str | os.PathLike, pattern: str = CHECKPOINT_PATTERN) -> Path:
    """The newest file matching ``pattern`` in ``checkpoint_dir`` (by modification time);
    FileNotFoundError naming the folder when there is none."""
    found = glob.glob(os.path.join(glob.escape(str(checkpoint_dir)), pattern))
    if not found:
        raise MissingFileError(f"{checkpoint_dir}: no checkpoint ({pattern}) to resume from; train without --resume first")
    return Path(max(found, key=os.path.getmtime))


def attach_resume(trainer: Any, load_dict: Mapping[str, Any], checkpoint_dir: str | os.PathLike, resume: Any, map_location: Any = None) -> Path | None:
    """With ``resume`` true, load the newest checkpoint of ``checkpoint_dir`` into ``load_dict``
    (network, optimizer, lr scheduler, trainer) when ``trainer`` starts; returns its path (None
    without ``resume``)."""
    if not as_bool(resume, "resume"):
        return None
    from monai.handlers import CheckpointLoader

    path = latest_checkpoint(checkpoint_dir)
    check_weights(path, load_dict, what="checkpoint", hint="resume only from checkpoints of this configuration, or empty that folder")
    CheckpointLoader(load_path=str(path), load_dict=dict(load_dict), map_location=map_location).attach(trainer)
    return path


def attach_pretrained(trainer: Any, network: Any, path: str | os.PathLike | None, resume: Any = False, map_location: Any = None) -> Path | None:
    """Warm start: load the network weights ``path`` when ``trainer`` starts, unless ``path`` is
    empty or training resumes (the checkpoint wins). FileNotFoundError naming a missing file."""
    if not path or as_bool(resume, "resume"):
        return None
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: pretrained weights not found; give --pretrained the path of a model.pt")
    check_weights(path, {"model": network}, what="pretrained weights", hint="give --pretrained a model.pt of this bundle")
    from monai.handlers import CheckpointLoader

    CheckpointLoader(load_path=str(path), load_dict={"model": network}, map_location=map_location).attach(trainer)
    return path


def _state_dict_of(obj: Any) -> Mapping[str, Any] | None:
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        try:
            return obj.state_dict()
        except TypeError:  # e.g. an ignite Engine needs no arguments either; anything odd: skip it
            return None
    return None


def check_weights(path: str | os.PathLike, load_dict: Mapping[str, Any] | Any, what: str = "weights", hint: str = "") -> Path:
    """Check that ``path`` holds weights for the objects of ``load_dict`` (``{"model": network, ...}``,
    or a network alone) before MONAI's ``CheckpointLoader`` loads them: a file ``torch.load``
    reads with ``weights_only=True`` (a state_dict, or a checkpoint of state_dicts), with every
    key of the network and the same tensor shapes. A file from another network, or a pickled
    model, is an :class:`~common.errors.InputError` naming the file and the first differences,
    instead of a 40-line ``load_state_dict`` report. Returns ``path``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} not found")
    if not isinstance(load_dict, Mapping):
        load_dict = {"model": load_dict}
    fix = f"; {hint}" if hint else ""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's weights_only refusal: Python objects besides tensors
        raise InputError(
            f"{path}: not a {what} file of tensors (a state_dict saved with torch.save): it holds pickled Python "
            f"objects, e.g. a whole network saved with torch.save(network); save network.state_dict() instead{fix}"
        ) from None
    except Exception as e:  # corrupt or truncated files
        text = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(e).split()))  # torch colours parts of its messages
        text = text if len(text) <= 200 else text[:200].rsplit(" ", 1)[0] + " ..."
        raise InputError(f"{path}: not a {what} file of tensors (a state_dict saved with torch.save): {type(e).__name__}: {text}{fix}") from None
    if not isinstance(saved, Mapping):
        raise InputError(f"{path}: {what} must hold a state_dict (a dict of tensors), got {type(saved).__name__}{fix}")
    if len(load_dict) == 1 and next(iter(load_dict)) not in saved:  # a bare state_dict (what CheckpointLoader accepts too)
        saved = {next(iter(load_dict)): saved}
    for key, obj in load_dict.items():
        if key not in saved:
            raise InputError(f"{path}: {what} has no {key!r} entry (it holds {sorted(map(str, saved))}){fix}")
        if not isinstance(obj, torch.nn.Module):
            continue
        expected = obj.state_dict()
        got = saved[key]
        if not isinstance(got, Mapping):
            raise InputError(f"{path}: {what} entry {key!r} is a {type(got).__name__}, not a state_dict{fix}")
        strip = "module."  # DistributedDataParallel's prefix
        got = {(k[len(strip):] if k.startswith(strip) and k[len(strip):] in expected else k): v for k, v in got.items()}
        missing = [k for k in expected if k not in got]
        unexpected = [k for k in got if k not in expected]
        shapes = [
            f"{k} {tuple(got[k].shape)} vs {tuple(v.shape)}"
            for k, v in expected.items()
            if k in got and hasattr(got[k], "shape") and tuple(got[k].shape) != tuple(v.shape)
        ]
        if missing or unexpected or shapes:
            found = []
            if missing:
                found.append(f"{len(missing)} missing tensor(s) (e.g. {missing[0]})")
            if unexpected:
                found.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
            if shapes:
                found.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
            raise InputError(
                f"{path}: this {what} file is for another network than this bundle's {type(obj).__name__}: {', '.join(found)}{fix}"
            )
    return path


def check_items(items: list[Mapping[str, Any]], keys: tuple[str, ...] = ("image", "label"), what: Mapping[str, str] | None = None) -> list[Mapping[str, Any]]:
    """Check the NIfTI files of ``items`` before a bundle loads (or writes) anything
    (:func:`common.data.check_nifti_file`: readable, complete, one 3D volume) and that each item's
    files of ``keys`` lie on one grid (:func:`common.data.check_same_grid`: shape, voxel size,
    orientation, position), so a bad file ends the run with one line naming it before the first
    output is written. Other files (``.npz`` projections, ...) are left to their readers.
    Returns ``items``."""
    seen: dict[str, Any] = {}
    names = dict(what or {})

    def header(path: str, key: str):
        if path not in seen:
            seen[path] = check_nifti_file(path, names.get(key, key))
        return seen[path]

    for item in items:
        found = [(k, header(str(item[k]), k)) for k in keys if k in item and is_nifti_path(item[k])]
        for (_, first), (key, other) in zip(found, found[1:]):
            check_same_grid(first, other, what=f"the {names.get(found[0][0], found[0][0])} and {names.get(key, key)}")
    return items


def no_entries(dataset_dir: str | os.PathLike, split: str) -> InputError:
    """The error for a datalist split with no entries."""
    return InputError(
        f"{Path(dataset_dir) / DATALIST_NAME}: no {split!r} entries; add subjects to that list, "
        "or give --input_image PATH to run inference on one study"
    )


def datalist_pairs(
    dataset_dir: str | os.PathLike, split: str, image_key: str, label_key: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Items of ``split`` of ``dataset_dir/datalist.json`` with ``image`` (and ``label``) set to
    the entry's ``image_key`` (and ``label_key``) files, absolute; other entry keys are kept.
    ``limit``: at most this many subjects."""
    entries = load_datalist(dataset_dir, split)
    if not entries:
        raise no_entries(dataset_dir, split)
    items = []
    for entry in entries[:limit]:
        for key in (image_key, label_key):
            if key is not None and key not in entry:
                raise InputError(f"{dataset_dir}: datalist entry {entry.get('id', '?')} ({split}) has no {key!r}; keys: {sorted(entry)}")
        # per-subject facts travel with the item; a None (e.g. no PSF) would not collate
        item = {k: v for k, v in entry.items() if v is not None} | {"image": entry[image_key]}
        if label_key is not None:
            item["label"] = entry[label_key]
        items.append(item)
    return check_items(items, ("image", "label"), {"image": image_key, "label": label_key or "label"})


def study_items(input_image: str | os.PathLike, facts: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The one-item list of a single study given on the command line (``--input_image PATH``):
    ``[{"image": absolute path, **facts}]`` with per-study facts such as ``drf``, ``weight_kg``
    (entries whose value is ``None`` are left out). FileNotFoundError naming a missing file."""
    path = Path(input_image).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{path}: input image not found (--input_image)")
    items = [{"image": str(path.resolve()), **{k: v for k, v in (facts or {}).items() if v is not None}}]
    return check_items(items, ("image",), {"image": "input image (--input_image)"})


def common_folder(items: list[Mapping[str, Any]], key: str = "image") -> str:
    """The deepest folder holding every item's ``key`` file: ``SaveImaged``'s ``data_root_dir``, so
    each output keeps its input's path relative to that folder under ``output_dir`` (subjects whose
    files are all called ``nac.nii.gz`` land in their own subfolders, never on one name, and never
    outside ``output_dir``). One study: its own folder, so the output lands in ``output_dir`` itself."""
    folders = [os.path.dirname(os.path.abspath(str(item[key]))) for item in items]
    return os.path.commonpath(folders) if folders else ""

