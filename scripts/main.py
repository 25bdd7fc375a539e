"""``python -m scripts main``: the main job.

For every bundle under ``bundles/`` and each family of held-out phantoms (``training``: the
distribution the bundle trained on; ``shifted``: ranges beyond it that no training draws,
``common.simulation``): simulate fresh subjects (seeds ``data_seed + 2000`` and ``+ 3000``,
never seen in training or in the bundle's own test split), run the stock ``python -m
monai.bundle run evaluating`` with the shipped weights and the bundle's ``configs/quick.json``
override, and collect its ``summary.json`` (model vs baseline), the two families side by side. Then run a short stock ``training`` of one bundle to show the workflow, print a
results table and write it, with each bundle's figures, under ``results/run/``.

The (bundle, family) evaluations and the training demo are independent jobs; ``jobs`` of them
run at once, each on one torch thread (``--jobs 1`` runs them one after another on every core).
Most of their time is Python-driven simulation, OSEM subset steps and process start-up, which a
second thread barely speeds up, so two one-thread jobs on 2 cores finish in about half the wall
time of one two-thread job after the other (issue 18).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
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


def _run_logged(cmd: list[str], log: Path, echo: bool = True, threads: int | None = None) -> float:
    """Run a command, logging its output (its progress bars included) in ``log`` and showing it
    when ``echo``; with ``threads``, its torch runs on that many threads. Raise with the log's tail
    on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.time()
    with open(log, "w") as f, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, text=True, bufsize=1, env=env
    ) as proc:
        try:
            for line in proc.stdout:
                f.write(line)
                if echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()
        except BaseException:  # interrupted or terminated: the command must not outlive us
            proc.kill()
            raise
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"command failed ({rc}), log {log}:\n{tail}")
    return time.time() - t0


def _data_seed(bundle: Path) -> int:
    train = json.loads((bundle / "configs" / "train.json").read_text())
    return int(train.get("data_seed", 0))


def evaluate_bundle(
    name: str, out: Path, n_test: int, family: str = "training", quick: bool = True, log: bool = True, threads: int | None = None
) -> dict:
    """Held-out phantoms of ``family`` + stock ``evaluating`` (with the bundle's ``quick.json``
    override when ``quick``); returns the bundle's summary.json with ``wall_s``, the seconds of both
    (simulating the subjects and evaluating). Outputs under ``out/name/family``.
    ``threads``: one process and that many torch threads for all of it (None: 2 data workers, and
    the evaluation on every core)."""
    from common.simulation.datasets import generate_dataset

    bundle = ROOT / "bundles" / name
    data_dir = out / name / family / "data"
    seed = _data_seed(bundle) + FAMILY_SEED_OFFSETS[family]
    t0 = time.time()
    generate_dataset(name, data_dir, n=n_test, seed=seed, test_only=True, family=family, workers=2 if threads is None else 1, progress=log)
    eval_dir = out / name / family / "eval"
    configs = ["train.json", "evaluate.json"] + (["quick.json"] if quick else [])
    _run_logged(
        _bundle_cmd(bundle, "evaluating", configs, dataset_dir=data_dir, output_dir=eval_dir, n_test=n_test),
        out / name / family / "evaluating.log", echo=log, threads=threads,
    )
    wall = time.time() - t0
    summary = json.loads((eval_dir / "summary.json").read_text())
    summary["wall_s"] = round(wall, 1)
    summary["held_out_seed"] = seed
    summary["family"] = family
    return summary


DEMO_BUNDLE = "pet_lowdose_denoising"


def train_demo(name: str, out: Path, log: bool = True, threads: int | None = None) -> float:
    """A short stock ``training`` run (1 epoch, 4 subjects) into ``out``."""
    bundle = ROOT / "bundles" / name
    return _run_logged(
        # half the axial extent: the demo shows the workflow, not a model
        _bundle_cmd(bundle, "training", ["train.json", "quick.json"], num_epochs=1, n_subjects=4, dataset_params={"shape": [128, 128, 48]},
                    dataset_dir=out / "train_demo" / "data", output_dir=out / "train_demo" / "models", **({"data_workers": 1} if threads else {})),
        out / "train_demo" / "training.log", echo=log, threads=threads,
    )


def _one_thread() -> None:
    """Pool initialiser: one torch thread in this process and in the commands it starts (as the
    data-generation workers); SIGTERM (the pool's terminate, when another job failed) ends the job
    and the command it runs."""
    from common.simulation.datasets import _worker_init

    _worker_init()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def _run_job(job: tuple) -> tuple:
    """One main-job task in a pool worker: ``(key, function, args)`` -> ``(key, result)``."""
    key, fn, args = job
    return key, fn(*args)


