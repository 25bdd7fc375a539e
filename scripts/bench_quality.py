"""Benchmark suite ``quality``: every bundle's shipped model against its baselines on fresh
held-out phantoms of two families, side by side (issue 17).

For each bundle and each family of :data:`scripts.main.FAMILY_SEED_OFFSETS` (``training``: the
distribution the bundle trained on, seed ``data_seed + 2000``; ``shifted``: other body sizes,
count levels (1.5e5-4e5 trues per PET slice, up to 27x below the training range), resolutions and
voxel sizes, seed ``data_seed + 3000``), the suite simulates ``N_SUBJECTS`` new subjects, runs the
stock ``python -m monai.bundle run evaluating`` (``train.json`` + ``evaluate.json``; ``quick``:
with the bundle's ``quick.json`` and one subject) and keeps the bundle's ``summary.json``: the
headline metric (model and baseline), the targets with their values and whether each is met. The
representative figure of each evaluation (input / baseline / network / reference / error on one
slice; dose-volume histograms for dosimetry) is copied to ``<figures_dir>/<bundle>_<family>.png``,
and the denoiser's metric-vs-dose-factor curves are drawn to
``<figures_dir>/pet_lowdose_denoising_drf_curves.png``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts.main import FAMILY_SEED_OFFSETS, ROOT, bundle_names, evaluate_bundle

#: Held-out subjects per family in the full run: each bundle's two families fit its 10-minute budget
#: (issue 17) on 2 CPU cores, data generation included.
N_SUBJECTS = {"pet_nac_to_pct": 5, "pet_lowdose_denoising": 5, "spect_projection_completion": 3, "dose_rate_prediction": 5}
N_SUBJECTS_DEFAULT = 2
#: The figure that represents an evaluation when it writes several (default: the first by name).
FIGURE = {"pet_lowdose_denoising": "drf_20.png"}


def _display_path(path: Path | None) -> str | None:
    """Repository-relative when inside it (what the docs link to), else absolute; None stays None."""
    if path is None:
        return None
    return str(path.relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def _figure_of(eval_dir: Path, bundle: str) -> Path | None:
    preferred = eval_dir / FIGURE.get(bundle, "")
    if preferred.is_file():
        return preferred
    pngs = sorted(eval_dir.glob("*.png"))
    return pngs[0] if pngs else None


def _targets(summary: dict[str, Any]) -> dict[str, Any]:
    """The targets block of a bundle's summary.json (top level or under ``metrics``)."""
    return summary.get("targets") or summary.get("metrics", {}).get("targets") or {}


def _drf_curves(summaries: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """PSNR against the full-dose and the noise-free reference vs the dose reduction factor, per
    method and family, from the denoiser's summary tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = [("vs_full_dose", "PSNR vs full dose (dB)"), ("vs_noise_free", "PSNR vs noise-free (dB)")]
    fig, axes = plt.subplots(len(summaries), len(refs), figsize=(5.2 * len(refs), 3.6 * len(summaries)), squeeze=False)
    drawn = False
    for row, (family, summary) in enumerate(summaries.items()):
        table = summary.get("metrics", {})
        drfs = sorted(table, key=float)
        for col, (ref, label) in enumerate(refs):
            ax = axes[row][col]
            for method in ("low_dose", "gaussian", "network", "noise2noise"):
                ys = [(table[d].get(method) or {}).get(ref, {}).get("psnr", {}).get("mean") for d in drfs]
                if all(y is not None for y in ys) and ys:
                    ax.plot([float(d) for d in drfs], ys, marker="o", label=method.replace("_", " "))
                    drawn = True
            ax.set_xscale("log")
            ax.set_xticks([float(d) for d in drfs], drfs)
            ax.minorticks_off()
            ax.set_xlabel("dose reduction factor")
            ax.set_ylabel(label)
            ax.set_title(f"{family} family (n={summary.get('n_subjects', '?')})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle("pet_lowdose_denoising: held-out PSNR vs dose reduction factor")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run(quick: bool = False, figures_dir: str | Path | None = None, bundles: list[str] | None = None) -> dict:
    """Evaluate every bundle (or ``bundles``) on both held-out families; return per bundle its
    version, per family the headline, targets, subjects, seeds, wall time and figure path."""
    figures = Path(figures_dir) if figures_dir else ROOT / "results" / "benchmark"
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        for name in bundles or bundle_names():
            meta = json.loads((ROOT / "bundles" / name / "configs" / "metadata.json").read_text())
            n = 1 if quick else N_SUBJECTS.get(name, N_SUBJECTS_DEFAULT)
            entry: dict[str, Any] = {"version": meta["version"], "task": meta["task"], "date": time.strftime("%Y-%m-%d", time.gmtime()),
                                     "families": {}}  # fmt: skip
            raw: dict[str, dict] = {}
            t0 = time.time()
            for family in FAMILY_SEED_OFFSETS:
                print(f"quality: {name}, {family} family, {n} new subject(s) ...", flush=True)
                t1 = time.time()
                try:
                    summary = evaluate_bundle(name, Path(tmp), n, family, quick=quick, log=False)
                except RuntimeError as exc:  # one bundle's failure must not lose the others' hour of work
                    print(f"quality: {name}, {family} family FAILED: {exc}", flush=True)
                    entry["families"][family] = {"error": str(exc)[-2000:], "wall_s": round(time.time() - t1, 1)}
                    continue
                raw[family] = summary
                fig = _figure_of(Path(tmp) / name / family / "eval", name)
                fig_path = None
                if fig is not None:
                    figures.mkdir(parents=True, exist_ok=True)
                    fig_path = figures / f"{name}_{family}.png"
                    shutil.copyfile(fig, fig_path)
                entry["families"][family] = {
                    "headline": summary["headline"],
                    "targets": _targets(summary),
                    "n_subjects": summary.get("n_subjects"),
                    "held_out_seed": summary["held_out_seed"],
                    "wall_s": round(time.time() - t1, 1),
                    "figure": _display_path(fig_path),
                }
            if name == "pet_lowdose_denoising":
                curves = _drf_curves(raw, figures / f"{name}_drf_curves.png")
                if curves is not None:
                    entry["curves_figure"] = _display_path(curves)
            entry["wall_s"] = round(time.time() - t0, 1)
            results[name] = entry
            _print_entry(name, entry)
    return results


def _print_entry(name: str, entry: dict[str, Any]) -> None:
    from scripts.results_tables import num

    for family, f in entry["families"].items():
        if "error" in f:
            print(f"  {name} {entry['version']} {family}: FAILED ({f['wall_s']:.0f} s)")
            continue
        h = f["headline"]
        missed = [k for k, t in f["targets"].items() if isinstance(t, dict) and t.get("met") is False]
        print(
            f"  {name} {entry['version']} {family}: {h['metric']}: model {num(h['model'])} / baseline {num(h['baseline'])} {h['unit']}"
            f" ({f['n_subjects']} subjects, {f['wall_s']:.0f} s); targets missed: {', '.join(missed) or 'none'}"
        )
    print(f"  {name}: {entry['wall_s']:.0f} s for both families", flush=True)
