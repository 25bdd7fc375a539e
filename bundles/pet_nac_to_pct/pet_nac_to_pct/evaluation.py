"""Task metric of pseudo-CT attenuation correction: the SUV error of the PET it corrects.

The PET of each test subject is reconstructed three times from the same measured prompts and the
same scatter + randoms estimate, changing only the attenuation map (DESIGN section 5.1):

- ``ct``: mu-map of the true CT (the reference, "true-CT AC"),
- ``pct``: mu-map of the network's pseudo-CT,
- ``baseline``: mu-map of the 3-class segmentation of the NAC PET (:mod:`pet_nac_to_pct.baseline`).

All three go through :func:`common.physics.ct_to_mu` with the air rule the simulation used. Regions: each organ (label ids 1..99 except
air), each lesion (ids >= 100), and bone-adjacent soft tissue (within 10 mm of cortical bone,
:func:`common.learning.metrics.bone_adjacent_mask`). Regional SUV error = |mean_X / mean_trueCT - 1|,
averaged over subjects and regions. Pseudo-CT accuracy: MAE in HU in the body, in bone and in lung.

:class:`PCTTaskEvaluation` is an ignite handler for a MONAI ``SupervisedEvaluator`` (the bundle's
``evaluate.json``): per test subject it reconstructs, measures and keeps the numbers; at the end it
writes ``metrics.json`` (per subject and region), ``summary.json`` (the repository's results table
format) and PNG figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.learning import metrics
from common.physics import ct_to_mu
from pet_nac_to_pct.baseline import baseline_pseudo_ct

__all__ = [
    "METHODS",
    "CLASS_ORACLE",
    "phantom_class_hu",
    "class_mean_ct",
    "region_groups",
    "reconstruct_ac",
    "suv_errors",
    "hu_errors",
    "evaluate_subject",
    "summarize",
    "save_figure",
    "PCTTaskEvaluation",
]

METHODS = ("pct", "baseline")
#: Diagnostic method: the true label map with each tissue's population-mean CT number, i.e. a
#: perfect tissue classifier that cannot know the subject's own densities (:func:`class_mean_ct`).
CLASS_ORACLE = "class_mean_oracle"
# Label names of air inside or outside the body: no tissue, no uptake, not a region.
NON_TISSUE_WORDS = ("background", "airway", "gas", "sinus")
PET_ENERGY_KEV = 511.0


def _names(label_names: Mapping[Any, str]) -> dict[int, str]:
    return {int(k): str(v) for k, v in label_names.items()}


def region_groups(labels: torch.Tensor, label_names: Mapping[Any, str]) -> dict[str, list[int]]:
    """Label ids present in ``labels``, grouped by name (:data:`common.simulation.phantoms.LABELS` naming):
    ``organ`` (ids 1..99 that are tissue, not air: background, airway, gas, sinus are left out),
    ``lesion`` (>= 100), ``bone`` (names with 'bone'), ``cortical_bone`` (bone ids whose name has
    'cortical', else all bone ids), ``lung``, ``soft_tissue`` (organ ids neither bone nor lung).
    """
    names = _names(label_names)
    present = sorted(int(i) for i in torch.unique(torch.as_tensor(labels)).tolist())

    def name(i: int) -> str:
        return names.get(i, "").lower()

    organ = [i for i in present if 0 < i < 100 and not any(w in name(i) for w in NON_TISSUE_WORDS)]
    bone = [i for i in organ if "bone" in name(i)]
    cortical = [i for i in bone if "cortical" in name(i)] or bone
    lung = [i for i in organ if "lung" in name(i)]
    soft = [i for i in organ if i not in bone and i not in lung]
    return {
        "organ": organ,
        "lesion": [i for i in present if i >= 100],
        "bone": bone,
        "cortical_bone": cortical,
        "lung": lung,
        "soft_tissue": soft,
    }


def reconstruct_ac(raw: Mapping[str, Any], mu_maps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OSEM of one stored PET acquisition with each attenuation map, in SUV.

    Every reconstruction uses the measured prompts, the stored expected scatter + randoms
    (``background``, the shared estimate of DESIGN 5.1), the count scale and the OSEM settings of
    the simulation (the ``raw.npz`` of a ``pet_nac_to_pct`` subject), through
    :func:`common.simulation.pet.reconstruct_pet_suv`; only the attenuation factors change.

    Args:
        raw: the subject's stored acquisition (keys in :mod:`common.simulation.pet`).
        mu_maps: name -> mu-map [X, Y, Z] in 1/cm at 511 keV, all of the stored image shape.

    Returns:
        name -> SUV image [X, Y, Z].
    """
    from common.simulation.pet import reconstruct_pet_suv

    for key in ("prompts", "background", "image_shape"):
        if key not in raw:
            raise ValueError(f"raw PET data lacks {key!r} (a pet_nac_to_pct raw.npz holds it).")
    shape = tuple(int(v) for v in np.asarray(raw["image_shape"]).reshape(-1))
    for name, mu in mu_maps.items():
        if tuple(mu.shape) != shape:
            raise ValueError(f"mu-map {name!r} has shape {tuple(mu.shape)}, the acquisition's image shape is {shape}.")
    return {name: reconstruct_pet_suv(raw, torch.as_tensor(mu, dtype=torch.float32)) for name, mu in mu_maps.items()}


