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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.data import load_datalist
from common.errors import InputError, MissingFileError

__all__ = [
    "CHECKPOINT_PATTERN",
    "as_bool",
    "latest_checkpoint",
    "attach_resume",
    "attach_pretrained",
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
    from monai.handlers import CheckpointLoader

    CheckpointLoader(load_path=str(path), load_dict={"model": network}, map_location=map_location).attach(trainer)
    return path


def datalist_pairs(
    dataset_dir: str | os.PathLike, split: str, image_key: str, label_key: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Items of ``split`` of ``dataset_dir/datalist.json`` with ``image`` (and ``label``) set to
    the entry's ``image_key`` (and ``label_key``) files, absolute; other entry keys are kept.
    ``limit``: at most this many subjects."""
    entries = load_datalist(dataset_dir, split)
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
    return items


def study_items(input_image: str | os.PathLike, facts: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The one-item list of a single study given on the command line (``--input_image PATH``):
    ``[{"image": absolute path, **facts}]`` with per-study facts such as ``drf``, ``weight_kg``
    (entries whose value is ``None`` are left out). FileNotFoundError naming a missing file."""
    path = Path(input_image).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{path}: input image not found (--input_image)")
    return [{"image": str(path.resolve()), **{k: v for k, v in (facts or {}).items() if v is not None}}]


def common_folder(items: list[Mapping[str, Any]], key: str = "image") -> str:
    """The deepest folder holding every item's ``key`` file: ``SaveImaged``'s ``data_root_dir``, so
    each output keeps its input's path relative to that folder under ``output_dir`` (subjects whose
    files are all called ``nac.nii.gz`` land in their own subfolders, never on one name, and never
    outside ``output_dir``). One study: its own folder, so the output lands in ``output_dir`` itself."""
    folders = [os.path.dirname(os.path.abspath(str(item[key]))) for item in items]
    return os.path.commonpath(folders) if folders else ""

