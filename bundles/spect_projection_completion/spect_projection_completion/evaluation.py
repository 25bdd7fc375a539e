"""Evaluation of ``spect_projection_completion``: the completed views themselves, then the
reconstruction they enable (DESIGN 5).

For each test subject of a ``spect_projection_completion`` dataset (``raw`` projections, ``ct``,
``labels``, true ``activity``), the sparse study is the views ``0, f, 2f, ...`` of the full
acquisition, and five projection sets are reconstructed with the same OSEM (iterations x subsets;
6 subsets divide 30, 60 and 120 views), attenuation (the CT's mu-map), collimator PSF and scatter
background as the simulation:

- ``full``: all measured views (the reference acquisition, ``f`` times the sparse scan time);
- ``network``: the acquired views plus the network's missing views;
- ``interpolated``: the acquired views plus linear interpolation between them (baseline);
- ``sparse``: the acquired views alone (baseline: OSEM of ``N / f`` views);
- ``noise_free``: the expected projections of the true activity at all views (the reference that
  isolates what acquisition and completion add; OSEM of noise-free data).

Metrics (images in Bq/mL decay-corrected to injection; NRMSE = RMSE / range of the reference,
:func:`common.learning.metrics.nrmse`):

- views: NRMSE of ``network`` and ``interpolated`` at the missing views against the measured
  full set and against the expected (noise-free) projections;
- reconstruction: NRMSE in the body against ``noise_free`` and against the true activity; organ
  mean activity (kidneys, liver, spleen, trabecular bone as the bone-marrow-like region) relative
  to ``full`` and to the truth; lesion contrast recovery against the truth (lesion vs a 2-voxel
  shell around it; small lesions next to hot organs make it small or negative, as the collimator
  blur is about 10-15 mm wide) and the recovery coefficient (mean in the lesion / true mean), each
  with its difference to ``full`` in percentage points; ``background_rms_pct``:
  the RMS of (image - ``noise_free``) in fat, muscle and soft tissue as % of the ``noise_free``
  mean there: noise plus the streak and angular artefacts of missing views.

Outputs: ``metrics.json`` (per subject and the mean over subjects, with the issue-14 targets and
whether each is met), ``summary.json`` (the headline the main job tables, and the means) and one
PNG per subject up to ``max_figures`` (sinogram and reconstruction of each method).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.data import load_datalist, read_nifti, read_npz, write_json
from common.learning.metrics import contrast_recovery, dilate_box, nrmse
from common.physics import hu_to_mu
from common.physics.projectors import CollimatorPSF, SPECTProjector
from common.simulation.phantoms import LABELS, LESION_ID_START
from common.simulation.spect import ViewSubset, interpolate_views, reconstruct_spect

__all__ = [
    "METHODS",
    "ORGANS",
    "complete_views",
    "evaluate",
    "evaluate_subject",
    "load_weights",
]

#: Regions whose mean activity is compared (label ids of common.simulation.phantoms).
ORGANS: dict[str, tuple[int, ...]] = {
    "kidneys": (LABELS["kidney_right"], LABELS["kidney_left"]),
    "liver": (LABELS["liver"],),
    "spleen": (LABELS["spleen"],),
    "bone_marrow": (LABELS["trabecular_bone"],),
}
BACKGROUND = (LABELS["fat"], LABELS["muscle"], LABELS["soft_tissue"])
METHODS = ("full", "network", "interpolated", "sparse", "noise_free")
#: Issue 14 targets at 1/4 of the views.
TARGETS = {
    "recon_nrmse_vs_interpolated_max": 0.70,  # network NRMSE <= 0.7 x interpolated
    "recon_nrmse_vs_full_max": 1.15,  # network NRMSE <= 1.15 x full view
    "organ_error_vs_full_pct_max": 3.0,
    "lesion_contrast_recovery_pp_max": 5.0,
}


def load_weights(network: torch.nn.Module, path: str | os.PathLike, device: Any = "cpu") -> torch.nn.Module:
    """Load ``model.pt`` (a state dict, or a checkpoint dict with ``model``) into ``network``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model weights not found; train first or download the bundle's model.pt")
    state = torch.load(path, map_location=device, weights_only=True)
    network.load_state_dict(state.get("model", state) if isinstance(state, dict) and "model" in state else state)
    return network.eval()


