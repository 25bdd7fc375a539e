"""Markdown written from ``results/benchmark.json`` (issue 17: results are never typed by hand).

- ``results/benchmark.md``: the quality table of every bundle (both held-out families, every
  target with its value and met / NOT met), the network speed table and the data-generation
  table;
- ``README.md``: the bundle table between the ``benchmark:bundles`` markers, the physics table
  (SPECT against PyTomography, PET timings) between the ``benchmark:physics`` markers;
- each ``bundles/<name>/docs/README.md``: its section between the ``benchmark:results`` markers
  (headline and targets per family, figures, inference and training speed).

Only :func:`scripts.benchmark.benchmark` calls :func:`write_reports`, after a full (not ``quick``)
run into the repository's ``results/``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def markers(key: str) -> tuple[str, str]:
    return (
        f"<!-- benchmark:{key} start: written by `python -m scripts benchmark` from results/benchmark.json; do not edit -->",
        f"<!-- benchmark:{key} end -->",
    )


def replace_section(path: Path, key: str, text: str) -> None:
    """Replace what lies between the ``key`` markers of ``path`` with ``text`` (atomic write)."""
    from common.data import atomic_write_bytes

    start, end = markers(key)
    doc = path.read_text()
    if doc.count(start) != 1 or doc.count(end) != 1 or doc.index(start) > doc.index(end):
        raise ValueError(f"{path}: needs exactly one pair of markers '{start}' ... '{end}' (in this order)")
    head, rest = doc.split(start)
    _, tail = rest.split(end)
    atomic_write_bytes(path, (head + start + "\n" + text.strip("\n") + "\n" + end + tail).encode())


def num(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _target_value(t: dict[str, Any]) -> str:
    if "value" in t:
        return num(t["value"])
    parts = []
    for key, v in t.items():
        if isinstance(v, dict):  # a per-level value (e.g. per dose reduction factor): every level, so a miss is visible
            parts.append(", ".join(f"{k}: {num(x)}" for k, x in v.items()))
        elif key not in ("met", "target") and isinstance(v, (int, float)):
            parts.append(f"{key} {num(v)}")
    return ", ".join(parts)


def _unit(h: dict[str, Any]) -> str:
    return "" if h.get("unit") in (None, "", "1") else f" {h['unit']}"


def targets_text(targets: dict[str, Any], sep: str = "; ") -> str:
    parts = []
    for name, t in targets.items():
        if not isinstance(t, dict) or t.get("met") is None:
            continue
        verdict = "met" if t["met"] else "**NOT met**"
        goal = f", target {t['target']}" if "target" in t else ""
        parts.append(f"{name} {_target_value(t)}{goal}: {verdict}")
    return sep.join(parts) or "no target judged"


FAMILY_ORDER = ("training", "shifted")


def families(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The families of a quality entry, training family first (the JSON file sorts its keys)."""
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    return sorted(entry["families"].items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))