def _table(summaries: dict[str, dict[str, dict]]) -> str:
    rows = ["| bundle | family | metric | model | baseline | target | held-out subjects | wall s (simulation + evaluation) |", "|---|---|---|---|---|---|---|---|"]
    for name, families in summaries.items():
        for family, s in families.items():
            h = s["headline"]
            rows.append(
                f"| {name} | {family} | {h['metric'].replace('|', chr(92) + '|')} ({h['unit']}) | {h['model']:.4g} | {h['baseline']:.4g} "
                f"| {h.get('target', '')} | {s.get('n_subjects', '')} | {s.get('wall_s', '')} |"
            )
    return "\n".join(rows)


def main(
    out: str = "results/run", n_test: int = 2, demo_bundle: str | None = None, skip_training: bool = False, jobs: int = 2,
    bundles: str | list[str] | tuple[str, ...] | None = None,
) -> None:
    """Evaluate every bundle (or those named in ``bundles``, comma-separated) on fresh held-out
    phantoms of each family (``n_test`` subjects per family) and run a short training demo,
    ``jobs`` of these at once (one torch thread each)."""
    n_test, jobs = int(n_test), int(jobs)
    if not 1 <= n_test <= 50:
        raise SystemExit(f"--n_test must be between 1 and 50, got {n_test}")
    if jobs < 1:
        raise SystemExit(f"--jobs must be at least 1, got {jobs}")
    out_dir = (ROOT / out) if not os.path.isabs(out) else Path(out)
    names = all_names = bundle_names()
    if bundles:
        wanted = [b.strip() for b in bundles.split(",")] if isinstance(bundles, str) else [str(b) for b in bundles]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise SystemExit(f"--bundles: unknown bundle(s) {', '.join(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    if not names:
        print("main: no bundles under bundles/ yet; nothing to evaluate.")
        return
    # the PET denoiser, whatever --bundles says: the fastest data of all bundles (the demo's
    # dataset_params are its shape)
    demo = None if skip_training else (demo_bundle or (DEMO_BUNDLE if DEMO_BUNDLE in all_names else names[0]))
    t0 = time.time()
    results: dict[tuple[str, str], dict] = {}
    demo_wall = None
    if jobs == 1:
        for name in tqdm(names, desc="evaluating bundles", unit="bundle"):
            for family in FAMILY_SEED_OFFSETS:
                results[name, family] = evaluate_bundle(name, out_dir, n_test, family)
        if demo:
            print(f"main: short training demo of {demo} (1 epoch, 4 subjects) ...", flush=True)
            demo_wall = train_demo(demo, out_dir)
    else:
        print(f"main: {len(names)} bundles x {len(FAMILY_SEED_OFFSETS)} families{' + a training demo' if demo else ''}, "
              f"{jobs} at once (one thread each); logs under {out_dir}/<bundle>/<family>/", flush=True)
        # longer jobs first, the short demo last, so that neither worker idles at the end: the
        # shifted family (larger bodies, finer voxels) before the training family
        tasks = [((name, family), evaluate_bundle, (name, out_dir, n_test, family, True, False, 1))
                 for name in names for family in reversed(FAMILY_SEED_OFFSETS)]  # fmt: skip
        if demo:
            tasks.append(("demo", train_demo, (demo, out_dir, False, 1)))
        # ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies (e.g. killed for memory)
        # fails its job instead of hanging the run
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
            futures = [pool.submit(_run_job, task) for task in tasks]
            try:
                for fut in tqdm(as_completed(futures), total=len(futures), desc="main job", unit="job"):
                    key, value = fut.result()
                    if key == "demo":
                        demo_wall = value
                        tqdm.write(f"  training demo of {demo}: {demo_wall:.0f} s")
                        continue
                    results[key] = value
                    h = value["headline"]
                    tqdm.write(f"  {key[0]} / {key[1]}: {h['model']:.4g} vs baseline {h['baseline']:.4g} {h['unit']} ({value['wall_s']:.0f} s)")
            except BaseException:
                # a failed job ends the run now: drop the queue and terminate the running jobs (their
                # commands end with them, _one_thread); Python 3.11 has no public call for the latter
                running = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in running:
                    proc.terminate()
                raise
    summaries = {name: {family: results[name, family] for family in FAMILY_SEED_OFFSETS} for name in names}
    table = _table(summaries)
    if demo_wall is not None:
        table += f"\n\nTraining demo: {demo}, 1 epoch on 4 subjects, {demo_wall:.0f} s (log: {out_dir / 'train_demo' / 'training.log'})"
    (out_dir / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    (out_dir / "results.md").write_text(table + "\n")
    print(table)
    print(f"\nmain: done in {time.time() - t0:.0f} s; figures under {out_dir}/<bundle>/<family>/eval/")