@torch.no_grad()
def complete_views(
    network: torch.nn.Module,
    sparse: torch.Tensor,
    sparse_factor: int,
    device: Any = "cpu",
) -> torch.Tensor:
    """All ``N * f`` views ``[N * f, U, V]`` (counts) from the acquired ``sparse`` ``[N, U, V]``:
    the same normalisation and network as the bundle's inference (:class:`..transforms.SparseViewsd`)."""
    scale = float(sparse.mean())
    interp = interpolate_views(sparse.float(), sparse_factor) / scale  # [Nf, U, V]
    mask = torch.zeros_like(interp)
    mask[::sparse_factor] = 1.0
    x = torch.stack([interp, mask]).permute(0, 2, 3, 1)[None].to(device)  # [1, 2, U, V, Nf]
    out = torch.clamp(network(x)[0, 0].permute(2, 0, 1).cpu() * scale, min=0.0)
    out[::sparse_factor] = sparse.to(out.dtype)  # the measured counts exactly, not (counts / scale) * scale
    return out


def _lesion_masks(labels: torch.Tensor, body: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(lesion, 2-voxel shell around it in the body, other lesions excluded) per lesion."""
    out = []
    lesions = labels >= LESION_ID_START
    for lid in torch.unique(labels[lesions]).tolist():
        m = labels == lid
        grown = dilate_box(m, (2, 2, 2))
        shell = grown & ~lesions & body
        if m.sum() > 0 and shell.sum() > 0:
            out.append((m, shell))
    return out


def _region_mean(image: torch.Tensor, mask: torch.Tensor) -> float:
    return float(image[mask].mean())


def evaluate_subject(
    network: torch.nn.Module,
    entry: Mapping[str, Any],
    dataset_dir: str | os.PathLike,
    sparse_factor: int = 4,
    n_iters: int = 5,
    n_subsets: int = 6,
    device: Any = "cpu",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of one subject (module docstring) and the arrays its figure shows."""
    root = Path(dataset_dir)
    raw = read_npz(root / entry["raw"])
    ct = read_nifti(root / entry["ct"]).array
    labels = torch.from_numpy(read_nifti(root / entry["labels"]).array.astype(np.int64))
    truth = torch.from_numpy(read_nifti(root / entry["activity"]).array.astype(np.float32))
    f = int(sparse_factor)
    counts = torch.from_numpy(raw["projections"].astype(np.float32))  # [N, U, V]
    n = counts.shape[0]
    if n % f:
        raise ValueError(f"{root / entry['raw']}: {n} views do not divide by the sparse factor {f}")
    scatter = torch.from_numpy(raw["scatter"].astype(np.float32))
    k, decay = float(raw["count_scale"]), float(raw["decay_factor"])
    mu = hu_to_mu(torch.as_tensor(np.asarray(ct)), float(raw["energy_keV"]))
    slope, intercept, intrinsic = (float(v) for v in raw["psf"])
    projector = SPECTProjector(
        tuple(int(s) for s in raw["image_shape"]), tuple(float(s) for s in raw["spacing_mm"]), n, 360.0,
        float(raw["radius_mm"]), mu, CollimatorPSF(slope, intercept, intrinsic),
    )  # fmt: skip
    acquired = list(range(0, n, f))
    missing = torch.ones(n, dtype=torch.bool)
    missing[acquired] = False

    t0 = time.perf_counter()
    completed = complete_views(network, counts[acquired], f, device)
    t_network = time.perf_counter() - t0
    interp = interpolate_views(counts[acquired], f)
    expected = projector.forward(truth * decay) * k + scatter

    views: dict[str, Any] = {}
    for name, proj in (("network", completed), ("interpolated", interp)):
        views[name] = {
            "nrmse_vs_measured": nrmse(proj[missing], counts[missing]),
            "nrmse_vs_expected": nrmse(proj[missing], expected[missing]),
        }

    # one batched OSEM for the four full-view sets, one for the sparse views
    stack = torch.stack([counts, completed, interp, expected])
    recon_full = reconstruct_spect(projector, stack, scatter.expand_as(stack), k, n_iters, n_subsets) / decay
    recon_sparse = (
        reconstruct_spect(
            ViewSubset(projector, acquired),
            counts[acquired],
            scatter[acquired],
            k,
            n_iters,
            n_subsets,
        )
        / decay
    )
    recons = dict(zip(("full", "network", "interpolated", "noise_free"), recon_full))
    recons["sparse"] = recon_sparse

    body = labels > 0
    background = torch.zeros_like(body)
    for lid in BACKGROUND:
        background |= labels == lid
    organs = {name: torch.isin(labels, torch.tensor(ids)) for name, ids in ORGANS.items()}
    organs = {name: m for name, m in organs.items() if int(m.sum()) > 0}
    lesions = _lesion_masks(labels, body)
    ref_bg = recons["noise_free"][background]
    recon: dict[str, Any] = {}
    for name in METHODS:
        img = recons[name]
        cr = [contrast_recovery(img, truth, m, shell) for m, shell in lesions]
        rc = [_region_mean(img, m) / _region_mean(truth, m) for m, _ in lesions]
        recon[name] = {
            "nrmse_vs_noise_free": nrmse(img, recons["noise_free"], body),
            "nrmse_vs_truth": nrmse(img, truth, body),
            "organ_error_vs_full_pct": {
                o: 100 * (_region_mean(img, m) / _region_mean(recons["full"], m) - 1) for o, m in organs.items()
            },
            "organ_error_vs_truth_pct": {o: 100 * (_region_mean(img, m) / _region_mean(truth, m) - 1) for o, m in organs.items()},
            "lesion_contrast_recovery": float(np.mean(cr)) if cr else None,
            "lesion_recovery_coefficient": float(np.mean(rc)) if rc else None,
            "background_rms_pct": 100 * float((img[background] - ref_bg).square().mean().sqrt() / ref_bg.mean()),
        }
    for name in METHODS:
        full_cr, cr = (
            recon["full"]["lesion_contrast_recovery"],
            recon[name]["lesion_contrast_recovery"],
        )
        recon[name]["lesion_contrast_recovery_vs_full_pp"] = None if cr is None else 100 * (cr - full_cr)
        full_rc, rc = recon["full"]["lesion_recovery_coefficient"], recon[name]["lesion_recovery_coefficient"]
        recon[name]["lesion_recovery_coefficient_vs_full_pp"] = None if rc is None else 100 * (rc - full_rc)
        recon[name]["mean_abs_organ_error_vs_full_pct"] = float(
            np.mean([abs(v) for v in recon[name]["organ_error_vs_full_pct"].values()])
        )
    metrics = {
        "id": entry.get("id"),
        "nuclide": entry.get("nuclide"),
        "total_counts": float(counts.sum()),
        "n_views": n,
        "n_acquired_views": len(acquired),
        "n_lesions": len(lesions),
        "network_seconds": t_network,
        "views": views,
        "recon": recon,
    }
    figure = {"counts": counts, "completed": completed, "interp": interp, "expected": expected, "acquired": acquired,
              "recons": recons, "labels": labels}  # fmt: skip
    return metrics, figure


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def summarize(subjects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means over subjects and the issue-14 targets (met or not)."""
    out: dict[str, Any] = {"n_subjects": len(subjects)}
    out["views"] = {
        m: {k: _mean([s["views"][m][k] for s in subjects]) for k in subjects[0]["views"][m]} for m in subjects[0]["views"]
    }
    keys = ("nrmse_vs_noise_free", "nrmse_vs_truth", "mean_abs_organ_error_vs_full_pct", "lesion_contrast_recovery",
            "lesion_contrast_recovery_vs_full_pp", "lesion_recovery_coefficient", "lesion_recovery_coefficient_vs_full_pp",
            "background_rms_pct")  # fmt: skip
    out["recon"] = {m: {k: _mean([s["recon"][m][k] for s in subjects]) for k in keys} for m in METHODS}
    organs = subjects[0]["recon"]["full"]["organ_error_vs_full_pct"]
    out["organ_error_vs_full_pct"] = {
        m: {o: _mean([abs(s["recon"][m]["organ_error_vs_full_pct"].get(o, np.nan)) for s in subjects]) for o in organs}
        for m in METHODS
    }
    r = out["recon"]
    ratio_interp = r["network"]["nrmse_vs_noise_free"] / r["interpolated"]["nrmse_vs_noise_free"]
    ratio_full = r["network"]["nrmse_vs_noise_free"] / r["full"]["nrmse_vs_noise_free"]
    organ = r["network"]["mean_abs_organ_error_vs_full_pct"]
    cr_pp = r["network"]["lesion_contrast_recovery_vs_full_pp"]
    out["targets"] = {
        "recon_nrmse_network_over_interpolated": {"value": ratio_interp, "target": f"<= {TARGETS['recon_nrmse_vs_interpolated_max']}",
                                                  "met": ratio_interp <= TARGETS["recon_nrmse_vs_interpolated_max"]},
        "recon_nrmse_network_over_full": {"value": ratio_full, "target": f"<= {TARGETS['recon_nrmse_vs_full_max']}",
                                          "met": ratio_full <= TARGETS["recon_nrmse_vs_full_max"]},
        "organ_error_vs_full_pct": {"value": organ, "target": f"<= {TARGETS['organ_error_vs_full_pct_max']}",
                                    "met": organ <= TARGETS["organ_error_vs_full_pct_max"]},
        "lesion_contrast_recovery_vs_full_pp": {"value": cr_pp, "target": f"|.| <= {TARGETS['lesion_contrast_recovery_pp_max']}",
                                                "met": cr_pp is not None and abs(cr_pp) <= TARGETS["lesion_contrast_recovery_pp_max"]},
        "network_seconds_per_study": {"value": _mean([s["network_seconds"] for s in subjects]), "target": "<= 5 (whole inference)", "met": None},
    }  # fmt: skip
    return out


def _figure(path: Path, fig_data: Mapping[str, Any], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = fig_data["counts"]
    v = counts.shape[2] // 2
    sparse = torch.zeros_like(counts)
    sparse[fig_data["acquired"]] = counts[fig_data["acquired"]]
    sinos = {"full": counts, "network": fig_data["completed"], "interpolated": fig_data["interp"], "sparse": sparse,
             "noise_free": fig_data["expected"]}  # fmt: skip
    labels = fig_data["labels"]
    kid = torch.isin(labels, torch.tensor(ORGANS["kidneys"]))
    z = int(torch.nonzero(kid)[:, 2].float().mean()) if kid.any() else labels.shape[2] // 2
    recons = fig_data["recons"]
    vmax_s = float(counts[:, :, v].max())
    vmax_r = float(torch.quantile(recons["noise_free"][:, :, z].flatten(), 0.995))
    fig, axes = plt.subplots(2, len(METHODS), figsize=(3.2 * len(METHODS), 6.4))
    for j, name in enumerate(METHODS):
        axes[0, j].imshow(
            sinos[name][:, :, v].numpy(),
            cmap="gray_r",
            vmin=0,
            vmax=vmax_s,
            aspect="auto",
        )
        axes[0, j].set_title(f"{name}: sinogram (v={v})", fontsize=8)
        axes[1, j].imshow(
            recons[name][:, :, z].numpy().T,
            cmap="gray_r",
            vmin=0,
            vmax=vmax_r,
            origin="lower",
        )
        axes[1, j].set_title(f"{name}: OSEM (z={z})", fontsize=8)
        for a in axes[:, j]:
            a.set_xticks([])
            a.set_yticks([])
    axes[0, 0].set_ylabel("view")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def evaluate(
    network: torch.nn.Module,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    sparse_factor: int = 4,
    n_iters: int = 5,
    n_subsets: int = 6,
    n_test: int | None = None,
    max_figures: int = 2,
    split: str = "test",
    device: Any = "cpu",
) -> dict[str, Any]:
    """Evaluate ``network`` on the ``split`` subjects of ``dataset_dir``; writes
    ``output_dir/metrics.json`` and figures; returns the metrics."""
    entries = load_datalist(dataset_dir, split)[:n_test]
    if not entries:
        raise ValueError(f"{dataset_dir}: no '{split}' subjects to evaluate")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    network = network.to(device).eval()
    subjects = []
    for i, entry in enumerate(entries):
        metrics, fig_data = evaluate_subject(network, entry, dataset_dir, sparse_factor, n_iters, n_subsets, device)
        subjects.append(metrics)
        r = metrics["recon"]
        print(
            f"{metrics['id']} ({metrics['nuclide']}, {metrics['total_counts']:.3g} counts): NRMSE vs noise-free "
            + ", ".join(f"{m} {r[m]['nrmse_vs_noise_free']:.4f}" for m in METHODS[:4])
            + f"; organs vs full: network {r['network']['mean_abs_organ_error_vs_full_pct']:.2f} %, sparse {r['sparse']['mean_abs_organ_error_vs_full_pct']:.2f} %",
            flush=True,
        )
        if i < max_figures:
            _figure(
                out / f"{metrics['id']}.png",
                fig_data,
                f"{metrics['id']}: {metrics['nuclide']}, 1/{sparse_factor} of the views",
            )
    result = {
        "dataset_dir": str(dataset_dir),
        "split": split,
        "sparse_factor": sparse_factor,
        "osem": {"n_iters": n_iters, "n_subsets": n_subsets},
        "summary": summarize(subjects),
        "subjects": subjects,
    }
    write_json(out / "metrics.json", result)
    s = result["summary"]
    r = s["recon"]
    headline = {
        "metric": f"OSEM NRMSE vs noise-free OSEM at 1/{sparse_factor} of the views (network vs linear interpolation)",
        "unit": "1",
        "model": r["network"]["nrmse_vs_noise_free"],
        "baseline": r["interpolated"]["nrmse_vs_noise_free"],
        "full_view": r["full"]["nrmse_vs_noise_free"],
        "sparse_view_osem": r["sparse"]["nrmse_vs_noise_free"],
        "target": "<= 0.7 x interpolation and <= 1.15 x full view",
    }
    write_json(out / "summary.json", {"bundle": "spect_projection_completion", "n_subjects": len(subjects), "headline": headline, "metrics": s})
    for name, t in s["targets"].items():
        print(f"target {name}: {t['value']} ({t['target']}) {'met' if t['met'] else 'NOT met' if t['met'] is False else ''}")
    return result
