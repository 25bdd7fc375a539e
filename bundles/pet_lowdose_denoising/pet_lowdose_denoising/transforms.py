"""Transforms and data helpers of the low-dose PET denoising bundle (``pet_lowdose_denoising``).

- SUV normalisation (:class:`ToSUVd`, inverse :class:`FromSUVd`): activity concentration
  [Bq/mL] x weight [g] / injected activity [Bq] (DESIGN 3, :func:`common.physics.suv`). The
  network sees SUV, so images of different patients, injected activities and scanners share one
  intensity scale without a per-image normalisation that would move SUVmax.
- Dose level (:class:`DoseLevelChanneld`): the dose reduction factor (DRF >= 1) appended as a
  constant channel ``ln(DRF) / ln(100)`` (0 at full dose, 1 at DRF 100), so one network knows
  how much to smooth. At inference, ``trained_range`` (4-100 for the shipped weights) refuses a
  DRF above it (the network never saw a dose code above 1) and warns below it (less noise than
  any training image: the output may be over-smoothed).
- Lesion weight (:class:`LesionWeightd`): a loss-weight channel appended to the training target,
  larger in the lesions of the phantom's label map (issue 13: the network must not trade lesion
  contrast for smoothness). The weight comes from the label map, never from the noisy images, so
  it does not select voxels by their noise (see :class:`pet_lowdose_denoising.losses.WeightedMSELoss`
  for the bias it trades).
- :func:`dose_items`: one training/evaluation item per (subject, DRF) from a datalist whose
  subjects hold one low-dose image per DRF; :func:`split_count_items`: noise2noise items from the
  split-count halves.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from common.data import load_datalist
from common.errors import InputError
from common.learning.metrics import dilate_box
from common.learning.transforms import source_name
from common.learning.workflow import check_items, no_entries, study_items
from common.physics import suv
from common.simulation.pet import drf_name
from common.simulation.phantoms import LESION_ID_START

__all__ = [
    "DOSE_CODE_REFERENCE",
    "SUV_UNITS",
    "BQML_UNITS",
    "check_drf",
    "dose_code",
    "suv_factor",
    "ToSUVd",
    "FromSUVd",
    "DoseLevelChanneld",
    "LesionWeightd",
    "dose_items",
    "split_count_items",
    "dose_datalist",
    "split_count_datalist",
    "inference_datalist",
]

#: DRF whose dose code is 1 (the largest DRF of the UDPET challenge, REFERENCE.md 5(a)).
DOSE_CODE_REFERENCE = 100.0
SUV_UNITS = "SUV"
BQML_UNITS = "Bq/mL"


def check_drf(drf: Any, name: str = "dose reduction factor") -> float:
    """``drf`` as a float >= 1, or ValueError (a DRF below 1 would be more than the full dose)."""
    try:
        value = float(drf.item() if isinstance(drf, torch.Tensor) else drf)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number >= 1, got {drf!r}") from None
    if not math.isfinite(value) or value < 1.0:
        raise InputError(
            f"{name} must be a finite number >= 1 (full dose / acquired dose; 1 = full dose), got {drf!r}"
        )
    return value


def dose_code(drf: Any) -> float:
    """Network conditioning value of a DRF: ``ln(DRF) / ln(100)`` (0 at full dose, 1 at DRF 100)."""
    return math.log(check_drf(drf)) / math.log(DOSE_CODE_REFERENCE)


def suv_factor(units: str, weight_kg: Any = None, injected_Bq: Any = None) -> float:
    """Multiplier from ``units`` to SUV: 1 for SUV, ``weight [g] / injected [Bq]`` for Bq/mL."""
    if units == SUV_UNITS:
        return 1.0
    if units != BQML_UNITS:
        raise InputError(f"units must be {SUV_UNITS!r} or {BQML_UNITS!r}, got {units!r} (--units)")
    if weight_kg is None or injected_Bq is None:
        raise InputError(
            "an image in Bq/mL needs the patient's weight and injected activity (decay-corrected to the image time) "
            f"to be converted to SUV; got weight_kg={weight_kg!r}, injected_Bq={injected_Bq!r}: pass --weight_kg "
            "and --injected_Bq, or --units SUV for an image already in SUV"
        )
    return float(suv(1.0, float(weight_kg), float(injected_Bq)))


class ToSUVd(MapTransform):
    """Convert images from Bq/mL to SUV using per-item ``weight_kg`` and ``injected_Bq``.

    Args:
        keys: image keys to convert (channel-first tensors, any shape).
        units: units of the stored images when an item has no ``units_key``: ``"Bq/mL"`` (needs
            the two keys below in each item) or ``"SUV"`` (unchanged).
        weight_key, injected_key: item keys of body weight [kg] and injected activity [Bq].
        units_key: item key that states the item's units (e.g. the datalist attribute ``units``
            of the synthetic datasets, ``"SUV"``); it wins over ``units``.
        factor_key: item key where the applied factor (SUV per stored unit) is stored, so
            :class:`FromSUVd` can convert a prediction back.
    """

    def __init__(
        self,
        keys: KeysCollection,
        units: str = BQML_UNITS,
        weight_key: str = "weight_kg",
        injected_key: str = "injected_Bq",
        units_key: str = "units",
        factor_key: str = "suv_factor",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        suv_factor(units, 1.0, 1.0)  # validates units early
        self.units, self.weight_key, self.injected_key = units, weight_key, injected_key
        self.units_key, self.factor_key = units_key, factor_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        units = d.get(self.units_key) or self.units
        try:
            factor = suv_factor(str(units), d.get(self.weight_key), d.get(self.injected_key))
        except InputError as exc:  # name the image, as every other check does
            key = next(iter(self.key_iterator(d)), None)
            raise InputError(f"{source_name(d[key]) if key is not None else 'input'}: {exc}") from None
        for key in self.key_iterator(d):
            d[key] = d[key] * factor
        d[self.factor_key] = factor
        return d


class FromSUVd(MapTransform):
    """Inverse of :class:`ToSUVd`: divide ``keys`` by the item's stored ``factor_key``."""

    def __init__(self, keys: KeysCollection, factor_key: str = "suv_factor", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.factor_key = factor_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.factor_key not in d:
            raise ValueError(f"FromSUVd: item has no {self.factor_key!r} (was ToSUVd applied?)")
        factor = float(torch.as_tensor(d[self.factor_key]).reshape(-1)[0])
        for key in self.key_iterator(d):
            d[key] = d[key] / factor
        return d


class DoseLevelChanneld(MapTransform):
    """Append the dose level as a constant channel: ``[C, X, Y, Z] -> [C + 1, X, Y, Z]``.

    Args:
        keys: image keys (channel-first).
        drf_key: item key of the dose reduction factor (>= 1; InputError otherwise, naming the file).
        trained_range: ``(low, high)`` DRFs the network was trained on, or None (training: any DRF).
            A DRF above ``high`` is refused (InputError naming the fix), one below ``low`` warned about.
    """

    def __init__(
        self,
        keys: KeysCollection,
        drf_key: str = "drf",
        trained_range: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.drf_key = drf_key
        self.trained_range = None if trained_range is None else (float(trained_range[0]), float(trained_range[1]))

    def _check_trained(self, drf: float, src: str) -> None:
        if self.trained_range is None:
            return
        low, high = self.trained_range
        if drf > high:
            raise InputError(
                f"{src}: dose reduction factor {drf:g} is above the {low:g}-{high:g} this network was trained on; "
                f"its output there is untested: pass --dose_reduction_factor {high:g} to denoise it as the strongest "
                "trained level, or retrain with that factor in dose_reduction_factors"
            )
        if drf < low:
            warnings.warn(
                f"{src}: dose reduction factor {drf:g} is below the {low:g}-{high:g} this network was trained on "
                "(less noise than any training image); the output may be smoothed more than needed"
            )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = getattr(img, "meta", {}) or {}
            src = meta.get("filename_or_obj", "<in-memory image>")
            if self.drf_key not in d:
                raise InputError(f"{src}: item has no dose reduction factor {self.drf_key!r}; pass --dose_reduction_factor")
            drf = check_drf(d[self.drf_key], f"{src}: dose reduction factor {self.drf_key!r}")
            self._check_trained(drf, src)
            code = dose_code(drf)
            channel = torch.full_like(torch.as_tensor(img[:1]), code)
            out = torch.cat([torch.as_tensor(img), channel], dim=0)
            if isinstance(img, MetaTensor):
                out = MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
            d[key] = out
        return d


class LesionWeightd(MapTransform):
    """Append a loss-weight channel to the target: ``[1, X, Y, Z] -> [2, X, Y, Z]``, ``weight`` in
    the lesions of the label map (ids >= ``min_id``) dilated by ``margin_vox`` voxels (the lesion's
    edge, where smoothing lowers its contrast most), 1 elsewhere. The label map is taken from the
    item and removed. An item without a label map (validation, user data) is left unchanged, and
    :class:`pet_lowdose_denoising.losses.WeightedMSELoss` then weighs every voxel alike.

    Args:
        keys: target key(s), channel-first, on the label map's grid.
        labels_key: item key of the label map ``[1, X, Y, Z]`` (integer ids).
        weight: loss weight of lesion voxels (>= 1).
        min_id: smallest lesion id (the phantoms' lesions have ids >= 100).
        margin_vox: dilation of each lesion, voxels.
    """

    def __init__(self, keys: KeysCollection, labels_key: str = "labels", weight: float = 10.0, min_id: int = LESION_ID_START,
                 margin_vox: int = 1, allow_missing_keys: bool = False) -> None:  # fmt: skip
        super().__init__(keys, allow_missing_keys)
        if not math.isfinite(float(weight)) or float(weight) < 1.0:
            raise ValueError(f"LesionWeightd: weight must be finite and >= 1, got {weight}")
        self.labels_key, self.weight, self.min_id, self.margin = labels_key, float(weight), int(min_id), int(margin_vox)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        labels = d.pop(self.labels_key, None)
        if labels is None:
            return d
        lesions = dilate_box(torch.as_tensor(labels)[0] >= self.min_id, [self.margin] * 3)
        for key in self.key_iterator(d):
            img = d[key]
            if tuple(img.shape[1:]) != tuple(lesions.shape):
                raise InputError(f"{source_name(img)}: target {tuple(img.shape[1:])} and label map {tuple(lesions.shape)} differ in shape")
            w = torch.where(lesions, self.weight, 1.0).to(torch.as_tensor(img).dtype)[None]
            out = torch.cat([torch.as_tensor(img), w], dim=0)
            d[key] = MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations) if isinstance(img, MetaTensor) else out
        return d


def _drf_key(template: str, drf: float) -> str:
    # the dataset writer names its keys with drf_name, so items find them by the same rule
    return template.format(drf=drf_name(drf))


def dose_items(
    entries: Sequence[Mapping[str, Any]],
    factors: Sequence[float],
    low_dose_key: str = "drf{drf}",
    target_key: str = "full",
    keep_keys: Sequence[str] = ("id", "weight_kg", "injected_Bq", "units"),
    extra_keys: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One item per (subject, DRF): ``{"image": low dose, "label": full dose, "drf": DRF, ...}``.

    Args:
        entries: datalist entries of subjects (absolute paths, e.g. ``common.data.load_datalist``).
        factors: DRFs to take (each >= 1); every entry must hold ``low_dose_key`` for each.
        low_dose_key: entry key of the low-dose image, ``{drf}`` replaced by the DRF.
        target_key: entry key of the target image (the label; full dose, or the complementary counts
            ``drf{drf}_comp``), ``{drf}`` replaced by the DRF; ``None`` for inference lists.
        keep_keys: entry keys copied when present (subject id, SUV attributes).
        extra_keys: ``{item key: entry key}`` also copied (e.g. noise-free image, label map);
            the entry key may hold ``{drf}``.
    """
    items = []
    for entry in entries:
        for drf in factors:
            drf = check_drf(drf)
            key = _drf_key(low_dose_key, drf)
            if key not in entry:
                raise InputError(f"datalist entry {entry.get('id', '?')} has no {key!r} (DRF {drf:g}); keys: {sorted(entry)}")
            item = {k: entry[k] for k in keep_keys if k in entry}
            item.update(image=entry[key], drf=drf)
            if target_key is not None:
                target = _drf_key(target_key, drf)
                if target not in entry:
                    raise InputError(f"datalist entry {entry.get('id', '?')} has no {target!r} (the target at DRF {drf:g}); keys: {sorted(entry)}")
                item["label"] = entry[target]
            for k, src in (extra_keys or {}).items():
                src = _drf_key(src, drf)
                if src not in entry:
                    raise InputError(f"datalist entry {entry.get('id', '?')} has no {src!r} (item key {k!r}); keys: {sorted(entry)}")
                item[k] = entry[src]
            items.append(item)
    return items


def split_count_items(
    entries: Sequence[Mapping[str, Any]],
    factors: Sequence[float],
    half_keys: tuple[str, str] = ("drf{drf}_half1", "drf{drf}_half2"),
    keep_keys: Sequence[str] = ("id", "weight_kg", "injected_Bq", "units"),
) -> list[dict[str, Any]]:
    """Noise2noise items from split-count halves of low-dose studies, both directions.

    Each half of a DRF-``d`` study holds half its counts, i.e. a DRF-``2d`` study reconstructed
    with sensitivity x 1/2 (DESIGN 3), so items carry ``drf = 2 d``. No full-dose image is used.
    Returns ``{"image": half A, "label": half B, "drf": 2 d, ...}`` and the swapped pair.
    """
    items = []
    for entry in entries:
        for drf in factors:
            drf = check_drf(drf)
            a, b = (_drf_key(k, drf) for k in half_keys)
            if a not in entry or b not in entry:
                raise InputError(
                    f"datalist entry {entry.get('id', '?')} has no split-count halves {a!r}/{b!r}; keys: {sorted(entry)}"
                )
            base = {k: entry[k] for k in keep_keys if k in entry}
            items.append({**base, "image": entry[a], "label": entry[b], "drf": 2.0 * drf})
            items.append({**base, "image": entry[b], "label": entry[a], "drf": 2.0 * drf})
    return items


def dose_datalist(
    dataset_dir: str,
    split: str,
    factors: Sequence[float],
    low_dose_key: str = "drf{drf}",
    target_key: str | None = "full",
    extra_keys: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """:func:`dose_items` of the first ``limit`` subjects of ``split`` of ``dataset_dir/datalist.json``;
    their NIfTI files checked (readable, 3D, low and full dose on one grid) before anything runs."""
    entries = load_datalist(dataset_dir, split)
    if not entries:
        raise no_entries(dataset_dir, split)
    items = dose_items(entries[:limit], factors, low_dose_key, target_key, extra_keys=extra_keys)
    return check_items(items, ("image", "label"), {"image": "low-dose PET", "label": "target PET"})


def split_count_datalist(
    dataset_dir: str, split: str, factors: Sequence[float], half_keys: tuple[str, str] = ("drf{drf}_half1", "drf{drf}_half2")
) -> list[dict[str, Any]]:
    """:func:`split_count_items` of ``split`` of ``dataset_dir/datalist.json``."""
    return split_count_items(load_datalist(dataset_dir, split), factors, tuple(half_keys))


def inference_datalist(input_image: str, facts: Mapping[str, Any], dataset_dir: str, low_dose_key: str = "drf{drf}") -> list[dict[str, Any]]:
    """Items of an inference run: the one study ``input_image`` with its per-study ``facts``
    (``drf``, ``units``, ``weight_kg``, ``injected_Bq``) when it is given, else the test subjects
    of ``dataset_dir`` at the DRF ``facts["drf"]``."""
    if input_image:
        return study_items(input_image, facts)
    return dose_datalist(dataset_dir, "test", [facts["drf"]], low_dose_key, None)
