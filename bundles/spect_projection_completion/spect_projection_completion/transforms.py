"""Projection files and sparse-view transforms of ``spect_projection_completion``.

Projections are a 360-degree parallel-hole SPECT acquisition in counts, arrays ``[U, V, N]``
(u transaxial bins, v axial bins, N views in acquisition order), channel-first ``[1, U, V, N]``
inside the transforms. Two file forms are read:

- NIfTI ``(u, v, views)`` with pixdim ``(du, dv, 1)`` mm and a JSON sidecar ``<name>.json`` beside
  it (``<name>`` without ``.nii.gz``) holding ``angles_deg`` (one per view, increasing, equally
  spaced over 360 degrees), ``radius_mm`` (one number or one per view), and the acquisition facts
  ``nuclide``, ``energy_window_keV``, ``collimator``, ``time_per_view_s``; the bundle writes the
  completed set in the same form (:func:`write_projections`);
- the ``raw`` ``.npz`` of the ``spect_projection_completion`` dataset task (``projections``
  ``[views, u, v]``, ``angles_deg``, ``radius_mm``, ...; :mod:`common.simulation.spect`).

A sparse-view study keeps the views ``0, f, 2f, ...`` of the full set with the same time per view
(``f`` = ``sparse_factor``). The network input (:class:`SparseViewsd`) is the linearly
interpolated full set divided by the mean count of the acquired views (so one network serves
every count level and both nuclides) plus a mask channel of the acquired views; the study's
scale travels as ``scale`` and :class:`FromScaled` turns the output back into counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform

from common.data import atomic_write_bytes, read_json, read_nifti, read_npz, write_nifti
from common.errors import InputError, MissingFileError
from common.simulation.spect import interpolate_views

__all__ = [
    "FromScaled",
    "LoadProjectionsd",
    "RandRollViewsd",
    "SaveProjectionsd",
    "SparseViewsd",
    "read_projections",
    "sidecar_path",
    "write_projections",
]

#: Sidecar keys copied from the input to the completed set (acquisition facts).
ACQUISITION_KEYS = (
    "nuclide",
    "energy_window_keV",
    "collimator",
    "time_per_view_s",
    "energy_keV",
    "units",
)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``scan.nii.gz`` -> ``scan.json`` (beside it)."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".npz"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    raise ValueError(f"{path}: projection files end with .nii.gz, .nii or .npz")


def _check_angles(path: Path, angles: Any, n_views: int) -> list[float]:
    if angles is None:
        raise InputError(f"{path}: sidecar has no 'angles_deg' (one angle per view, degrees)")
    a = np.asarray(angles, dtype=np.float64).ravel()
    if a.size != n_views:
        raise InputError(f"{path}: {a.size} angles_deg for {n_views} views")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{path}: angles_deg holds NaN/Inf")
    step = np.diff(a)
    if n_views > 1 and not np.all(step > 0):
        i = int(np.argmax(step <= 0))
        raise InputError(f"{path}: angles_deg must increase in acquisition order; view {i + 1} ({a[i + 1]}) follows {a[i]}")
    if n_views > 1 and not np.allclose(step, 360.0 / n_views, atol=1e-3 * 360.0 / n_views):
        raise InputError(
            f"{path}: angles_deg must be equally spaced over 360 degrees ({360.0 / n_views:.4g} apart for {n_views} views); "
            f"steps range {step.min():.4g}-{step.max():.4g}"
        )
    return [float(v) for v in a]


def _check_detector_affine(path: Path, affine: np.ndarray) -> None:
    """Projections are in detector coordinates (u, v, view), not patient space: the NIfTI affine
    only carries the pixel size, so it must be ``diag(du, dv, 1)`` (any translation). A flipped,
    rotated or permuted affine would be dropped silently (the completed set is written with
    ``diag(du, dv, 1)``), so it is refused."""
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    diagonal = np.allclose(linear, np.diag(np.diag(linear)), atol=1e-6 * max(1.0, float(np.abs(linear).max())))
    if not diagonal or np.any(np.diag(linear)[:2] <= 0):
        shown = np.round(linear, 4).tolist()
        raise InputError(
            f"{path}: projections are in detector coordinates (u, v, view), so the NIfTI affine must be diag(du, dv, 1) "
            f"with du, dv > 0 (pixel size only), got {shown}; store the views unflipped in acquisition order"
        )


def _check_counts(path: Path, counts: np.ndarray) -> np.ndarray:
    if counts.ndim != 3:
        raise InputError(f"{path}: projections must be 3D (u, v, views), got shape {counts.shape}")
    if not np.all(np.isfinite(counts)):
        raise InputError(f"{path}: projections hold NaN/Inf")
    if counts.min() < 0:
        raise InputError(
            f"{path}: negative counts ({counts.min():.4g}); give the measured projections in counts, not corrected data"
        )
    if counts.sum() <= 0:
        raise InputError(f"{path}: projections hold no counts")
    return counts.astype(np.float32, copy=False)


def read_projections(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Counts ``[U, V, N]`` (float32) and the header (``angles_deg``, ``radius_mm``, ``pixdim``
    ``[du, dv]`` mm, acquisition facts) of a projection file (module docstring). ValueError or
    FileNotFoundError naming the file and the problem."""
    path = Path(path)
    if path.name.endswith(".npz"):
        raw = read_npz(path)
        if "projections" not in raw:
            raise InputError(f"{path}: no 'projections' array (not a spect_projection_completion raw file)")
        counts = np.transpose(raw["projections"], (1, 2, 0))
        spacing = [float(s) for s in raw["spacing_mm"]]
        header = {
            "angles_deg": raw["angles_deg"].tolist(),
            "radius_mm": float(raw["radius_mm"]),
            "pixdim": [spacing[1], spacing[2]],  # u runs along image Y, v along Z
            "energy_keV": float(raw["energy_keV"]),
            "collimator": str(raw["collimator"]),
        }
    elif path.name.endswith((".nii", ".nii.gz")):
        side = sidecar_path(path)
        if not side.is_file():
            raise MissingFileError(f"{path}: sidecar {side.name} not found (angles_deg, radius_mm, nuclide, ... of the views)")
        header = read_json(side)
        if not isinstance(header, dict):
            raise InputError(f"{side}: sidecar must be a JSON object")
        vol = read_nifti(path)
        counts = np.asarray(vol.array)
        _check_detector_affine(path, vol.affine)
        header = dict(header) | {"pixdim": [float(s) for s in vol.spacing_mm[:2]]}
    else:
        raise InputError(f"{path}: projection files end with .nii.gz, .nii or .npz")
    counts = _check_counts(path, np.asarray(counts))
    header["angles_deg"] = _check_angles(path, header.get("angles_deg"), counts.shape[2])
    radius = header.get("radius_mm")
    if radius is None or not np.all(np.asarray(radius, dtype=np.float64) > 0):
        raise InputError(f"{path}: radius_mm (> 0, one number or one per view) is missing or invalid: {radius!r}")
    return counts, header