def suv_errors(
    images: Mapping[str, torch.Tensor],
    reference: torch.Tensor,
    labels: torch.Tensor,
    label_names: Mapping[Any, str],
    spacing_mm: Sequence[float],
    bone_distance_mm: float = 10.0,
) -> dict[str, dict[str, dict[str, float]]]:
    """Signed regional mean errors (percent) of each image against the true-CT AC ``reference``.

    Returns ``{method: {"organ": {name: %}, "lesion": {name: %}, "bone_adjacent": {"bone_adjacent": %}}}``.
    Regions missing from ``labels`` are left out; no bone gives no bone-adjacent entry.
    """
    labels = torch.as_tensor(labels)
    names = _names(label_names)
    groups = region_groups(labels, label_names)
    near = metrics.bone_adjacent_mask(labels, spacing_mm, groups["cortical_bone"], groups["soft_tissue"], bone_distance_mm)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, image in images.items():
        res: dict[str, dict[str, float]] = {}
        for group in ("organ", "lesion"):
            errs = metrics.regional_mean_error(image, reference, labels, groups[group]) if groups[group] else {}
            res[group] = {names.get(i, f"label_{i}"): 100.0 * e for i, e in errs.items()}
        res["bone_adjacent"] = {"bone_adjacent": 100.0 * metrics.region_mean_error(image, reference, near)} if near.any() else {}
        out[method] = res
    return out


def hu_errors(
    images: Mapping[str, torch.Tensor], ct_hu: torch.Tensor, labels: torch.Tensor, label_names: Mapping[Any, str]
) -> dict[str, dict[str, float]]:
    """MAE in HU of each pseudo-CT against the CT in the body (label > 0, SynthRAD's body mask,
    REFERENCE.md 5(b)), in bone (cortical and trabecular) and in lung."""
    labels = torch.as_tensor(labels)
    groups = region_groups(labels, label_names)
    masks = {
        "body": labels > 0,
        "bone": torch.isin(labels, torch.tensor(groups["bone"], device=labels.device)),
        "lung": torch.isin(labels, torch.tensor(groups["lung"], device=labels.device)),
    }
    return {
        method: {region: metrics.mae(hu, ct_hu, m) for region, m in masks.items() if m.any()}
        for method, hu in images.items()
    }


def phantom_class_hu() -> dict[str, float]:
    """Population-mean CT number (HU) of each tissue of :mod:`common.simulation.phantoms`: the middle of the
    range each subject's value is drawn from (:data:`common.simulation.phantoms.HU_RANGES`)."""
    from common.simulation.phantoms import HU_RANGES

    return {name: (lo + hi) / 2.0 for name, (lo, hi) in HU_RANGES.items()}


