"""Input channels of ``dose_rate_prediction`` and the normalisation that makes its output scale
exactly with activity.

:class:`DoseInputsd` turns an activity map (Bq/mL) and a CT (HU) on one grid into the network's
three input channels:

0. ``activity / s_A``, with ``s_A`` the mean activity concentration of the volume (Bq/mL);
1. mass density (g/cm3) from :func:`common.physics.hu_to_material`, the conversion the Monte Carlo
   uses;
2. the density-scaled voxel S-value dose rate (:func:`common.dosimetry.vsv_dose_rate` with the
   water kernel of :func:`vsv_kernel`) divided by ``s_D = s_A x c``, ``c`` the dose rate of 1 Bq/mL
   in water if every decay deposited all its energy in place (Gy/s per Bq/mL).

Channels 0 and 2 do not change when the activity is multiplied by any factor (``s_A`` and ``s_D``
take the factor), so the network's output is the same and the dose rate ``s_D x output``
(:class:`FromScaled`) takes exactly that factor: dose rate is linear in activity, and so is the
prediction (to float round-off; exactly for factors that are powers of two). A training label
(Monte Carlo dose rate, Gy/s) is divided by the same ``s_D``; outside the body (density below
:data:`BODY_MIN_DENSITY`: air, where a dose rate per mass means little) it is replaced by the
density-scaled VSV, which the network passes through there (:mod:`.networks`).

:class:`CheckSameGridd` refuses an activity and a CT of different shape or affine, naming both files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from common.dosimetry import (
    VoxelSValues,
    emission_spectrum,
    voxel_s_values,
    vsv_dose_rate,
)
from common.dosimetry.inputs import MEV_TO_J
from common.errors import InputError
from common.learning.transforms import source_name
from common.physics.attenuation import hu_to_material

__all__ = [
    "BODY_MIN_DENSITY",
    "KERNEL_SETTINGS",
    "CheckSameGridd",
    "DoseInputsd",
    "FromScaled",
    "activity_scale",
    "dose_per_activity",
    "inference_items",
    "save_kernel",
    "vsv_kernel",
]

#: Voxels below this density (g/cm3; -950 HU) are outside the body: air, where the network passes
#: the density-scaled VSV through and no loss or metric is taken. Lung (0.15-0.35 g/cm3) is inside.
BODY_MIN_DENSITY = 0.05
#: Monte Carlo settings of the water kernel (half width 12 voxels: +-60 mm at 5 mm).
KERNEL_SETTINGS = {"half_width": 12, "n_photons": 2_000_000, "n_electrons": 8_000_000, "n_batches": 10, "seed": 0}


def dose_per_activity(nuclide: str = "Lu-177") -> float:
    """``c``: Gy/s per Bq/mL in unit density if all emitted energy stayed in place (the scale of
    channel 2 and of the output)."""
    return emission_spectrum(nuclide).emitted_MeV_per_decay * MEV_TO_J * 1e3  # J per decay / (1e-3 kg per mL)


def _kernel_file(cache_dir: str | os.PathLike, nuclide: str, spacing: Sequence[float]) -> Path:
    return Path(cache_dir) / f"vsv_{nuclide}_{'x'.join(f'{s:g}' for s in spacing)}mm.pt"


@functools.lru_cache(maxsize=8)
def _kernel(nuclide: str, spacing: tuple[float, float, float], cache_dir: str) -> VoxelSValues:
    path = _kernel_file(cache_dir, nuclide, spacing) if cache_dir else None
    if path is not None and path.is_file():
        d = torch.load(path, map_location="cpu", weights_only=True)
        return VoxelSValues(d["kernel"], d["std"], nuclide, spacing, "water", float(d["density"]))
    with torch.random.fork_rng():
        return voxel_s_values(nuclide, spacing, material="water", **KERNEL_SETTINGS)


def vsv_kernel(nuclide: str, spacing_mm: Sequence[float], cache_dir: str | os.PathLike | None = None) -> VoxelSValues:
    """The water voxel S-value kernel of ``nuclide`` at ``spacing_mm`` (:data:`KERNEL_SETTINGS`):
    read from ``cache_dir/vsv_<nuclide>_<sx>x<sy>x<sz>mm.pt`` when that file exists (the bundle
    ships its training spacing's in ``models/``), else computed by Monte Carlo (about 20 s on one
    thread) and kept for the process."""
    spacing = tuple(round(float(s), 4) for s in spacing_mm)
    return _kernel(nuclide, spacing, str(cache_dir or ""))


def save_kernel(kernel: VoxelSValues, cache_dir: str | os.PathLike) -> Path:
    """Write ``kernel`` where :func:`vsv_kernel` reads it."""
    path = _kernel_file(cache_dir, kernel.nuclide, kernel.spacing_mm)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"kernel": kernel.kernel, "std": kernel.std, "density": kernel.density}, tmp)
    os.replace(tmp, path)
    return path


def activity_scale(activity: torch.Tensor) -> float:
    """``s_A``: mean activity concentration of the volume (Bq/mL); InputError when it is not positive."""
    s = float(activity.double().mean())
    if not s > 0:
        raise InputError(f"{source_name(activity)}: activity holds no positive uptake; give an activity map in Bq/mL")
    return s


def _spacing(img: torch.Tensor) -> tuple[float, float, float]:
    if isinstance(img, MetaTensor):
        return tuple(float(s) for s in img.pixdim[:3])
    raise InputError("the activity map has no affine (load it as a MetaTensor with LoadImaged)")


class CheckSameGridd(MapTransform):
    """Refuse an activity map and a CT that are not on one grid (shape and affine within ``atol``
    mm), naming both files. Run it after loading, before any resampling."""

    def __init__(self, keys: KeysCollection = "image", ct_key: str = "ct", atol: float = 1e-3, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.ct_key, self.atol = ct_key, float(atol)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img, ct = d[key], d[self.ct_key]
            a, b = source_name(img), source_name(ct)
            if tuple(img.shape[1:]) != tuple(ct.shape[1:]):
                raise InputError(
                    f"{a}: activity {tuple(img.shape[1:])} and CT {b} {tuple(ct.shape[1:])} differ in shape; "
                    "resample the CT to the activity grid first"
                )
            if isinstance(img, MetaTensor) and isinstance(ct, MetaTensor):
                diff = float(np.abs(np.asarray(img.affine, dtype=np.float64) - np.asarray(ct.affine, dtype=np.float64)).max())
                if diff > self.atol:
                    raise InputError(
                        f"{a}: activity and CT {b} differ in voxel spacing or position (affines differ by up to {diff:.3g} mm); "
                        "resample the CT to the activity grid first"
                    )
        return d


class DoseInputsd(MapTransform):
    """Activity (``keys``, ``[1, X, Y, Z]`` Bq/mL) + CT (``ct_key``, HU) -> the three input channels
    of the module docstring in ``keys`` (the activity's metadata and transform trace kept, so
    ``Invertd`` undoes the resampling on the prediction), ``scale_key`` = ``s_D`` (Gy/s) and, when
    ``label_key`` is present, the label (Monte Carlo dose rate, Gy/s) / ``s_D`` with the
    density-scaled VSV outside the body. The CT is dropped from the item.

    Args:
        keys: the activity key.
        ct_key: the CT key (same grid; :class:`CheckSameGridd` before resampling).
        label_key: the Monte Carlo dose rate key (training, validation), or None.
        scale_key: where ``s_D`` is stored.
        nuclide: ICRP-107 name of the radionuclide.
        kernel_dir: folder of precomputed kernels (:func:`vsv_kernel`).
        kvp: CT tube voltage for :func:`common.physics.hu_to_material`.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        ct_key: str = "ct",
        label_key: str | None = "label",
        scale_key: str = "dose_scale",
        nuclide: str = "Lu-177",
        kernel_dir: str | os.PathLike | None = None,
        kvp: int = 120,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.ct_key, self.label_key, self.scale_key = ct_key, label_key, scale_key
        self.nuclide, self.kernel_dir, self.kvp = nuclide, kernel_dir, int(kvp)
        self.c = dose_per_activity(nuclide)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            activity = torch.as_tensor(img)[0].float().clamp_min(0)
            ct = torch.as_tensor(d.pop(self.ct_key))[0].float()
            spacing = _spacing(img)
            density = hu_to_material(ct, self.kvp).density.float()
            kernel = vsv_kernel(self.nuclide, spacing, self.kernel_dir)
            vsv = vsv_dose_rate(activity, kernel, spacing, density)
            s_a = activity_scale(activity)
            s_d = s_a * self.c
            x = torch.stack([activity / s_a, density, vsv / s_d]).float()
            d[key] = MetaTensor(x, meta=img.meta, applied_operations=img.applied_operations) if isinstance(img, MetaTensor) else x
            d[self.scale_key] = torch.tensor(s_d, dtype=torch.float64)
            if self.label_key is not None and self.label_key in d:
                label = d[self.label_key]
                body = density >= BODY_MIN_DENSITY
                y = torch.where(body, torch.as_tensor(label)[0].float(), vsv) / s_d
                d[self.label_key] = MetaTensor(y[None], meta=label.meta) if isinstance(label, MetaTensor) else y[None]
        return d


