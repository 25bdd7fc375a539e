"""``python -m scripts benchmark [SUITE ...] [--quick]``: speed and accuracy benchmarks.

Each suite is a module ``scripts/bench_<suite>.py`` with ``run(quick: bool = False) -> dict``
that times this project's code against a baseline measured in the same run and prints a
table. The collected results go to ``results/benchmark.json`` (merged with the suites not
run this time), figures to ``results/benchmark/``; only this command writes there.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "benchmark.json"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time (s) of ``repeats`` calls of ``fn`` after one warm-up call (allocations, lazy
    initialisation), for the suites' timings."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def available_suites() -> list[str]:
    return sorted(p.stem[len("bench_") :] for p in Path(__file__).parent.glob("bench_*.py"))


def benchmark(*suites: str, quick: bool = False, out: str | None = None) -> None:
    """Run the named suites (all when none is named) and record their results."""
    known = available_suites()
    unknown = [s for s in suites if s not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark suite(s) {unknown}; known: {known}")
    import torch

    out_path = Path(out) if out else RESULTS
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for suite in suites or known:
        t0 = time.time()
        result = importlib.import_module(f"scripts.bench_{suite}").run(quick=bool(quick))
        results[suite] = {
            "result": result,
            "quick": bool(quick),
            "wall_s": round(time.time() - t0, 1),
            "machine": {
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            },
        }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_path)
    print(f"benchmark: wrote {out_path}")
