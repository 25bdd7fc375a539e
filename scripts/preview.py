"""``python -m scripts preview DATASET_DIR [--subject ID] [--out FILE.png]``: a PNG montage of
one subject, three orthogonal mid-slices of every image it holds (CT, MR, activity, NAC, AC,
low dose, labels, ...) and of its raw arrays (projections, sinograms).

Display: axial panels show x to the right and y (anterior) up, coronal and sagittal panels z
(superior) up, at the voxel aspect of the affine. CT in HU with window [-1000, 1500], labels
with a qualitative colour map, everything else from 0 to its 99.5th percentile.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from common.data import (
    DATALIST_KEYS,
    DATALIST_NAME,
    is_path_value,
    read_datalist,
    read_json,
    read_nifti,
    read_npz,
)
from common.simulation.datasets import MARKER_NAME, SUBJECTS_DIR, entry_from_marker


def _entries(dataset_dir: Path) -> list[dict[str, Any]]:
    """Datalist entries, or (while a dataset is still being generated) the finished subjects'."""
    if (dataset_dir / DATALIST_NAME).is_file():
        datalist = read_datalist(dataset_dir / DATALIST_NAME)
        return [e for k in DATALIST_KEYS for e in datalist[k]]
    markers = sorted((dataset_dir / SUBJECTS_DIR).glob(f"*/{MARKER_NAME}"))
    if not markers:
        raise FileNotFoundError(f"{dataset_dir}: no {DATALIST_NAME} and no finished subject under {SUBJECTS_DIR}/")
    return [entry_from_marker(read_json(m)) for m in markers]


def _pick(entries: list[dict[str, Any]], subject: Any, dataset_dir: Path) -> dict[str, Any]:
    if subject is None:
        return entries[0]
    ids = [str(e.get("id", i)) for i, e in enumerate(entries)]
    if str(subject) in ids:
        return entries[ids.index(str(subject))]
    if isinstance(subject, int) and not isinstance(subject, bool) and 0 <= subject < len(entries):
        return entries[subject]
    shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
    raise ValueError(f"subject {subject!r} not in {dataset_dir} (ids: {shown}; or an index 0..{len(entries) - 1})")


def _style(key: str, volume: np.ndarray) -> dict[str, Any]:
    name = key.lower()
    if name in ("ct", "pct") or name.startswith("ct_") or name.endswith("_hu"):
        return {"cmap": "gray", "vmin": -1000.0, "vmax": 1500.0}
    if "label" in name or "mask" in name:
        return {"cmap": "tab20", "vmin": 0.0, "vmax": 19.0, "interpolation": "nearest"}
    finite = volume[np.isfinite(volume)]
    hi = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    return {"cmap": "gray" if name.startswith("mr") else "gray_r", "vmin": 0.0, "vmax": hi if hi > 0 else 1.0}


def _views(volume: np.ndarray, spacing: tuple[float, float, float]) -> list[tuple[str, np.ndarray, float]]:
    """(name, 2D slice for imshow with origin='lower', aspect) of the three mid-slices."""
    x, y, z = (s // 2 for s in volume.shape[:3])
    sx, sy, sz = spacing
    return [
        ("axial", volume[:, :, z].T, sy / sx),
        ("coronal", volume[:, y, :].T, sz / sx),
        ("sagittal", volume[x, :, :].T, sz / sy),
    ]


def _panels(dataset_dir: Path, entry: dict[str, Any]) -> list[tuple[str, np.ndarray, tuple[float, ...], bool]]:
    """(title, 3D array, spacing, is_image) for each image, and each 2D/3D member of each
    raw array file (sinograms, projections: shown per array axis, unit aspect)."""
    out = []
    for key, rel in entry.items():
        if not is_path_value(rel):
            continue
        path = dataset_dir / rel
        if rel.endswith((".nii", ".nii.gz")):
            vol = read_nifti(path)
            if vol.array.ndim >= 3:
                out.append((key, vol.array[..., 0] if vol.array.ndim == 4 else vol.array, vol.spacing_mm[:3], True))
        elif rel.endswith(".npz"):
            for name, arr in read_npz(path).items():
                if arr.ndim == 3:
                    out.append((f"{key}:{name}", arr, (1.0, 1.0, 1.0), False))
                elif arr.ndim == 2:
                    out.append((f"{key}:{name}", arr[:, :, None], (1.0, 1.0, 1.0), False))
    if not out:
        raise ValueError(f"{dataset_dir}: subject {entry.get('id')} has no image to show")
    return out


def preview(dataset_dir: str, subject: Any = None, out: str | None = None) -> str:
    """Write a PNG montage of one subject and return its path.

    Args:
        dataset_dir: a dataset folder (datalist.json, or subjects being generated).
        subject: subject id (e.g. ``s0_0003``) or index in datalist order; default the first.
        out: PNG path; default ``<dataset_dir>/previews/<id>.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset_dir = Path(os.fspath(dataset_dir))
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"{dataset_dir}: dataset folder not found")
    entry = _pick(_entries(dataset_dir), subject, dataset_dir)
    panels = _panels(dataset_dir, entry)
    sid = str(entry.get("id", "subject"))
    target = Path(os.fspath(out)) if out is not None else dataset_dir / "previews" / f"{sid}.png"

    fig, axes = plt.subplots(len(panels), 3, figsize=(9.0, 2.8 * len(panels)), squeeze=False)
    for row, (title, volume, spacing, is_image) in enumerate(panels):
        style = _style(title, volume)
        if style["cmap"] == "tab20":  # 20 colours: label ids modulo 20 (lesions >= 100 stay distinct from background)
            volume = np.where(volume > 0, (volume - 1) % 19 + 1, 0)
        for col, (view, plane, aspect) in enumerate(_views(volume, spacing)):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if volume.shape[2] == 1 and col > 0:
                ax.axis("off")
                continue
            im = ax.imshow(plane, origin="lower", aspect=aspect, **style)
            ax.set_title(f"{title} {view if is_image else f'plane {col}'}", fontsize=8)
        fig.colorbar(im, ax=axes[row, :].tolist(), fraction=0.02, pad=0.01)
    attrs = {k: v for k, v in entry.items() if not is_path_value(v) and not isinstance(v, (list, dict))}
    text = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in attrs.items() if k != "id")
    fig.suptitle(f"{dataset_dir.name} / {sid}\n" + "\n".join(textwrap.wrap(text, 110)), fontsize=8)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{target.name}")
    fig.savefig(tmp, dpi=80, format="png", metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, target)
    return str(target)
