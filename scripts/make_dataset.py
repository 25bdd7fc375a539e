"""``python -m scripts make_dataset``: simulate a task's dataset (NIfTI + datalist.json).

Examples::

    python -m scripts make_dataset --task pet_nac_to_pct --n 20 --out data/pet_nac_to_pct --seed 0 --workers 2
    python -m scripts make_dataset --task pet_nac_to_pct --n 200 --out /shared/ds --shard 3 --num_shards 16
    python -m scripts make_dataset --merge /shared/ds
    python -m scripts make_dataset --task pet_nac_to_pct --n 6 --out data/shifted --seed 3000 --test_only true --family shifted

Layout, split (70/15/15; test subjects from seed + 1000), families and resumability:
``common.simulation.datasets``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from common.simulation.datasets import generate_dataset, get_task, merge_shards


def _as_path(name: str, value: Any) -> Path:
    """fire turns ``--out 1e5`` into the float 100000.0 and ``--out 007`` into '007' or 7;
    only text and whole numbers can be read back as the folder name the user typed."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a folder path, got {value!r}")
    if isinstance(value, float):
        raise ValueError(f"{name}: fire read the folder name as the number {value!r}; quote it, e.g. --{name} \"'1e5'\"")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
        raise ValueError(f"{name} must be a folder path, got {value!r}")
    return Path(os.fspath(value))


def _as_params(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"params must be a JSON object, e.g. '{{\"shape\": [48, 48, 32]}}': {e}") from None
        if isinstance(parsed, dict):
            return parsed
    raise ValueError(f"params must be a JSON object, got {value!r}")


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError(f"{name} must be true or false, got {value!r}")


def make_dataset(
    task: str | None = None,
    n: int | None = None,
    out: str | None = None,
    seed: int = 0,
    workers: int = 1,
    shard: int | None = None,
    num_shards: int | None = None,
    merge: str | None = None,
    params: Any = None,
    test_only: bool = False,
    family: str = "training",
    progress: bool = True,
) -> str:
    """Simulate ``n`` subjects of ``task`` into ``out`` (default ``data/<task>``) and write
    ``datalist.json``; a re-run resumes, keeping finished subjects.

    Args:
        task: task name, e.g. pet_nac_to_pct, pet_lowdose_denoising.
        n: number of subjects (70/15/15 training/validation/test).
        out: output folder; refused if it holds another dataset.
        seed: data seed (test subjects use seed + 1000).
        workers: parallel processes (one thread each).
        shard, num_shards: build only shard ``shard`` of ``num_shards`` (give both); then run
            ``--merge OUT`` once all shards are done.
        merge: a dataset folder built in shards: write its datalist.json, nothing else.
        params: JSON object overriding the task's physical/geometry params.
        test_only: all ``n`` subjects are test subjects from ``seed`` itself (a held-out seed).
        family: ``training`` (the task's defaults) or ``shifted`` (ranges beyond the training
            ranges, for held-out tests only; the task's docs list both).
        progress: show a progress bar.

    Returns:
        The path of the datalist (or of the shard record) written.
    """
    if merge is not None:
        if task is not None or n is not None:
            raise ValueError("--merge DIR takes no --task/--n: the folder's dataset.json says what it holds")
        return str(merge_shards(_as_path("merge", merge)))
    if task is None:
        raise ValueError("--task is required (or --merge DIR)")
    if not isinstance(task, str):
        raise ValueError(f"task must be a task name, got {task!r}")
    spec = get_task(task)  # unknown task: ValueError listing the known ones
    if n is None:
        raise ValueError("--n (number of subjects) is required")
    if (shard is None) != (num_shards is None):
        raise ValueError("give both --shard and --num_shards, or neither")
    out_dir = _as_path("out", out) if out is not None else Path("data") / spec.name
    path = generate_dataset(
        spec.name,
        out_dir,
        n,  # generate_dataset converts and checks n, seed, workers, shard (fire passes '007')
        seed,
        workers=workers,
        shard=0 if shard is None else shard,
        num_shards=1 if num_shards is None else num_shards,
        progress=_as_bool("progress", progress),
        params=_as_params(params),
        test_only=_as_bool("test_only", test_only),
        family=str(family),
    )
    return str(path)