class FromScaled(MapTransform):
    """``keys`` (network output, units of ``s_D``) x ``s_D`` (``scale_key``) -> dose rate in Gy/s,
    clipped at 0."""

    def __init__(self, keys: KeysCollection = "pred", scale_key: str = "dose_scale", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.scale_key = scale_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        scale = float(torch.as_tensor(d[self.scale_key]).reshape(-1)[0])
        for key in self.key_iterator(d):
            d[key] = (d[key] * scale).clamp_min(0)
        return d


def inference_items(input_image: str, input_ct: str, dataset_dir: str) -> list[dict]:
    """Items of the inference run: the one study of ``--input_image`` (activity, Bq/mL) and
    ``--input_ct`` (CT in HU on the same grid), or every test subject of ``dataset_dir``."""
    from common.errors import MissingFileError
    from common.learning.workflow import check_items, datalist_pairs, study_items

    if not input_image:
        return datalist_pairs(dataset_dir, "test", "activity")
    items = study_items(input_image)  # the activity first: named when missing or unreadable
    ct = Path(str(input_ct)).expanduser() if input_ct else None
    if ct is None or not ct.is_file():
        raise MissingFileError(f"{ct or '(none given)'}: CT not found (--input_ct); give the CT in HU on the activity's grid")
    items[0]["ct"] = str(ct.resolve())
    # the CT through the same file checks as the activity (readable, complete, 3D), on its grid
    return check_items(items, ("image", "ct"), {"image": "activity image", "ct": "CT"})