def write_projections(path: str | os.PathLike, counts: Any, header: Mapping[str, Any]) -> Path:
    """Write counts ``[U, V, N]`` as NIfTI (float32, pixdim ``(du, dv, 1)``) and its sidecar,
    each atomically; the NIfTI last, so a NIfTI on disk always has its sidecar."""
    path = Path(path)
    counts = counts.detach().cpu().numpy() if hasattr(counts, "detach") else np.asarray(counts)
    du, dv = header["pixdim"]
    side = {k: v for k, v in header.items() if k != "pixdim"}
    atomic_write_bytes(sidecar_path(path), (json.dumps(side, indent=1) + "\n").encode())
    return write_nifti(path, counts.astype(np.float32), spacing_mm=(float(du), float(dv), 1.0))


class LoadProjectionsd(MapTransform):
    """Load projection files (:func:`read_projections`) into ``MetaTensor [1, U, V, N]`` counts
    with affine ``diag(du, dv, 1)``; the header goes to ``<key>_header`` as a JSON string (a
    string survives batching and decollating unchanged)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            counts, header = read_projections(path)
            affine = torch.diag(torch.tensor([*header["pixdim"], 1.0, 1.0], dtype=torch.float64))
            d[key] = MetaTensor(
                torch.from_numpy(np.ascontiguousarray(counts))[None],
                affine=affine,
                meta={"filename_or_obj": path},
            )
            d[f"{key}_header"] = json.dumps(header)
        return d


class RandRollViewsd(RandomizableTransform, MapTransform):
    """Start the orbit at a random view (roll the view axis of a full set): the same acquisition
    seen from another first angle, so the network does not learn where view 0 is."""

    def __init__(self, keys: KeysCollection, prob: float = 1.0, allow_missing_keys: bool = False) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys, allow_missing_keys)
        self._shift = 0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        first = next(self.key_iterator(d), None)
        if not self._do_transform or first is None:
            return d
        self._shift = int(self.R.randint(0, d[first].shape[-1]))
        for key in self.key_iterator(d):
            d[key] = torch.roll(d[key], self._shift, dims=-1)
        return d


class SparseViewsd(MapTransform):
    """Network input of a sparse-view study: ``image`` ``[2, U, V, N * f]`` = (linear
    interpolation of the acquired views / scale, mask of the acquired views), ``scale`` = mean
    count of the acquired views, and (from a full set) ``label`` = full set / scale.

    Args:
        keys: the projections ``[1, U, V, N]`` (one key).
        sparse_factor: ``f``; the acquired views are ``0, f, 2f, ...`` of the full set.
        acquired: ``"full"``: the input holds all views (training, evaluation: the sparse study
            is taken from it, ``N`` must divide by ``f``); ``"sparse"``: the input holds only the
            acquired views (inference), and ``<key>_header`` gets the completed set's angles.
        label_key: where the full set goes (``"full"`` only); None: not kept.
    """

    def __init__(
        self,
        keys: KeysCollection,
        sparse_factor: int = 4,
        acquired: str = "full",
        label_key: str | None = "label",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(sparse_factor, bool) or int(sparse_factor) != sparse_factor or sparse_factor < 2:
            raise ValueError(f"sparse_factor must be an integer >= 2, got {sparse_factor!r}")
        if acquired not in ("full", "sparse"):
            raise ValueError(f"acquired must be 'full' or 'sparse', got {acquired!r}")
        self.f, self.acquired, self.label_key = int(sparse_factor), acquired, label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            name = x.meta.get("filename_or_obj", key) if isinstance(x, MetaTensor) else key
            n = x.shape[-1]
            if self.acquired == "full":
                if n % self.f:
                    raise InputError(f"{name}: {n} views do not divide by the sparse factor {self.f}")
                sparse = x[..., :: self.f]
            else:
                sparse = x
            if sparse.shape[-1] < 2:
                raise InputError(f"{name}: {sparse.shape[-1]} acquired view(s); view completion needs at least 2")
            scale = float(sparse.float().mean())
            if not scale > 0:
                raise InputError(f"{name}: the acquired views hold no counts")
            interp = interpolate_views(torch.as_tensor(sparse).float(), self.f, dim=-1)
            mask = torch.zeros_like(interp)
            mask[..., :: self.f] = 1.0
            image = torch.cat([interp / scale, mask], dim=0)
            d[key] = MetaTensor(image, affine=x.affine, meta=dict(x.meta)) if isinstance(x, MetaTensor) else image
            d["scale"] = torch.tensor(scale, dtype=torch.float32)
            if self.acquired == "full" and self.label_key is not None:
                d[self.label_key] = (
                    MetaTensor(
                        torch.as_tensor(x).float() / scale,
                        affine=x.affine,
                        meta=dict(x.meta),
                    )
                    if isinstance(x, MetaTensor)
                    else x.float() / scale
                )
            header_key = f"{key}_header"
            if header_key in d:
                d[header_key] = json.dumps(_completed_header(json.loads(d[header_key]), self.f, self.acquired == "sparse"))
        return d


def _completed_header(header: Mapping[str, Any], f: int, from_sparse: bool = True) -> dict[str, Any]:
    """The sidecar of the completed set: all views (``f`` times the acquired ones, angles in
    between when the header holds only the acquired views), the acquired ones listed."""
    angles = np.asarray(header["angles_deg"], dtype=np.float64)
    radius = header["radius_mm"]
    if from_sparse:
        full = angles[0] + 360.0 / (len(angles) * f) * np.arange(len(angles) * f)
        if isinstance(radius, (list, tuple)) and len(radius) == len(angles):
            radius = interpolate_views(torch.tensor(radius, dtype=torch.float64), f).tolist()
    else:
        full = angles
    out = {k: v for k, v in header.items() if k in ACQUISITION_KEYS or k == "pixdim"}
    return out | {
        "angles_deg": [float(a) for a in full],
        "radius_mm": radius,
        "acquired_views": list(range(0, len(full), f)),
        "sparse_factor": f,
        "completed_by": "spect_projection_completion",
    }


class FromScaled(MapTransform):
    """``pred`` back in counts: times the study's ``scale`` (:class:`SparseViewsd`), then
    clipped at 0 (counts are never negative)."""

    def __init__(
        self,
        keys: KeysCollection,
        scale_key: str = "scale",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scale_key = scale_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        scale = float(d[self.scale_key])
        for key in self.key_iterator(d):
            d[key] = torch.clamp(d[key] * scale, min=0.0)
        return d


class SaveProjectionsd(MapTransform):
    """Write ``pred`` ``[1, U, V, N]`` (counts) with its sidecar (:func:`write_projections`) as
    ``<output_dir>/<relative folder>/<name>_<postfix>.nii.gz``: the folder of the input relative
    to ``data_root_dir`` is kept, so subjects whose files share a name never overwrite each other.

    Args:
        keys: the completed projections.
        source_key: the input's key (its file name and ``<source_key>_header``).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        source_key: str = "image",
        data_root_dir: str | os.PathLike = "",
        postfix: str = "completed",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.source_key, self.postfix = (
            Path(output_dir),
            source_key,
            postfix,
        )
        # absolute but not resolved, as common.learning.workflow.common_folder: a subject folder that is
        # a symbolic link must stay below the common folder, or every subject lands on one name
        self.data_root_dir = Path(os.path.abspath(data_root_dir)) if data_root_dir else None

    def output_path(self, source: str | os.PathLike) -> Path:
        source = Path(os.path.abspath(source))
        stem = sidecar_path(source).stem
        folder = Path()
        if self.data_root_dir is not None and self.data_root_dir in source.parents:
            folder = source.parent.relative_to(self.data_root_dir)
        return self.output_dir / folder / f"{stem}_{self.postfix}.nii.gz"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = d[self.source_key]
        source = source.meta["filename_or_obj"] if isinstance(source, MetaTensor) else source
        header = json.loads(d[f"{self.source_key}_header"])
        for key in self.key_iterator(d):
            out = self.output_path(source)
            counts = torch.as_tensor(d[key]).detach().cpu()
            write_projections(out, counts.reshape(counts.shape[-3:]), header)
            print(f"writing: {out}")
        return d
