"""``python -m scripts benchmark [all|physics|bundles|speed|quick|SUITE ...]``: speed and accuracy benchmarks.

Each suite is a module ``scripts/bench_<suite>.py`` with ``run(quick: bool = False) -> dict``
that times this project's code against a baseline measured in the same run and prints a
table. The collected results go to ``results/benchmark.json`` (merged with the suites not
run this time), figures to ``results/benchmark/``; only this command writes there.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "benchmark.json"


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time (s) of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls
    (allocations, lazy initialisation), for the suites' timings."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def available_suites() -> list[str]:
    return sorted(p.stem[len("bench_") :] for p in Path(__file__).parent.glob("bench_*.py"))


#: Named groups of suites (issue 17). ``quick`` runs every suite on small settings (CI); its results go
#: to ``results/run/benchmark_quick/`` so they never replace the committed full results.
GROUPS = {
    "physics": ["physics"],
    "bundles": ["quality", "networks", "pet_nac_to_pct", "pet_lowdose_denoising", "dose_rate_prediction"],
    "speed": ["physics", "data", "networks", "pet_nac_to_pct", "pet_lowdose_denoising", "dose_rate_prediction"],
}
QUICK_DIR = ROOT / "results" / "run" / "benchmark_quick"


def _expand(names: tuple[str, ...], known: list[str]) -> tuple[list[str], bool]:
    """Suites named by ``names`` (suites or groups; ``all``/none: every suite) and whether ``quick``
    was named."""
    quick = "quick" in names
    names = tuple(n for n in names if n != "quick")
    if not names or "all" in names:
        return list(known), quick
    suites: list[str] = []
    for n in names:
        for s in GROUPS.get(n, [n]):
            if s not in suites:
                suites.append(s)
    unknown = [s for s in suites if s not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark suite(s) {unknown}; known suites: {known}; groups: all, quick, {', '.join(GROUPS)}")
    return suites, quick


def _machine() -> dict:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def benchmark(*suites: str, quick: bool = False, out: str | None = None, only: str | list[str] | None = None) -> None:
    """Run the named suites or groups (``all``, ``physics``, ``bundles``, ``speed``, ``quick``; all
    suites when none is named; ``report`` alone: only rewrite the tables from the recorded results), record their results in ``<out>/benchmark.json`` (default
    ``results/``; ``quick``: ``results/run/benchmark_quick/``), figures in ``<out>/benchmark/``, the
    tables in ``<out>/benchmark.md``; a full run into ``results/`` also rewrites the README table
    and the bundles' generated results sections.

    ``only``: bundle name(s), e.g. after retraining one bundle: the suites that take a bundle list
    run for these bundles only and their results are merged into the recorded ones; suites of
    other bundles and suites without bundles are skipped."""
    from scripts.main import bundle_names
    from scripts.results_tables import write_reports

    if suites == ("report",):  # rewrite the tables from the recorded results, run nothing
        out_dir = Path(out) if out else RESULTS.parent
        recorded = json.loads((out_dir / "benchmark.json").read_text())
        written = write_reports(recorded, out_dir, update_docs=out_dir.resolve() == RESULTS.parent.resolve())
        print("benchmark report: wrote " + ", ".join(str(p) for p in written))
        return
    known = available_suites()
    names, quick_named = _expand(suites, known)
    only_list = [only] if isinstance(only, str) else list(only) if only else []
    unknown_bundles = sorted(set(only_list) - set(bundle_names()))
    if unknown_bundles:
        raise SystemExit(f"--only: unknown bundle(s) {unknown_bundles}; bundles: {bundle_names()}")
    quick = bool(quick) or quick_named
    out_dir = Path(out) if out else (QUICK_DIR if quick else RESULTS.parent)
    out_path = out_dir / "benchmark.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    t_all = time.time()
    for suite in names:
        machine = _machine()
        print(f"== benchmark {suite}{' (quick)' if quick else ''}: {machine['torch_threads']} torch threads, "
              f"{machine['cpu_count']} CPUs, load average {machine['load_avg_1min']}", flush=True)  # fmt: skip
        t0 = time.time()
        run = importlib.import_module(f"scripts.bench_{suite}").run
        params = inspect.signature(run).parameters
        kwargs = {"figures_dir": out_dir / "benchmark"} if "figures_dir" in params else {}
        if only_list:
            if "bundles" in params:
                kwargs["bundles"] = only_list
            elif suite not in only_list:
                print(f"== benchmark {suite}: skipped (--only {', '.join(only_list)})")
                continue
        if "bundles" in kwargs and suite in results and results[suite].get("quick") != quick:
            raise SystemExit(f"--only: the recorded {suite} results are {'quick' if results[suite].get('quick') else 'full'} ones; "
                             f"run this one the same way, or all bundles without --only")  # fmt: skip
        result = run(quick=quick, **kwargs)
        machine["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
        if "bundles" in kwargs and suite in results:
            # the other bundles keep their recorded results; a re-run bundle's entry is replaced whole
            module = importlib.import_module(f"scripts.bench_{suite}")
            result = _merge(results[suite]["result"], result, depth=getattr(module, "MERGE_DEPTH", 1))
        results[suite] = {"result": result, "quick": quick, "wall_s": round(time.time() - t0, 1), "machine": machine}
        print(f"== benchmark {suite}: {results[suite]['wall_s']:.0f} s", flush=True)
        _write_json(out_path, results)  # after each suite: a later failure keeps what ran
    full_into_repo = not quick and out_dir.resolve() == RESULTS.parent.resolve()
    # the reports are written from what benchmark.json holds (keys sorted), so re-reading it
    # later gives the same tables in the same order
    results = json.loads(out_path.read_text()) if out_path.exists() else results
    written = write_reports(results, out_dir, update_docs=full_into_repo)
    print(f"benchmark: {len(names)} suite(s) in {time.time() - t_all:.0f} s; wrote {out_path}, "
          + ", ".join(str(p) for p in written))


def _merge(old: dict, new: dict, depth: int = 1) -> dict:
    """``old`` updated with ``new``; dictionaries found in both are merged ``depth - 1`` levels
    further down (depth 1: ``new``'s entries replace ``old``'s whole)."""
    out = dict(old)
    for key, value in new.items():
        both = isinstance(value, dict) and isinstance(old.get(key), dict)
        out[key] = _merge(old[key], value, depth - 1) if both and depth > 1 else value
    return out


def _write_json(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