def class_mean_ct(labels: torch.Tensor, label_names: Mapping[Any, str], class_hu: Mapping[str, float], lesion_class: str = "soft_tissue") -> torch.Tensor:
    """A CT in HU from a label map: each label's voxels get ``class_hu[name]``; lesions (ids >= 100)
    get ``class_hu[lesion_class]``. Refuses a label whose name has no value."""
    labels = torch.as_tensor(labels)
    names = _names(label_names)
    out = torch.full(labels.shape, -1000.0)
    for i in torch.unique(labels).tolist():
        name = lesion_class if i >= 100 else names.get(int(i), "background" if i == 0 else None)
        if name not in class_hu:
            raise ValueError(f"class_mean_ct: no CT number for label {i} ({name!r}); known: {sorted(class_hu)}.")
        out[labels == i] = float(class_hu[name])
    return out


def evaluate_subject(
    nac: torch.Tensor,
    ct_hu: torch.Tensor,
    pct_hu: torch.Tensor,
    labels: torch.Tensor,
    label_names: Mapping[Any, str],
    raw: Mapping[str, Any],
    baseline_kwargs: Mapping[str, Any] | None = None,
    kvp: int = 120,
    class_hu: Mapping[str, float] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The task metric of one subject.

    Args:
        nac: NAC PET [X, Y, Z] (the network's input, on the CT grid).
        ct_hu, pct_hu: true CT and pseudo-CT [X, Y, Z] in HU.
        labels, label_names: label map [X, Y, Z] and its names (organs 1..99, lesions >= 100).
        raw: the subject's stored acquisition (:func:`reconstruct_ac`); ``spacing_mm`` and the CTAC
            air rule ``ct_air_below_hu`` (NaN or absent: none) from it.
        baseline_kwargs: arguments of :func:`pet_nac_to_pct.baseline.segment_nac`.
        kvp: CT tube voltage of the HU -> mu conversion.
        class_hu: tissue name -> population CT number; when given, also score the diagnostic
            :data:`CLASS_ORACLE` (:func:`class_mean_ct` of the true labels).

    Returns:
        (metrics, images): metrics ``{"suv_error_pct": ..., "mae_hu": ..., "time_s": ...}``;
        images ``baseline_hu`` and the AC reconstructions (SUV) ``ac_ct``, ``ac_pct``, ``ac_baseline``.
    """
    t0 = time.perf_counter()
    spacing_mm = tuple(float(v) for v in np.asarray(raw["spacing_mm"]))
    shapes = {tuple(torch.as_tensor(x).shape) for x in (nac, ct_hu, pct_hu, labels)}
    if len(shapes) != 1:
        raise ValueError(f"nac, ct_hu, pct_hu and labels must share one shape, got {sorted(shapes)}.")
    baseline_hu = baseline_pseudo_ct(nac, spacing_mm, **dict(baseline_kwargs or {}))
    air = float(np.asarray(raw.get("ct_air_below_hu", math.nan)))
    air = None if math.isnan(air) else air  # the simulation's own rule, so true-CT AC reproduces it

    def mu(hu: torch.Tensor) -> torch.Tensor:
        return ct_to_mu(hu, PET_ENERGY_KEV, kvp, air_below_hu=air)

    mus = {"ct": mu(ct_hu), "pct": mu(pct_hu), "baseline": mu(baseline_hu)}
    if class_hu is not None:
        mus[CLASS_ORACLE] = mu(class_mean_ct(labels, label_names, class_hu))
    ac = reconstruct_ac(raw, mus)
    suv = suv_errors({m: ac[m] for m in mus if m != "ct"}, ac["ct"], labels, label_names, spacing_mm)
    hu = hu_errors({"pct": pct_hu, "baseline": baseline_hu}, ct_hu, labels, label_names)
    result = {"suv_error_pct": suv, "mae_hu": hu, "time_s": time.perf_counter() - t0}
    images = {"baseline_hu": baseline_hu, **{f"ac_{k}": v for k, v in ac.items()}}
    return result, images


def _mean_abs(values: Sequence[float]) -> float:
    return float(np.mean(np.abs(values))) if len(values) else math.nan


def summarize(per_subject: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate :func:`evaluate_subject` results over subjects.

    ``regional``: mean over subjects and regions (organs and lesions) of |error| (percent);
    also per group (``organ``, ``lesion``, ``bone_adjacent``), the maximum |error|, and the mean
    HU MAE per region.
    """
    out: dict[str, Any] = {}
    first = next(iter(per_subject.values()))
    for method in [m for m in (*METHODS, CLASS_ORACLE) if m in first["suv_error_pct"]]:
        groups: dict[str, list[float]] = {"organ": [], "lesion": [], "bone_adjacent": []}
        for res in per_subject.values():
            for group, values in res["suv_error_pct"][method].items():
                groups[group].extend(values.values())
        regional = groups["organ"] + groups["lesion"]
        hu_regions = sorted({r for res in per_subject.values() for r in res["mae_hu"].get(method, {})})
        out[method] = {
            "regional_suv_error_pct": _mean_abs(regional),
            "regional_suv_error_max_pct": float(np.max(np.abs(regional))) if regional else math.nan,
            **{f"{g}_suv_error_pct": _mean_abs(v) for g, v in groups.items()},
            "n_regions": {g: len(v) for g, v in groups.items()},
            "mae_hu": {
                r: float(np.mean([res["mae_hu"][method][r] for res in per_subject.values() if r in res["mae_hu"].get(method, {})]))
                for r in hu_regions
            },
        }
    p, b = out["pct"]["bone_adjacent_suv_error_pct"], out["baseline"]["bone_adjacent_suv_error_pct"]
    # no bone-adjacent region anywhere: not judged (NaN), not an infinite improvement
    out["bone_adjacent_improvement"] = math.nan if math.isnan(p) else b / p if p > 0 else math.inf
    # per subject, mean |error| over its organs and lesions: no study may be worse than the baseline
    by_subject = {
        sid: {m: _mean_abs([v for g in ("organ", "lesion") for v in res["suv_error_pct"][m].get(g, {}).values()]) for m in METHODS}
        for sid, res in sorted(per_subject.items())
    }
    out["per_subject_regional_suv_error_pct"] = by_subject
    out["n_subjects_pct_worse_than_baseline"] = sum(v["pct"] > v["baseline"] for v in by_subject.values())
    out["targets"] = check_targets(out)
    return out


#: Targets of issue 13 on held-out phantoms: organs within 2x the class-mean floor, lesions, bone-adjacent
#: regions against the segmentation baseline, and the HU error in the body.
TARGETS = {"organ_suv_error_pct_max": 2.5, "lesion_suv_error_pct_max": 10.0, "bone_adjacent_improvement_min": 3.0, "mae_body_hu_max": 100.0}


def check_targets(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: {"value", "target", "met"}}`` of :data:`TARGETS` against :func:`summarize` output."""
    p = summary["pct"]
    values = {
        "organ_suv_error_pct": (p["organ_suv_error_pct"], f"<= {TARGETS['organ_suv_error_pct_max']}", lambda v: v <= TARGETS["organ_suv_error_pct_max"]),
        "lesion_suv_error_pct": (p["lesion_suv_error_pct"], f"<= {TARGETS['lesion_suv_error_pct_max']}", lambda v: v <= TARGETS["lesion_suv_error_pct_max"]),
        "bone_adjacent_improvement": (summary["bone_adjacent_improvement"], f">= {TARGETS['bone_adjacent_improvement_min']}",
                                      lambda v: v >= TARGETS["bone_adjacent_improvement_min"]),
        "mae_body_hu": (p["mae_hu"].get("body", math.nan), f"<= {TARGETS['mae_body_hu_max']}", lambda v: v <= TARGETS["mae_body_hu_max"]),
    }  # fmt: skip
    # a region group absent from every subject (e.g. no lesion) is not judged: met is None
    return {k: {"value": v, "target": t, "met": None if math.isnan(v) else bool(ok(v))} for k, (v, t, ok) in values.items()}


def save_figure(
    path: str | Path,
    nac: torch.Tensor,
    ct_hu: torch.Tensor,
    pct_hu: torch.Tensor,
    images: Mapping[str, torch.Tensor],
    body: torch.Tensor,
    title: str = "",
) -> Path:
    """PNG of one subject, coronal slice through the body centre: NAC, CT, pCT, pCT - CT, baseline
    pseudo-CT; SUV error maps (percent) of pCT-AC and baseline-AC against true-CT AC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.data import atomic_write_bytes

    def cor(x: torch.Tensor) -> np.ndarray:
        a = torch.as_tensor(x).detach().cpu().float().numpy()
        return np.rot90(a[:, a.shape[1] // 2, :])  # [X, Z] shown with Z up

    ref = torch.as_tensor(images["ac_ct"]).float()
    floor = 0.05 * float(ref[torch.as_tensor(body).bool()].mean()) if torch.as_tensor(body).any() else 1e-6
    # error maps only where the reference has counts: elsewhere the ratio is noise
    valid = torch.as_tensor(body).bool() & (ref > floor)

    def err(img: torch.Tensor) -> np.ndarray:
        e = torch.where(valid, 100.0 * (torch.as_tensor(img).float() / ref.clamp_min(floor) - 1.0), torch.zeros_like(ref))
        return cor(e)

    panels = [
        ("NAC PET [SUV]", cor(nac), "gray_r", 0.0, float(np.percentile(torch.as_tensor(nac).float().numpy(), 99.5))),
        ("CT [HU]", cor(ct_hu), "gray", -1000, 1500),
        ("pseudo-CT [HU]", cor(pct_hu), "gray", -1000, 1500),
        ("pCT - CT [HU]", cor(torch.as_tensor(pct_hu) - torch.as_tensor(ct_hu)), "RdBu_r", -500, 500),
        ("baseline [HU]", cor(images["baseline_hu"]), "gray", -1000, 1500),
        ("SUV error pCT-AC [%]", err(images["ac_pct"]), "RdBu_r", -10, 10),
        ("SUV error baseline-AC [%]", err(images["ac_baseline"]), "RdBu_r", -10, 10),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.4))
    for ax, (name, arr, cmap, vmin, vmax) in zip(axes, panels):
        im = ax.imshow(arr, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


class PCTTaskEvaluation:
    """Ignite handler computing the AC task metric for each subject a MONAI evaluator processes.

    The evaluator's postprocessing must leave ``pred`` (pseudo-CT in HU) on the original grid of
    the subject's files (``Invertd``). The rest is read from the datalist entry, which the
    evaluator's output keeps: the NAC, CT and label NIfTI paths and the raw-data ``.npz`` with the
    prompts, the scatter + randoms estimate and the reconstruction settings.

    Args:
        output_dir: where ``metrics.json``, ``summary.json`` and PNGs go.
        keys: datalist keys ``nac``, ``ct``, ``labels``, ``raw`` (npz).
        label_names: label id -> name; default: read from the raw npz / datalist entry.
        max_figures: PNGs for the first N subjects.
        headline_target: the target text written in ``summary.json``.
        bundle: bundle name for ``summary.json``.
        class_hu: tissue name -> population CT number (HU), e.g. :func:`phantom_class_hu` for
            the synthetic data: also score :data:`CLASS_ORACLE`, the floor set by subject-specific
            densities that the NAC does not show.
    """

    def __init__(
        self,
        output_dir: str,
        keys: Mapping[str, str] | None = None,
        label_names: Mapping[Any, str] | None = None,
        max_figures: int = 2,
        headline_target: str | None = None,
        bundle: str = "pet_nac_to_pct",
        class_hu: Mapping[str, float] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.keys = {"nac": "nac", "ct": "ct", "labels": "labels", "raw": "raw", **dict(keys or {})}
        self.label_names = label_names
        self.max_figures = int(max_figures)
        self.target = headline_target or (
            f"organs <= {TARGETS['organ_suv_error_pct_max']:g} %, lesions <= {TARGETS['lesion_suv_error_pct_max']:g} %, bone-adjacent "
            f">= {TARGETS['bone_adjacent_improvement_min']:g}x lower than the baseline, MAE body <= {TARGETS['mae_body_hu_max']:g} HU"
        )
        self.bundle = bundle
        self.class_hu = class_hu
        self.results: dict[str, dict[str, Any]] = {}

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def reset(self, engine=None) -> None:
        self.results = {}

    def iteration_completed(self, engine) -> None:
        # MONAI's evaluator output holds image/label/pred only; the datalist fields (file paths)
        # are in the decollated batch, item by item.
        output, batch = engine.state.output, engine.state.batch
        output = output if isinstance(output, list) else [output]
        batch = batch if isinstance(batch, list) else [batch] * len(output)
        for out, item in zip(output, batch):
            self.evaluate_item({**item, "pred": out["pred"]})

    def evaluate_item(self, item: Mapping[str, Any]) -> dict[str, Any]:
        from common.data import read_nifti, read_npz

        k = self.keys
        missing = [k[name] for name in ("nac", "ct", "labels", "raw") if not isinstance(item.get(k[name]), str)]
        if missing:
            raise ValueError(f"PCTTaskEvaluation: the evaluator output lacks the file path(s) {missing}; keep them in the datalist entries.")
        nac, ct, lab = (read_nifti(item[k[n]]) for n in ("nac", "ct", "labels"))
        raw = read_npz(item[k["raw"]])
        pred = torch.as_tensor(item["pred"]).detach().cpu().float()
        pred = pred[0] if pred.ndim == 4 else pred
        if tuple(pred.shape) != tuple(ct.array.shape):
            raise ValueError(f"{item[k['ct']]}: pred shape {tuple(pred.shape)} differs from the CT's {ct.array.shape}; invert the preprocessing first.")
        names = self.label_names or _label_names_from(raw, item)
        sid = str(item.get("id", Path(item[k["nac"]]).parent.name))
        result, images = evaluate_subject(
            torch.from_numpy(nac.array.astype(np.float32)),
            torch.from_numpy(ct.array.astype(np.float32)),
            pred,
            torch.from_numpy(lab.array.astype(np.int64)),
            names,
            raw,
            class_hu=self.class_hu,
        )
        self.results[sid] = result
        if len(self.results) <= self.max_figures:
            body = torch.from_numpy(lab.array > 0)
            save_figure(self.output_dir / f"{self.bundle}_{sid}.png", nac.array, ct.array, pred, images, body, title=sid)
        return result

    def epoch_completed(self, engine=None) -> dict[str, Any]:
        from common.data import write_json

        if not self.results:
            raise ValueError("PCTTaskEvaluation: no subject was evaluated.")
        summary = _finite(summarize(self.results))
        write_json(self.output_dir / "metrics.json", {"summary": summary, "subjects": _finite(self.results)})
        headline = {
            "metric": "mean |regional SUV error| (organs and lesions) of PET with pCT-AC vs true-CT AC",
            "unit": "%",
            "model": summary["pct"]["regional_suv_error_pct"],
            "baseline": summary["baseline"]["regional_suv_error_pct"],
            "target": self.target,
        }
        write_json(
            self.output_dir / "summary.json",
            {"bundle": self.bundle, "n_subjects": len(self.results), "headline": headline, "metrics": summary},
        )
        return summary


def _label_names_from(raw: Mapping[str, np.ndarray], item: Mapping[str, Any]) -> dict[int, str]:
    if "label_names" in item and isinstance(item["label_names"], Mapping):
        return _names(item["label_names"])
    if "label_ids" in raw and "label_names" in raw:
        return {int(i): str(n) for i, n in zip(raw["label_ids"], raw["label_names"])}
    raise ValueError("PCTTaskEvaluation: no label names (give label_names, or store label_ids/label_names in the raw npz).")


def _finite(obj: Any) -> Any:
    """NaN/Inf floats (an empty region group, a zero baseline error) as None, for strict JSON."""
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
