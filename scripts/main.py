"""``python -m scripts main``: the main job.

For every bundle under ``bundles/`` and each family of held-out phantoms (``training``: the
distribution the bundle trained on; ``shifted``: ranges beyond it that no training draws,
``common.simulation``): simulate fresh subjects (seeds ``data_seed + 2000`` and ``+ 3000``,
never seen in training or in the bundle's own test split), run the stock ``python -m
monai.bundle run evaluating`` with the shipped weights and the bundle's ``configs/quick.json``
override, and collect its ``summary.json`` (model vs baseline), the two families side by side. Then run a short stock ``training`` of one bundle to show the workflow, print a
results table and write it, with each bundle's figures, under ``results/run/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
#: Held-out families of the main job and their seed offsets (DESIGN 4: held-out >= data_seed + 1000).
FAMILY_SEED_OFFSETS = {"training": 2000, "shifted": 3000}


def bundle_names(root: Path = ROOT / "bundles") -> list[str]:
    return sorted(p.parent.parent.name for p in root.glob("*/configs/metadata.json"))


def _bundle_cmd(bundle: Path, workflow: str, configs: list[str], **overrides) -> list[str]:
    files = [str(bundle / "configs" / c) for c in configs if (bundle / "configs" / c).exists()]
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--bundle_root", str(bundle)]
    cmd += ["--config_file", str(files), "--meta_file", str(bundle / "configs" / "metadata.json")]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def _run_logged(cmd: list[str], log: Path, echo: bool = True) -> float:
    """Run a command, logging its output (its progress bars included) in ``log`` and showing it
    when ``echo``; raise with the log's tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as f, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, text=True, bufsize=1
    ) as proc:
        for line in proc.stdout:
            f.write(line)
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"command failed ({rc}), log {log}:\n{tail}")
    return time.time() - t0


def _data_seed(bundle: Path) -> int:
    train = json.loads((bundle / "configs" / "train.json").read_text())
    return int(train.get("data_seed", 0))


def evaluate_bundle(name: str, out: Path, n_test: int, family: str = "training", quick: bool = True, log: bool = True) -> dict:
    """Held-out phantoms of ``family`` + stock ``evaluating`` (with the bundle's ``quick.json``
    override when ``quick``); returns the bundle's summary.json. Outputs under ``out/name/family``."""
    from common.simulation.datasets import generate_dataset

    bundle = ROOT / "bundles" / name
    data_dir = out / name / family / "data"
    seed = _data_seed(bundle) + FAMILY_SEED_OFFSETS[family]
    generate_dataset(name, data_dir, n=n_test, seed=seed, test_only=True, family=family, workers=2, progress=log)
    eval_dir = out / name / family / "eval"
    configs = ["train.json", "evaluate.json"] + (["quick.json"] if quick else [])
    wall = _run_logged(
        _bundle_cmd(bundle, "evaluating", configs, dataset_dir=data_dir, output_dir=eval_dir, n_test=n_test),
        out / name / family / "evaluating.log", echo=log,
    )
    summary = json.loads((eval_dir / "summary.json").read_text())
    summary["wall_s"] = round(wall, 1)
    summary["held_out_seed"] = seed
    summary["family"] = family
    return summary


DEMO_BUNDLE = "pet_lowdose_denoising"


def train_demo(name: str, out: Path) -> float:
    """A short stock ``training`` run (1 epoch, 4 subjects) into ``out``."""
    bundle = ROOT / "bundles" / name
    return _run_logged(
        # half the axial extent: the demo shows the workflow, not a model
        _bundle_cmd(bundle, "training", ["train.json", "quick.json"], num_epochs=1, n_subjects=4, dataset_params={"shape": [128, 128, 48]},
                    dataset_dir=out / "train_demo" / "data", output_dir=out / "train_demo" / "models"),
        out / "train_demo" / "training.log",
    )


def _table(summaries: dict[str, dict[str, dict]]) -> str:
    rows = ["| bundle | family | metric | model | baseline | target | held-out subjects | wall s |", "|---|---|---|---|---|---|---|---|"]
    for name, families in summaries.items():
        for family, s in families.items():
            h = s["headline"]
            rows.append(
                f"| {name} | {family} | {h['metric'].replace('|', chr(92) + '|')} ({h['unit']}) | {h['model']:.4g} | {h['baseline']:.4g} "
                f"| {h.get('target', '')} | {s.get('n_subjects', '')} | {s.get('wall_s', '')} |"
            )
    return "\n".join(rows)


def main(out: str = "results/run", n_test: int = 2, demo_bundle: str | None = None, skip_training: bool = False) -> None:
    """Evaluate every bundle on fresh held-out phantoms of each family (``n_test`` subjects per
    family), then a short training demo."""
    n_test = int(n_test)
    if not 1 <= n_test <= 50:
        raise SystemExit(f"--n_test must be between 1 and 50, got {n_test}")
    out_dir = (ROOT / out) if not os.path.isabs(out) else Path(out)
    names = bundle_names()
    if not names:
        print("main: no bundles under bundles/ yet; nothing to evaluate.")
        return
    t0 = time.time()
    summaries = {}
    for name in tqdm(names, desc="evaluating bundles", unit="bundle"):
        summaries[name] = {family: evaluate_bundle(name, out_dir, n_test, family) for family in FAMILY_SEED_OFFSETS}
    table = _table(summaries)
    # the PET denoiser: the fastest data of all bundles (the demo's dataset_params are its shape)
    demo = demo_bundle or (DEMO_BUNDLE if DEMO_BUNDLE in names else names[0])
    if not skip_training:
        print(f"main: short training demo of {demo} (1 epoch, 4 subjects) ...", flush=True)
        wall = train_demo(demo, out_dir)
        table += f"\n\nTraining demo: {demo}, 1 epoch on 4 subjects, {wall:.0f} s (log: {out_dir / 'train_demo' / 'training.log'})"
    (out_dir / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    (out_dir / "results.md").write_text(table + "\n")
    print(table)
    print(f"\nmain: done in {time.time() - t0:.0f} s; figures under {out_dir}/<bundle>/<family>/eval/")
