"""Evaluation of ``dose_rate_prediction`` against the Monte Carlo reference (DESIGN 5, issue 15).

For each test subject (``activity`` Bq/mL, ``ct`` HU, ``labels``, ``dose_mc`` Gy/s with its
``dose_mc_std``), four dose-rate maps are compared with the Monte Carlo: the network, VSV in water,
density-scaled VSV and local deposition of the electron energy (photons ignored). Metrics, over
body voxels (density >= :data:`..transforms.BODY_MIN_DENSITY`):

- ``voxel_rel_error_pct``: mean |D - D_MC| / D_MC over body voxels above 10 % of the maximum MC dose
  rate (the MC's own mean relative uncertainty there is reported beside it: the noise floor);
- ``organ_error_pct``: mass-weighted mean dose rate of each organ (kidneys, liver, spleen, bone
  marrow = trabecular bone, lungs, lesions together) relative to the MC's, and the mean of its
  absolute values (``mean_abs_organ_error_pct``);
- ``lung``, ``bone`` (cortical and trabecular), ``interface`` (soft-tissue voxels within one voxel of
  lung or bone): dose-weighted voxel error sum |D - D_MC| / sum D_MC, in %.

Outputs: ``metrics.json`` (per subject and means), ``summary.json`` (headline for the main job) and
a PNG per subject up to ``max_figures`` (activity, CT, MC, network, density-scaled VSV, error maps,
dose-volume histograms).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.data import load_datalist, read_nifti, write_json
from common.dosimetry import local_deposition_dose_rate, vsv_dose_rate
from common.learning.metrics import dilate_box
from common.physics.attenuation import hu_to_material
from common.simulation.phantoms import LABELS, LESION_ID_START
from dose_rate_prediction.transforms import (
    BODY_MIN_DENSITY,
    activity_scale,
    dose_per_activity,
    vsv_kernel,
)

__all__ = ["METHODS", "ORGANS", "evaluate", "evaluate_subject", "load_weights", "predict"]

METHODS = ("network", "vsv_water", "vsv_density", "local_deposition")
ORGANS: dict[str, tuple[int, ...]] = {
    "kidneys": (LABELS["kidney_right"], LABELS["kidney_left"]),
    "liver": (LABELS["liver"],),
    "spleen": (LABELS["spleen"],),
    "bone_marrow": (LABELS["trabecular_bone"],),
    "lungs": (LABELS["lung"],),
}


def load_weights(network: torch.nn.Module, path: str | os.PathLike, device: Any = "cpu") -> torch.nn.Module:
    """Load ``model.pt`` (a state dict, or a checkpoint dict with ``model``) into ``network``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model weights not found; train first or download the bundle's model.pt")
    state = torch.load(path, map_location=device, weights_only=True)
    network.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
    return network.eval()


@torch.no_grad()
def predict(network: torch.nn.Module, activity: torch.Tensor, density: torch.Tensor, vsv_density: torch.Tensor,
            nuclide: str = "Lu-177", device: Any = "cpu") -> torch.Tensor:  # fmt: skip
    """Dose rate (Gy/s) of the network on the activity's own grid: the inputs of
    :class:`..transforms.DoseInputsd`, padded to a multiple of 8 and cropped back."""
    s_d = activity_scale(activity) * dose_per_activity(nuclide)
    x = torch.stack([activity / (s_d / dose_per_activity(nuclide)), density, vsv_density / s_d]).float()[None]
    shape = x.shape[2:]
    pad = [p for s in reversed(shape) for p in (0, (-s) % 8)]
    out = network(F.pad(x, pad).to(device))[0, 0, : shape[0], : shape[1], : shape[2]].cpu()
    return (out * s_d).clamp_min(0)