def quality_table(quality: dict[str, Any]) -> str:
    rows = [
        "| bundle | family | headline metric | model | baseline | targets | subjects (seed) | figure |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in quality.items():
        for family, f in families(entry):
            if "error" in f:
                rows.append(f"| {name} {entry['version']} | {family} | **evaluation failed** (see benchmark.json) | | | | | |")
                continue
            h = f["headline"]
            rows.append(
                f"| {name} {entry['version']} | {family} | {_cell(h['metric'])} ({h['unit']}) | {num(h['model'])} | {num(h['baseline'])} "
                f"| {_cell(targets_text(f['targets']))} | {f['n_subjects']} ({f['held_out_seed']}) | {f.get('figure') or ''} |"
            )
    return "\n".join(rows)


def readme_table(quality: dict[str, Any]) -> str:
    rows = [
        "| bundle | task | headline metric (fresh held-out phantoms) | training family: model / baseline | shifted family: model / baseline | targets (training family; shifted) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in quality.items():
        fams = {k: f for k, f in families(entry) if "error" not in f}
        failed = [k for k, f in families(entry) if "error" in f]
        if not fams:
            rows.append(f"| [`{name}`](bundles/{name}/docs/README.md) {entry['version']} | {_cell(entry['task'])} | **evaluation failed** | | | |")
            continue
        h = next(iter(fams.values()))["headline"]

        def pair(family: str) -> str:
            if family in failed:
                return "**evaluation failed**"
            if family not in fams:
                return "not run"
            fh = fams[family]["headline"]
            return f"{num(fh['model'])} / {num(fh['baseline'])}{_unit(h)} (n={fams[family]['n_subjects']})"

        verdicts = []
        for family, f in fams.items():
            judged = {k: t for k, t in f["targets"].items() if isinstance(t, dict) and t.get("met") is not None}
            missed = [k for k, t in judged.items() if not t["met"]]
            verdicts.append(f"{family}: " + (f"**NOT met**: {', '.join(missed)}" if missed else "all met" if judged else "none judged"))
        rows.append(
            f"| [`{name}`](bundles/{name}/docs/README.md) {entry['version']} | {_cell(entry['task'])} | {_cell(h['metric'])} "
            f"| {pair('training')} | {pair('shifted')} | {'; '.join(verdicts)} |"
        )
    return "\n".join(rows)


def physics_table(physics: dict[str, Any]) -> str:
    """SPECT against PyTomography (both PSFs) and PET timings with the issue 18 targets."""
    out = []
    verdict = lambda ok: "" if ok else " **NOT met**"  # noqa: E731
    spect = {k: v for k, v in (physics.get("spect") or {}).items() if isinstance(v, dict) and "problem" in v}
    if spect:
        out += ["SPECT against PyTomography, " + "; ".join(f"**{k}**: {c['problem']}" for k, c in spect.items()) + ":", "",
                "| PSF | operation | ours s | PyTomography s | speed-up (target >= 10x) | NRMSE vs PyTomography (target <= 0.01) |",
                "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for name, case in spect.items():
            for op, nrm, label in (("forward", "forward", "forward"), ("adjoint", "adjoint", "adjoint"), ("osem", "osem_image", f"OSEM {case.get('osem', '')}")):
                ours, ref = case.get(f"ours_{op}_s"), case.get(f"pytomography_{op}_s")
                if ref is None:
                    continue
                ratio, err = ref / ours, case.get(f"nrmse_{nrm}")
                out.append(f"| {name} | {label} | {num(ours)} | {num(ref)} | {ratio:.1f}x{verdict(ratio >= 10)} "
                           f"| {num(err)}{verdict(err is not None and err <= 0.01)} |")  # fmt: skip
        out.append("")
    pet = physics.get("pet")
    if isinstance(pet, dict) and all(f"{k}_s" in pet for k in ("forward", "adjoint", "osem_4x16", "task_osem_4x16")):
        out += [f"PET, {pet['problem']}:", "", "| operation | before issue 18 s | now s | target s |", "| --- | --- | --- | --- |"]
        for key, label, target in (("forward", "forward", 0.1), ("adjoint", "adjoint", 0.1), ("osem_4x16", "OSEM 4x16", 0.5),
                                   ("task_osem_4x16", "OSEM 4x16, dataset-task configuration", None)):  # fmt: skip
            now = pet[f"{key}_s"]
            goal = "" if target is None else f"<= {target:g}" + verdict(now <= target)
            out.append(f"| {label} | {num(pet.get(f'{key}_before_s'))} | {num(now)} | {goal} |")
        out.append("")
    return "\n".join(out)


def speed_tables(results: dict[str, Any]) -> str:
    out = []
    physics = results.get("physics", {}).get("result")
    if physics:
        m = results["physics"]["machine"]
        out += [f"Physics ({physics.get('threads')} torch threads, load {num(m.get('load_avg_1min'))} -> {num(m.get('load_avg_1min_end'))}, "
                f"{m.get('date')})", "", physics_table(physics)]  # fmt: skip
    nets = results.get("networks", {}).get("result")
    if nets:
        for device, per in nets.items():
            if not isinstance(per, dict) or not all(isinstance(v, dict) and "inference" in v for v in per.values()):
                continue
            steps = next(iter(per.values()))["training"]
            out += [f"Networks on {device} ({nets['threads']} torch threads): inference of one study, training step "
                    f"(median of {steps['steps']} after {steps['warmup']} warm-up steps)", "",
                    "| bundle | inference input | inference s | training batch | s / step | M loss voxels / s | load |",
                    "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
            for name, r in per.items():
                i, t = r["inference"], r["training"]
                out.append(f"| {name} | {'x'.join(map(str, i['input_shape']))} | {num(i['seconds'])} | {'x'.join(map(str, t['batch']))} "
                           f"| {num(t['seconds_per_step'])} | {num(t['mvoxels_per_s'])} | {num(r['load_avg_1min'])} |")  # fmt: skip
            out.append("")
    data = results.get("data", {}).get("result")
    if data:
        out += [f"Data generation (one worker, one thread; budget {num(data['budget_subjects_per_min'])} subjects/min)", "",
                "| task | s / subject | subjects / min | x budget | MB / subject | load |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for task, r in data.items():
            if isinstance(r, dict):
                out.append(f"| {task} | {num(r['seconds_per_subject'])} | {num(r['subjects_per_min'])} | {num(r['ratio_to_budget'])} "
                           f"| {num(r['mb_per_subject'])} | {num(r['load_avg_1min'])} |")  # fmt: skip
        out.append("")
    return "\n".join(out)


def benchmark_markdown(results: dict[str, Any]) -> str:
    parts = ["# Benchmark results", "", "Written by `python -m scripts benchmark` from `results/benchmark.json`; "
             "each suite's date, threads and wall time are in that file.", ""]  # fmt: skip
    if "quality" in results:
        parts += ["## Quality on fresh held-out phantoms", "", quality_table(results["quality"]["result"]), ""]
    speed = speed_tables(results)
    if speed:
        parts += ["## Speed", "", speed]
    for suite in sorted(set(results) - {"quality", "physics", "networks", "data"}):
        parts += [f"## Suite `{suite}`", "", "| value | |", "| --- | --- |"]
        parts += [f"| {k} | {num(v)} |" for k, v in _leaves(results[suite]["result"])]
        parts.append("")
    return "\n".join(parts) + "\n"


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of the numbers and strings of a nested result (lists of numbers kept whole)."""
    if isinstance(tree, dict):
        return [kv for k, v in tree.items() for kv in _leaves(v, f"{prefix}{k}.")]
    if isinstance(tree, list) and not all(isinstance(v, (int, float)) for v in tree):
        return [kv for i, v in enumerate(tree) for kv in _leaves(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), tree)]


def bundle_section(name: str, entry: dict[str, Any], results: dict[str, Any], docs_dir: Path, root: Path = ROOT) -> str:
    lines = [
        f"Fresh held-out phantoms of both families, evaluated by `python -m scripts benchmark bundles` "
        f"(version {entry['version']}{', ' + entry['date'] if entry.get('date') else ''}):",
        "",
        "| family | subjects (seed) | headline metric | model | baseline | targets |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for family, f in families(entry):
        if "error" in f:
            lines.append(f"| {family} | | **evaluation failed** | | | |")
            continue
        h = f["headline"]
        lines.append(f"| {family} | {f['n_subjects']} ({f['held_out_seed']}) | {_cell(h['metric'])} ({h['unit']}) | {num(h['model'])} "
                     f"| {num(h['baseline'])} | {_cell(targets_text(f['targets']))} |")  # fmt: skip
    lines.append("")
    figures = [f.get("figure") for _, f in families(entry)] + [entry.get("curves_figure")]
    for fig in filter(None, figures):
        rel = os.path.relpath(root / fig, docs_dir)
        lines.append(f"![{Path(fig).stem}]({rel})")
    nets = (results.get("networks", {}).get("result") or {}).get("cpu", {}).get(name)
    if nets:
        i, t = nets["inference"], nets["training"]
        lines += ["", f"Speed on CPU ({results['networks']['result']['threads']} torch threads, load {num(nets['load_avg_1min'])}): "
                  f"network inference {num(i['seconds'])} s for a {'x'.join(map(str, i['input_shape']))} input; training "
                  f"{num(t['seconds_per_step'])} s per step of {'x'.join(map(str, t['batch']))} ({num(t['mvoxels_per_s'])} M loss voxels/s)."]  # fmt: skip
    return "\n".join(lines)


def write_reports(results: dict[str, Any], results_dir: Path, update_docs: bool = True, root: Path = ROOT) -> list[Path]:
    """Write benchmark.md into ``results_dir`` and, when ``update_docs`` and the quality suite is in
    ``results``, the README table and every bundle's generated section under ``root``; return the
    files written."""
    from common.data import atomic_write_bytes

    md = results_dir / "benchmark.md"
    atomic_write_bytes(md, benchmark_markdown(results).encode())
    written = [md]
    quality = results.get("quality", {}).get("result")
    physics = results.get("physics", {}).get("result")
    if update_docs and physics:
        replace_section(root / "README.md", "physics", physics_table(physics))
        written.append(root / "README.md")
    if quality and update_docs:
        replace_section(root / "README.md", "bundles", readme_table(quality))
        written.append(root / "README.md")
        for name, entry in quality.items():
            doc = root / "bundles" / name / "docs" / "README.md"
            replace_section(doc, "results", bundle_section(name, entry, results, doc.parent, root))
            written.append(doc)
    return written