def _weighted_error(dose: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float | None:
    if not mask.any():
        return None
    return 100 * float((dose[mask] - ref[mask]).abs().sum() / ref[mask].sum())


def evaluate_subject(network: torch.nn.Module, entry: Mapping[str, Any], nuclide: str = "Lu-177", kernel_dir: str | None = None,
                     device: Any = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Metrics of one subject (module docstring) and the arrays its figure shows."""
    act_vol = read_nifti(entry["activity"])
    activity = torch.from_numpy(np.asarray(act_vol.array, dtype=np.float32))
    ct = torch.from_numpy(np.asarray(read_nifti(entry["ct"]).array, dtype=np.float32))
    labels = torch.from_numpy(np.asarray(read_nifti(entry["labels"]).array, dtype=np.int64))
    mc = torch.from_numpy(np.asarray(read_nifti(entry["dose_mc"]).array, dtype=np.float32))
    mc_std = torch.from_numpy(np.asarray(read_nifti(entry["dose_mc_std"]).array, dtype=np.float32))
    spacing = tuple(float(s) for s in np.sqrt((np.asarray(act_vol.affine)[:3, :3] ** 2).sum(0)))
    density = hu_to_material(ct).density.float()
    kernel = vsv_kernel(nuclide, spacing, kernel_dir)
    doses: dict[str, torch.Tensor] = {}
    t0 = time.perf_counter()
    doses["vsv_density"] = vsv_dose_rate(activity, kernel, spacing, density)
    doses["network"] = predict(network, activity, density, doses["vsv_density"], nuclide, device)
    t_network = time.perf_counter() - t0
    doses["vsv_water"] = vsv_dose_rate(activity, kernel, spacing)
    doses["local_deposition"] = local_deposition_dose_rate(activity, ct, spacing, nuclide)
    body = density >= BODY_MIN_DENSITY
    hot = body & (mc > 0.1 * mc[body].max())
    lung = labels == LABELS["lung"]
    bone = torch.isin(labels, torch.tensor([LABELS["cortical_bone"], LABELS["trabecular_bone"]]))
    soft = body & ~lung & ~bone & (density > 0.9) & (density < 1.2)
    interface = soft & dilate_box(lung | bone, (1, 1, 1))
    organs = {n: torch.isin(labels, torch.tensor(ids)) for n, ids in ORGANS.items()}
    organs["lesions"] = labels >= LESION_ID_START
    organs = {n: m for n, m in organs.items() if int(m.sum()) > 0}
    mass = density

    def organ_mean(d: torch.Tensor, m: torch.Tensor) -> float:
        return float((d[m] * mass[m]).sum() / mass[m].sum())

    per: dict[str, Any] = {}
    for name, d in doses.items():
        organ_err = {o: 100 * (organ_mean(d, m) / organ_mean(mc, m) - 1) for o, m in organs.items()}
        per[name] = {
            "voxel_rel_error_pct": 100 * float(((d[hot] - mc[hot]).abs() / mc[hot]).mean()),
            "organ_error_pct": organ_err,
            "mean_abs_organ_error_pct": float(np.mean([abs(v) for v in organ_err.values()])),
            "lung_error_pct": _weighted_error(d, mc, lung),
            "bone_error_pct": _weighted_error(d, mc, bone),
            "interface_error_pct": _weighted_error(d, mc, interface),
        }
    metrics = {
        "id": entry.get("id"),
        "mc_relative_std_pct": 100 * float((mc_std[hot] / mc[hot]).mean()),
        "mc_seconds": entry.get("mc_seconds"),
        "network_seconds": t_network,
        "n_hot_voxels": int(hot.sum()),
        "methods": per,
    }
    figure = {"activity": activity, "ct": ct, "mc": mc, "labels": labels, "body": body, "doses": doses, "organs": organs}
    return metrics, figure


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def summarize(subjects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means over subjects, per method."""
    keys = ("voxel_rel_error_pct", "mean_abs_organ_error_pct", "lung_error_pct", "bone_error_pct", "interface_error_pct")
    out: dict[str, Any] = {"n_subjects": len(subjects)}
    out["methods"] = {m: {k: _mean([s["methods"][m][k] for s in subjects]) for k in keys} for m in METHODS}
    organs = sorted({o for s in subjects for o in s["methods"]["network"]["organ_error_pct"]})
    out["abs_organ_error_pct"] = {
        m: {o: _mean([abs(s["methods"][m]["organ_error_pct"][o]) for s in subjects if o in s["methods"][m]["organ_error_pct"]])
            for o in organs} for m in METHODS
    }  # fmt: skip
    out["mc_relative_std_pct"] = _mean([s["mc_relative_std_pct"] for s in subjects])
    out["mc_seconds"] = _mean([s["mc_seconds"] for s in subjects])
    out["network_seconds"] = _mean([s["network_seconds"] for s in subjects])
    n, w = out["methods"]["network"], out["methods"]["vsv_water"]
    out["targets"] = {
        "mean_abs_organ_error_pct": {"value": n["mean_abs_organ_error_pct"], "target": "<= 5", "met": n["mean_abs_organ_error_pct"] <= 5},
        "lung_error_vs_vsv_water": {"value": n["lung_error_pct"] / w["lung_error_pct"], "target": "<= 0.5",
                                    "met": n["lung_error_pct"] <= 0.5 * w["lung_error_pct"]},
        "bone_error_vs_vsv_water": {"value": n["bone_error_pct"] / w["bone_error_pct"], "target": "<= 0.5",
                                    "met": n["bone_error_pct"] <= 0.5 * w["bone_error_pct"]},
    }  # fmt: skip
    return out


def _figure(path: Path, fig: Mapping[str, Any], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, mc = fig["labels"], fig["mc"]
    kid = torch.isin(labels, torch.tensor(ORGANS["kidneys"]))
    z = int(torch.nonzero(kid)[:, 2].float().mean()) if kid.any() else labels.shape[2] // 2
    body = fig["body"]
    vmax = float(mc[body].max())
    doses = fig["doses"]
    panels = [("activity (Bq/mL)", fig["activity"], "magma", None), ("CT (HU)", fig["ct"], "gray", (-1000, 1500)),
              ("Monte Carlo (Gy/s)", mc * body, "magma", (0, vmax)), ("network", doses["network"] * body, "magma", (0, vmax)),
              ("density-scaled VSV", doses["vsv_density"] * body, "magma", (0, vmax))]  # fmt: skip
    for name in ("network", "vsv_density", "vsv_water"):
        panels.append((f"{name} - MC (% of max)", 100 * (doses[name] - mc) * body / vmax, "RdBu_r", (-5, 5)))
    f, axes = plt.subplots(2, 5, figsize=(17, 7))
    for a, (name, img, cmap, lim) in zip(axes.flat, panels):
        im = a.imshow(
            img[:, :, z].numpy().T,
            cmap=cmap,
            origin="lower",
            vmin=None if lim is None else lim[0],
            vmax=None if lim is None else lim[1],
        )
        a.set_title(name, fontsize=8)
        a.set_xticks([])
        a.set_yticks([])
        f.colorbar(im, ax=a, fraction=0.04)
    a = axes.flat[-2]
    a.axis("off")
    a = axes.flat[-1]
    for organ, style in (("kidneys", "-"), ("lungs", "--"), ("lesions", ":")):
        m = fig["organs"].get(organ)
        if m is None:
            continue
        for name, d, color in (("MC", mc, "k"), ("network", doses["network"], "C0"), ("DS-VSV", doses["vsv_density"], "C1"),
                               ("VSV water", doses["vsv_water"], "C2")):  # fmt: skip
            v = np.sort(d[m].numpy())
            a.plot(v, 1 - np.arange(len(v)) / len(v), style, color=color, label=f"{organ} {name}", lw=1)
    a.set_xscale("log")
    a.set_xlabel("dose rate (Gy/s)")
    a.set_ylabel("volume fraction")
    a.set_title("cumulative DVH", fontsize=8)
    a.legend(fontsize=5)
    f.suptitle(title, fontsize=9)
    f.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    f.savefig(tmp, dpi=80)
    plt.close(f)
    os.replace(tmp, path)


def evaluate(network: torch.nn.Module, dataset_dir: str | os.PathLike, output_dir: str | os.PathLike, nuclide: str = "Lu-177",
             kernel_dir: str | None = None, n_test: int | None = None, max_figures: int = 2, split: str = "test",
             device: Any = "cpu") -> dict[str, Any]:  # fmt: skip
    """Evaluate ``network`` on the ``split`` subjects of ``dataset_dir``; writes ``metrics.json``,
    ``summary.json`` and figures to ``output_dir``; returns the metrics."""
    entries = load_datalist(dataset_dir, split)[:n_test]
    if not entries:
        raise ValueError(f"{dataset_dir}: no '{split}' subjects to evaluate")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    network = network.to(device).eval()
    subjects = []
    for i, entry in enumerate(entries):
        metrics, fig = evaluate_subject(network, entry, nuclide, kernel_dir, device)
        subjects.append(metrics)
        r = metrics["methods"]
        print(f"{metrics['id']}: voxel error (>10% max) " + ", ".join(f"{m} {r[m]['voxel_rel_error_pct']:.2f} %" for m in METHODS)
              + f"; MC uncertainty {metrics['mc_relative_std_pct']:.2f} %", flush=True)  # fmt: skip
        if i < max_figures:
            _figure(out / f"{metrics['id']}.png", fig, f"{metrics['id']}: {nuclide} dose rate, axial slice through the kidneys")
    result = {"dataset_dir": str(dataset_dir), "split": split, "summary": summarize(subjects), "subjects": subjects}
    write_json(out / "metrics.json", result)
    s = result["summary"]
    headline = {
        # the organ mean is what dosimetry reports; the voxel error travels beside it
        "metric": "mean |organ dose-rate error| vs Monte Carlo (network vs density-scaled VSV)",
        "unit": "%",
        "model": s["methods"]["network"]["mean_abs_organ_error_pct"],
        "baseline": s["methods"]["vsv_density"]["mean_abs_organ_error_pct"],
        "vsv_water": s["methods"]["vsv_water"]["mean_abs_organ_error_pct"],
        "local_deposition": s["methods"]["local_deposition"]["mean_abs_organ_error_pct"],
        "voxel_error_pct": {m: v["voxel_rel_error_pct"] for m, v in s["methods"].items()},
        "mc_relative_std_pct": s["mc_relative_std_pct"],
        "target": "organs <= 5 %; lung, bone <= 0.5 x VSV-water",
    }
    write_json(
        out / "summary.json", {"bundle": "dose_rate_prediction", "n_subjects": len(subjects), "headline": headline, "metrics": s}
    )
    for name, t in s["targets"].items():
        print(f"target {name}: {t['value']} ({t['target']}) {'met' if t['met'] else 'NOT met'}")
    return result
